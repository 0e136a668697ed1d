"""One pyskl / mmaction2 annotation -> one record: the per-annotation checks and repairs.

:func:`to_record` checks frame_dir, label, keypoint (and keypoint_score), total_frames and
img_shape, applies the coordinate rule and notes the repairs; the rules are listed in
:mod:`data_prep.pyskl`, the converter, which also checks the splits and the labels as a whole.
"""

from __future__ import annotations

import re
import reprlib

import numpy as np

from stgcn_jax.data.formats import files
from stgcn_jax import graph
from stgcn_jax.data import safe_pickle
from stgcn_jax.data.records import ConversionReport, DataError

MAX_PERSONS_WITHOUT_FRAMES = 10  # more persons than frames and more than this: (T, M, V, C)
MAX_IMG_SIDE = 1_000_000
MAX_ABS_UNKNOWN_UNITS = 1e6      # coordinate bound for 3D and 2D data of unknown units
PIXEL_BOUND_FACTOR = 10          # 2D pixel data: |coordinate| <= 10 x the image's longer side
SLACK_VALUES = 1 << 20           # numbers a pickle may hold beyond one per byte of the file
_MAX_NESTING = 8                 # keypoint nested lists deeper than this are not counted further
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_]*[A-Za-z0-9][A-Za-z0-9_]*$")
UNSPLIT = "train"                # the one split of a pickle without split information
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def short(value) -> str:
  """A repr of ``value`` short enough for one message line."""
  return _REPR.repr(value)


def is_label(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _real_array(value, where: str, field: str) -> np.ndarray:
  """``value`` (an ndarray or nested lists) as an array of real numbers, else DataError."""
  if isinstance(value, np.ndarray):
    array = value
  elif isinstance(value, (list, tuple)):
    try:
      array = np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError) as err:
      raise DataError(f"{where}: {field} given as nested lists is not a regular array "
                      f"({str(err).splitlines()[0][:120]})") from None
  else:
    raise DataError(f"{where}: {field} must be a numpy array, got {type(value).__name__} "
                    f"{short(value)}")
  if array.dtype.kind not in "iuf":
    raise DataError(f"{where}: {field} must hold real numbers (float or int), got dtype "
                    f"{array.dtype}")
  return array


def _count(value, memo: dict, depth: int = 0) -> int:
  """The numbers ``value`` (an array, nested lists or a scalar) would hold once materialised; a
  list referenced many times is walked once (``memo``), so a shared-reference bomb costs little."""
  if isinstance(value, np.ndarray):
    return int(value.size)
  if not isinstance(value, (list, tuple)) or depth > _MAX_NESTING:
    return 1
  key = id(value)
  if key not in memo:
    memo[key] = sum(_count(v, memo, depth + 1) for v in value)
  return memo[key]


def check_total_size(annotations: list, path: str, file_bytes: int) -> None:
  """DataError (naming the pickle and the annotation) when the keypoints and scores of
  ``annotations`` would hold more numbers than the pickle has bytes (+ ``SLACK_VALUES``): a number
  takes at least one byte in a pickle, so more means references to one array or list repeated
  many times, which would expand to far more memory than the file (a pickle bomb). Checked before
  anything is materialised."""
  limit, total, memo = int(file_bytes) + SLACK_VALUES, 0, {}
  for i, ann in enumerate(annotations):
    if not isinstance(ann, dict):
      continue
    total += _count(ann.get("keypoint"), memo) + _count(ann.get("keypoint_score"), memo)
    if total > limit:
      which = f"annotations 0..{i}" if i else "annotation 0"
      raise DataError(
          f"{path}: {which} would hold {total:,} keypoint numbers, more than the {file_bytes:,}-"
          f"byte pickle can store (at most one per byte, + {SLACK_VALUES:,}): shared references "
          "that expand (a pickle bomb?); refused before reading them")


def _img_shape(ann: dict, where: str) -> tuple[int, int]:
  """(height, width) from ``img_shape``; (0, 0) when missing or None (unknown)."""
  value = ann.get("img_shape")
  if value is None:
    return (0, 0)
  bad = DataError(f"{where}: img_shape must be (height, width) in pixels, positive integers up "
                  f"to {MAX_IMG_SIDE} (or None when unknown), got {short(value)}")
  if not isinstance(value, (tuple, list, np.ndarray)):
    raise bad
  try:
    shape = np.asarray(value)
  except (ValueError, TypeError, OverflowError, RecursionError):
    raise bad from None
  if shape.ndim != 1 or not 2 <= shape.size <= 3 or shape.dtype.kind not in "iuf":
    raise bad
  hw = shape[:2].astype(np.float64)
  if not np.isfinite(hw).all() or (hw != np.round(hw)).any():
    raise bad
  if (hw == 0).all():
    return (0, 0)
  if not ((hw >= 1) & (hw <= MAX_IMG_SIDE)).all():
    raise bad
  return int(hw[0]), int(hw[1])


def _check_axis_order(shape: tuple, total, where: str) -> None:
  """Rejects a keypoint that was stored as (T, M, V, C): more persons than frames and either more
  than a plausible crowd or ``total_frames`` equal to the person count."""
  m, t = shape[:2]
  total = int(total) if is_label(total) else None
  if m > t and (m > MAX_PERSONS_WITHOUT_FRAMES or total == m):
    raise DataError(
        f"{where}: keypoint shape {shape} reads as {m} persons in {t} frame(s)"
        + (f" while total_frames is {total}" if total is not None else "")
        + "; the array looks stored as (T, M, V, C). pyskl's keypoint is (M, T, V, C): store "
        "keypoint.transpose(1, 0, 2, 3) (and keypoint_score.transpose(1, 0, 2))")


def _frame_dir(ann, i: int, path: str) -> tuple[str, str]:
  """(frame_dir, the ``where`` that names the annotation in messages) of annotation ``i``."""
  if not isinstance(ann, dict):
    raise DataError(f"{path}: annotation {i} is a {type(ann).__name__}, expected a dict")
  name = ann.get("frame_dir")
  where = f"{path}: annotation {i} ({short(name)})"
  if not isinstance(name, str) or not name:
    raise DataError(f"{where}: missing or empty 'frame_dir' (expected a non-empty string)")
  try:
    name.encode("utf-8")
  except UnicodeEncodeError:
    raise DataError(f"{where}: frame_dir is not valid Unicode text") from None
  return name, where


def _label(ann: dict, where: str, shift: int, num_classes: int | None) -> int:
  """The 0-based label: the annotation's label minus ``shift``, in [0, num_classes)."""
  if "label" not in ann:
    raise DataError(f"{where}: no 'label' field")
  if not is_label(ann["label"]):
    raise DataError(f"{where}: label must be an integer, got {short(ann['label'])}")
  raw = int(ann["label"])
  label = raw - shift
  if label < 0 or (num_classes is not None and label >= num_classes):
    expected = (f"{shift}..{num_classes - 1 + shift}" if num_classes is not None
                else f">= {shift}")
    raise DataError(f"{where}: unknown label {raw}; expected {expected} (labels read as "
                    f"{shift}-based)")
  return label


def _keypoint(ann: dict, where: str, layout: graph.Layout) -> np.ndarray:
  """The keypoint array (M, T, V, 2 or 3) with M, T > 0 and V the layout's joint count."""
  if "keypoint" not in ann:
    raise DataError(f"{where}: no 'keypoint' field")
  kp = _real_array(ann["keypoint"], where, "keypoint")
  if kp.ndim != 4 or kp.shape[-1] not in (2, 3):
    raise DataError(f"{where}: keypoint must be (M, T, V, 2 or 3), got shape {kp.shape}")
  if kp.shape[0] == 0 or kp.shape[1] == 0:
    raise DataError(f"{where}: zero-length sequence (keypoint shape {kp.shape})")
  if kp.shape[2] != layout.num_joints:
    raise DataError(f"{where}: keypoint has {kp.shape[2]} joints, layout {layout.name!r} has "
                    f"{layout.num_joints}")
  return kp


def _score_and_kind(ann: dict, kp: np.ndarray, where: str) -> tuple:
  """(keypoint_score, kind): ``3d``, ``2d`` or ``2d+score``; a 2D score is checked against the
  keypoint, a 3D one is returned as given (it is ignored)."""
  score = ann.get("keypoint_score")
  if kp.shape[-1] == 3:
    return score, "3d"
  if score is None:
    return None, "2d"
  score = _real_array(score, where, "keypoint_score")
  if score.shape != kp.shape[:3]:
    raise DataError(f"{where}: keypoint_score shape {score.shape} does not match keypoint "
                    f"{kp.shape[:3]}")
  return score, "2d+score"


def _clean(kp: np.ndarray, score, kind: str, img_shape: tuple[int, int],
           where: str) -> tuple[np.ndarray | None, list[tuple[str, str]]]:
  """The stored values (C = 2 or 3, with the score as last channel for ``2d+score``) after the
  coordinate rule, ``None`` when nothing is left, and the (reason, what) notes of the repair."""
  values = kp.astype(np.float64)
  if kind == "2d+score":
    values = np.concatenate([values, score.astype(np.float64)[..., None]], axis=-1)
  max_abs = (PIXEL_BOUND_FACTOR * max(img_shape) if kind != "3d" and max(img_shape) > 0
             else MAX_ABS_UNKNOWN_UNITS)
  scratch = ConversionReport()        # the sample's repair is noted only once it is kept
  values = files.clean_keypoint(values, where, scratch, max_abs=max_abs)
  # scratch's messages read "<rejected|repaired>: <where>: <what>"; keep <what>
  notes = [(key.split("/", 1)[1], message.split(": ", 1)[1][len(where) + 2:])
           for key, message in zip(scratch.reasons, scratch.messages)]
  return values, notes


def to_record(ann, i: int, path: str, layout: graph.Layout, shift: int,
              num_classes: int | None, report: ConversionReport) -> dict | None:
  """One annotation -> record; raises DataError for a rejected annotation; ``None`` when the
  all-zero rule rejected it (already counted in ``report``)."""
  name, where = _frame_dir(ann, i, path)
  label = _label(ann, where, shift, num_classes)
  kp = _keypoint(ann, where, layout)
  total = ann.get("total_frames", kp.shape[1])
  _check_axis_order(kp.shape, total, where)
  score, kind = _score_and_kind(ann, kp, where)
  img_shape = _img_shape(ann, where)
  values, notes = _clean(kp, score, kind, img_shape, where)
  if values is None:
    report.reject(notes[0][0], f"{where}: {notes[0][1]}")
    return None
  if score is not None and kind == "3d":
    notes.append(("score_with_3d", "keypoint_score next to 3D keypoints is ignored"))
  if not is_label(total) or int(total) != kp.shape[1]:
    notes.append(("total_frames", f"total_frames {short(total)} != keypoint T {kp.shape[1]}; "
                                  "set to T"))
  return {"keypoint": values.astype(np.float32), "label": label, "frame_dir": name,
          "total_frames": int(kp.shape[1]), "img_shape": img_shape, "kind": kind, "index": i,
          "repairs": notes, "where": where}


def note_repairs(record: dict, report: ConversionReport) -> None:
  """Counts a kept record's repairs as one repaired sample (reasons joined by +)."""
  notes = record["repairs"]
  if notes:
    report.repair("+".join(r for r, _ in notes),
                  f"{record['where']}: " + "; ".join(m for _, m in notes))


def read_pickle(path: str):
  """The annotation pickle at ``path``, through the project's restricted unpickler."""
  return safe_pickle.load(path, "pyskl annotation file")


def annotations_and_splits(obj, path: str) -> tuple[list, dict, bool]:
  """(annotations, split name -> entries, whether the pickle had no split information)."""
  if isinstance(obj, list):
    return obj, _unsplit(obj), True
  if not isinstance(obj, dict) or "annotations" not in obj:
    keys = sorted(map(short, obj))[:10] if isinstance(obj, dict) else None
    raise DataError(f"{path}: expected a dict with 'split' and 'annotations' (or a list of "
                    f"annotations), got {type(obj).__name__}"
                    + (f" with keys {', '.join(keys)}" if keys is not None else ""))
  annotations, splits = obj["annotations"], obj.get("split")
  if not isinstance(annotations, list):
    raise DataError(f"{path}: 'annotations' must be a list, got {type(annotations).__name__}")
  if splits is None:
    return annotations, _unsplit(annotations), True
  if not isinstance(splits, dict):
    raise DataError(f"{path}: 'split' must be a dict of split name -> [frame_dir, ...], got "
                    f"{type(splits).__name__}")
  if not splits:
    raise DataError(f"{path}: 'split' is empty; expected {{split name: [frame_dir, ...]}} (leave "
                    f"'split' out to use every annotation as one split {UNSPLIT!r})")
  for name, entries in splits.items():
    if not isinstance(name, str) or not _SPLIT_RE.match(name) or name.lower() == "all":
      raise DataError(f"{path}: split name {short(name)} must be ASCII letters, digits and _ "
                      "with at least one letter or digit, and not 'all' (reserved by tfds)")
    if not isinstance(entries, (list, tuple)):
      raise DataError(f"{path}: split {name!r} must be a list of frame_dir strings, got "
                      f"{type(entries).__name__} {short(entries)}")
  return annotations, splits, False


def _unsplit(annotations: list) -> dict:
  return {UNSPLIT: [a.get("frame_dir") for a in annotations
                    if isinstance(a, dict) and isinstance(a.get("frame_dir"), str)]}
