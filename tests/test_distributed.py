"""Two processes on JAX's multi-process runtime (one CPU device each) train and evaluate exactly as
one process with both devices; a killed process ends the other at once; the workdir resumes.

Every run is a subprocess with a deadline: on a timeout all of a leg's processes are killed and the
test fails at once. The legs share the session's persistent compilation cache (conftest; a cached
executable is the one XLA compiled, so results do not change).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from stgcn_jax import checkpoint, distributed

from conftest import REPO

CONFIG = f"--config={REPO / 'experiments' / 'configs' / 'default.py'}:test"
# A switch (generator, one warm-up epoch) and a validation every epoch; checkpoints at 2 and 4.
FLAGS = ("--sparsity=0.6", "--epochs=2", "--warmup_epochs=1", "--config.optim.steps_per_epoch=2",
         "--config.loop.eval_every_epochs=1", "--config.loop.progress_bar=False")
DEADLINE_S = 240      # one leg, on a loaded 2-core machine; a healthy leg takes under a minute
SUMMARY = ("top1", "top5", "mean_class_accuracy", "num_samples", "confusion_matrix",
           "prunable_sparsity", "nonzero_params", "without_precise_bn")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices=1) -> dict:
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _start(workdir, data_dir, process_id=None, port=None, devices=1):
  cmd = [sys.executable, "-m", "experiments.run", CONFIG, f"--workdir={workdir}",
         f"--data_dir={data_dir}", *FLAGS]
  if process_id is not None:
    cmd += [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
            f"--process_id={process_id}", "--peer_timeout=10", "--init_timeout=60"]
  return subprocess.Popen(cmd, cwd=REPO, env=_env(devices), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _launch_two(workdir, data_dir) -> list:
  port = _free_port()
  return [_start(workdir, data_dir, i, port) for i in range(2)]


def _finish(procs, deadline_s=DEADLINE_S) -> list:
  """Each process's (returncode, stdout, stderr); all are killed when one overruns."""
  end, outs = time.time() + deadline_s, []
  try:
    for p in procs:
      out, err = p.communicate(timeout=max(end - time.time(), 1))
      outs.append((p.returncode, out, err))
    return outs
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    outs = [p.communicate() for p in procs]
    pytest.fail(f"a process ran past {deadline_s}s; stderr tails: "
                f"{[err[-1500:] for _, err in outs]}")


def _succeed(procs) -> list:
  outs = _finish(procs)
  for i, (code, _, err) in enumerate(outs):
    assert code == 0, f"process {i}: {err[-3000:]}"
  return outs


def _params(workdir):
  return jax.tree.leaves(jax.tree.map(np.asarray, checkpoint.load_model(workdir / "model")[1]))


def _assert_same_run(a, b, atol: float) -> None:
  """The final parameters and test scores within ``atol`` (0: bit for bit), and the same
  results.json figures."""
  for x, y in zip(_params(a), _params(b)):
    np.testing.assert_allclose(x, y, rtol=0, atol=atol)
  sa, sb = np.load(a / "scores.npz"), np.load(b / "scores.npz")
  np.testing.assert_allclose(sa["scores"], sb["scores"], rtol=0, atol=atol)
  np.testing.assert_array_equal(sa["labels"], sb["labels"])
  ra = json.loads((a / "results.json").read_text())
  rb = json.loads((b / "results.json").read_text())
  assert {k: ra[k] for k in SUMMARY} == {k: rb[k] for k in SUMMARY}
  assert ra["best_by_val"] == rb["best_by_val"]


RUNTIME_END = "Terminating process because the JAX distributed service detected fatal errors"


def _kill_process_1_after_a_checkpoint(procs, workdir) -> str | None:
  """Kills process 1 once a checkpoint is written; process 0 must end by itself, soon: with one
  line (returned) if it was in a collective with the dead peer, else ended by JAX's runtime with
  its own message (``stgcn_jax.distributed``'s docstring: None is returned)."""
  ckpts, end = workdir / "checkpoints", time.time() + DEADLINE_S
  while not (ckpts.exists() and any(p.name.isdigit() for p in ckpts.iterdir())):
    if time.time() > end or any(p.poll() is not None for p in procs):
      for p in procs:
        p.kill()
      pytest.fail(f"no checkpoint before the kill: {[p.communicate()[1][-1500:] for p in procs]}")
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGKILL)
  t_kill = time.time()
  (code, _, err), _ = _finish(procs, deadline_s=60)
  assert time.time() - t_kill < 30, "process 0 outlived its peer by more than the peer timeout"
  if code == -signal.SIGABRT and RUNTIME_END in err:   # waiting outside a collective: the runtime
    return None
  assert code == 2 and "Traceback" not in err, (code, err[-2000:])
  return err.strip().splitlines()[-1]


def test_two_processes_equal_one_process_and_resume_after_a_kill(tmp_path):
  # One test, not several over a shared fixture: pytest-xdist would run the legs once per worker.
  # Each leg builds the built-in dataset on first use (on two processes: process 0, once).
  # The two-process run is killed after its first checkpoint and started again: the resumed run
  # must equal the uninterrupted one-process run (a resume on one process is bit for bit:
  # test_train.py).
  one, two = tmp_path / "one", tmp_path / "two"
  _succeed([_start(one, tmp_path / "data_one", devices=2)])
  # A killed process ends the other at once (one line, or JAX's runtime message when it waited
  # outside a collective); both started again finish the run.
  line = _kill_process_1_after_a_checkpoint(_launch_two(two, tmp_path / "data_two"), two)
  assert line is None or ("process 0 of 2 lost another process" in line and "resumes" in line)
  (_, out0, _), (_, out1, _) = _succeed(_launch_two(two, tmp_path / "data_two"))
  assert "resumed from" in out0
  _assert_same_run(one, two, atol=1e-6)
  r1, r2 = (json.loads((w / "results.json").read_text())["hardware"] for w in (one, two))
  assert (r1["process_count"], r2["process_count"], r2["device_count"]) == (1, 2, 2)
  # Process 0 alone prints and writes the plain files (every metrics record once, none of the
  # killed launch's records after its checkpoint).
  assert "test top-1" in out0 and "test top-1" not in out1 and "workdir:" not in out1
  log = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
  steps = [r["step"] for r in log if r["split"] == "train"]
  assert steps == sorted(set(steps)) and not list(two.glob("**/.*.tmp*"))


@pytest.mark.parametrize("flags,message", [
    (("--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=2"),
     "--process_id=2 is not below --num_processes=2"),
    (("--num_processes=2", "--process_id=0"), "need --coordinator_address"),
])
def test_launch_mistakes_end_with_one_clear_line(tmp_path, flags, message):
  result = subprocess.run([sys.executable, "-m", "experiments.run", CONFIG,
                           f"--workdir={tmp_path / 'w'}", *flags], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert message in result.stderr.strip().splitlines()[-1]
  assert not (tmp_path / "w").exists()


def test_launch_settings_come_from_the_environment_and_flags_win(monkeypatch):
  monkeypatch.setenv("STGCN_JAX_COORDINATOR", "10.0.0.1:1234")
  monkeypatch.setenv("STGCN_JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("STGCN_JAX_PROCESS_ID", "3")
  launch = distributed.Launch.resolve(process_id=1)
  assert (launch.coordinator_address, launch.num_processes, launch.process_id) == (
      "10.0.0.1:1234", 4, 1)
  monkeypatch.setenv("STGCN_JAX_PROCESS_ID", "last")
  with pytest.raises(distributed.DistributedError, match=r"\$STGCN_JAX_PROCESS_ID='last'"):
    distributed.Launch.resolve()
