"""Bad input on ``experiments.fuse`` and ``experiments.sweep`` (docs/BAD_INPUT.md, "Fusion, sweeps,
workdirs and datasets"): every case is one ``error:`` line and exit status 2, never a traceback
and never an accuracy computed from what should have been refused."""

import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import fuse, sweep
from stgcn_jax import checkpoint, cli

from conftest import REPO
from test_fusion import A, B, LABELS, budget_results, make_run

OPTIONS = dict(base_channels=8, num_stages=2, inflate_stages=[], down_stages=[], num_person=2)
SPEC = checkpoint.model_spec_json("stgcn", 3, "coco", 3, OPTIONS)
CONFIG = f"--config={REPO / 'experiments' / 'configs' / 'default.py'}:test"


def save_tiny_model(path) -> None:
  """A model checkpoint of a tiny ST-GCN (3 classes, coco layout) with constant weights."""
  model = checkpoint.build_model(SPEC)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 2, 16, 17, 3)))
  variables = jax.tree.map(lambda leaf: np.full(leaf.shape, 0.01, np.float32), shapes)
  checkpoint.save_model(str(path), SPEC, variables)


def store(fingerprint: str, path: str = "/data/synthetic/1.0.0") -> dict:
  return {"dataset": "synthetic", "path": path, "num_samples": {"train": 9, "test": 3},
          "fingerprint": fingerprint * 16}


def run_cli(capsys, monkeypatch, module, *argv) -> tuple[int, str]:
  """``module.main(argv)`` as its ``__main__`` runs it: (status, stderr)."""
  monkeypatch.setenv("XLA_FLAGS", "")
  status = cli.run(module.main, list(argv))
  err = capsys.readouterr().err
  if status == 2:
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
  return status, err


@pytest.fixture
def two_runs(tmp_path):
  results = dict(budget_results(.4), data_store=store("a"))
  return [make_run(tmp_path, n, s, LABELS, results=results) for n, s in (("a", A), ("b", B))]


# ----------------------------------------------------------------------------- experiments.fuse
def test_binary_config_json_is_one_line(tmp_path):
  a, b = make_run(tmp_path, "a", A, LABELS), make_run(tmp_path, "b", B, LABELS)
  (tmp_path / "b" / "config.json").write_bytes(b"\xff\xfe\x00\x81binary")
  proc = subprocess.run([sys.executable, "-m", "experiments.fuse", f"--workdirs={a},{b}"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      f"error: {b}/config.json: not UTF-8 text (byte 0); expected JSON"]


def test_member_without_model_variables_is_one_line(two_runs, capsys, monkeypatch):
  for workdir in two_runs:
    save_tiny_model(f"{workdir}/model")
  shutil.rmtree(f"{two_runs[1]}/model/variables")
  status, err = run_cli(capsys, monkeypatch, fuse, f"--workdirs={','.join(two_runs)}")
  assert status == 2
  assert err.startswith(f"error: {two_runs[1]}/model: the saved model of {two_runs[1]} cannot be "
                        "read (")
  assert "run experiments.run again with its --workdir" in err


def test_out_that_is_a_file_is_refused_before_reading(two_runs, tmp_path, capsys, monkeypatch):
  out = tmp_path / "report"
  out.write_text("mine")
  status, err = run_cli(capsys, monkeypatch, fuse, f"--workdirs={','.join(two_runs)}",
                        f"--out={out}")
  assert (status, err) == (2, f"error: --out={out}: is a file; expected a directory for "
                              "fusion.json\n")
  status, err = run_cli(capsys, monkeypatch, fuse, f"--workdirs={','.join(two_runs)}",
                        f"--out={out}/deeper")
  assert status == 2 and f"is a file ({out} is one)" in err
  assert out.read_text() == "mine"


@pytest.mark.parametrize("weights, message", [
    ("nan,1", "every weight must be a finite number >= 0"),
    ("inf,1", "every weight must be a finite number >= 0"),
    ("-1,2", "every weight must be a finite number >= 0"),
    ("0,0", "at least one weight must be > 0"),
])
def test_weights_that_are_not_finite_or_positive_are_refused(two_runs, capsys, monkeypatch,
                                                             weights, message):
  status, err = run_cli(capsys, monkeypatch, fuse, f"--workdirs={','.join(two_runs)}",
                        f"--weights={weights}")
  assert (status, err) == (2, f"error: --weights={weights}: {message}\n")
  assert "fusion (" not in capsys.readouterr().out   # no accuracy printed


def test_stream_weights_follow_the_same_rule(tmp_path, capsys, monkeypatch):
  streams = [f"{m}:" + make_run(tmp_path, m, A, LABELS) for m in ("j", "b")]
  status, err = run_cli(capsys, monkeypatch, fuse, f"--streams={','.join(streams)}",
                        "--stream_weights=1,nan")
  assert (status, err) == (2, "error: --stream_weights=1,nan: every weight must be a finite "
                              "number >= 0\n")


def test_runs_evaluated_on_different_datasets_are_refused(tmp_path, capsys, monkeypatch):
  a = make_run(tmp_path, "a", A, LABELS, results={"data_store": store("a", "/one/synthetic/1.0.0")})
  b = make_run(tmp_path, "b", B, LABELS, results={"data_store": store("b", "/two/synthetic/1.0.0")})
  status, err = run_cli(capsys, monkeypatch, fuse, f"--workdirs={a},{b}")
  assert status == 2
  assert err == (f"error: cannot fuse {a} and {b}: evaluated on different datasets ({a}: dataset "
                 "'synthetic' at /one/synthetic/1.0.0, {'train': 9, 'test': 3} samples, "
                 f"fingerprint aaaaaaaaaaaa; {b}: dataset 'synthetic' at /two/synthetic/1.0.0, "
                 "{'train': 9, 'test': 3} samples, fingerprint bbbbbbbbbbbb)\n")


def test_same_dataset_at_another_path_fuses(tmp_path):
  a = make_run(tmp_path, "a", A, LABELS, results={"data_store": store("a", "/one")})
  b = make_run(tmp_path, "b", B, LABELS, results={"data_store": store("a", "/two")})
  assert fuse.run_fusion(workdirs=[a, b])["fused"]["top1"] == 1.0


# ----------------------------------------------------------------------------- experiments.sweep
def sweep_cell(root, name, scores=A, results=None, times=None, config=None):
  workdir = make_run(root, name, scores, LABELS, config=config,
                     results=results or dict(budget_results(.4), data_store=store("a")))
  if times is not None:
    with open(f"{workdir}/sweep_times.json", "w") as f:
      f.write(times)
  return workdir


def test_root_that_is_a_file_is_one_line(tmp_path, capsys, monkeypatch):
  root = tmp_path / "root"
  root.write_text("x")
  for flags in (["--table_only"], ["--dry_run"], []):
    status, err = run_cli(capsys, monkeypatch, sweep, f"--root={root}", *flags)
    assert (status, err) == (2, f"error: --root={root}: is a file; expected a directory for the "
                                "runs' workdirs and table.md\n")


def test_truncated_results_json_is_one_line_before_any_launch(tmp_path, capsys, monkeypatch):
  sweep_cell(tmp_path, "stgcn_s0.6")
  (tmp_path / "stgcn_s0.6" / "results.json").write_text("{")
  launched = []
  monkeypatch.setattr(sweep.subprocess, "Popen", lambda *a, **k: launched.append(a))
  status, err = run_cli(capsys, monkeypatch, sweep, CONFIG, f"--root={tmp_path}",
                        "--backbones=stgcn", "--sparsities=0.6,0.8", "--dense_seeds=0")
  assert status == 2 and not launched
  assert err.startswith(f"error: {tmp_path}/stgcn_s0.6/results.json: line 1: not valid JSON (")
  assert "move it away and run the sweep again" in err


def test_results_without_scores_is_one_line(tmp_path, capsys, monkeypatch):
  sweep_cell(tmp_path, "stgcn_s0.6")
  (tmp_path / "stgcn_s0.6" / "scores.npz").unlink()
  status, err = run_cli(capsys, monkeypatch, sweep, CONFIG, f"--root={tmp_path}", "--table_only",
                        "--backbones=stgcn", "--sparsities=0.6")
  assert status == 2
  assert err.startswith(f"error: cell stgcn_s0.6: {tmp_path}/stgcn_s0.6/scores.npz: not found")
  assert f"move {tmp_path}/stgcn_s0.6/results.json away and run the sweep again" in err


@pytest.mark.parametrize("times", ['[{"wall_s": 3', '{"wall_s": 3}', '[{"wall_s": "3"}]',
                                   '\xff'])
def test_damaged_sweep_times_is_one_line(tmp_path, capsys, monkeypatch, times):
  sweep_cell(tmp_path, "stgcn_s0.6", times=times)
  status, err = run_cli(capsys, monkeypatch, sweep, CONFIG, f"--root={tmp_path}", "--table_only",
                        "--backbones=stgcn", "--sparsities=0.6")
  assert status == 2 and err.startswith(f"error: {tmp_path}/stgcn_s0.6/sweep_times.json: ")
  assert "move it away" in err


@pytest.mark.parametrize("flag, message", [
    ("--backbones=stgcn,ctrgcn,stgcn", "--backbones=stgcn,ctrgcn,stgcn: stgcn is given 2 times "
                                       "(stgcn, stgcn); give each value once"),
    ("--sparsities=0.6,0.8,0.60,.6", "--sparsities=0.6,0.8,0.60,.6: 0.6 is given 3 times "
                                     "(0.6, 0.60, .6); give each value once"),
])
def test_duplicate_grid_values_are_refused(tmp_path, capsys, monkeypatch, flag, message):
  status, err = run_cli(capsys, monkeypatch, sweep, CONFIG, f"--root={tmp_path}", "--dry_run",
                        flag)
  assert (status, err) == (2, f"error: {message}\n")
  assert capsys.readouterr().out == ""   # not one command planned


def test_table_of_a_cell_whose_model_lost_its_variables(tmp_path, capsys, monkeypatch):
  workdir = sweep_cell(tmp_path, "stgcn_s0.6")
  save_tiny_model(f"{workdir}/model")
  shutil.rmtree(f"{workdir}/model/variables")
  status, err = run_cli(capsys, monkeypatch, sweep, CONFIG, f"--root={tmp_path}", "--table_only",
                        "--backbones=stgcn", "--sparsities=0.6")
  assert status == 2 and err.startswith(f"error: cell stgcn_s0.6: {workdir}/model: the saved "
                                        "model of")
