"""experiments.report: records of finished runs, and the table, plot and README section made from
them, on hand-made workdirs (3 test samples, 3 classes)."""

import json
from pathlib import Path

import numpy as np
import pytest

from experiments import report

LABELS = [0, 1, 2]
# Each run gets one sample wrong (2/3), narrowly: the four generator runs, which miss different
# samples, sum to all three right; the dense seeds all miss the same one.
RIGHT = np.eye(3) * 0.6 + 0.1
WRONG = {0: [0.3, 0.5, 0.2], 1: [0.2, 0.3, 0.5], 2: [0.5, 0.2, 0.3]}


def scores(wrong: int):
  s = RIGHT.copy()
  s[wrong] = WRONG[wrong]
  return s


def counts(sparsity: float) -> dict:
  kept = int(round((1 - sparsity) * 1000))
  return dict(prunable_sparsity=sparsity, nonzero_params=kept + 100, total_params=1100,
              prunable_nonzero=kept, prunable_params=1000)


def workdir(root: Path, name: str, mode: str, sparsity: float, seed: int, wrong: int,
            lam: float = 1.0, **config_fields) -> None:
  wd = root / name
  wd.mkdir(parents=True)
  np.savez(wd / "scores.npz", scores=scores(wrong).astype(np.float32), labels=np.array(LABELS),
           index=np.arange(3), names=np.array(["a", "b", "c"]))
  config = dict(variant="nw_ucla_cpu", dataset="nw_ucla", backbone="ctrgcn", mode=mode,
                sparsity=sparsity, seed=seed, penalty_lambda=lam, warmup_epochs=18,
                num_epochs=30, modality="j")
  config.update(config_fields)
  (wd / "config.json").write_text(json.dumps(config))
  top1 = 2 / 3
  (wd / "results.json").write_text(json.dumps(dict(
      top1=top1, top5=1.0, mean_class_accuracy=top1, num_samples=3,
      hardware=dict(platform="cpu", device_count=1, device_kind="cpu", cpu_count=2),
      **counts(sparsity))))
  (wd / "launch.json").write_text(json.dumps(dict(
      commit="0123456789abcdef", command=f"python -m experiments.run --workdir={name}",
      cpu="Test CPU", pinned_core=0, allocator="tcmalloc")))
  (wd / "sweep_times.json").write_text(json.dumps([{"wall_s": 600.0, "returncode": -15},
                                                   {"wall_s": 1200.0, "returncode": 0},
                                                   {"wall_s": 99.0, "returncode": 1}]))
  if mode == "generator":
    switch = dict(step=1134, split="switch", masked_norm_total=0.5,
                  before=dict(loss=0.4, accuracy=0.9, ce=0.4),
                  after=dict(loss=0.41, accuracy=0.9, ce=0.41))
    val = dict(step=1890, split="val", top1=0.75)
    (wd / "metrics.jsonl").write_text(json.dumps(dict(step=5, split="train")) + "\n"
                                      + json.dumps(switch) + "\n" + json.dumps(val) + "\n")


@pytest.fixture
def grid(tmp_path):
  root = tmp_path / "runs"
  for seed in range(4):
    workdir(root, f"ctrgcn_s0{'_seed%d' % seed if seed else ''}", "dense", 0.0, seed, wrong=0)
  for i, s in enumerate((0.6, 0.8, 0.95, 0.99)):
    workdir(root, f"ctrgcn_s{s:g}", "generator", s, 0, wrong=i % 3)
  workdir(root, "ctrgcn_s0.95_lambda0", "generator", 0.95, 0, wrong=1, lam=0.0)
  workdir(root, "ctrgcn_s0.95_ramp", "generator", 0.95, 0, wrong=1, lambda_schedule="ramp",
          warmup_epochs=9)
  return tmp_path


def test_collect_writes_runs_and_both_ensembles(grid):
  out = grid / "results"
  written = report.collect(str(grid / "runs"), str(out))
  assert len(written) == 10 + 2
  ens = json.loads((out / "ctrgcn_ensemble.json").read_text())
  assert ens["members"] == ["ctrgcn_s0.6", "ctrgcn_s0.8", "ctrgcn_s0.95", "ctrgcn_s0.99"]
  assert ens["test"]["top1"] == 1.0        # each member misses one sample; the sum misses none
  assert ens["nonzero_params"] == 400 + 200 + 50 + 10 + 4 * 100
  assert ens["prunable_budget"] == pytest.approx(0.66)
  seeds = json.loads((out / "ctrgcn_dense_seed_ensemble.json").read_text())
  assert seeds["test"]["top1"] == pytest.approx(2 / 3)   # all four miss the same sample
  run = json.loads((out / "ctrgcn_s0.8.json").read_text())
  assert run["wall_s"] == 1800.0           # the stopped and the finished launch, not the crash
  assert run["switch"] == {"step": 1134, "masked_norm_total": 0.5,
                           "before": {"loss": 0.4, "accuracy": 0.9},
                           "after": {"loss": 0.41, "accuracy": 0.9}}
  assert run["commit"] == "0123456789abcdef" and run["hardware"]["allocator"] == "tcmalloc"


def test_table_plot_and_readme_from_the_records(grid):
  out = grid / "results"
  report.collect(str(grid / "runs"), str(out))
  rows = report.table_rows(report.load_records(str(out)))
  assert [r["run"] for r in rows] == [
      "dense", "dense (seed 1)", "dense (seed 2)", "dense (seed 3)", "generator 0.6",
      "generator 0.8", "generator 0.95", "generator 0.99", "generator 0.95, lambda 0",
      "generator 0.95, lambda ramp, warm-up 9 of 30", "ensemble 0.6+0.8+0.95+0.99",
      "dense seed ensemble (4)"]
  by_run = {r["run"]: r for r in rows}
  assert by_run["dense"]["vs_dense"] is None
  assert by_run["ensemble 0.6+0.8+0.95+0.99"]["vs_dense"] == pytest.approx(100 / 3)
  assert by_run["generator 0.95"]["nonzero_params"] == 150
  assert by_run["generator 0.95"]["val_top1"] == 75.0 and by_run["dense"]["val_top1"] is None
  readme = grid / "README.md"
  readme.write_text("intro\n<!-- report:results begin -->\nold\n<!-- report:results end -->\nend\n")
  png = grid / "grid.png"
  assert report.main(["--results", str(out), "--plot", str(png), "--readme", str(readme)]) == 0
  text = readme.read_text()
  assert "old" not in text and text.startswith("intro\n") and text.endswith("end\n")
  assert ("| ctrgcn | ensemble 0.6+0.8+0.95+0.99 |  | 100.0 | 100.0 | 100.0 | +33.3 | 1,060 |"
          in text)
  assert ("| ctrgcn | generator 0.8 | 75.0 | 66.7 | 100.0 | 66.7 | +0.0 | 300 |  | 30 min "
          "| 0123456 |" in text)
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_record_is_one_line(grid, capsys):
  out = grid / "results"
  out.mkdir()
  (out / "broken.json").write_text(json.dumps({"schema": 1, "kind": "run"}))
  assert report.cli.run(report.main, ["--results", str(out)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "broken.json" in err and "missing name, backbone, test" in err


def test_hardware_says_when_the_core_was_shared():
  pinned = dict(platform="cpu", cpu="Test CPU", pinned_core=1, allocator="tcmalloc")
  assert report._hardware({"hardware": pinned}) == "Test CPU, 1 core, tcmalloc"  # pylint: disable=protected-access
  shared = {"hardware": {**pinned, "nice": 19}}
  assert report._hardware(shared) == "Test CPU, 1 core shared at nice 19, tcmalloc"  # pylint: disable=protected-access


def test_an_auto_run_is_reported_as_its_chosen_member():
  members = [dict(sparsity=s, val_top1=v) for s, v in ((0.6, 0.83), (0.8, 0.821), (0.95, 0.73))]
  res = {"members": members, "auto_sparsity": {
      "chosen": "s0.8", "index": 1, "tolerance_points": 1.0, "reason": "within 1 point"}}
  got = report.auto_choice(res)
  assert got["sparsity"] == 0.8 and got["validation"]["top1"] == 0.821
  assert got["auto"]["levels"] == [0.6, 0.8, 0.95]
  record = {"kind": "run", "mode": "variants", "seed": 0, **got}
  assert report.label(record) == "--sparsity=auto: chose 0.8 of 0.6/0.8/0.95"
  assert report.auto_choice({"top1": 0.5}) == {}


def twin_workdir(root: Path, seed: int, top1: float, data_seed: int = 7) -> None:
  wd = root / f"ctrgcn_seed{seed}"
  wd.mkdir(parents=True)
  (wd / "results.json").write_text(json.dumps(dict(
      kind="pyskl_twin", backbone="ctrgcn", seed=seed, seeds=dict(data=data_seed + seed),
      test=dict(top1=top1, top5=1.0, mean_class_accuracy=top1, num_samples=3),
      pyskl_side=dict(torch="2.13.0+cpu", threads=1, train_time_s=1800.0),
      command=f"python -m experiments.pyskl_twin --torch_python=/x/python --pyskl_src=/y --seed={seed}"
              f" --workdir=/scratch/t{seed}", cpu="Test CPU")))


def test_pyskl_twins_beside_the_dense_runs_of_their_seeds(grid):
  runs = grid / "results"
  report.collect(str(grid / "runs"), str(runs))
  for name in ("ctrgcn_s0", "ctrgcn_s0_seed1"):    # the dense runs' data seeds, as run_seeds gives
    record = json.loads((runs / f"{name}.json").read_text())
    record["seeds"] = {"data": 7 + record["seed"]}
    record["without_precise_bn"] = {"top1": 0.5}
    (runs / f"{name}.json").write_text(json.dumps(record))
  twin_workdir(grid / "twins", 0, 1.0)
  twin_workdir(grid / "twins", 1, 1 / 3)
  readme = grid / "README.md"
  readme.write_text("<!-- report:twins_out begin -->\n<!-- report:twins_out end -->\n")
  assert report.main(["--collect", str(grid / "twins"), "--results", str(grid / "twins_out"),
                      "--compare", str(runs), "--readme", str(readme)]) == 0
  rows = report.twin_rows(report.load_records(str(grid / "twins_out")),
                          report.load_records(str(runs)))
  assert [(r["seed"], r["twin_top1"], r["jax_top1"], r["jax_running_bn"]) for r in rows] == [
      ("0", 100.0, pytest.approx(200 / 3), 50.0), ("1", pytest.approx(100 / 3),
                                                   pytest.approx(200 / 3), 50.0),
      ("mean of 2", pytest.approx(200 / 3), pytest.approx(200 / 3), 50.0)]
  text = readme.read_text()
  assert "| ctrgcn | 0 | 100.0 | 66.7 | 50.0 | +33.3 | 30 min | Test CPU, 1 thread(s)" in text
  assert "| ctrgcn | mean of 2 | 66.7 | 66.7 | 50.0 | +0.0 | 30 min |  |  |" in text
  # The command as a user reruns it: no machine paths, the workdir under runs/pyskl_twin/.
  assert ("`python -m experiments.pyskl_twin --seed=1 --workdir=runs/pyskl_twin/ctrgcn_seed1` |"
          in text)
  # A twin whose batches are not those of the dense run of its seed is refused, naming it.
  twin_workdir(grid / "other", 1, 1.0, data_seed=100)
  report.collect(str(grid / "other"), str(grid / "other_out"))
  with pytest.raises(report.ReportError, match=r"ctrgcn_seed1: its data seed 101 is not that of "
                     r"the dense run ctrgcn_s0_seed1 \(8\)"):
    report.twin_rows(report.load_records(str(grid / "other_out")), report.load_records(str(runs)))
