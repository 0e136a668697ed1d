"""experiments.pyskl_twin: the stream is the batches and learning rates a dense run trains on (its
seeds, schedule and test clips, checked against the run's own records); the torch side trains on it
and resumes where pyskl and torch are there (``$STGCN_JAX_TORCH_PYTHON``,
``$STGCN_JAX_PYSKL_SRC``)."""

import json
import subprocess

import numpy as np
import pytest

from conftest import REPO, TEST_CONFIG
from experiments import bench_vs_pyskl, pyskl_twin, run as run_cli
from stgcn_jax import cli, data

FLAGS = [TEST_CONFIG, "--config.loop.progress_bar=False", "--epochs=2", "--backbone=ctrgcn"]


@pytest.fixture(scope="module")
def stream(finished_run, tmp_path_factory):
  """The twin's stream of the session's finished run (the generator at 0.8: the stream does not
  depend on the mode, so the check needs no dense run of its own): ``(run, stream dir, data)``."""
  run, data_dir = finished_run
  argv = [TEST_CONFIG, f"--data_dir={data_dir}", "--config.loop.progress_bar=False",
          "--sparsity=0.8", "--epochs=3", "--warmup_epochs=1"]          # conftest.run_experiment's
  config = run_cli._config(run_cli._parse(argv))  # pylint: disable=protected-access
  out = tmp_path_factory.mktemp("twin") / "stream"
  pyskl_twin.write_stream(config, str(out), torch_seed=0)
  return run, out, data_dir


def test_the_stream_is_what_the_run_trained_on(stream):
  run, out, data_dir = stream
  meta = json.loads((out / "meta.json").read_text())
  config = json.loads((run / "config.json").read_text())
  assert meta["seeds"] == config["seeds"]
  assert (meta["steps_per_epoch"], meta["num_epochs"]) == (config["optim"]["steps_per_epoch"], 3)
  rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  logged = {r["step"]: r["lr"] for r in rows if r.get("split") == "train"}
  assert max(logged) == len(meta["lrs"]) and len(logged) >= 3   # the last step logged, and more
  for step, lr in logged.items():   # row k: the k-th update (float32, jitted: to the last bits)
    assert meta["lrs"][step - 1] == pytest.approx(lr, rel=1e-5, abs=1e-9), step
  y = np.load(out / "train_y.npy")
  x = np.load(out / "train_x.npy", mmap_mode="r")
  assert x.shape == (len(meta["lrs"]), *meta["train_shape"]) and np.isfinite(x[-1]).all()
  train_labels = np.sort([r["label"] for r in data.load("synthetic", str(data_dir), "train")])
  spe, batch = meta["steps_per_epoch"], meta["train_shape"][0]
  for epoch in range(3):   # each epoch draws every sample at most once (the last batch dropped)
    labels = np.sort(y[epoch * spe:(epoch + 1) * spe].reshape(-1))
    assert len(labels) == spe * batch and np.all(np.isin(labels, train_labels))
  assert not np.array_equal(y[:spe], y[spe:2 * spe])   # reshuffled every epoch
  test = data.load("synthetic", str(data_dir), "test")
  np.testing.assert_array_equal(np.load(out / "test_y.npy"),
                                [test[i]["label"] for i in range(len(test))])


@pytest.mark.parametrize("flag,message", [
    ("--sparsity=0.8", "dense models only"), ("--mode=lth", "dense models only"),
    ("""--config.model.options={"tcn_dropout": 0.1}""", "tcn_dropout: the twin builds pyskl's")])
def test_a_run_pyskl_cannot_train_is_one_error_line(tmp_path, capsys, flag, message):
  dense = [] if flag.startswith(("--sparsity=", "--mode=")) else ["--mode=dense"]
  flags = [*FLAGS, *dense, flag]
  assert cli.run(pyskl_twin.main, [*flags, f"--workdir={tmp_path}", "--stream_only"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and message in err[0], err
  assert not list(tmp_path.iterdir())


def test_without_the_pyskl_side_it_says_why_before_writing(tmp_path, monkeypatch, capsys):
  for name in (bench_vs_pyskl.TORCH_PYTHON_ENV, bench_vs_pyskl.PYSKL_SRC_ENV):
    monkeypatch.delenv(name, raising=False)
  assert cli.run(pyskl_twin.main, [*FLAGS, "--mode=dense", f"--workdir={tmp_path / 'w'}"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: the pyskl side is not available") and "--pyskl_src" in err, err
  assert not (tmp_path / "w").exists()


def test_the_torch_side_trains_tests_and_resumes(stream, tmp_path):
  side = bench_vs_pyskl.resolve(None, None)
  if isinstance(side, str):
    pytest.skip(f"the pyskl side is not available here: {side}")
  _, out, _ = stream
  cmd = [side.python, str(REPO / "experiments" / "pyskl_twin_torch.py"), f"--stream={out}", f"--pyskl_src={side.src}", f"--out={tmp_path}"]
  first = subprocess.run(cmd, capture_output=True, text=True, check=False)
  assert first.returncode == 0, first.stderr[-2000:]
  results = json.loads((tmp_path / "results.json").read_text())
  assert 0.0 <= results["top1"] <= results["top5"] <= 1.0 and results["num_samples"] == 20
  epochs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [e["epoch"] for e in epochs] == [1, 2, 3] and all(np.isfinite(e["loss"]) for e in epochs)
  (tmp_path / "results.json").unlink()      # as if stopped after the last epoch's checkpoint
  again = subprocess.run(cmd, capture_output=True, text=True, check=False)
  assert again.returncode == 0 and "resumed from" in again.stdout, again.stderr[-2000:]
  assert json.loads((tmp_path / "results.json").read_text())["top1"] == results["top1"]


def test_a_workdir_of_another_command_is_refused(finished_run, tmp_path, capsys):
  data_dir = finished_run[1]
  work = tmp_path / "twin"
  same = [*FLAGS, "--mode=dense", f"--data_dir={data_dir}", f"--workdir={work}", "--stream_only"]
  assert cli.run(pyskl_twin.main, same) == 0              # writes the stream
  assert (work / "stream" / "meta.json").is_file()
  assert cli.run(pyskl_twin.main, same) == 0              # the same command reuses it
  assert cli.run(pyskl_twin.main, [*same, "--seed=5"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "holds the stream of another command (it differs in seed)" in err[0]
