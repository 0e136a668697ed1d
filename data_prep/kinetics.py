"""Converts ST-GCN's Kinetics-skeleton release (OpenPose JSON per video) into the store.

  python -m data_prep.kinetics --src KINETICS_SKELETON_DIR --out DIR [--name kinetics_skeleton]

``--src`` holds ``kinetics_train/`` and / or ``kinetics_val/`` (one ``<youtube_id>.json`` per video:
``{"data": [{"frame_index": 1-based, "skeleton": [{"pose": [x0, y0, ..., x17, y17], "score":
[s0..s17]}, ...]}, ...], "label", "label_index"}``) with ``kinetics_<split>_label.json`` next to
them. Each present split becomes a split (``train``, ``val``; the test role is ``val``). Layout
``openpose`` (18 joints), C = 3 = (x, y, score), x and y normalised by the frame size (about
[0, 1]); ``img_shape`` is stored as (1, 1) so PreNormalize2D maps them to [-1, 1].

ST-GCN's feeder rules: videos with ``has_skeleton: false`` are dropped (counted); a frame's first
5 detections are read, ranked by their summed joint score and the top 2 kept (detections are not
tracked across frames, so the ranking is per frame); frame ``frame_index`` goes to row
``frame_index - 1`` and T is the largest frame_index (ST-GCN pads every clip to 300 instead).

Rules for bad input (each counted in the final summary): malformed JSON, a detection whose pose /
score do not hold 18 joints, a frame_index below 1 or repeated, no person in any frame, a video
that is not in the label index, or whose label disagrees with it: rejected with file (and line /
frame). NaN / inf values: the joint becomes 0 (repaired).
"""

from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np

from data_prep import common
from stgcn_jax.data import ConversionReport, DataError, write_dataset

NUM_JOINTS, PERSONS_IN, PERSONS_OUT = 18, 5, 2
SPLITS = ("train", "val")


def read_json(path: str):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as err:
    raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg} at column "
                    f"{err.colno})") from None
  except (OSError, UnicodeDecodeError) as err:
    raise DataError(f"{path}: cannot read ({err})") from None


def parse_video(path: str) -> tuple[np.ndarray, int, str]:
  """One video JSON -> (keypoint (M, T, 18, 3) float64, label_index, label name)."""
  obj = read_json(path)
  if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
    raise DataError(f"{path}: expected an object with a 'data' list of frames")
  frames = obj["data"]
  indices = []
  for k, frame in enumerate(frames):
    idx = frame.get("frame_index") if isinstance(frame, dict) else None
    if isinstance(idx, bool) or not isinstance(idx, int) or idx < 1:
      raise DataError(f"{path}: data[{k}]: frame_index {idx!r} is not an integer >= 1")
    indices.append(idx)
  if len(set(indices)) != len(indices):
    dup = next(i for i in indices if indices.count(i) > 1)
    raise DataError(f"{path}: frame_index {dup} appears more than once")
  num_frames = max(indices, default=0)
  kp = np.zeros((PERSONS_IN, num_frames, NUM_JOINTS, 3))
  for k, frame in enumerate(frames):
    people = frame.get("skeleton") or []
    for m, person in enumerate(people[:PERSONS_IN]):
      pose, score = person.get("pose"), person.get("score")
      if not isinstance(pose, list) or not isinstance(score, list) or len(pose) != 2 * NUM_JOINTS \
          or len(score) != NUM_JOINTS:
        raise DataError(
            f"{path}: frame_index {indices[k]}, person {m}: pose has "
            f"{len(pose) if isinstance(pose, list) else pose!r} values and score "
            f"{len(score) if isinstance(score, list) else score!r}; expected {2 * NUM_JOINTS} "
            f"and {NUM_JOINTS} ({NUM_JOINTS} joints)")
      try:
        kp[m, indices[k] - 1, :, :2] = np.asarray(pose, np.float64).reshape(NUM_JOINTS, 2)
        kp[m, indices[k] - 1, :, 2] = np.asarray(score, np.float64)
      except (TypeError, ValueError) as err:
        raise DataError(f"{path}: frame_index {indices[k]}, person {m}: non-numeric value "
                        f"({err})") from None
  if num_frames == 0 or not np.any(kp != 0):
    raise DataError(f"{path}: zero-length sequence (no person in any of {num_frames} frames)")
  # Rank the detections of every frame by summed score and keep the top PERSONS_OUT.
  order = np.argsort(-np.nan_to_num(kp[..., 2]).sum(-1), axis=0, kind="stable")   # (5, T)
  kp = np.take_along_axis(kp, order[:, :, None, None], axis=0)[:PERSONS_OUT]
  if not np.any(kp[1:] != 0):     # nobody in second place in any frame: M = 1
    kp = kp[:1]
  return kp, obj.get("label_index"), obj.get("label")


def load_label_index(path: str) -> dict:
  index = read_json(path)
  if not isinstance(index, dict):
    raise DataError(f"{path}: expected {{youtube_id: {{has_skeleton, label, label_index}}}}")
  for vid, entry in index.items():
    if not isinstance(entry, dict) or not isinstance(entry.get("label_index"), int):
      raise DataError(f"{path}: entry {vid!r} has no integer label_index")
  return index


def collect(src: str, report: ConversionReport, num_classes: int | None):
  common.require_path(src, "Kinetics-skeleton folder", is_dir=True)
  splits, names = {}, {}
  present = [s for s in SPLITS if os.path.isdir(os.path.join(src, f"kinetics_{s}"))]
  if not present:
    raise DataError(f"{src} holds neither kinetics_train/ nor kinetics_val/")
  indexes = {}
  for split in present:
    label_path = os.path.join(src, f"kinetics_{split}_label.json")
    common.require_path(label_path, f"label index of split {split!r}", is_dir=False)
    indexes[split] = load_label_index(label_path)
    for entry in indexes[split].values():
      names.setdefault(entry["label_index"], entry.get("label", f"class_{entry['label_index']}"))
  classes = num_classes or max(names) + 1
  seen = {}
  for split in present:
    records = []
    for path in sorted(glob.glob(os.path.join(src, f"kinetics_{split}", "*.json"))):
      vid = os.path.splitext(os.path.basename(path))[0]
      entry = indexes[split].get(vid)
      try:
        if entry is None:
          raise DataError(f"{path}: unknown label: {vid!r} is not in kinetics_{split}_label.json")
        if not entry.get("has_skeleton", True):
          report.reject("has_skeleton_false", f"{path}: has_skeleton is false in the label index")
          continue
        if not 0 <= entry["label_index"] < classes:
          raise DataError(f"{path}: unknown label: label_index {entry['label_index']} is outside "
                          f"[0, {classes})")
        kp, label_index, _ = parse_video(path)
        if label_index is not None and label_index != entry["label_index"]:
          raise DataError(f"{path}: label_index {label_index} disagrees with the label index's "
                          f"{entry['label_index']}")
        if vid in seen:
          raise DataError(f"{path}: duplicate sample name {vid!r} (first seen in {seen[vid]})")
      except DataError as err:
        report.reject("invalid" if "duplicate" not in str(err) else "duplicate", str(err))
        continue
      seen[vid] = path
      kp = common.finite_or_repair(kp, path, report)
      report.keep()
      records.append({"keypoint": kp, "label": entry["label_index"], "frame_dir": vid,
                      "total_frames": kp.shape[1], "img_shape": (1, 1)})
    if records:
      splits[split] = records
  class_names = [names.get(k, f"class_{k}") for k in range(classes)]
  repeated = {n for n in class_names if class_names.count(n) > 1}
  class_names = [f"{n} ({k})" if n in repeated else n for k, n in enumerate(class_names)]
  return splits, class_names


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


def main(argv=None) -> str:
  parser = common.base_parser(__doc__, name_default="kinetics_skeleton")
  parser.add_argument("--src", required=True,
                      help="folder with kinetics_{train,val}/ and kinetics_{train,val}_label.json")
  parser.add_argument("--num-classes", type=int, default=None,
                      help="number of classes (default: largest label_index + 1)")
  args = parser.parse_args(argv)
  return convert(args.src, args.out or common.default_data_dir(), args.name,
                 num_classes=args.num_classes, overwrite=args.overwrite)


if __name__ == "__main__":
  sys.exit(common.run_cli(main))
