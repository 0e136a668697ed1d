"""One Kinetics-skeleton video JSON (ST-GCN's release: OpenPose, 18 joints) -> its keypoint.

:func:`read_video` reads the file and checks its structure; :func:`clean_video` applies the
missing-joint, coordinate and all-zero rules and keeps the top 2 persons of every frame. The
format and the rules are described in :mod:`data_prep.kinetics`, the converter.
"""

from __future__ import annotations

import math

import numpy as np

from stgcn_jax.data.formats import files
from stgcn_jax.data.records import ConversionReport, DataError
from stgcn_jax.data.records import all_zero_message, repair_non_finite

NUM_JOINTS, PERSONS_IN, PERSONS_OUT = 18, 5, 2
MAX_FRAME_INDEX = 10_000                  # Kinetics clips: 10 s at 30 fps = 300 frames
MAX_ABS = 100.0                           # coordinate rule for normalised x, y and scores
MAX_FILE_BYTES = 256 * 2**20              # the largest video JSON is < 1 MB, label index ~30 MB


class _Object(dict):
  """A JSON object that remembers the keys given more than once (json keeps the last silently)."""
  duplicates: tuple = ()


def _object(pairs: list) -> dict:
  obj = _Object(pairs)
  if len(obj) != len(pairs):
    seen, dups = set(), []
    for key, _ in pairs:
      if key in seen and key not in dups:
        dups.append(key)
      seen.add(key)
    obj.duplicates = tuple(dups)
  return obj


def show(value) -> str:
  """A short repr of a value read from a file, for messages."""
  text = repr(value)
  return text if len(text) <= 40 else text[:37] + "..."


def _no_duplicates(obj: dict, where: str) -> None:
  dups = getattr(obj, "duplicates", ())
  if dups:
    raise DataError(f"{where}: field {show(dups[0])} is given more than once")


def read_json(path: str):
  """The JSON value in the regular file ``path`` (:func:`files.read_json`: a FIFO is rejected, not
  waited on, and at most ``MAX_FILE_BYTES`` are read); DataError naming the file for anything
  else. An object remembers the keys given more than once (``duplicates``)."""
  return files.read_json(path, "JSON file", MAX_FILE_BYTES, object_pairs_hook=_object)


def _numbers(values, count: int, where: str, field: str) -> np.ndarray:
  """``values`` (a JSON list of ``count`` numbers) as float64; DataError naming the field else."""
  if not isinstance(values, list):
    raise DataError(f"{where}: {field!r} must be a list of {count} numbers, got {show(values)}")
  if len(values) != count:
    raise DataError(f"{where}: {field} has {len(values)} values, expected {count} "
                    f"({NUM_JOINTS} joints)")
  for j, value in enumerate(values):
    if type(value) is not float and type(value) is not int:   # bool, str, None, list, dict
      raise DataError(f"{where}: {field}[{j}] is {show(value)}, expected a number")
  try:
    return np.array(values, np.float64)
  except OverflowError:             # an integer beyond float64: unusable like inf (coordinate rule)
    return np.array([v if type(v) is float or abs(v) < 1e300 else math.inf if v > 0 else -math.inf
                     for v in values], np.float64)


def read_video(path: str) -> tuple[np.ndarray, int | None, str | None]:
  """One video JSON -> (keypoint (5, T, 18, 3) float64, label_index, label), structure checked.

  The values are as in the file (NaN, inf or out of range included); :func:`clean_video` applies
  the coordinate, missing-joint and all-zero rules and keeps the top 2 persons.

  Raises:
    DataError: naming the file and the frame / person / field that breaks the format.
  """
  obj = read_json(path)
  if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
    raise DataError(f"{path}: expected an object with a 'data' list of frames")
  _no_duplicates(obj, path)
  label_index, label = obj.get("label_index"), obj.get("label")
  if label_index is not None and type(label_index) is not int:
    raise DataError(f"{path}: label_index {show(label_index)} is not an integer")
  if label is not None and not isinstance(label, str):
    raise DataError(f"{path}: label {show(label)} is not a string")
  frames, indices, seen = obj["data"], [], set()
  for k, frame in enumerate(frames):
    if not isinstance(frame, dict):
      raise DataError(f"{path}: data[{k}]: expected a frame object {{frame_index, skeleton}}, got "
                      f"{show(frame)}")
    idx = frame.get("frame_index")
    if type(idx) is not int or not 1 <= idx <= MAX_FRAME_INDEX:
      raise DataError(f"{path}: data[{k}]: frame_index {show(idx)} is not an integer in "
                      f"[1, {MAX_FRAME_INDEX}]")
    if idx in seen:
      raise DataError(f"{path}: frame_index {idx} appears more than once")
    seen.add(idx)
    indices.append(idx)
    _no_duplicates(frame, f"{path}: frame_index {idx}")
    if not isinstance(frame.get("skeleton"), list):
      raise DataError(f"{path}: frame_index {idx}: 'skeleton' must be a list of detections, got "
                      f"{show(frame.get('skeleton'))}")
  num_frames = max(indices, default=0)
  if not any(frame["skeleton"] for frame in frames):
    raise DataError(f"{path}: zero-length sequence (no person in any of {num_frames} frames)")
  kp = np.zeros((PERSONS_IN, num_frames, NUM_JOINTS, 3))
  for idx, frame in zip(indices, frames):
    for m, person in enumerate(frame["skeleton"][:PERSONS_IN]):
      where = f"{path}: frame_index {idx}, person {m}"
      if not isinstance(person, dict):
        raise DataError(f"{where}: expected an object {{pose, score}}, got {show(person)}")
      _no_duplicates(person, where)
      kp[m, idx - 1, :, :2] = _numbers(person.get("pose"), 2 * NUM_JOINTS, where,
                                       "pose").reshape(NUM_JOINTS, 2)
      kp[m, idx - 1, :, 2] = _numbers(person.get("score"), NUM_JOINTS, where, "score")
  return kp, label_index, label


def _score_rules(kp: np.ndarray, path: str) -> tuple[np.ndarray, list[tuple[str, str]]]:
  """The score rules on raw (5, T, 18, 3): a joint with a negative score (a score is a confidence
  in [0, 1]) becomes 0, missing; a joint at x = y = 0 (not detected) gets score 0. Returns the
  keypoints and the (reason, message) of each rule that changed something."""
  notes = []
  with np.errstate(invalid="ignore"):
    negative = kp[..., 2] < 0                                                # (5, T, 18)
  if negative.any():
    m, t, v = (int(i[0]) for i in np.nonzero(negative))
    notes.append(("negative_score", f"{path}: {int(negative.sum())} joint(s) with a negative "
                                    f"score set to 0, missing (first: person {m}, frame {t}, "
                                    f"joint {v}: score {kp[m, t, v, 2]:.4g})"))
    kp = np.where(negative[..., None], 0.0, kp)
  missing = (kp[..., 0] == 0) & (kp[..., 1] == 0) & (kp[..., 2] != 0)
  if missing.any():
    m, t, v = (int(i[0]) for i in np.nonzero(missing))
    notes.append(("score_without_position",
                  f"{path}: {int(missing.sum())} joint(s) at x = y = 0 (not detected) with a "
                  f"non-zero score: score set to 0 (first: person {m}, frame {t}, joint {v}: "
                  f"score {kp[m, t, v, 2]:.4g})"))
    kp = kp.copy()
    kp[missing, 2] = 0
  return kp, notes


def clean_video(kp: np.ndarray, path: str, report: ConversionReport) -> np.ndarray | None:
  """Raw (5, T, 18, 3) -> the stored (M, T, 18, 3), M = 1 or 2; None when rejected (counted).

  Score rules (a negative score -> the joint 0; x = y = 0 -> score 0), the coordinate rule
  (``repair_non_finite`` with ``MAX_ABS``) and the all-zero rule, then per frame the persons
  ranked by summed score, top 2 kept. Every repair and rejection is counted in ``report`` with one
  message naming ``path``; a video is counted once, its repairs' reasons joined by ``+``.
  """
  kp, notes = _score_rules(kp, path)
  kp, message = repair_non_finite(kp, path, MAX_ABS)
  if message is not None:
    notes.insert(0, ("bad_coordinate", message))
  empty = all_zero_message(kp, path)
  if empty is not None:
    why = "; ".join(m for r, m in notes if r != "score_without_position")
    report.reject("all_zero", f"{empty} after the repair: {why}" if why else empty)
    return None
  if notes:
    report.repair("+".join(reason for reason, _ in notes), "; ".join(m for _, m in notes))
  # Rank the detections of every frame by summed score and keep the top PERSONS_OUT; an empty slot
  # (all zero) ranks below every detection, so trimming never drops the only detected joints.
  detected = kp.any(axis=-1).any(axis=-1)                                    # (5, T)
  key = np.where(detected, kp[..., 2].sum(-1), -np.inf)
  order = np.argsort(-key, axis=0, kind="stable")
  kp = np.take_along_axis(kp, order[:, :, None, None], axis=0)[:PERSONS_OUT]
  if not np.any(kp[1:] != 0):     # nobody in second place in any frame: M = 1
    kp = kp[:1]
  return kp


def parse_video(path: str, report: ConversionReport | None = None
                ) -> tuple[np.ndarray | None, int | None, str | None]:
  """One video JSON -> (keypoint (M, T, 18, 3) float64 or None when rejected, label_index, label).

  :func:`read_video` then :func:`clean_video`; repairs and the all-zero rejection are counted in
  ``report`` (by default a new one, then a rejection shows only as the ``None``).

  Raises:
    DataError: the file breaks the format (naming the file and frame / field).
  """
  kp, label_index, label = read_video(path)
  report = report if report is not None else ConversionReport()
  return clean_video(kp, path, report), label_index, label
