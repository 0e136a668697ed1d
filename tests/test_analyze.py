"""The analysis figures and table (python -m experiments.analyze) on hand-made workdirs."""

import csv
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from experiments import analyze

REPO = Path(__file__).resolve().parents[1]
N, C = 40, 5


def make_run(root: Path, name: str, top1: float, seed: int = 0, member_sparsities=None,
             **config) -> str:
  """A finished run: config.json, results.json and scores.npz with random softmax scores."""
  workdir = root / name
  workdir.mkdir(parents=True)
  config = {"backbone": "ctrgcn", "dataset": "synthetic", "modality": "j", "mode": "generator",
            "sparsity": 0.8, "warmup_epochs": 2, "penalty_lambda": 1.0, "lambda_schedule":
            "constant", "pretrained": "", "seed": seed, **config}
  rng = np.random.default_rng(zlib.crc32(name.encode()))  # not hash(): it changes per process
  k = len(member_sparsities or [None])
  member_scores = rng.dirichlet(np.full(C, 0.5), size=(k, N)).astype(np.float32)
  arrays = dict(scores=member_scores.sum(0), labels=np.arange(N) % C, index=np.arange(N),
                names=np.array([f"S{i:03d}" for i in range(N)]))
  if member_sparsities:
    arrays.update(member_scores=member_scores, member_sparsities=np.array(member_sparsities))
  np.savez(workdir / "scores.npz", **arrays)
  (workdir / "config.json").write_text(json.dumps(config))
  (workdir / "results.json").write_text(json.dumps({
      "top1": top1, "top5": min(1, top1 + .2), "mean_class_accuracy": top1, "num_samples": N,
      "num_classes": C, "prunable_sparsity": config["sparsity"], "nonzero_params": 1000}))
  return str(workdir)


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
  """Every method group at two sparsities, a dense run (two seeds) and a joint ensemble."""
  root = tmp_path_factory.mktemp("runs")
  make_run(root, "dense", .9, mode="dense", sparsity=0.0)
  make_run(root, "dense_seed1", .88, seed=1, mode="dense", sparsity=0.0)
  for s in (0.8, 0.95):
    make_run(root, f"gen_s{s}", .85 - s / 10, sparsity=s)
    make_run(root, f"nopen_s{s}", .8 - s / 10, sparsity=s, penalty_lambda=0.0)
    make_run(root, f"nowarm_s{s}", .75 - s / 10, sparsity=s, warmup_epochs=0)
    make_run(root, f"lthpre_s{s}", .7 - s / 10, sparsity=s, mode="lth", pretrained="/ckpt")
    make_run(root, f"lthrand_s{s}", .6 - s / 10, sparsity=s, mode="lth")
  make_run(root, "joint", .87, mode="ensemble", ensemble_sparsities=[.6, .8],
           member_sparsities=[.6, .8])
  return root


@pytest.fixture(scope="module")
def report(runs_root, tmp_path_factory):
  out = tmp_path_factory.mktemp("analysis")
  return analyze.analyze(analyze.find_workdirs(str(runs_root)), str(out), root=str(runs_root))


def test_writes_the_figures_and_tables(report):
  names = sorted(Path(p).name for p in report["files"])
  assert names == ["fig4_accuracy_vs_sparsity.png", "fig5_warmup.png", "fig6_max_softmax.png",
                   "runs.csv", "runs.md"]


def test_figures_are_png(report):
  pngs = [Path(p) for p in report["files"] if p.endswith(".png")]
  assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_table_has_one_row_per_run(report, runs_root):
  csv_path = next(p for p in report["files"] if p.endswith(".csv"))
  with open(csv_path) as f:
    rows = list(csv.DictReader(f))
  assert sorted(r["run"] for r in rows) == sorted(p.name for p in runs_root.iterdir())


def test_table_records_groups(report):
  csv_path = next(p for p in report["files"] if p.endswith(".csv"))
  with open(csv_path) as f:
    row = {r["run"]: r for r in csv.DictReader(f)}
  assert ((row["lthpre_s0.8"]["init"], row["lthrand_s0.8"]["init"], row["joint"]["sparsity"])
          == ("pretrained", "random", "0.6+0.8"))


def test_markdown_table_reports_percentages(report):
  md = Path(next(p for p in report["files"] if p.endswith(".md"))).read_text()
  assert "| dense | ctrgcn | synthetic | j | dense | 0 |" in md and "| 90.00 |" in md


def test_groups_from_config():
  generator = {"mode": "generator", "level": .9, "warmup_epochs": 5, "penalty_lambda": 1.0}
  groups = [analyze.groups_of({"sparsity": sparsity, "model": {"pretrained": pretrained}})
            for sparsity, pretrained in (
                (generator, ""), (dict(generator, penalty_lambda=0.0), ""),
                (dict(generator, warmup_epochs=0), ""),
                ({"mode": "lth", "level": .9}, "/ckpt"), ({"mode": "lth", "level": .9}, ""),
                ({"mode": "dense", "level": 0.0}, ""))]
  assert groups == [{"generator + penalty", "with warm-up"}, {"generator, no penalty"},
                    {"without warm-up"}, {"LTH, pretrained"}, {"LTH, random init"}, set()]


def test_missing_groups_are_skipped_with_a_note(tmp_path):
  make_run(tmp_path / "runs", "gen", .8, sparsity=.9)
  report = analyze.analyze([str(tmp_path / "runs" / "gen")], str(tmp_path / "out"))
  assert "fig4_accuracy_vs_sparsity.png: no runs for 'LTH, random init'; skipped" in report["notes"]


def test_low_confidence_panel_with_no_samples_still_draws(tmp_path):
  d = make_run(tmp_path / "runs", "gen", .8, sparsity=.9)
  report = analyze.analyze([d], str(tmp_path / "out"), threshold=0.0)
  assert any(p.endswith("fig6_max_softmax.png") for p in report["files"])


def test_cli_requires_out_in_one_line(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "experiments.analyze", f"--root={tmp_path}"],
                        cwd=REPO, capture_output=True, text=True, timeout=60)
  assert (proc.returncode, proc.stderr.strip().splitlines()) == (
      2, ["error: --out is required (the directory for the figures and the table)"])
