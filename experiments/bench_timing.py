"""Machine facts and timing helpers of the benchmarks (``experiments.bench``, ``bench_deploy``).

The CPU model, the share of CPU time other processes take during a run (``ContentionMeter``: the
machine is shared), the peak memory, wall times of blocked calls, compile times with XLA's cost and
memory analyses, and the machine's dense-matmul rate (the "peak" the achieved GFLOP/s are
compared with).
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from typing import Any, Callable

import jax

__all__ = ["cpu_model", "ContentionMeter", "peak_memory_bytes", "time_calls", "compile_jitted",
           "matmul_peak_gflops"]


# ----------------------------------------------------------------------------- machine facts


def cpu_model() -> str:
  """The CPU model name from ``/proc/cpuinfo`` (or ``platform.processor()``)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def _cpu_busy_jiffies() -> tuple[float, float] | None:
  """(busy, total) CPU jiffies of the whole machine from ``/proc/stat``."""
  try:
    with open("/proc/stat") as f:
      fields = [float(v) for v in f.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
  return sum(fields) - idle, sum(fields)


class ContentionMeter:
  """The share of the machine's CPU time that *other* processes used between start and stop."""

  def __init__(self):
    self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    self._start = None

  def start(self):
    t = os.times()
    self._start = (_cpu_busy_jiffies(), t.user + t.system + t.children_user + t.children_system)
    return self

  def stop(self) -> float | None:
    """Other processes' CPU time / (wall x cores) over the interval, or None if unknown."""
    now = _cpu_busy_jiffies()
    if now is None or self._start[0] is None:
      return None
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system - self._start[1]
    busy = (now[0] - self._start[0][0]) / self._hz
    total = (now[1] - self._start[0][1]) / self._hz
    return max(0.0, busy - own) / total if total > 0 else None


def peak_memory_bytes() -> tuple[int | None, str]:
  """Peak memory: the device's ``peak_bytes_in_use`` where reported, else the process's max RSS."""
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(rss * (1 if sys.platform == "darwin" else 1024)), "process peak RSS (cumulative)"


# ----------------------------------------------------------------------------- timing helpers


def time_calls(fn: Callable[[], Any], steps: int, warmup: int = 1,
               usage: dict | None = None) -> list[float]:
  """Wall times of ``steps`` calls of ``fn`` (each blocked until ready) after ``warmup`` calls;
  ``usage``, if given, receives the process's user and system CPU seconds and minor page faults
  per timed call (``getrusage``: every thread of the process, so XLA's too)."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  before = resource.getrusage(resource.RUSAGE_SELF)
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  after = resource.getrusage(resource.RUSAGE_SELF)
  if usage is not None and steps:
    usage.update(user_s=(after.ru_utime - before.ru_utime) / steps,
                 sys_s=(after.ru_stime - before.ru_stime) / steps,
                 minor_faults=(after.ru_minflt - before.ru_minflt) / steps)
  return times


def compile_jitted(jitted, *args) -> tuple[Any, float, dict[str, Any]]:
  """(compiled, compile seconds, {flops, memory analysis}) of ``jitted`` at ``args``."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  seconds = time.perf_counter() - start
  info: dict[str, Any] = {"flops": None, "memory": None}
  try:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else None
    if cost and cost.get("flops", -1) > 0:
      info["flops"] = float(cost["flops"])
  except Exception:  # pylint: disable=broad-except  # some backends have no cost model
    pass
  try:
    mem = compiled.memory_analysis()
    if mem is not None:
      info["memory"] = {k: int(getattr(mem, f"{k}_size_in_bytes"))
                        for k in ("argument", "output", "temp", "alias")}
  except Exception:  # pylint: disable=broad-except
    pass
  return compiled, seconds, info


def matmul_peak_gflops(n: int, steps: int, dtype) -> float:
  """GFLOP/s of a jitted ``(n x n) @ (n x n)`` product: the machine's dense-matmul rate."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  f = jax.jit(lambda a, b: a @ b)
  times = time_calls(lambda: f(a, b), max(steps, 5), warmup=2)
  return 2 * n ** 3 / min(times) / 1e9
