"""The files the sweep reads in each cell's workdir: the run's ``results.json`` (the table's row)
and ``sweep_times.json`` (the wall time and exit status of every launch of the cell).

They are checked before any run is launched (:func:`check_cells`), so a damaged file stops the
sweep before hours of training instead of at the table; each problem is one :class:`SweepError`
naming the file, the field, what was expected and what to do.
"""

from __future__ import annotations

import json
import os

from stgcn_jax import atomic
from stgcn_jax.errors import UserError
from stgcn_jax.run_files import is_number, read_json
from stgcn_jax.scores import FusionError

__all__ = ["SweepError", "add_time", "check_cells", "check_root", "read_results", "read_times",
           "times_path", "wall_seconds"]

# The launches whose time counts: the finished one and those stopped to be resumed (SIGINT,
# SIGTERM), not those that crashed (their work was lost to the last checkpoint).
_COUNTED = (0, -2, -15)


class SweepError(UserError):
  """A sweep that cannot start or finish (a bad grid, a damaged file); one line."""


def _integer(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def times_path(workdir: str) -> str:
  return os.path.join(workdir, "sweep_times.json")


def read_times(workdir: str) -> list[dict]:
  """The launches recorded in ``sweep_times.json`` (``[]`` when there is none yet)."""
  path = times_path(workdir)
  if not os.path.lexists(path):
    return []
  fix = "move it away (the cell's wall time then counts from the next launch)"
  try:
    with open(path, "rb") as f:
      times = json.loads(f.read().decode("utf-8"))
  except OSError as err:
    raise SweepError(f"{path}: cannot read it ({err.strerror or err}); {fix}") from None
  except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, truncated
    raise SweepError(f"{path}: not valid JSON ({str(err)[:120]}); {fix}") from None
  if not isinstance(times, list):
    raise SweepError(f"{path}: expected a JSON list of launches, got {type(times).__name__}; "
                     f"{fix}")
  for i, entry in enumerate(times):
    if not (isinstance(entry, dict) and is_number(entry.get("wall_s")) and entry["wall_s"] >= 0
            and _integer(entry.get("returncode"))):
      raise SweepError(f"{path}: launch {i} is {entry!r}; expected {{\"wall_s\": seconds >= 0, "
                       f"\"returncode\": an integer}}; {fix}")
  return times


def add_time(workdir: str, seconds: float, rc: int) -> None:
  """Accumulates the wall time of every launch of a cell (a resumed run has several)."""
  times = read_times(workdir) + [{"wall_s": seconds, "returncode": rc}]
  with atomic.atomic_open(times_path(workdir)) as f:
    json.dump(times, f)


def wall_seconds(workdir: str) -> float | None:
  """Seconds of the launches that trained: the finished one and those stopped to be resumed
  (SIGINT/SIGTERM), not those that crashed (their work was lost to the last checkpoint)."""
  if not os.path.lexists(times_path(workdir)):
    return None
  return sum(t["wall_s"] for t in read_times(workdir) if t["returncode"] in _COUNTED)


def read_results(path: str) -> dict:
  """A cell's ``results.json`` with the fields the table reads checked: top1, top5 and
  mean_class_accuracy (numbers), prunable_sparsity (a number, if present) and hardware."""
  fix = ("move it away and run the sweep again: the cell is then evaluated again from its "
         "checkpoints")
  try:
    res = read_json(path)
  except FusionError as err:
    raise SweepError(f"{err}; {fix}") from None
  for key in ("top1", "top5", "mean_class_accuracy", "prunable_sparsity"):
    value = res.get(key)
    if (key in res or key != "prunable_sparsity") and not (is_number(value) and 0 <= value <= 1):
      raise SweepError(f"{path}: {key!r} is {value!r}; expected a fraction in [0, 1]; {fix}")
  hw = res.get("hardware")
  if hw and not (isinstance(hw, dict) and isinstance(hw.get("platform"), str)
                 and isinstance(hw.get("device_kind"), str) and _integer(hw.get("device_count"))
                 and (hw.get("cpu_count") is None or _integer(hw["cpu_count"]))):
    raise SweepError(f"{path}: 'hardware' is {hw!r}; expected {{platform, device_kind, "
                     f"device_count, cpu_count}} as experiments.run writes it; {fix}")
  return res


def check_root(root: str) -> None:
  """Refuses a ``--root`` that is (or lies under) a file, before anything is written."""
  problem = atomic.file_in_the_way(root)
  if problem:
    raise SweepError(f"--root={root}: {problem}; expected a directory for the runs' workdirs and "
                     "table.md")


def check_cells(root: str, names: list[str]) -> None:
  """Every cell's workdir is a directory (or absent), its log.txt a file, and its results.json and
  sweep_times.json read: checked before any run is launched."""
  for name in names:
    workdir = os.path.join(root, name)
    if not os.path.lexists(workdir):
      continue
    if not os.path.isdir(workdir):
      raise SweepError(f"{workdir}: is a file; expected the workdir of cell {name} (a directory)")
    log = os.path.join(workdir, "log.txt")
    if os.path.lexists(log) and not os.path.isfile(log):
      raise SweepError(f"{log}: not a regular file; expected the cell's log (move it away)")
    read_times(workdir)
    results = os.path.join(workdir, "results.json")
    if os.path.lexists(results):
      read_results(results)
