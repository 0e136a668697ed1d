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
  * Coordinate rule (``files.clean_keypoint``, max_abs 100: x, y are normalised to about [0, 1]
    and scores are confidences in [0, 1]): a joint with NaN, inf, an integer beyond float64 or a
    |value| above 100 becomes 0 (missing); counted as repaired.
  * Missing joints: OpenPose writes an undetected joint as x = y = 0, score 0. A joint at x = y = 0
    is missing whatever its score, so a non-zero score there is set to 0 (counted as repaired)
    before persons are ranked and before the all-zero rule, which rejects a video with no detected
    joint in any frame (e.g. every pose 0 with non-zero scores), naming it.
  * Negative scores: a score is a confidence in [0, 1], so a joint with a negative score is outside
    the format's range like a coordinate beyond 100: it becomes 0 (missing), counted as repaired
    (``negative_score``). ``experiments.predict`` reads a video with the same rules.
  * A video file is any ``*.json`` in ``kinetics_<split>/`` whatever the letter case (``.JSON``).
"""

from __future__ import annotations

import collections
import os
import sys
from typing import NamedTuple

from absl import flags

from data_prep import common
from stgcn_jax.data.formats import files
from stgcn_jax.data import ConversionReport, DataError, write_dataset
from stgcn_jax.data.formats.kinetics import clean_video, read_json, read_video, show

# One video file is read by stgcn_jax.data.formats.kinetics.
__all__ = ["MAX_CLASSES", "LabelIndex", "load_label_index", "count_classes", "collect", "convert",
           "define_flags", "main"]

SPLITS = ("train", "val")
MAX_CLASSES = 100_000                     # Kinetics-700 has 700; bounds the class-name list
_ENTRY = "{has_skeleton, label, label_index}"


class LabelIndex(NamedTuple):
  """A ``kinetics_<split>_label.json``: its well-formed entries and the problems of the others."""
  path: str
  entries: dict     # youtube_id -> {"has_skeleton": bool, "label": str | None, "label_index": int}
  problems: dict    # youtube_id -> message naming the file, entry and field


def _entry_problem(entry) -> str | None:
  if not isinstance(entry, dict):
    return f"expected an object {_ENTRY}, got {show(entry)}"
  if getattr(entry, "duplicates", ()):
    return f"field {show(entry.duplicates[0])} is given more than once"
  label_index = entry.get("label_index")
  if type(label_index) is not int:
    return ("has no label_index" if "label_index" not in entry else
            f"label_index {show(label_index)} is not an integer")
  if "label" in entry and not isinstance(entry["label"], str):
    return f"label {show(entry['label'])} is not a string"
  if "has_skeleton" in entry and not isinstance(entry["has_skeleton"], bool):
    return f"has_skeleton {show(entry['has_skeleton'])} is not true or false"
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
    problems[vid] = f"{path}: entry {show(vid)} appears more than once"
  for vid, entry in index.items():
    if vid in problems:
      continue
    problem = _entry_problem(entry)
    if problem is not None:
      problems[vid] = f"{path}: entry {show(vid)}: {problem}"
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
      raise DataError(f"{files}: largest label_index {show(max(present))} would make more than "
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
  files.require_path(src, "Kinetics-skeleton folder", is_dir=True)
  present = [s for s in SPLITS if os.path.isdir(os.path.join(src, f"kinetics_{s}"))]
  if not present:
    raise DataError(f"{src} holds neither kinetics_train/ nor kinetics_val/")
  indexes = {}
  for split in present:
    label_path = os.path.join(src, f"kinetics_{split}_label.json")
    files.require_path(label_path, f"label index of split {split!r}", is_dir=False)
    indexes[split] = load_label_index(label_path)
  classes = count_classes(list(indexes.values()), num_classes)
  range_hint = "" if num_classes is not None else "; pass --num-classes to set the count"
  splits, seen = {}, {}
  for split in present:
    records = []
    folder = os.path.join(src, f"kinetics_{split}")
    for path in sorted(os.path.join(folder, n) for n in os.listdir(folder)
                       if os.path.splitext(n)[1].lower() == ".json"):
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
  except DataError as err:  # not a regular file, unreadable (the reader's reason), or invalid
    report.reject(getattr(err, "reason", "invalid"), str(err))
    return None
  if label_index is not None and label_index != entry["label_index"]:
    report.reject("unknown_label", f"{path}: label_index {label_index} disagrees with the "
                                   f"label index's {entry['label_index']}")
    return None
  if label is not None and entry["label"] is not None and label != entry["label"]:
    report.reject("unknown_label", f"{path}: label {show(label)} disagrees with the label "
                                   f"index's {show(entry['label'])}")
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
