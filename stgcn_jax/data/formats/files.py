"""Safe readers of raw files and the coordinate rule, shared by every format's parser.

Only regular files are read (a FIFO is refused, not waited on), with a size bound; a file that
cannot be used is one :class:`DataError` (or :class:`Unreadable`) naming it. ``clean_keypoint`` is
the converters' coordinate rule: NaN, inf and out-of-range joints become 0 and are reported as
repairs; a sequence with no joint left is rejected as ``all_zero``."""

from __future__ import annotations

import json
import os
import stat

from collections.abc import Callable

import numpy as np

from stgcn_jax.data.records import (FLOAT32_MAX, ConversionReport, DataError, all_zero_message,
                                    repair_non_finite)

__all__ = ["Unreadable", "require_path", "check_regular_file", "read_regular_file", "read_json",
           "finite_or_repair", "clean_keypoint"]


class Unreadable(DataError):
  """A sample that is not a regular file (``reason`` ``not_a_file``) or cannot be read
  (``unreadable``); the report counts it under ``reason``."""

  def __init__(self, message: str, reason: str = "unreadable"):
    super().__init__(message)
    self.reason = reason


def require_path(path: str, what: str, *, is_dir: bool | None = None) -> str:
  """``path`` if it exists (and is a directory / file as asked), else one clear DataError."""
  if not os.path.exists(path):
    raise DataError(f"{what} {path!r} does not exist")
  if is_dir is True and not os.path.isdir(path):
    raise DataError(f"{what} {path!r} is not a directory")
  if is_dir is False and not os.path.isfile(path):
    raise DataError(f"{what} {path!r} is not a file")
  return path


def _file_kind(mode: int) -> str:
  for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                     (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                     (stat.S_ISBLK, "a block device")):
    if test(mode):
      return kind
  return "not a regular file"


def _os_error(path: str, err: OSError) -> Unreadable:
  if isinstance(err, FileNotFoundError) and os.path.islink(path):
    return Unreadable(f"{path}: dangling symbolic link (its target {os.readlink(path)!r} does not "
                      "exist)", "not_a_file")
  return Unreadable(f"{path}: cannot read it ({err.strerror or err})")


def _not_regular(path: str, mode: int, what: str) -> Unreadable | None:
  if stat.S_ISREG(mode):
    return None
  return Unreadable(f"{path}: is {_file_kind(mode)}, not a regular {what}", "not_a_file")


def check_regular_file(path: str, what: str) -> None:
  """Raises :class:`Unreadable` naming ``path`` unless it is (a link to) a regular file; ``what``
  names the expected file in the message (``".skeleton file"``)."""
  try:
    mode = os.stat(path).st_mode
  except OSError as err:
    raise _os_error(path, err) from None
  error = _not_regular(path, mode, what)
  if error is not None:
    raise error


def read_regular_file(path: str, what: str, max_bytes: int) -> bytes:
  """The content of the regular file ``path``; :class:`Unreadable` naming it for anything else.

  A directory, FIFO, device, socket or dangling link is ``not_a_file``; a read error or more than
  ``max_bytes`` is ``unreadable``; ``what`` names the expected file in the messages (``"JSON
  file"``). The file is opened without blocking and checked on the open descriptor, so a FIFO (or
  a file swapped for one) is rejected instead of waiting forever for a writer, and at most
  ``max_bytes + 1`` bytes are read (also from a file that grows meanwhile).
  """
  try:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
  except OSError as err:
    raise _os_error(path, err) from None
  too_large = Unreadable(f"{path}: larger than the limit of {max_bytes} bytes for a {what}")
  try:
    info = os.fstat(fd)
    error = _not_regular(path, info.st_mode, what)
    if error is not None:
      raise error
    if info.st_size > max_bytes:
      raise too_large
    raw = bytearray()
    while len(raw) <= max_bytes:
      chunk = os.read(fd, min(2**20, max_bytes + 1 - len(raw)))
      if not chunk:
        break
      raw += chunk
  except OSError as err:
    raise _os_error(path, err) from None
  finally:
    os.close(fd)
  if len(raw) > max_bytes:
    raise too_large
  return bytes(raw)


def read_json(path: str, what: str, max_bytes: int, *, encoding: str = "utf-8",
              object_pairs_hook: Callable | None = None):
  """The JSON value in the regular file ``path`` (:func:`read_regular_file`, then decoded with
  ``encoding``); one DataError naming the file (and line) for anything else."""
  raw = read_regular_file(path, what, max_bytes)
  try:
    return json.loads(raw.decode(encoding), object_pairs_hook=object_pairs_hook)
  except UnicodeDecodeError as err:
    raise DataError(f"{path}: not UTF-8 text (byte {err.start})") from None
  except json.JSONDecodeError as err:
    raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg} at column "
                    f"{err.colno})") from None
  except ValueError as err:         # e.g. an integer with more digits than Python converts
    raise DataError(f"{path}: malformed JSON ({err})") from None
  except RecursionError:
    raise DataError(f"{path}: malformed JSON (nested too deeply)") from None


def finite_or_repair(keypoint: np.ndarray, where: str, report: ConversionReport,
                     max_abs: float = FLOAT32_MAX) -> np.ndarray:
  """Applies the coordinate repair rule (NaN, inf, beyond float32 or beyond ``max_abs`` ->
  the joint becomes 0, missing) and notes the repair in ``report``."""
  keypoint, message = repair_non_finite(keypoint, where, max_abs)
  if message is not None:
    report.repair("bad_coordinate", message)
  return keypoint


def clean_keypoint(keypoint: np.ndarray, where: str, report: ConversionReport,
                   max_abs: float = FLOAT32_MAX) -> np.ndarray | None:
  """The coordinate repair rule of :func:`finite_or_repair`, then the all-zero rule: ``None``
  (and the sample rejected in ``report``, named) when no joint is left in any frame. A sample is
  counted once: as rejected when the repair leaves nothing, else as repaired if it was fixed."""
  repaired, message = repair_non_finite(keypoint, where, max_abs)
  empty = all_zero_message(repaired, where)
  if empty is not None:
    report.reject("all_zero", empty if message is None else f"{empty} after the repair: {message}")
    return None
  if message is not None:
    report.repair("bad_coordinate", message)
  return repaired
