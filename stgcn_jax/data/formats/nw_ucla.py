"""NW-UCLA (CTR-GCN's ``all_sqe`` JSON files): one file -> one record.

A file ``aAA_sSS_eEE_vVV.json`` holds ``{"file_name", "skeletons": [T][20][3], "label": 1..10}``;
:func:`parse_file` checks it (naming the file, and the frame and joint) and returns the record with
its ``view``. The rules are listed in :mod:`data_prep.nw_ucla`, the converter, which also applies
the cross-view protocol and the coordinate rule.
"""

from __future__ import annotations

import os
import re

import numpy as np

from stgcn_jax.data.formats import files
from stgcn_jax.data.records import DataError

CLASS_NAMES = ["pick up with one hand", "pick up with two hands", "drop trash", "walk around",
               "sit down", "stand up", "donning", "doffing", "throw", "carry"]
ACTION_IDS = [1, 2, 3, 4, 5, 6, 8, 9, 11, 12]     # label k (1-based) <-> action id ACTION_IDS[k-1]
_NAME_RE = re.compile(r"^a(\d\d)_s(\d\d)_e(\d\d)_v(\d\d)$")
NUM_JOINTS = 20
MAX_ABS = 100.0     # metres; Kinect v1 camera space, observed |value| <= 5.1
MAX_FILE_BYTES = 64 * 2**20     # the largest all_sqe file is 127 KB


def parse_file(path: str) -> dict:
  """One NW-UCLA JSON file -> a record with an extra ``view``; raises DataError naming the file.

  Only a regular file is read (:func:`files.read_json`: a FIFO is refused, not waited on). The
  keypoint is float64 as read: the coordinate rule (:func:`files.clean_keypoint`) is applied
  by :func:`collect`.
  """
  obj = files.read_json(path, "JSON file", MAX_FILE_BYTES, encoding="utf-8-sig")
  if not isinstance(obj, dict):
    raise DataError(f"{path}: expected a JSON object with file_name, skeletons, label, got "
                    f"{type(obj).__name__}")
  missing = [k for k in ("skeletons", "label") if k not in obj]
  if missing:
    raise DataError(f"{path}: missing field(s) {missing}")
  stem = os.path.splitext(os.path.basename(path))[0]
  name = obj.get("file_name", stem)
  if not isinstance(name, str):
    raise DataError(f"{path}: field 'file_name' must be a string, got {short(name)}")
  if name != stem:
    raise DataError(f"{path}: field 'file_name' says {name!r} but the file is named "
                    f"{os.path.basename(path)!r} (expected {stem!r}); the name gives the view and "
                    "so the split, fix the file name or the field")
  match = _NAME_RE.match(name)
  if not match:
    raise DataError(f"{path}: sample name {name!r} is not of the form aAA_sSS_eEE_vVV")
  action, view = int(match.group(1)), int(match.group(4))
  label = obj["label"]
  if isinstance(label, bool) or not isinstance(label, int) or not 1 <= label <= len(CLASS_NAMES):
    raise DataError(f"{path}: unknown label {short(label)}; expected an integer in "
                    f"1..{len(CLASS_NAMES)}")
  if ACTION_IDS[label - 1] != action:
    raise DataError(f"{path}: label {label} means action a{ACTION_IDS[label - 1]:02d}, but the "
                    f"name says a{action:02d}")
  frames = obj["skeletons"]
  if not isinstance(frames, list) or not frames:
    raise DataError(f"{path}: zero-length sequence (field 'skeletons' has no frames)")
  for t, frame in enumerate(frames):
    if not isinstance(frame, list) or len(frame) != NUM_JOINTS:
      n = len(frame) if isinstance(frame, list) else type(frame).__name__
      raise DataError(f"{path}: frame {t} has {n} joints, expected {NUM_JOINTS}")
    for v, joint in enumerate(frame):
      if (not isinstance(joint, list) or len(joint) != 3
          or not _NUMBER_TYPES.issuperset(map(type, joint))):
        raise DataError(f"{path}: frame {t}, joint {v}: expected [x, y, z] numbers, got "
                        f"{short(joint)}")
  try:
    kp = np.asarray(frames, dtype=np.float64)[None]
  except OverflowError:     # an integer literal beyond float64: inf, then the coordinate rule
    kp = np.asarray([[[_to_float(x) for x in joint] for joint in frame] for frame in frames],
                    dtype=np.float64)[None]
  return {"keypoint": kp, "label": label - 1, "frame_dir": name, "total_frames": len(frames),
          "img_shape": (0, 0), "view": view, "path": path}


_NUMBER_TYPES = frozenset({int, float})     # exact types: bool (a subclass of int) is refused


def _to_float(x) -> float:
  try:
    return float(x)
  except OverflowError:
    return float("inf") if x > 0 else float("-inf")


def short(value, limit: int = 80) -> str:
  text = repr(value)
  return text if len(text) <= limit else text[:limit] + "..."
