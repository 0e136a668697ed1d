"""Converts a pyskl / mmaction2 annotation pickle (2D or 3D, any layout) into the store.

  python -m data_prep.pyskl --src FILE.pkl --out DIR --name NAME --layout coco
  (``--layout`` is a layout name: nturgb+d, coco, openpose, nw-ucla; or a layout JSON path
  ``{"num_joints": V, "edges": [[child, parent], ...], "center": c}``)

The pickle is ``{"split": {split: [frame_dir, ...]}, "annotations": [{"frame_dir", "label",
"total_frames", "keypoint" (M, T, V, C), "keypoint_score" (M, T, V) for 2D, "img_shape"}, ...]}``.
Every split of the pickle becomes a split of the dataset; ``train`` / ``test`` roles go to the
splits whose names contain "train" and "test" (or "val"). A bare list of annotations, or a dict
without ``split``, has no split information: as in pyskl (``split=None`` uses every annotation), all
annotations form one split named ``train``, which serves both roles (a note says so; hold out
validation data with ``--config.data.val_fraction`` for honest figures). 2D keypoints with
``keypoint_score`` are stored as (x, y, score), as pyskl's GenSkeFeat builds them; float16 becomes
float32.

Rules for bad input (each counted in the final summary; every message names the pickle and the
annotation by index and frame_dir):
* one error line (exit status 2), nothing written: an unreadable / truncated / corrupted pickle; one
  whose keypoints would hold more numbers than it has bytes (shared references that expand: a
  pickle bomb, refused before anything is materialised); one with no keypoints at all (a K400
  metadata pickle whose keypoints live in separate "kpfiles"; not supported); ``split`` that is
  not a dict, is empty, has a name that is not ASCII letters, digits and _ (or is ``all``,
  reserved by tfds) or a value that is not a list of frame_dirs; annotations
  that mix kinds of keypoints (3D, 2D with score, 2D without score; the message names the first
  annotations of each kind); ``--num-classes`` outside 1..100000; a ``--class-names`` file that is
  not UTF-8 text, holds control characters, is empty or repeats a name; and, without
  ``--num-classes`` / ``--class-names``, labels that leave a class in 0..max label without a usable
  sample (an outlier label would make phantom classes; the message names the empty classes and the
  annotations above the first gap; pass ``--num-classes`` for a subset that lacks classes).
* labels: ``--label-base auto`` treats labels as 1-based when the smallest is 1 and none is 0;
  a label that is not an integer in [0, num_classes) after the shift is rejected.
* an annotation is rejected when it has no keypoint / frame_dir / label; keypoint (or
  keypoint_score) that is not a real-valued array (object, string, complex, bool dtypes; ragged
  nested lists); a joint count other than the layout's; zero frames or persons; keypoint_score of
  another shape; more persons than frames with more than 10 persons, or with total_frames equal to
  the person count (the array was stored as (T, M, V, C); the message suggests the transpose); an
  img_shape that is not (height, width[, channels]) with positive integer sides up to 1e6 (None,
  missing or (0, 0): unknown).
* coordinates (``files.clean_keypoint``): a joint with NaN / inf / beyond-float32 values, or with
  |value| beyond 1e6 (3D and 2D data of unknown units) or beyond 10 x max(img_shape) (2D pixel data
  with a known img_shape), becomes 0 (repaired); an annotation with no non-zero joint is rejected.
  ``total_frames`` that disagrees with the keypoint's T is set to T (repaired).
  ``keypoint_score`` next to 3D keypoints is ignored (repaired).
* a duplicate frame_dir: the later annotation is rejected; a split entry that is not a string or
  names no annotation, and an annotation in no split, are rejected (counted, not written).
* leakage: a frame_dir listed both in a training split and in an evaluation split of the same
  benchmark (``xsub_train`` / ``xsub_val``; or the splits of the train and test roles) is kept in
  the training split only and rejected from the evaluation split, named; an evaluation split that
  would lose every sample this way is one error.

Only numpy arrays and builtins are unpickled; any other global in the file is refused.
"""

from __future__ import annotations

import os
import sys
import unicodedata

from absl import flags

from data_prep import common
from stgcn_jax.data.formats import files
from stgcn_jax.data.formats.pyskl import (UNSPLIT, annotations_and_splits, check_total_size, is_label,
                                          note_repairs, read_pickle, short, to_record)
from data_prep.pyskl_splits import default_roles, split_records
from stgcn_jax import graph
from stgcn_jax.data import ConversionReport, DataError, write_dataset

MAX_CLASSES = 100_000
MAX_CLASS_NAME_FILE = 16 << 20
_KINDS = {"3d": "3D keypoints (x, y, z)", "2d": "2D keypoints (x, y) without score",
          "2d+score": "2D keypoints with keypoint_score"}
_CHANNELS = {"3d": ["x", "y", "z"], "2d": ["x", "y"], "2d+score": ["x", "y", "score"]}


def _label_shift(annotations: list, label_base, path: str) -> int:
  if label_base != "auto":
    if str(label_base) not in ("0", "1"):
      raise DataError(f"label base must be 'auto', 0 or 1, got {label_base!r}")
    return int(label_base)
  ints = [int(a["label"]) for a in annotations if isinstance(a, dict) and is_label(a.get("label"))]
  one_based = bool(ints) and min(ints) == 1
  if one_based:
    print(f"note: {path}: labels run {min(ints)}..{max(ints)} with no 0; treating them as "
          "1-based (pass --label-base 0 to keep them)")
  return 1 if one_based else 0


def _mixed_kinds(path: str, by_kind: dict) -> DataError:
  parts = []
  for kind, records in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
    first = ", ".join(f"annotation {r['index']} {r['frame_dir']!r}" for r in records[:3])
    verb = "holds" if len(records) == 1 else "hold"
    parts.append(f"{len(records)} {verb} {_KINDS[kind]} (first: {first})")
  return DataError(f"{path}: the annotations mix kinds of keypoints: {'; '.join(parts)}. A dataset "
                   "holds one kind; convert each kind into its own dataset, or make them agree")


def _gaps(used: list[int]) -> list[tuple[int, int]]:
  """The runs of integers missing from the sorted ``used`` between 0 and its last value."""
  gaps, prev = [], -1
  for u in used:
    if u > prev + 1:
      gaps.append((prev + 1, u - 1))
    prev = u
  return gaps


def _check_dense_labels(path: str, records: list[dict], shift: int) -> int:
  """The class count without --num-classes: max label + 1, when every class has a sample."""
  used = sorted({r["label"] for r in records})
  classes = used[-1] + 1
  gaps = _gaps(used)
  if not gaps:
    return classes
  text = ", ".join(f"{a + shift}..{b + shift}" if b > a else f"{a + shift}" for a, b in gaps[:6])
  above = sorted((r for r in records if r["label"] > gaps[0][0]), key=lambda r: -r["label"])
  named = ", ".join(f"{r['label'] + shift} (annotation {r['index']} {r['frame_dir']!r})"
                    for r in above[:5])
  raise DataError(
      f"{path}: without --num-classes / --class-names the classes are {shift}.."
      f"{classes - 1 + shift} (max label + 1, labels read as {shift}-based), but "
      f"{classes - len(used)} of them have no sample: {text}{', ...' if len(gaps) > 6 else ''}. "
      f"Labels above the first empty class: {named}"
      + (f" and {len(above) - 5} more" if len(above) > 5 else "")
      + ". An outlier label would create phantom classes: fix the label(s), or pass --num-classes "
      "N or --class-names FILE (labels outside the classes are then rejected by name)")


def collect(path: str, layout: graph.Layout, label_base: str, num_classes: int | None,
            report: ConversionReport) -> tuple[dict, int, int]:
  """Reads the pickle; returns (split -> records, channel kind, number of classes)."""
  return parse(read_pickle(path), path, layout, label_base, num_classes, report,
               file_bytes=os.path.getsize(path))


def parse(obj, path: str, layout: graph.Layout, label_base: str, num_classes: int | None,
          report: ConversionReport, file_bytes: int | None = None) -> tuple[dict, str, int]:
  """The unpickled object of ``path`` -> (split -> records, channel kind, number of classes).
  ``file_bytes``: the pickle's size, which bounds the numbers it may expand to."""
  annotations, split_names, unsplit = annotations_and_splits(obj, path)
  if file_bytes is not None:
    check_total_size(annotations, path, file_bytes)
  if annotations and not any(isinstance(a, dict) and "keypoint" in a for a in annotations):
    first = annotations[0] if isinstance(annotations[0], dict) else {}
    name = short(first.get("frame_dir"))
    raise DataError(
        f"{path}: no annotation has a 'keypoint' field (annotation 0 {name}"
        f" has {sorted(map(str, first))[:20]}); this is a K400-style metadata pickle whose "
        "keypoints live in separate kpfiles (raw_file), which this converter does not read. "
        "Convert the kpfiles into a pickle with 'keypoint' and 'keypoint_score' per annotation "
        "first.")
  shift = _label_shift(annotations, label_base, path)
  by_name, kind, rejected = _records(annotations, path, layout, shift, num_classes, report)
  splits = split_records(split_names, by_name, rejected, path, report)
  used = {r["frame_dir"] for rs in splits.values() for r in rs}
  for name, record in by_name.items():
    if name in used:
      report.keep()
      note_repairs(record, report)
    else:
      report.reject("no_split", f"{path}: annotation {record['index']} ({name!r}) is in no split; "
                                "not written")
  if not splits:
    raise DataError(f"{path}: no usable annotation is listed in a split:\n" + report.summary())
  kept = [by_name[n] for n in used]
  classes = num_classes or _check_dense_labels(path, sorted(kept, key=lambda r: r["index"]), shift)
  if unsplit:
    print(f"note: {path}: no split information; all {len(used)} annotations form the split "
          f"{UNSPLIT!r}, which also serves the 'test' role (hold out validation data, e.g. "
          "--config.data.val_fraction, for honest figures)")
  return splits, kind, classes


def _records(annotations, path, layout, shift, num_classes, report) -> tuple[dict, str, set]:
  """(frame_dir -> record of every usable annotation, their one kind, rejected frame_dirs)."""
  by_name, by_kind, rejected = {}, {}, set()
  for i, ann in enumerate(annotations):
    if isinstance(ann, dict) and isinstance(ann.get("frame_dir"), str):
      rejected.add(ann["frame_dir"])      # removed again below once the annotation is kept
    try:
      record = to_record(ann, i, path, layout, shift, num_classes, report)
    except DataError as err:
      report.reject("invalid", str(err))
      continue
    if record is None:                    # all-zero: rejected and counted by clean_keypoint
      continue
    name = record["frame_dir"]
    if name in by_name:
      report.reject("duplicate", f"{path}: annotation {i}: duplicate frame_dir {name!r}; the "
                                 f"first one (annotation {by_name[name]['index']}) is kept")
      continue
    by_name[name] = record
    by_kind.setdefault(record["kind"], []).append(record)
  if len(by_kind) > 1:
    raise _mixed_kinds(path, by_kind)
  if not by_name:
    raise DataError(f"{path}: no usable annotation (rejected {report.rejected}):\n"
                    + report.summary())
  return by_name, next(iter(by_kind)), rejected - set(by_name)


def read_class_names(path: str | None, num_classes: int | None) -> list[str] | None:
  """One class name per non-empty line of the UTF-8 text file ``path``."""
  if path is None:
    return None
  files.require_path(path, "class-name file", is_dir=False)
  try:
    if os.path.getsize(path) > MAX_CLASS_NAME_FILE:
      raise DataError(f"{path}: class-name file is larger than {MAX_CLASS_NAME_FILE >> 20} MiB; "
                      "expected one class name per line")
    with open(path, "rb") as f:
      text = f.read().decode("utf-8")
  except UnicodeDecodeError as err:
    raise DataError(f"{path}: class-name file is not UTF-8 text (byte {err.start}: "
                    f"{err.object[err.start:err.start + 1]!r}); expected one class name per "
                    "line") from None
  except OSError as err:
    raise DataError(f"{path}: cannot read the class-name file ({err.strerror or err})") from None
  names, seen = [], {}
  for number, line in enumerate(text.splitlines(), 1):
    line = line.strip()
    if not line:
      continue
    if any(unicodedata.category(ch) == "Cc" for ch in line):
      raise DataError(f"{path}: line {number}: class name {short(line)} holds control "
                      "characters; expected a text file with one class name per line")
    if line in seen:
      raise DataError(f"{path}: line {number}: class name {line!r} repeats line {seen[line]}; "
                      "class names must be unique")
    seen[line] = number
    names.append(line)
  if not names:
    raise DataError(f"{path}: class-name file holds no class name; expected one per line")
  if len(names) > MAX_CLASSES:
    raise DataError(f"{path}: {len(names)} class names, more than {MAX_CLASSES}")
  if num_classes is not None and len(names) != num_classes:
    raise DataError(f"{path}: {len(names)} class names, --num-classes says {num_classes}")
  return names


def convert(src: str, out: str, name: str, layout: str, *, label_base: str = "auto",
            num_classes: int | None = None, class_names_file: str | None = None,
            overwrite: bool = False, report: ConversionReport | None = None) -> str:
  report = report if report is not None else ConversionReport()
  if num_classes is not None and (not is_label(num_classes)
                                  or not 1 <= num_classes <= MAX_CLASSES):
    raise DataError(f"--num-classes must be an integer in 1..{MAX_CLASSES}, got {num_classes!r}")
  layout = graph.get_layout(layout)
  names = read_class_names(class_names_file, num_classes)
  num_classes = len(names) if names else num_classes
  splits, channels, classes = collect(src, layout, label_base, num_classes, report)
  names = names or [f"class_{k}" for k in range(classes)]
  path = write_dataset(
      name, out, {s: (lambda r=r: r) for s, r in splits.items()}, layout=layout,
      class_names=names, channels=_CHANNELS[channels],
      num_persons=max(r["keypoint"].shape[0] for rs in splits.values() for r in rs),
      source=f"pyskl annotation pickle {os.path.basename(src)}",
      default_splits=default_roles(splits), report=report, overwrite=overwrite)
  common.print_report(report, {s: len(r) for s, r in splits.items()})
  return path


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("src", None, "the annotation pickle", flag_values=fv, required=True)
  flags.DEFINE_string("layout", None, "layout name (nturgb+d, coco, openpose, nw-ucla) or a "
                      "layout JSON path", flag_values=fv, required=True)
  flags.DEFINE_enum("label_base", "auto", ["auto", "0", "1"], "whether labels in the pickle start "
                    "at 0 or 1 (default: detect); also --label-base", flag_values=fv)
  flags.DEFINE_integer("num_classes", None, "number of classes (default: from --class-names, else "
                       "max label + 1, which needs a sample of every class); also --num-classes",
                       flag_values=fv)
  flags.DEFINE_string("class_names", None, "text file, one class name per line; also "
                      "--class-names", flag_values=fv)


def main(argv=None) -> str:
  args = common.parse_flags(define_flags, argv, __doc__, name_default=None)
  return convert(args.src, args.out or common.default_data_dir(), args.name, args.layout,
                 label_base=args.label_base, num_classes=args.num_classes,
                 class_names_file=args.class_names, overwrite=args.overwrite)


if __name__ == "__main__":
  sys.exit(common.run_cli(main))
