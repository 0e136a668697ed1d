"""stgcn_jax.runtime: the XLA flags and the tcmalloc preload of the programs that train."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stgcn_jax import runtime

REPO = Path(__file__).resolve().parents[1]


def test_allocator_env_preloads_the_named_library(tmp_path, monkeypatch):
  lib = tmp_path / "libtcmalloc_minimal.so.4"
  lib.write_bytes(b"")
  monkeypatch.setenv(runtime.TCMALLOC_ENV, str(lib))
  env = runtime.allocator_env({"LD_PRELOAD": "/other.so", "PATH": "/bin"})
  assert env["LD_PRELOAD"] == f"{lib} /other.so" and env["PATH"] == "/bin"
  assert int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 1 << 40
  # Already preloaded: unchanged.
  assert runtime.allocator_env({"LD_PRELOAD": str(lib)})["LD_PRELOAD"] == str(lib)


@pytest.mark.parametrize("value", ["0", "off", ""])
def test_allocator_env_can_be_turned_off(monkeypatch, value):
  monkeypatch.setenv(runtime.TCMALLOC_ENV, value)
  assert runtime.tcmalloc_path() is None
  assert runtime.allocator_env({"A": "1"}) == {"A": "1"}


def test_a_missing_library_is_one_error_line(tmp_path):
  env = dict(os.environ, **{runtime.TCMALLOC_ENV: str(tmp_path / "nope.so")})
  for name in ("STGCN_JAX_ALLOCATOR_SET", "LD_PRELOAD"):   # as a fresh shell starts it
    env.pop(name, None)
  proc = subprocess.run([sys.executable, "-m", "experiments.run", "--help"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      f"error: ${runtime.TCMALLOC_ENV}={tmp_path / 'nope.so'}: no such file (expected the path "
      "of libtcmalloc_minimal.so.4, or 0 to turn preloading off)"]


@pytest.mark.skipif(runtime.tcmalloc_path() is None, reason="no tcmalloc on this machine")
def test_run_reexecutes_once_under_tcmalloc(tmp_path):
  code = ("from stgcn_jax import runtime; import sys; "
          "runtime.reexec_with_tcmalloc('runtime_probe', []); "
          "print('loaded', runtime.tcmalloc_loaded())")
  (tmp_path / "runtime_probe.py").write_text(code)
  env = {k: v for k, v in os.environ.items()
         if k not in ("LD_PRELOAD", "STGCN_JAX_ALLOCATOR_SET", runtime.TCMALLOC_ENV)}
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
  proc = subprocess.run([sys.executable, "-m", "runtime_probe"], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines() == ["loaded True"]   # once: the guard stops a second exec


def test_importing_the_library_starts_no_backend():
  """Importing the library (and the training program) must not start XLA: flags set by
  ``runtime.configure_xla()`` and ``jax.distributed.initialize()`` only act before that."""
  code = ("import importlib, pkgutil\n"
          "import jax._src.xla_bridge as xb\n"
          "import stgcn_jax, experiments.run\n"
          "for m in pkgutil.walk_packages(stgcn_jax.__path__, 'stgcn_jax.'):\n"
          "  importlib.import_module(m.name)\n"
          "print(sorted(xb._backends))\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=REPO)
  assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_threads_pin_the_process_and_single_thread_eigen():
  code = ("import os; from stgcn_jax import runtime; cpus = runtime.limit_cpu_threads(1); "
          "print(cpus == sorted(os.sched_getaffinity(0)), len(cpus), os.environ['XLA_FLAGS'])")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=REPO, check=True, timeout=120).stdout.split()
  assert out == ["True", "1", "--xla_cpu_multi_thread_eigen=false"]
