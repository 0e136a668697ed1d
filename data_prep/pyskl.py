"""Converts a pyskl / mmaction2 annotation pickle (2D or 3D, any layout) into the store.

  python -m data_prep.pyskl --src FILE.pkl --out DIR --name NAME --layout coco
  (``--layout`` is a layout name: nturgb+d, coco, openpose, nw-ucla; or a layout JSON path
  ``{"num_joints": V, "edges": [[child, parent], ...], "center": c}``)

The pickle is ``{"split": {split: [frame_dir, ...]}, "annotations": [{"frame_dir", "label",
"total_frames", "keypoint" (M, T, V, C), "keypoint_score" (M, T, V) for 2D, "img_shape"}, ...]}``
(a bare list of annotations is one split named ``all``). Every split of the pickle becomes a split
of the dataset; ``train`` / ``test`` roles go to the splits whose names contain "train" and "test"
(or "val"). 2D keypoints with ``keypoint_score`` are stored as (x, y, score), as pyskl's GenSkeFeat
builds them; float16 becomes float32.

Rules for bad input (each counted in the final summary):
* an unreadable / truncated pickle, or one with no keypoints at all (a K400 metadata pickle whose
  keypoints live in separate "kpfiles"; not supported): one error line, nothing written.
* labels: ``--label-base auto`` treats labels as 1-based when the smallest is 1 and none is 0;
  a label that is not an integer in [0, num_classes) after the shift is rejected.
* an annotation without keypoint / frame_dir / label, with a joint count other than the layout's,
  a channel count other than the first sample's, or zero frames or persons: rejected.
* NaN / inf coordinates: the joint becomes 0 (repaired). ``total_frames`` that disagrees with the
  keypoint's T is set to T (repaired). ``keypoint_score`` next to 3D keypoints is ignored (repaired).
* a duplicate frame_dir: the later annotation is rejected; a split entry naming no annotation and
  an annotation in no split are rejected (counted, not written).

Only numpy arrays and builtins are unpickled; any other global in the file is refused.
"""

from __future__ import annotations

import os
import pickle
import re
import sys

import numpy as np

from data_prep import common
from stgcn_jax import graph
from stgcn_jax.data import ConversionReport, DataError, write_dataset

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "tuple"),
}
_SPLIT_RE = re.compile(r"^\w+$")
_KINDS = {"3d": "3D keypoints (x, y, z)", "2d": "2D keypoints (x, y) without score",
          "2d+score": "2D keypoints with keypoint_score"}
_CHANNELS = {"3d": ["x", "y", "z"], "2d": ["x", "y"], "2d+score": ["x", "y", "score"]}


class _SafeUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    if (module, name) in _ALLOWED_GLOBALS:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f"global {module}.{name} is not allowed (only numpy arrays and "
                                 "builtins are)")


def read_pickle(path: str):
  common.require_path(path, "pyskl annotation file", is_dir=False)
  try:
    with open(path, "rb") as f:
      return _SafeUnpickler(f).load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
          IndexError, KeyError) as err:
    raise DataError(f"{path}: cannot unpickle ({type(err).__name__}: {err}); the file is "
                    "truncated, corrupted or not a pyskl annotation pickle") from None


def _annotations_and_splits(obj, path: str) -> tuple[list, dict]:
  if isinstance(obj, list):
    return obj, {"all": [a.get("frame_dir") for a in obj if isinstance(a, dict)]}
  if not isinstance(obj, dict) or "annotations" not in obj:
    raise DataError(f"{path}: expected a dict with 'split' and 'annotations' (or a list of "
                    f"annotations), got {type(obj).__name__}"
                    + (f" with keys {sorted(obj)[:10]}" if isinstance(obj, dict) else ""))
  annotations, splits = obj["annotations"], obj.get("split")
  if not isinstance(annotations, list):
    raise DataError(f"{path}: 'annotations' must be a list, got {type(annotations).__name__}")
  if splits is None:
    splits = {"all": [a.get("frame_dir") for a in annotations if isinstance(a, dict)]}
  if not isinstance(splits, dict):
    raise DataError(f"{path}: 'split' must be a dict of split name -> [frame_dir, ...]")
  for name in splits:
    if not isinstance(name, str) or not _SPLIT_RE.match(name):
      raise DataError(f"{path}: split name {name!r} must be letters, digits and _")
  return annotations, splits


def _label_shift(annotations: list, label_base: str, path: str) -> int:
  labels = [a.get("label") for a in annotations if isinstance(a, dict)]
  ints = [int(x) for x in labels if isinstance(x, (int, np.integer)) and not isinstance(x, bool)]
  if label_base == "auto":
    one_based = bool(ints) and min(ints) == 1 and 0 not in ints
    if one_based:
      print(f"note: {path}: labels run {min(ints)}..{max(ints)} with no 0; treating them as "
            "1-based (pass --label-base 0 to keep them)")
    return 1 if one_based else 0
  return int(label_base)


def _record(ann, i: int, path: str, layout: graph.Layout, shift: int,
            num_classes: int | None, report: ConversionReport) -> dict:
  """One annotation -> record; raises DataError for a rejected annotation."""
  if not isinstance(ann, dict):
    raise DataError(f"{path}: annotation {i} is a {type(ann).__name__}, expected a dict")
  name = ann.get("frame_dir")
  where = f"{path}: annotation {i} ({name!r})"
  if not isinstance(name, str) or not name:
    raise DataError(f"{where}: missing or empty 'frame_dir'")
  if "keypoint" not in ann:
    raise DataError(f"{where}: no 'keypoint' field")
  label = ann.get("label")
  if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
    raise DataError(f"{where}: label must be an integer, got {label!r}")
  label = int(label) - shift
  if label < 0 or (num_classes is not None and label >= num_classes):
    raise DataError(f"{where}: unknown label {int(ann['label'])} (after the label base shift "
                    f"{label}; expected 0..{(num_classes or 0) - 1})")
  kp = np.asarray(ann["keypoint"])
  if kp.ndim != 4 or kp.shape[-1] not in (2, 3):
    raise DataError(f"{where}: keypoint must be (M, T, V, 2 or 3), got shape {kp.shape}")
  if kp.shape[0] == 0 or kp.shape[1] == 0:
    raise DataError(f"{where}: zero-length sequence (keypoint shape {kp.shape})")
  if kp.shape[2] != layout.num_joints:
    raise DataError(f"{where}: keypoint has {kp.shape[2]} joints, layout {layout.name!r} has "
                    f"{layout.num_joints}")
  kp = kp.astype(np.float32)
  score = ann.get("keypoint_score")
  if score is not None:
    score = np.asarray(score, np.float32)
    if kp.shape[-1] == 3:
      report.repair("score_with_3d", f"{where}: keypoint_score next to 3D keypoints is ignored")
    elif score.shape != kp.shape[:3]:
      raise DataError(f"{where}: keypoint_score shape {score.shape} does not match keypoint "
                      f"{kp.shape[:3]}")
    else:
      kp = np.concatenate([kp, score[..., None]], axis=-1)
  kind = "2d+score" if kp.shape[-1] == 3 and score is not None and ann["keypoint"].shape[-1] == 2 \
      else f"{kp.shape[-1]}d"
  kp = common.finite_or_repair(kp, where, report)
  total = ann.get("total_frames", kp.shape[1])
  if not isinstance(total, (int, np.integer)) or int(total) != kp.shape[1]:
    report.repair("total_frames", f"{where}: total_frames {total!r} != keypoint T {kp.shape[1]}; "
                                  "set to T")
    total = kp.shape[1]
  img_shape = tuple(int(s) for s in ann.get("img_shape", (0, 0)))[:2]
  return {"keypoint": kp, "label": label, "frame_dir": name, "total_frames": int(total),
          "img_shape": img_shape if len(img_shape) == 2 else (0, 0), "kind": kind}


def collect(path: str, layout: graph.Layout, label_base: str, num_classes: int | None,
            report: ConversionReport) -> tuple[dict, int, int]:
  """Reads the pickle; returns (split -> records, channel kind, number of classes)."""
  annotations, split_names = _annotations_and_splits(read_pickle(path), path)
  if annotations and not any(isinstance(a, dict) and "keypoint" in a for a in annotations):
    first = annotations[0] if isinstance(annotations[0], dict) else {}
    raise DataError(
        f"{path}: no annotation has a 'keypoint' field (annotation 0 {first.get('frame_dir')!r} "
        f"has {sorted(first)}); this is a K400-style metadata pickle whose keypoints live in "
        "separate kpfiles (raw_file), which this converter does not read. Convert the kpfiles "
        "into a pickle with 'keypoint' and 'keypoint_score' per annotation first.")
  shift = _label_shift(annotations, label_base, path)
  by_name, channels, rejected = {}, None, set()
  for i, ann in enumerate(annotations):
    if isinstance(ann, dict) and isinstance(ann.get("frame_dir"), str):
      rejected.add(ann["frame_dir"])      # removed again below once the annotation is kept
    try:
      record = _record(ann, i, path, layout, shift, num_classes, report)
      if channels is None:
        channels = record["kind"]
      elif record["kind"] != channels:
        raise DataError(f"{path}: annotation {i} ({record['frame_dir']!r}) holds "
                        f"{_KINDS[record['kind']]}, the first sample holds {_KINDS[channels]}")
    except DataError as err:
      report.reject("invalid", str(err))
      continue
    if record["frame_dir"] in by_name:
      report.reject("duplicate", f"{path}: annotation {i}: duplicate frame_dir "
                                 f"{record['frame_dir']!r}; the first one is kept")
      continue
    by_name[record["frame_dir"]] = record
  rejected -= set(by_name)
  if not by_name:
    raise DataError(f"{path}: no usable annotation (rejected {report.rejected}):\n"
                    + report.summary())
  classes = num_classes or max(r["label"] for r in by_name.values()) + 1
  splits, used = {}, set()
  for split, names in split_names.items():
    records, listed = [], set()
    for name in names:
      if name in listed:
        report.reject("duplicate", f"{path}: split {split!r} lists {name!r} twice; kept once")
        continue
      listed.add(name)
      if name in by_name:
        records.append(by_name[name])
        used.add(name)
      elif name not in rejected:          # a rejected annotation is already counted
        report.reject("split_entry", f"{path}: split {split!r} lists {name!r}, which has no "
                                     "usable annotation")
    if records:
      splits[split] = records
  for name in by_name:
    if name in used:
      report.keep()
    else:
      report.reject("no_split", f"{path}: annotation {name!r} is in no split; not written")
  return splits, channels, classes


def default_roles(split_names) -> dict:
  roles = {}
  for role, keys in (("train", ("train",)), ("test", ("test", "val"))):
    for key in keys:
      hits = [s for s in sorted(split_names) if key in s]
      if hits and role not in roles:
        roles[role] = hits[0]
  if len(split_names) == 1:
    only = next(iter(split_names))
    roles.setdefault("train", only)
    roles.setdefault("test", only)
  return roles


def read_class_names(path: str | None, num_classes: int | None) -> list[str] | None:
  if path is None:
    return None
  common.require_path(path, "class-name file", is_dir=False)
  with open(path, encoding="utf-8") as f:
    names = [line.strip() for line in f if line.strip()]
  if num_classes is not None and len(names) != num_classes:
    raise DataError(f"{path}: {len(names)} class names, --num-classes says {num_classes}")
  return names


def convert(src: str, out: str, name: str, layout: str, *, label_base: str = "auto",
            num_classes: int | None = None, class_names_file: str | None = None,
            overwrite: bool = False, report: ConversionReport | None = None) -> str:
  report = report if report is not None else ConversionReport()
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


def main(argv=None) -> str:
  parser = common.base_parser(__doc__, name_default=None)
  parser.add_argument("--src", required=True, help="the annotation pickle")
  parser.add_argument("--layout", required=True,
                      help="layout name (nturgb+d, coco, openpose, nw-ucla) or a layout JSON path")
  parser.add_argument("--label-base", choices=("auto", "0", "1"), default="auto",
                      help="whether labels in the pickle start at 0 or 1 (default: detect)")
  parser.add_argument("--num-classes", type=int, default=None,
                      help="number of classes (default: from --class-names, else max label + 1)")
  parser.add_argument("--class-names", default=None, help="text file, one class name per line")
  args = parser.parse_args(argv)
  return convert(args.src, args.out or common.default_data_dir(), args.name, args.layout,
                 label_base=args.label_base, num_classes=args.num_classes,
                 class_names_file=args.class_names, overwrite=args.overwrite)


if __name__ == "__main__":
  sys.exit(common.run_cli(main))
