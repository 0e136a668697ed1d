"""Atomic writes: a file is written under a temporary name beside it and renamed over the target
only when complete, so a crash never leaves a half-written results file, table or figure."""

from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["atomic_path", "atomic_open", "file_in_the_way"]


@contextlib.contextmanager
def atomic_path(path: str):
  """Yields a temporary path beside ``path`` (same suffix) to write to; renamed over ``path`` when
  the block ends without an exception, removed otherwise. The file gets the user's umask."""
  path = os.path.abspath(path)
  directory = os.path.dirname(path)
  os.makedirs(directory, exist_ok=True)
  suffix = os.path.splitext(path)[1]
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".tmp{suffix}",
                             dir=directory)
  os.close(fd)
  try:
    yield tmp
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs):
  """``open(path, mode)`` that replaces ``path`` only once the file is complete."""
  with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
    yield f


def file_in_the_way(directory: str) -> str | None:
  """Why ``directory`` cannot be (or become) a directory: ``"is a file"``, or ``"is a file (P is
  one)"`` when a file ``P`` lies on its path; None when it can."""
  probe = os.path.abspath(directory)
  while not os.path.lexists(probe):
    probe = os.path.dirname(probe)
  if os.path.isdir(probe):
    return None
  return "is a file" + ("" if probe == os.path.abspath(directory) else f" ({probe} is one)")
