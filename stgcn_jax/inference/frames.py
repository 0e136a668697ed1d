"""One frame of a ``--stream``: a JSON line -> ``(persons, V, C)`` float64, by the converters' rules
(``parse_frame``, ``coordinate_bound``).

:func:`parse_frame` reads a line: a list of persons, each V joints of C numbers, or one person as
V x C. It refuses, with a UserError that says what was wrong and where (person, joint, value):
invalid JSON, JSON nested deeper than Python's parser can follow (a line of 100,000 brackets), a
value that is not a JSON number (a string, true / false or null is never read as a number) and a
frame of another shape. It then applies the converters' coordinate rule (``data_prep/README.md``,
"Bad input"): a joint with a NaN, infinite or out-of-range value becomes 0 (missing), and so does a
joint with a negative score when the data has a score channel. :func:`coordinate_bound` gives the
range: the format's own where the model's layout and ``img_shape`` tell it (100 m for NTU /
NW-UCLA 3D, 100 for Kinetics' normalised x, y and scores, 10 x the image side for 2D pixels), else
1e6; never beyond float32.
"""

from __future__ import annotations

import json
import math

import numpy as np

from stgcn_jax.data.records import FLOAT32_MAX
from stgcn_jax.errors import UserError

__all__ = ["MAX_LINE_CHARS", "coordinate_bound", "parse_frame"]

MAX_LINE_CHARS = 16 << 20       # one frame is a few kB of text
_METRES_LAYOUTS = ("nturgb+d", "nw-ucla")
_METRES, _NORMALISED, _PIXEL_FACTOR, _UNKNOWN = 100.0, 100.0, 10, 1e6


def coordinate_bound(layout_name: str, channels, img_shape=(0, 0)) -> float:
  """The largest |value| a stream frame may hold before its joint counts as missing."""
  if "z" in channels:
    return _METRES if layout_name in _METRES_LAYOUTS else _UNKNOWN
  side = max(int(s) for s in img_shape) if len(img_shape) else 0
  if tuple(img_shape) == (1, 1):
    return _NORMALISED
  return float(_PIXEL_FACTOR * side) if side > 0 else _UNKNOWN


def _short(value) -> str:
  text = json.dumps(value) if isinstance(value, (list, dict, str, bool)) or value is None \
      else repr(value)
  return text if len(text) <= 40 else text[:37] + "..."


def _number(x, where: str) -> float:
  if type(x) is float:
    return x
  if type(x) is int:
    try:
      return float(x)
    except OverflowError:           # an integer beyond float64: unusable like inf (repaired)
      return math.inf if x > 0 else -math.inf
  raise UserError(f"{where}: {_short(x)} is not a number")


def _values(obj, num_joints: int, channels: int) -> np.ndarray:
  """The ``(persons, V, C)`` numbers of a decoded frame, its structure checked level by level."""
  if not isinstance(obj, list):
    raise UserError(f"expected a list of persons (each {num_joints} joints x {channels} numbers), "
                    f"got {_short(obj)}")
  one_person = bool(obj) and isinstance(obj[0], list) and bool(obj[0]) and \
      not isinstance(obj[0][0], list)
  persons = [obj] if one_person else obj
  out = np.zeros((len(persons), num_joints, channels))
  for p, person in enumerate(persons):
    if not isinstance(person, list) or len(person) != num_joints:
      got = f"{len(person)} joints" if isinstance(person, list) else _short(person)
      raise UserError(f"person {p}: expected {num_joints} joints of {channels} numbers, got {got}")
    for v, joint in enumerate(person):
      if not isinstance(joint, list) or len(joint) != channels:
        raise UserError(f"person {p}, joint {v}: expected {channels} numbers, got "
                        f"{_short(joint)}")
      for c, x in enumerate(joint):
        out[p, v, c] = _number(x, f"person {p}, joint {v}, value {c}")
  return out


def _repair(frame: np.ndarray, max_abs: float, has_score: bool):
  """The coordinate rule on one frame: ``(frame, message or None)``."""
  bound = min(max_abs, FLOAT32_MAX)
  with np.errstate(invalid="ignore"):
    usable = np.isfinite(frame) & (np.abs(frame) <= bound)
    bad = ~usable.all(axis=-1)                                   # (persons, V)
    negative = (frame[..., -1] < 0) & ~bad if has_score else np.zeros_like(bad)
  if not (bad.any() or negative.any()):
    return frame, None
  kinds = []
  if bad.any():
    kinds.append(f"{int(bad.sum())} joint(s) with a value that is NaN, infinite or beyond "
                 f"+-{bound:g}")
  if negative.any():
    kinds.append(f"{int(negative.sum())} joint(s) with a negative score")
  p, v = (int(i[0]) for i in np.nonzero(bad | negative))
  first = np.array2string(frame[p, v], precision=4)
  frame = np.where((bad | negative)[..., None], 0.0, frame)
  return frame, f"{' and '.join(kinds)} set to 0 (first: person {p}, joint {v}: {first})"


def parse_frame(line: str, num_joints: int, channels: int, *, max_abs: float = FLOAT32_MAX,
                has_score: bool = False) -> tuple[np.ndarray, str | None]:
  """A JSON line -> ``((persons, V, C) float64, repair message or None)``; persons may be 0.

  Raises:
    UserError: the line is not a frame (the message says what and where).
  """
  if len(line) > MAX_LINE_CHARS:
    raise UserError(f"{len(line):,} characters; a frame is at most {MAX_LINE_CHARS:,}")
  try:
    obj = json.loads(line)
  except RecursionError:
    raise UserError("JSON nested too deeply; expected persons x joints x values") from None
  except ValueError as err:
    raise UserError(f"not valid JSON ({str(err)[:120]})") from None
  return _repair(_values(obj, num_joints, channels), max_abs, has_score)
