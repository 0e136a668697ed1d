"""``python -m experiments.sweep``: the grid, resuming, the fused ensemble row and the table."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from stgcn_jax import data, fusion

from conftest import REPO

CONFIG = f"--config={REPO / 'experiments' / 'configs' / 'default.py'}:test"


def sweep(*flags):
  cmd = [sys.executable, "-m", "experiments.sweep", CONFIG, *flags]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)


def test_dry_run_lists_one_command_per_cell(tmp_path):
  result = sweep("--backbones=stgcn,ctrgcn", "--sparsities=0,0.95", f"--root={tmp_path}",
                 "--dry_run", "--", "--epochs=1", "--seed=3")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 4
  for line, (backbone, sparsity) in zip(lines, [("stgcn", "0"), ("stgcn", "0.95"),
                                                ("ctrgcn", "0"), ("ctrgcn", "0.95")]):
    assert f"--backbone={backbone} --sparsity={sparsity} " in line
    assert f"--workdir={tmp_path}/{backbone}_s{sparsity}" in line
    assert ("--mode=dense" in line) == (sparsity == "0")
    assert line.endswith("--epochs=1 --seed=3")


@pytest.mark.parametrize("flag, message", [
    ("--backbones=stgcn,resnet", "--backbones: unknown resnet"),
    ("--sparsities=0.6,1.0", "outside [0, 1)"),
    ("--sparsities=0.6,lots", "expected numbers in [0, 1)"),
])
def test_bad_grid_is_one_line(tmp_path, flag, message):
  result = sweep(flag, f"--root={tmp_path}")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [result.stderr.strip()]
  assert message in result.stderr


def test_grid_fuses_the_multi_level_ensemble_and_resumes(tmp_path):
  data_dir = tmp_path / "data"
  data.build_synthetic(str(data_dir), num_train=32, num_test=12, num_classes=3, min_frames=20,
                       max_frames=30, seed=2)
  root = tmp_path / "runs"
  flags = ("--backbones=stgcn", "--sparsities=0.6,0.8,0.95,0.99", f"--root={root}",
           "--parallel=2", "--", f"--data_dir={data_dir}", "--config.progress_bar=False",
           "--epochs=2", "--warmup_epochs=1")
  result = sweep(*flags)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  table = (root / "table.md").read_text().splitlines()
  assert len(table) == 2 + 5  # header, rule, 4 runs, the ensemble
  for level in ("0.6", "0.8", "0.95", "0.99"):
    assert any(row.startswith(f"| stgcn s={level} |") for row in table)
  assert f"| CPU ({os.cpu_count()} cores) |" in table[2]  # hardware from the run's results.json
  ensemble_row = table[-1]
  assert ensemble_row.startswith("| stgcn ensemble 0.6+0.8+0.95+0.99 |")
  assert "| 0.66 (" in ensemble_row

  # The ensemble row is the sum of the members' clip-averaged softmax scores.
  members = [fusion.load_run(str(root / f"stgcn_s{s}")) for s in ("0.6", "0.8", "0.95", "0.99")]
  fused = sum(m.scores for m in members)
  top1 = float(np.mean(fused.argmax(-1) == members[0].labels))
  report = json.loads((root / "stgcn_ensemble" / "fusion.json").read_text())
  assert report["fused"]["top1"] == pytest.approx(top1)
  assert f"| {100 * top1:.1f} |" in ensemble_row

  # A second call finds every cell finished and trains nothing.
  again = sweep(*flags)
  assert again.returncode == 0, again.stderr[-2000:]
  assert again.stdout.count("done already") == 4 and "start " not in again.stdout
  times = json.loads((root / "stgcn_s0.6" / "sweep_times.json").read_text())
  assert len(times) == 1 and times[0]["returncode"] == 0
