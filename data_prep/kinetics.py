"""Converts ST-GCN's Kinetics-skeleton release (OpenPose JSON per video) into the store.

  python -m data_prep.kinetics --src KINETICS_SKELETON_DIR --out DIR [--name kinetics_skeleton]
                               [--num-classes N]

``--src`` holds ``kinetics_train/`` and / or ``kinetics_val/`` (one ``<youtube_id>.json`` per video:
``{"data": [{"frame_index": 1-based, "skeleton": [{"pose": [x0, y0, ..., x17, y17], "score":
[s0..s17]}, ...]}, ...], "label", "label_index"}``) with ``kinetics_<split>_label.json`` next to
them (``{youtube_id: {"has_skeleton": bool, "label": str, "label_index": int}}``). Each present
split becomes a split (``train``, ``val``; the test role is ``val``). Layout ``openpose`` (18
joints), C = 3 = (x, y, score), x and y normalised by the frame size (about [0, 1]); ``img_shape``
is stored as (1, 1) so PreNormalize2D maps them to [-1, 1].

ST-GCN's feeder rules: videos with ``has_skeleton: false`` are dropped (counted); a frame's first
5 detections are read, ranked by their summed joint score and the top 2 kept (detections are not
tracked across frames, so the ranking is per frame); frame ``frame_index`` goes to row
``frame_index - 1`` and T is the largest frame_index (ST-GCN pads every clip to 300 instead).

Number of classes: ``--num-classes N`` when given. Otherwise it comes from the label index(es)
read, whose label_index counts the classes from 0 in class order (Kinetics-400: 0..399,
alphabetical): when some well-formed entry has label_index 0, the classes are the gap-free run 0, 1,
2, ... of label_index values (400 for Kinetics-400, also when only some videos are present) and a
label_index beyond the run is not a class, so one stray entry with label_index 999 cannot make a
1000-class dataset; a label index without label_index 0 (a hand-made subset) gives its largest
label_index + 1. At most 100,000 classes. A video whose label_index is outside [0, number of
classes) is rejected, naming it.

Rules for bad input (each counted in the final summary, naming the file and frame / field):
  * Label index: not a non-empty JSON object, or no well-formed entry in it: one error naming the
    file. A malformed entry (not an object; label_index not an integer; label not a string;
    has_skeleton not true / false; a field or the id itself given twice) rejects the video that
    refers to it, naming the label file, entry and field. A video not in the label index, whose
    label_index is outside the class range, or whose own label / label_index disagrees with the
    index: rejected.
  * Video file: not a regular file, larger than 256 MiB, not UTF-8, malformed JSON; a frame that is
    not an object; a frame_index that is not an integer in [1, 10000] (Kinetics clips are 10 s =
    300 frames; the bound keeps a corrupt index from allocating gigabytes) or repeated; a
    ``skeleton`` that is not a list; one of the first 5 detections that is not an object or whose
    pose / score is not a list of 36 / 18 numbers (JSON strings such as "0.5", true / false and
    null are not numbers; nothing is parsed from text); a field given twice; no detection in any
    frame (zero-length sequence): rejected.
  * Coordinate rule (``common.clean_keypoint``, max_abs 100: x, y are normalised to about [0, 1]
    and scores are confidences in [0, 1]): a joint with NaN, inf, an integer beyond float64 or a
    |value| above 100 becomes 0 (missing); counted as repaired.
  * Missing joints: OpenPose writes an undetected joint as x = y = 0, score 0. A joint at x = y = 0
    is missing whatever its score, so a non-zero score there is set to 0 (counted as repaired)
    before persons are ranked and before the all-zero rule, which rejects a video with no detected
    joint in any frame (e.g. every pose 0 with non-zero scores), naming it.
"""

from __future__ import annotations

import collections
import glob
import json
import math
import os
import stat
import sys
from typing import NamedTuple

import numpy as np
from absl import flags

from data_prep import common
from stgcn_jax.data import ConversionReport, DataError, write_dataset

NUM_JOINTS, PERSONS_IN, PERSONS_OUT = 18, 5, 2
SPLITS = ("train", "val")
MAX_FRAME_INDEX = 10_000                  # Kinetics clips: 10 s at 30 fps = 300 frames
MAX_ABS = 100.0                           # coordinate rule for normalised x, y and scores
MAX_CLASSES = 100_000                     # Kinetics-700 has 700; bounds the class-name list
MAX_FILE_BYTES = 256 * 2**20              # the largest video JSON is < 1 MB, label index ~30 MB
_ENTRY = "{has_skeleton, label, label_index}"


class LabelIndex(NamedTuple):
  """A ``kinetics_<split>_label.json``: its well-formed entries and the problems of the others."""
  path: str
  entries: dict     # youtube_id -> {"has_skeleton": bool, "label": str | None, "label_index": int}
  problems: dict    # youtube_id -> message naming the file, entry and field


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


def _show(value) -> str:
  """A short repr of a value read from a file, for messages."""
  text = repr(value)
  return text if len(text) <= 40 else text[:37] + "..."


def _no_duplicates(obj: dict, where: str) -> None:
  dups = getattr(obj, "duplicates", ())
  if dups:
    raise DataError(f"{where}: field {_show(dups[0])} is given more than once")


def read_json(path: str):
  """The JSON value in the regular file ``path``; DataError naming the file for anything else.

  The file is opened without blocking and checked on the open descriptor (a FIFO is rejected, not
  waited on) and at most ``MAX_FILE_BYTES`` are read.
  """
  try:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
  except OSError as err:
    raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
  try:
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
      kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
          "a device or socket"
      raise DataError(f"{path}: is {kind}, not a regular JSON file")
    raw = bytearray()
    while len(raw) <= MAX_FILE_BYTES:
      chunk = os.read(fd, min(2**20, MAX_FILE_BYTES + 1 - len(raw)))
      if not chunk:
        break
      raw += chunk
  except OSError as err:
    raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
  finally:
    os.close(fd)
  if len(raw) > MAX_FILE_BYTES:
    raise DataError(f"{path}: larger than the limit of {MAX_FILE_BYTES} bytes")
  try:
    return json.loads(raw.decode("utf-8"), object_pairs_hook=_object)
  except UnicodeDecodeError as err:
    raise DataError(f"{path}: not UTF-8 text (byte {err.start})") from None
  except json.JSONDecodeError as err:
    raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg} at column "
                    f"{err.colno})") from None
  except ValueError as err:         # e.g. an integer with more digits than Python converts
    raise DataError(f"{path}: malformed JSON ({err})") from None
  except RecursionError:
    raise DataError(f"{path}: malformed JSON (nested too deeply)") from None


def _numbers(values, count: int, where: str, field: str) -> np.ndarray:
  """``values`` (a JSON list of ``count`` numbers) as float64; DataError naming the field else."""
  if not isinstance(values, list):
    raise DataError(f"{where}: {field!r} must be a list of {count} numbers, got {_show(values)}")
  if len(values) != count:
    raise DataError(f"{where}: {field} has {len(values)} values, expected {count} "
                    f"({NUM_JOINTS} joints)")
  for j, value in enumerate(values):
    if type(value) is not float and type(value) is not int:   # bool, str, None, list, dict
      raise DataError(f"{where}: {field}[{j}] is {_show(value)}, expected a number")
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
    raise DataError(f"{path}: label_index {_show(label_index)} is not an integer")
  if label is not None and not isinstance(label, str):
    raise DataError(f"{path}: label {_show(label)} is not a string")
  frames, indices, seen = obj["data"], [], set()
  for k, frame in enumerate(frames):
    if not isinstance(frame, dict):
      raise DataError(f"{path}: data[{k}]: expected a frame object {{frame_index, skeleton}}, got "
                      f"{_show(frame)}")
    idx = frame.get("frame_index")
    if type(idx) is not int or not 1 <= idx <= MAX_FRAME_INDEX:
      raise DataError(f"{path}: data[{k}]: frame_index {_show(idx)} is not an integer in "
                      f"[1, {MAX_FRAME_INDEX}]")
    if idx in seen:
      raise DataError(f"{path}: frame_index {idx} appears more than once")
    seen.add(idx)
    indices.append(idx)
    _no_duplicates(frame, f"{path}: frame_index {idx}")
    if not isinstance(frame.get("skeleton"), list):
      raise DataError(f"{path}: frame_index {idx}: 'skeleton' must be a list of detections, got "
                      f"{_show(frame.get('skeleton'))}")
  num_frames = max(indices, default=0)
  if not any(frame["skeleton"] for frame in frames):
    raise DataError(f"{path}: zero-length sequence (no person in any of {num_frames} frames)")
  kp = np.zeros((PERSONS_IN, num_frames, NUM_JOINTS, 3))
  for idx, frame in zip(indices, frames):
    for m, person in enumerate(frame["skeleton"][:PERSONS_IN]):
      where = f"{path}: frame_index {idx}, person {m}"
      if not isinstance(person, dict):
        raise DataError(f"{where}: expected an object {{pose, score}}, got {_show(person)}")
      _no_duplicates(person, where)
      kp[m, idx - 1, :, :2] = _numbers(person.get("pose"), 2 * NUM_JOINTS, where,
                                       "pose").reshape(NUM_JOINTS, 2)
      kp[m, idx - 1, :, 2] = _numbers(person.get("score"), NUM_JOINTS, where, "score")
  return kp, label_index, label


def clean_video(kp: np.ndarray, path: str, report: ConversionReport) -> np.ndarray | None:
  """Raw (5, T, 18, 3) -> the stored (M, T, 18, 3), M = 1 or 2; None when rejected (counted).

  Missing-joint rule (x = y = 0 -> score 0), then ``common.clean_keypoint`` (coordinate rule with
  ``MAX_ABS``, all-zero rule), then per frame the persons ranked by summed score, top 2 kept. Every
  repair and rejection is counted in ``report`` with one message naming ``path``; a video is
  counted as repaired once.
  """
  missing = (kp[..., 0] == 0) & (kp[..., 1] == 0) & (kp[..., 2] != 0)       # (5, T, 18)
  score_message = None
  if missing.any():
    m, t, v = (int(i[0]) for i in np.nonzero(missing))
    score_message = (f"{path}: {int(missing.sum())} joint(s) at x = y = 0 (not detected) with a "
                     f"non-zero score: score set to 0 (first: person {m}, frame {t}, joint {v}: "
                     f"score {kp[m, t, v, 2]:.4g})")
    kp = kp.copy()
    kp[missing, 2] = 0
  repaired_before = report.repaired
  kp = common.clean_keypoint(kp, path, report, max_abs=MAX_ABS)
  if kp is None:
    return None
  if score_message is not None and report.repaired == repaired_before:
    report.repair("score_without_position", score_message)
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


def _entry_problem(entry) -> str | None:
  if not isinstance(entry, dict):
    return f"expected an object {_ENTRY}, got {_show(entry)}"
  if getattr(entry, "duplicates", ()):
    return f"field {_show(entry.duplicates[0])} is given more than once"
  label_index = entry.get("label_index")
  if type(label_index) is not int:
    return ("has no label_index" if "label_index" not in entry else
            f"label_index {_show(label_index)} is not an integer")
  if "label" in entry and not isinstance(entry["label"], str):
    return f"label {_show(entry['label'])} is not a string"
  if "has_skeleton" in entry and not isinstance(entry["has_skeleton"], bool):
    return f"has_skeleton {_show(entry['has_skeleton'])} is not true or false"
  return None


def load_label_index(path: str) -> LabelIndex:
  """Reads ``kinetics_<split>_label.json``.

  Raises:
    DataError: naming the file when it is not a non-empty JSON object or holds no well-formed
      entry. A malformed entry is only listed in ``problems``: the video that refers to it is
      rejected, the others are kept.
  """
  index = read_json(path)
  expected = f"a JSON object {{youtube_id: {_ENTRY}}}"
  if not isinstance(index, dict):
    raise DataError(f"{path}: expected {expected}, got {type(index).__name__}")
  if not index:
    raise DataError(f"{path}: empty label index; expected {expected}")
  entries, problems = {}, {}
  for vid in getattr(index, "duplicates", ()):
    problems[vid] = f"{path}: entry {_show(vid)} appears more than once"
  for vid, entry in index.items():
    if vid in problems:
      continue
    problem = _entry_problem(entry)
    if problem is not None:
      problems[vid] = f"{path}: entry {_show(vid)}: {problem}"
    else:
      entries[vid] = {"has_skeleton": entry.get("has_skeleton", True),
                      "label": entry.get("label"), "label_index": entry["label_index"]}
  if not entries:
    raise DataError(f"{path}: no well-formed entry among {len(index)} (first problem: "
                    f"{next(iter(problems.values()))})")
  return LabelIndex(path, entries, problems)


def count_classes(indexes: list[LabelIndex], num_classes: int | None) -> int:
  """The number of classes: ``num_classes`` when given, else from the label indexes (module
  docstring): the gap-free run 0, 1, ... of label_index values when 0 is among them, else the
  largest label_index + 1."""
  if num_classes is not None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or \
        not 1 <= num_classes <= MAX_CLASSES:
      raise DataError(f"--num-classes must be an integer in [1, {MAX_CLASSES}], got "
                      f"{num_classes!r}")
    return num_classes
  present = {e["label_index"] for index in indexes for e in index.entries.values()
             if e["label_index"] >= 0}
  files = ", ".join(i.path for i in indexes)
  if not present:
    raise DataError(f"{files}: no entry has a label_index >= 0")
  if 0 not in present:
    if max(present) >= MAX_CLASSES:
      raise DataError(f"{files}: largest label_index {_show(max(present))} would make more than "
                      f"{MAX_CLASSES} classes; pass --num-classes")
    return max(present) + 1
  classes = 0
  while classes in present:
    classes += 1
  return classes


def collect(src: str, report: ConversionReport, num_classes: int | None):
  """Reads every present split -> ({split: records}, class_names).

  The number of classes is :func:`count_classes`: ``num_classes`` when given, else the gap-free run
  0, 1, ... of label_index values in the label indexes (the largest + 1 when 0 is not among them).
  """
  common.require_path(src, "Kinetics-skeleton folder", is_dir=True)
  present = [s for s in SPLITS if os.path.isdir(os.path.join(src, f"kinetics_{s}"))]
  if not present:
    raise DataError(f"{src} holds neither kinetics_train/ nor kinetics_val/")
  indexes = {}
  for split in present:
    label_path = os.path.join(src, f"kinetics_{split}_label.json")
    common.require_path(label_path, f"label index of split {split!r}", is_dir=False)
    indexes[split] = load_label_index(label_path)
  classes = count_classes(list(indexes.values()), num_classes)
  range_hint = "" if num_classes is not None else "; pass --num-classes to set the count"
  splits, seen = {}, {}
  for split in present:
    records = []
    for path in sorted(glob.glob(os.path.join(src, f"kinetics_{split}", "*.json"))):
      record = _video_record(path, indexes[split], classes, range_hint, seen, report)
      if record is not None:
        records.append(record)
    if records:
      splits[split] = records
  return splits, _class_names(indexes.values(), classes)


def _video_record(path: str, index: LabelIndex, classes: int, range_hint: str, seen: dict,
                  report: ConversionReport) -> dict | None:
  """The record of one video file, or ``None`` with the reason counted in ``report``."""
  label_file = os.path.basename(index.path)
  vid = os.path.splitext(os.path.basename(path))[0]
  entry = index.entries.get(vid)
  problem = None
  if vid in index.problems:
    problem = ("bad_label_entry", f"{path}: malformed label-index entry: {index.problems[vid]}")
  elif entry is None:
    problem = ("unknown_label", f"{path}: unknown label: {vid!r} is not in {label_file}")
  elif not entry["has_skeleton"]:
    problem = ("has_skeleton_false", f"{path}: has_skeleton is false in the label index")
  elif not 0 <= entry["label_index"] < classes:
    problem = ("unknown_label", f"{path}: unknown label: label_index {entry['label_index']} of "
                                f"entry {vid!r} in {label_file} is outside [0, {classes})"
                                f"{range_hint}")
  elif vid in seen:
    problem = ("duplicate", f"{path}: duplicate sample name {vid!r} (first seen in "
                            f"{seen[vid]}); the first one is kept")
  if problem is not None:
    report.reject(*problem)
    return None
  try:
    raw, label_index, label = read_video(path)
  except DataError as err:
    report.reject("invalid", str(err))
    return None
  if label_index is not None and label_index != entry["label_index"]:
    report.reject("unknown_label", f"{path}: label_index {label_index} disagrees with the "
                                   f"label index's {entry['label_index']}")
    return None
  if label is not None and entry["label"] is not None and label != entry["label"]:
    report.reject("unknown_label", f"{path}: label {_show(label)} disagrees with the label "
                                   f"index's {_show(entry['label'])}")
    return None
  kp = clean_video(raw, path, report)
  if kp is None:
    return None
  seen[vid] = path
  report.keep()
  return {"keypoint": kp, "label": entry["label_index"], "frame_dir": vid,
          "total_frames": kp.shape[1], "img_shape": (1, 1)}


def _class_names(indexes, classes: int) -> list[str]:
  """One name per class from the label indexes (``class_K`` where none names it; a name given to
  two classes gets the index appended)."""
  names = {}
  for index in indexes:
    for entry in index.entries.values():
      if 0 <= entry["label_index"] < classes and names.get(entry["label_index"]) is None:
        names[entry["label_index"]] = entry["label"]
  class_names = [names.get(k) or f"class_{k}" for k in range(classes)]
  repeated = {n for n, count in collections.Counter(class_names).items() if count > 1}
  return [f"{n} ({k})" if n in repeated else n for k, n in enumerate(class_names)]


def convert(src: str, out: str, name: str = "kinetics_skeleton", *, num_classes: int | None = None,
            overwrite: bool = False, report: ConversionReport | None = None) -> str:
  report = report if report is not None else ConversionReport()
  splits, class_names = collect(src, report, num_classes)
  if not splits:
    raise DataError(f"{src}: no usable video\n{report.summary()}")
  roles = {"train": "train" if "train" in splits else "val",
           "test": "val" if "val" in splits else "train"}
  path = write_dataset(
      name, out, {s: (lambda r=r: r) for s, r in splits.items()}, layout="openpose",
      class_names=class_names, channels=["x", "y", "score"],
      num_persons=max(r["keypoint"].shape[0] for rs in splits.values() for r in rs),
      source="Kinetics-skeleton (ST-GCN release, OpenPose 18 joints)", default_splits=roles,
      report=report, overwrite=overwrite,
      extra_metadata={"coordinates": "x, y normalised by the frame width / height"})
  common.print_report(report, {s: len(r) for s, r in splits.items()})
  return path


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("src", None, "folder with kinetics_{train,val}/ and "
                      "kinetics_{train,val}_label.json", flag_values=fv, required=True)
  flags.DEFINE_integer("num_classes", None, "number of classes (default: from the label index, "
                       "400 for Kinetics-400; see the rule above); also --num-classes",
                       flag_values=fv)


def main(argv=None) -> str:
  args = common.parse_flags(define_flags, argv, __doc__, name_default="kinetics_skeleton")
  return convert(args.src, args.out or common.default_data_dir(), args.name,
                 num_classes=args.num_classes, overwrite=args.overwrite)


if __name__ == "__main__":
  sys.exit(common.run_cli(main))
