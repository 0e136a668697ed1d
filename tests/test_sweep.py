"""``python -m experiments.sweep``: the grid, resuming, the fused ensemble rows (multi-level and the
dense seed-ensemble control) and the table."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from stgcn_jax import data, run_files

from conftest import REPO

CONFIG = f"--config={REPO / 'experiments' / 'configs' / 'default.py'}:test"


def sweep(*flags):
  cmd = [sys.executable, "-m", "experiments.sweep", CONFIG, *flags]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)


def synthetic_data(tmp_path):
  data_dir = tmp_path / "data"
  data.build_synthetic(str(data_dir), num_train=32, num_test=12, num_classes=3, min_frames=20,
                       max_frames=30, seed=2)
  return data_dir


def test_dry_run_lists_one_command_per_cell(tmp_path):
  result = sweep("--backbones=stgcn,ctrgcn", "--sparsities=0,0.95", f"--root={tmp_path}",
                 "--dry_run", "--dense_seeds=0", "--", "--epochs=1", "--seed=3")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 4
  for line, (backbone, sparsity) in zip(lines, [("stgcn", "0"), ("stgcn", "0.95"),
                                                ("ctrgcn", "0"), ("ctrgcn", "0.95")]):
    assert f"--backbone={backbone} --sparsity={sparsity} " in line
    assert f"--workdir={tmp_path}/{backbone}_s{sparsity}" in line
    assert "--mode" not in line  # sparsity 0 is dense by the run config's policy
    assert line.endswith("--epochs=1 --seed=3")


@pytest.mark.parametrize("flags, seeds", [
    # Default: 4 dense seeds (the multi-level ensemble's size), BASE = the --seed after "--".
    (("--", "--epochs=1", "--seed=3"), (4, 5, 6)),
    (("--dense_seeds=3", "--", "--epochs=1"), (1, 2)),  # no --seed: BASE 0
    (("--dense_seeds=2", "--", "--epochs=1", "--config.seed=7"), (8,)),
    (("--dense_seeds=1", "--", "--epochs=1"), ()),  # 1 or 0: no control
    (("--dense_seeds=0", "--", "--epochs=1"), ()),
])
def test_dry_run_lists_the_dense_seed_runs(tmp_path, flags, seeds):
  result = sweep("--backbones=stgcn,ctrgcn", "--sparsities=0.95,0", f"--root={tmp_path}",
                 "--dry_run", *flags)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 4 + 2 * len(seeds)
  grid, extra = lines[:4], lines[4:]  # the grid's cells first, then the control's runs
  assert not any("_seed" in line for line in grid)
  dense = {b: next(line for line in grid if f"--workdir={tmp_path}/{b}_s0 " in line)
           for b in ("stgcn", "ctrgcn")}
  expected = [(b, k) for b in ("stgcn", "ctrgcn") for k in seeds]
  for line, (backbone, seed) in zip(extra, expected):
    # The dense cell's command, its workdir renamed, with --seed=K after every flag from "--".
    assert line == (dense[backbone].replace(f"/{backbone}_s0 ", f"/{backbone}_s0_seed{seed} ")
                    + f" --seed={seed}")
    assert f"--backbone={backbone} --sparsity=0 " in line


def test_no_dense_cell_no_dense_seed_runs(tmp_path):
  result = sweep("--backbones=stgcn", "--sparsities=0.6,0.8", f"--root={tmp_path}", "--dry_run",
                 "--dense_seeds=4")
  assert result.returncode == 0, result.stderr
  assert len(result.stdout.strip().splitlines()) == 2 and "--seed" not in result.stdout


@pytest.mark.parametrize("flag, message", [
    ("--backbones=stgcn,resnet", "--backbones: unknown resnet"),
    ("--sparsities=0.6,1.0", "outside [0, 1)"),
    ("--sparsities=0.6,lots", "expected numbers in [0, 1)"),
    ("--dense_seeds=-1", "--dense_seeds=-1: expected 0 or more"),
])
def test_bad_grid_is_one_line(tmp_path, flag, message):
  result = sweep(flag, f"--root={tmp_path}")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [result.stderr.strip()]
  assert message in result.stderr


def test_bad_seed_after_dashes_is_one_line(tmp_path):
  result = sweep(f"--root={tmp_path}", "--dry_run", "--", "--seed=three")
  assert result.returncode == 2
  assert result.stderr.strip() == "error: --seed=three (after --): expected an integer seed"


def test_grid_fuses_the_multi_level_ensemble_and_resumes(tmp_path):
  data_dir = synthetic_data(tmp_path)
  root = tmp_path / "runs"
  flags = ("--backbones=stgcn", "--sparsities=0.6,0.8,0.95,0.99", f"--root={root}",
           "--parallel=2", "--", f"--data_dir={data_dir}", "--config.loop.progress_bar=False",
           "--epochs=2", "--warmup_epochs=1")
  result = sweep(*flags)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  table = (root / "table.md").read_text().splitlines()
  assert len(table) == 2 + 5  # header, rule, 4 runs, the ensemble
  for level in ("0.6", "0.8", "0.95", "0.99"):
    assert any(row.startswith(f"| stgcn s={level} |") for row in table)
  # The hardware column comes from the run's own results.json, whatever machine ran it.
  hw = json.loads((root / "stgcn_s0.6" / "results.json").read_text())["hardware"]
  kind = hw["device_kind"] if hw["platform"] != "cpu" else f"CPU ({hw['cpu_count']} cores)"
  expected = f"{hw['device_count']}x {kind}" if hw["device_count"] > 1 else kind
  assert any(f"| {expected} |" in row and row.startswith("| stgcn s=0.6 |") for row in table)
  ensemble_row = table[-1]
  assert ensemble_row.startswith("| stgcn ensemble 0.6+0.8+0.95+0.99 |")
  assert "| 0.66 (" in ensemble_row

  # The ensemble row is the sum of the members' clip-averaged softmax scores.
  members = [run_files.load_run(str(root / f"stgcn_s{s}")) for s in ("0.6", "0.8", "0.95", "0.99")]
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


def test_dense_seed_ensemble_control(tmp_path):
  data_dir = synthetic_data(tmp_path)
  root = tmp_path / "runs"
  flags = ("--backbones=stgcn", "--sparsities=0", "--dense_seeds=2", f"--root={root}",
           "--parallel=2", "--", f"--data_dir={data_dir}", "--config.loop.progress_bar=False",
           "--epochs=1")
  result = sweep(*flags)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  table = (root / "table.md").read_text().splitlines()
  assert table[0].startswith("| run | seed | top-1 |")
  assert len(table) == 2 + 3  # header, rule, dense, dense seed 1, the dense seed ensemble
  assert table[2].startswith("| stgcn dense | 0 |")
  assert table[3].startswith("| stgcn dense (seed 1) | 1 |")
  assert f"--workdir={root}/stgcn_s0_seed1 " in table[3]
  assert table[3].endswith(" --epochs=1 --seed=1` |")
  ensemble_row = table[4]
  assert ensemble_row.startswith("| stgcn dense seed ensemble (2 seeds) | 0,1 |")
  assert "| 2.00 (2.00 of all params): 2 dense models |" in ensemble_row  # budget: 2x dense
  # Size on disk (the sparse exports): the seed ensemble is the sum of its two dense members.
  sizes = [int(re.search(r"\| ([\d,]+) KiB \|", row).group(1).replace(",", ""))
           for row in (table[2], table[3], ensemble_row)]
  assert abs(sizes[2] - sizes[0] - sizes[1]) <= 1
  out = root / "stgcn_dense_seed_ensemble"
  assert f"`python -m experiments.fuse --workdirs={root}/stgcn_s0,{root}/stgcn_s0_seed1 " \
         f"--out={out}` |" in ensemble_row
  assert json.loads((root / "stgcn_s0_seed1" / "config.json").read_text())["seed"] == 1

  # By hand: the sum of the two runs' scores, argmax against the labels.
  npz = [np.load(root / d / "scores.npz") for d in ("stgcn_s0", "stgcn_s0_seed1")]
  np.testing.assert_array_equal(npz[0]["index"], npz[1]["index"])
  assert not np.allclose(npz[0]["scores"], npz[1]["scores"])  # the seeds made different models
  fused = npz[0]["scores"].astype(np.float64) + npz[1]["scores"]
  top1 = float(np.mean(fused.argmax(-1) == npz[0]["labels"]))
  report = json.loads((out / "fusion.json").read_text())
  assert [m["workdir"] for m in report["members"]] == [f"{root}/stgcn_s0", f"{root}/stgcn_s0_seed1"]
  assert report["fused"]["top1"] == pytest.approx(top1)
  assert ensemble_row.split(" | ")[2] == f"{100 * top1:.1f}"

  # A second call finds both runs finished and trains nothing.
  again = sweep(*flags)
  assert again.returncode == 0, again.stderr[-2000:]
  assert again.stdout.count("done already") == 2 and "start " not in again.stdout
  assert (root / "table.md").read_text().splitlines() == table

  # --table_only: the seed column prefers results.json's seeds["run"] (newer runs write it) ...
  results = root / "stgcn_s0_seed1" / "results.json"
  res = json.loads(results.read_text())
  results.write_text(json.dumps({**res, "seeds": {"run": 7, "init": 8, "data": 9, "mask": 10}}))
  only = sweep("--table_only", *flags)
  assert only.returncode == 0, only.stderr[-2000:]
  rows = (root / "table.md").read_text().splitlines()
  assert rows[3].startswith("| stgcn dense (seed 1) | 7 |")
  assert rows[4].startswith("| stgcn dense seed ensemble (2 seeds) | 0,7 |")
  assert rows[4].split(" | ")[2] == f"{100 * top1:.1f}"
  # ... and a member without results.json leaves the ensemble out, saying so.
  results.unlink()
  only = sweep("--table_only", *flags)
  assert only.returncode == 0, only.stderr[-2000:]
  assert len((root / "table.md").read_text().splitlines()) == 2 + 1
  assert "stgcn dense seed ensemble: 1 of 2 runs finished, not fused" in only.stdout
