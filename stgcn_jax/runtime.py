"""Process-wide settings that the entry points apply explicitly; importing the library changes none.

>>> from stgcn_jax import runtime
>>> runtime.configure_xla()   # first thing in a program's main(), before any JAX computation

The memory allocator. XLA:CPU allocates each step's temporary buffers (hundreds of MB for a
full-size backbone) afresh; glibc's malloc serves allocations that large with ``mmap`` and returns
them with ``munmap``, so every step faults its working set in again: 246,000 minor page faults and
0.33 s of system time per full-size CTR-GCN step at the NW-UCLA shape on one core, 19 % of the step
(``experiments/BENCHMARKS.md``). tcmalloc keeps freed pages for reuse: no faults, no system time,
the same numbers. A process cannot change its allocator once it runs, so the programs that train
(``experiments.run``, and every run ``experiments.sweep`` starts) start under tcmalloc when the
library is on the machine (``apt-get install libtcmalloc-minimal4`` on Debian/Ubuntu) through
``LD_PRELOAD``: ``run`` re-executes itself once, ``sweep`` sets it for its children.
``STGCN_JAX_TCMALLOC=0`` turns this off; ``STGCN_JAX_TCMALLOC=PATH`` names the library.

Threads. XLA:CPU has no "use N threads" option: it sizes its thread pools from the CPUs the process
may run on when its backend starts. :func:`limit_cpu_threads` (``experiments.bench --threads``) pins
the process to N CPUs before that, as ``taskset -c`` does from outside, and for N = 1 also turns off
Eigen's own multi-threading (``--xla_cpu_multi_thread_eigen=false``).
"""

from __future__ import annotations

import glob
import os
import sys

from stgcn_jax.errors import UserError

__all__ = ["configure_xla", "XLA_FLAGS", "tcmalloc_path", "allocator_env", "tcmalloc_loaded",
           "reexec_with_tcmalloc", "limit_cpu_threads"]

TCMALLOC_ENV = "STGCN_JAX_TCMALLOC"
_TCMALLOC_GLOBS = ("/usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4",
                   "/usr/lib*/libtcmalloc_minimal.so.4", "/usr/lib/*-linux-gnu/libtcmalloc.so.4", "/usr/lib*/libtcmalloc.so.4",
                   "/usr/local/lib/libtcmalloc_minimal.so.4")
# Set in the environment of a process started under tcmalloc, so that it never re-executes twice.
_REEXEC_GUARD = "STGCN_JAX_ALLOCATOR_SET"

# XLA:GPU aborts while compiling these models' train steps in its Triton GEMM fusion pass ("Check
# failed: subdim_size_accumulator == dim_size", seen with jax 0.11.2 on an H100 for all four
# backbones); cuBLAS GEMMs compile and run.
XLA_FLAGS = ("--xla_gpu_enable_triton_gemm=false",)


def configure_xla() -> str:
  """Adds :data:`XLA_FLAGS` to ``$XLA_FLAGS`` (a flag the user set there keeps the user's value)
  and returns the result. XLA reads the variable when its first backend starts, so call this before
  any JAX computation; afterwards it has no effect on the running process."""
  current = os.environ.get("XLA_FLAGS", "")
  extra = [f for f in XLA_FLAGS if f.split("=", 1)[0] not in current]
  if extra:
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [current, *extra]))
  return os.environ.get("XLA_FLAGS", "")


def limit_cpu_threads(threads: int) -> list[int]:
  """Pins every thread of this process to the first ``threads`` of the CPUs it may use (threads and
  child processes started later inherit the pinning) and returns them; with ``threads == 1`` adds
  ``--xla_cpu_multi_thread_eigen=false`` to ``$XLA_FLAGS``. Call it before any JAX computation:
  XLA:CPU sizes its thread pools from the pinning when its backend starts, and reads ``$XLA_FLAGS``
  then. Raises ``UserError`` when ``threads`` is below 1 or above the CPUs available."""
  if not hasattr(os, "sched_setaffinity"):
    raise UserError("pinning threads to CPUs needs Linux (os.sched_setaffinity)")
  allowed = sorted(os.sched_getaffinity(0))
  if not 1 <= threads <= len(allowed):
    raise UserError(f"expected 1 to {len(allowed)} threads (the CPUs this process may use: "
                    f"{allowed}), got {threads}")
  cpus = allowed[:threads]
  for task in os.listdir("/proc/self/task"):
    try:
      os.sched_setaffinity(int(task), cpus)
    except OSError:   # a thread that ended meanwhile
      pass
  if threads == 1 and "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join(
        filter(None, [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_multi_thread_eigen=false"]))
  return cpus


def tcmalloc_path() -> str | None:
  """The tcmalloc library to preload: ``$STGCN_JAX_TCMALLOC`` if it names a file ("0", "off" or
  "" turn preloading off), else the first of the usual install locations; None if none (or not
  Linux: ``LD_PRELOAD`` is a Linux/glibc mechanism)."""
  choice = os.environ.get(TCMALLOC_ENV)
  if choice is not None:
    if choice.strip().lower() in ("", "0", "off", "false", "no"):
      return None
    if not os.path.isfile(choice):
      raise FileNotFoundError(f"${TCMALLOC_ENV}={choice}: no such file (expected the path of "
                              "libtcmalloc_minimal.so.4, or 0 to turn preloading off)")
    return choice
  if not sys.platform.startswith("linux"):
    return None
  for pattern in _TCMALLOC_GLOBS:
    found = sorted(glob.glob(pattern))
    if found:
      return found[0]
  return None


def tcmalloc_loaded() -> bool:
  """Whether this process runs under tcmalloc (its library is mapped)."""
  try:
    with open("/proc/self/maps") as f:
      return "tcmalloc" in f.read()
  except OSError:
    return False


def allocator_env(env: dict | None = None) -> dict:
  """``env`` (default ``os.environ``) with tcmalloc added to ``LD_PRELOAD`` where it is found, for
  a child process that trains; unchanged where it is not, or already preloaded."""
  env = dict(os.environ if env is None else env)
  path = tcmalloc_path()
  preload = env.get("LD_PRELOAD", "")
  if path is None or "tcmalloc" in preload:
    return env
  env["LD_PRELOAD"] = " ".join(filter(None, [path, preload]))
  # gperftools reports every allocation over 1 GiB on stderr; a full-size step makes several.
  env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
  env[_REEXEC_GUARD] = "1"
  return env


def reexec_with_tcmalloc(module: str, argv: list[str]) -> None:
  """Replaces this process with ``python -m MODULE ARGV...`` under tcmalloc, once, when tcmalloc is
  on the machine and not loaded yet; returns (doing nothing) otherwise. Call it first thing in a
  program's ``if __name__ == "__main__"`` block, never from a library function or a test."""
  if os.environ.get(_REEXEC_GUARD) or tcmalloc_loaded():
    return
  try:
    env = allocator_env()
  except FileNotFoundError as err:
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(2) from None
  if env.get(_REEXEC_GUARD) != "1":
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)
