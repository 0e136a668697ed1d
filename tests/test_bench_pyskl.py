"""The pyskl columns of experiments.bench: skipped cleanly without torch or pyskl, and, where both
are there (``$STGCN_JAX_TORCH_PYTHON`` or torch in this python, and ``$STGCN_JAX_PYSKL_SRC``), the
same models as ours timed side by side."""

import json
import types

import jax
import jax.numpy as jnp
import pytest

from experiments import bench, bench_table, bench_vs_pyskl
from stgcn_jax import cli
from stgcn_jax.models import get_model

TINY_RUN = ["--batch=2", "--steps=1", "--tiny", "--no-pipeline", "--ensemble_backbones=",
            "--matmul_n=64"]


def _no_pyskl_env(monkeypatch):
  for name in (bench_vs_pyskl.TORCH_PYTHON_ENV, bench_vs_pyskl.PYSKL_SRC_ENV):
    monkeypatch.delenv(name, raising=False)


def _side() -> bench_vs_pyskl.Side:
  side = bench_vs_pyskl.resolve(None, None)
  if isinstance(side, str):
    pytest.skip(f"the pyskl side is not available here: {side}")
  return side


def test_without_pyskl_the_bench_says_why_in_one_line_and_runs(monkeypatch, capsys):
  _no_pyskl_env(monkeypatch)
  result = bench.main(["--backbones=stgcn", *TINY_RUN])
  skipped = [line for line in capsys.readouterr().out.splitlines() if line.startswith("pyskl:")]
  assert len(skipped) == 1 and "skipped" in skipped[0] and "--pyskl_src" in skipped[0], skipped
  (row,) = result["backbones"]
  assert row["pyskl"] is None and row["train_ratio_measured"] is None
  assert row["train_samples_per_s"] == pytest.approx(2 / row["train_step_s"])   # --batch=2
  assert row["train_loss_finite"]


@pytest.mark.parametrize("flag,message", [("--pyskl_src=/nonexistent", "no pyskl/models/gcns"),
                                          ("--torch_python=/nonexistent/python", "does not run")])
def test_a_bad_path_is_one_error_line_before_anything_runs(tmp_path, monkeypatch, capsys, flag,
                                                           message):
  _no_pyskl_env(monkeypatch)
  src = tmp_path / "pyskl" / "models" / "gcns"
  src.mkdir(parents=True)
  (src / "stgcn.py").write_text("")
  assert cli.run(bench.main, ["--backbones=stgcn", f"--pyskl_src={tmp_path}", flag, *TINY_RUN]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_shape_presets_and_a_flag_that_overrides_one_field():
  args = bench.parse_args(["--shape=nw-ucla"])
  assert (args.batch, args.persons, args.frames, args.layout, args.classes) == (
      16, 1, 52, "nw-ucla", 10)
  args = bench.parse_args(["--shape=ntu", "--frames=64", "--batch=8"])
  assert (args.batch, args.persons, args.frames, args.layout, args.classes) == (
      8, 2, 64, "nturgb+d", 60)


def test_layouts_pyskl_lacks_travel_as_edges():
  assert bench_vs_pyskl.layout_spec("nturgb+d") is None
  spec = json.loads(bench_vs_pyskl.layout_spec("nw-ucla"))
  assert (spec["name"], spec["num_node"], len(spec["inward"]), spec["center"]) == (
      "nw-ucla", 20, 19, 2)


def test_pyskl_runs_without_the_preload_added_for_xla(tmp_path, monkeypatch):
  lib = tmp_path / "libtcmalloc_minimal.so.4"
  lib.write_bytes(b"")
  monkeypatch.setenv("STGCN_JAX_TCMALLOC", str(lib))
  monkeypatch.setenv("STGCN_JAX_ALLOCATOR_SET", "1")
  monkeypatch.setenv("LD_PRELOAD", f"{lib} /other.so")
  env = bench_vs_pyskl.child_env()
  assert env["LD_PRELOAD"] == "/other.so" and "STGCN_JAX_ALLOCATOR_SET" not in env


def _row(**extra) -> dict:
  row = {"backbone": "stgcn", "train_samples_per_s": 4.0, "infer_samples_per_s": 20.0,
         "train_compile_s": 1.0, "infer_compile_s": 1.0, "peak_memory_bytes": 2**30,
         "num_params": 10, "train_xla_memory": None, "train_fraction_of_matmul_peak": None,
         "train_gflops": None, "infer_gflops": None, "train_ratio_to_pyskl": None,
         "infer_ratio_to_pyskl": None}
  return {**row, **extra}


def test_table_marks_ratios_that_were_not_measured_in_the_run():
  machine = {"cpu_model": "x", "nproc": 2, "backend": "cpu", "device": "cpu", "conv_impl": "c",
             "load_avg_start": [0], "matmul_n": 64, "matmul_gflops": 1.0, "cpus": [0, 1]}
  measured = _row(train_ratio_measured=1.25, infer_ratio_measured=2.5)
  documented = _row(train_ratio_to_pyskl=1.5, infer_ratio_to_pyskl=3.0)
  for row, ratios in ((measured, ["1.25", "2.50"]), (documented, ["1.50d", "3.00d"]),
                      (_row(), ["-", "-"])):
    text = bench_table.format_table({"machine": machine, "backbones": [row], "warnings": []})
    (line,) = [line for line in text.splitlines() if line.startswith("stgcn ")][:1]
    cells = line.split()   # backbone, train/s, pyskl, ratio, infer/s, pyskl, ratio, ...
    assert [cells[3], cells[6]] == ratios, line
    assert ("d: against docs/BACKBONES.md" in text) == (row is documented)


def test_rounds_give_medians_and_the_median_of_each_rounds_ratio():
  # Three rounds in which the machine slows down for both sides alike: each round's ratio is 2,
  # while the ratio of the two sides' medians would mix rounds (their medians come from
  # different rounds).
  ours = [{"train_step_s": t, "infer_step_s": t / 4} for t in (0.5, 1.0, 0.25)]
  theirs = [{"train_step_s": 2 * t, "infer_step_s": t, "train_samples_per_s": 2 / (2 * t),
             "infer_samples_per_s": 2 / t, "num_params": 10, "train_first_step_s": 1.0}
            for t in (0.6, 1.0, 0.25)]
  row = {"backbone": "stgcn", "shape": [2, 2, 16, 25, 3], "num_params": 10, "rounds": ours}
  warnings = []
  bench_vs_pyskl.merge(row, theirs, warnings)
  assert not warnings
  assert row["pyskl"]["train_samples_per_s"] == pytest.approx(2 / 1.2)        # median of rounds
  assert row["pyskl"]["train_step_s"] == pytest.approx(1.2)
  assert len(row["pyskl"]["rounds"]) == 3 and row["pyskl"]["train_first_step_s"] == 1.0
  assert row["train_ratio_measured"] == pytest.approx(2.0)        # rounds: 2.4, 2.0, 2.0
  assert row["train_ratio_range"] == pytest.approx([2.0, 2.4])
  assert row["infer_ratio_measured"] == pytest.approx(4.0)
  failed = [theirs[0], {"error": "exit status 1: boom"}]
  row = {"backbone": "stgcn", "shape": [2, 2, 16, 25, 3], "num_params": 10, "rounds": ours[:2]}
  bench_vs_pyskl.merge(row, failed, warnings)
  assert row["train_ratio_measured"] is None and row["train_ratio_range"] is None
  assert warnings == ["pyskl stgcn was not measured: exit status 1: boom"]


def _jax_num_params(name: str, layout: str, persons: int, classes: int) -> int:
  model = get_model(name, classes, layout=layout, num_person=persons)
  joints = model.backbone.layout.num_joints
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, persons, 16, joints, 3))))
  return sum(p.size for p in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("shape", ["ntu", "nw-ucla"])
@pytest.mark.parametrize("name", bench.BACKBONES)
def test_pyskl_model_has_our_parameter_count(name, shape):
  side = _side()
  preset = bench.SHAPES[shape]
  args = types.SimpleNamespace(**{**preset, "batch": 1, "frames": 16, "steps": 1, "tiny": False})
  row = bench_vs_pyskl.measure(side, name, args, threads=1)
  assert "error" not in row, row
  assert row["num_params"] == _jax_num_params(name, preset["layout"], preset["persons"],
                                              preset["classes"])
  assert row["shape"] == [1, preset["persons"], 16, 25 if shape == "ntu" else 20, 3]


def test_side_by_side_run_fills_the_pyskl_columns(capsys):
  side = _side()
  result = bench.main(["--backbones=ctrgcn", f"--torch_python={side.python}",
                       f"--pyskl_src={side.src}", *TINY_RUN])
  (row,) = result["backbones"]
  assert row["pyskl"]["num_params"] == row["num_params"]
  assert row["train_ratio_measured"] > 0 and row["infer_ratio_measured"] > 0
  assert row["pyskl"]["threads"] == len(result["machine"]["cpus"])
  assert row["pyskl"]["train_loss_finite"]
  assert "measured in this run" in capsys.readouterr().out

