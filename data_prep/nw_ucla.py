"""Converts NW-UCLA (CTR-GCN's ``all_sqe`` JSON files) into the store.

  python -m data_prep.nw_ucla --src /path/to/nw_ucla --out DIR [--name nw_ucla]

``--src`` holds ``all_sqe/aAA_sSS_eEE_vVV.json`` (``{"file_name", "skeletons": [T][20][3],
"label": 1..10}``) and optionally ``val_label.pkl``. Cross-view protocol: views 1 and 2 train
(1020 clips), view 3 test (464). Labels become ``label - 1``; layout ``nw-ucla``; M = 1, C = 3.

Rules for bad input (each counted in the final summary):
* unreadable or malformed JSON, missing fields, a frame without 20 joints of 3 values, zero frames,
  a label outside 1..10 or one that disagrees with the action id in the name, a name that is not
  ``aAA_sSS_eEE_vVV``: the file is rejected with its path (and line / frame).
* NaN or infinite coordinates: the joint is set to 0 (missing) and the clip is kept as repaired.
* a ``file_name`` seen twice: the later file is rejected.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import re
import sys

import numpy as np

from data_prep import common
from stgcn_jax.data import ConversionReport, DataError, write_dataset

CLASS_NAMES = ["pick up with one hand", "pick up with two hands", "drop trash", "walk around",
               "sit down", "stand up", "donning", "doffing", "throw", "carry"]
ACTION_IDS = [1, 2, 3, 4, 5, 6, 8, 9, 11, 12]     # label k (1-based) <-> action id ACTION_IDS[k-1]
_NAME_RE = re.compile(r"^a(\d\d)_s(\d\d)_e(\d\d)_v(\d\d)$")
TRAIN_VIEWS, TEST_VIEWS = (1, 2), (3,)
NUM_JOINTS = 20


def parse_file(path: str) -> dict:
  """One NW-UCLA JSON file -> a record with an extra ``view``; raises DataError naming the file."""
  try:
    with open(path, encoding="utf-8") as f:
      obj = json.load(f)
  except json.JSONDecodeError as err:
    raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg} at column "
                    f"{err.colno})") from None
  except (OSError, UnicodeDecodeError) as err:
    raise DataError(f"{path}: cannot read ({err})") from None
  if not isinstance(obj, dict):
    raise DataError(f"{path}: expected a JSON object with file_name, skeletons, label")
  missing = [k for k in ("skeletons", "label") if k not in obj]
  if missing:
    raise DataError(f"{path}: missing field(s) {missing}")
  name = str(obj.get("file_name") or os.path.splitext(os.path.basename(path))[0])
  match = _NAME_RE.match(name)
  if not match:
    raise DataError(f"{path}: sample name {name!r} is not of the form aAA_sSS_eEE_vVV")
  action, view = int(match.group(1)), int(match.group(4))
  label = obj["label"]
  if isinstance(label, bool) or not isinstance(label, int) or not 1 <= label <= len(CLASS_NAMES):
    raise DataError(f"{path}: unknown label {label!r}; expected an integer in 1..{len(CLASS_NAMES)}")
  if ACTION_IDS[label - 1] != action:
    raise DataError(f"{path}: label {label} means action a{ACTION_IDS[label - 1]:02d}, but the name "
                    f"says a{action:02d}")
  frames = obj["skeletons"]
  if not isinstance(frames, list) or not frames:
    raise DataError(f"{path}: zero-length sequence (field 'skeletons' has no frames)")
  for t, frame in enumerate(frames):
    if not isinstance(frame, list) or len(frame) != NUM_JOINTS:
      n = len(frame) if isinstance(frame, list) else type(frame).__name__
      raise DataError(f"{path}: frame {t} has {n} joints, expected {NUM_JOINTS}")
    for v, joint in enumerate(frame):
      if not isinstance(joint, list) or len(joint) != 3:
        raise DataError(f"{path}: frame {t}, joint {v}: expected [x, y, z], got {joint!r}")
  try:
    kp = np.asarray(frames, dtype=np.float64)[None]
  except (TypeError, ValueError) as err:
    raise DataError(f"{path}: non-numeric coordinates ({err})") from None
  return {"keypoint": kp, "label": label - 1, "frame_dir": name, "total_frames": len(frames),
          "img_shape": (0, 0), "view": view, "path": path}


def collect(src: str, report: ConversionReport) -> dict[str, list[dict]]:
  """Parses every file under ``src/all_sqe`` into train / test record lists."""
  seq_dir = os.path.join(src, "all_sqe")
  common.require_path(seq_dir, "NW-UCLA folder (expected <src>/all_sqe)", is_dir=True)
  paths = sorted(glob.glob(os.path.join(seq_dir, "*.json")))
  if not paths:
    raise DataError(f"{seq_dir} holds no .json files")
  records = []
  for path in paths:
    try:
      record = parse_file(path)
    except DataError as err:
      report.reject("invalid", str(err))
      continue
    record["keypoint"] = common.finite_or_repair(record["keypoint"], path, report)
    records.append(record)
  records = common.dedupe(records, lambda r: r["frame_dir"], lambda r: r["path"], report)
  splits = {"train": [], "test": []}
  for record in records:
    if record["view"] in TRAIN_VIEWS:
      splits["train"].append(record)
    elif record["view"] in TEST_VIEWS:
      splits["test"].append(record)
    else:
      report.reject("unknown_view", f"{record['path']}: view {record['view']} is not 1, 2 or 3")
      continue
    report.keep()
  _check_val_label(src, splits["test"])
  return splits


def _check_val_label(src: str, test: list[dict]) -> None:
  path = os.path.join(src, "val_label.pkl")
  if not os.path.exists(path):
    return
  try:
    with open(path, "rb") as f:
      names = {str(d["file_name"]) for d in pickle.load(f)}
  except Exception as err:  # pylint: disable=broad-except
    print(f"warning: {path}: cannot read CTR-GCN's test list ({err}); not cross-checked",
          file=sys.stderr)
    return
  ours = {r["frame_dir"] for r in test}
  if names != ours:
    print(f"warning: {path}: the view-3 test set differs from CTR-GCN's list: "
          f"{len(ours - names)} extra, {len(names - ours)} missing", file=sys.stderr)


def convert(src: str, out: str, name: str = "nw_ucla", overwrite: bool = False,
            report: ConversionReport | None = None) -> str:
  """Converts the NW-UCLA folder ``src`` into dataset ``name`` under ``out``."""
  report = report if report is not None else ConversionReport()
  common.require_path(src, "NW-UCLA source folder", is_dir=True)
  splits = collect(src, report)
  path = write_dataset(
      name, out, {s: (lambda r=r: r) for s, r in splits.items()}, layout="nw-ucla",
      class_names=CLASS_NAMES, channels=["x", "y", "z"], num_persons=1,
      source="NW-UCLA (CTR-GCN all_sqe JSON), cross-view: views 1+2 train, view 3 test",
      default_splits={"train": "train", "test": "test"}, report=report, overwrite=overwrite,
      extra_metadata={"protocol": "cross_view"})
  common.print_report(report, {s: len(r) for s, r in splits.items()})
  return path


def main(argv=None) -> str:
  parser = common.base_parser(__doc__, name_default="nw_ucla")
  parser.add_argument("--src", required=True, help="folder with all_sqe/ (and val_label.pkl)")
  args = parser.parse_args(argv)
  return convert(args.src, args.out or common.default_data_dir(), args.name, args.overwrite)


if __name__ == "__main__":
  sys.exit(common.run_cli(main))
