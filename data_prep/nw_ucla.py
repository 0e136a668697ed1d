"""Converts NW-UCLA (CTR-GCN's ``all_sqe`` JSON files) into the store.

  python -m data_prep.nw_ucla --src /path/to/nw_ucla --out DIR [--name nw_ucla]

``--src`` holds ``all_sqe/aAA_sSS_eEE_vVV.json`` (``{"file_name", "skeletons": [T][20][3],
"label": 1..10}``) and optionally ``val_label.pkl``. Cross-view protocol: views 1 and 2 train
(1020 clips), view 3 test (464). Labels become ``label - 1``; layout ``nw-ucla``; M = 1, C = 3.

Rules for bad input (each counted in the final summary):
* sample files are the ``*.json`` files in ``all_sqe``, the extension matched case-insensitively
  (``.JSON`` counts too); other files there are not samples and are listed in one warning.
* not a regular file (a directory, FIFO, device or dangling link named ``*.json``; only regular
  files are read, so a FIFO cannot hang the run), unreadable, larger than 64 MiB or malformed
  JSON, missing fields, a frame without 20 joints of 3 numbers (a string, ``true`` or ``null``
  coordinate is not a number), zero frames, a label outside 1..10 or one that disagrees with the
  action id in the name, a name that is not ``aAA_sSS_eEE_vVV``, a ``file_name`` field that
  disagrees with the file's own name (the view would be misread), a view other than 1..3: the file
  is rejected with its path (and line / frame).
* a coordinate that is NaN, infinite, beyond float32 or larger than 100 m in magnitude (the data
  are Kinect camera-space metres, observed within 5.1 m): the joint is set to 0 (missing) and the
  clip is kept as repaired; a clip with no non-zero joint left is rejected as ``all_zero``.
* a sample name seen twice (``x.json`` and ``x.JSON``): the later file is rejected.
* ``val_label.pkl`` is read with the restricted unpickler (no code from it runs); when it is
  unreadable or not a list of ``{"file_name": ...}`` dicts, a warning names it and the conversion
  goes on without the cross-check.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from data_prep import common
from stgcn_jax.data import ConversionReport, DataError, safe_pickle, write_dataset
from stgcn_jax.data.formats import files
from stgcn_jax.data.formats.nw_ucla import CLASS_NAMES, MAX_ABS, parse_file, short

TRAIN_VIEWS, TEST_VIEWS = (1, 2), (3,)


def list_files(seq_dir: str) -> tuple[list[str], list[str]]:
  """The sample files (``*.json``, extension in any case) and the other names in ``seq_dir``."""
  try:
    names = sorted(os.listdir(seq_dir))
  except OSError as err:
    raise DataError(f"{seq_dir}: cannot list ({err.strerror or err})") from None
  samples = [os.path.join(seq_dir, n) for n in names if n.lower().endswith(".json")]
  others = [n for n in names if not n.lower().endswith(".json")]
  return samples, others


def collect(src: str, report: ConversionReport) -> dict[str, list[dict]]:
  """Parses every file under ``src/all_sqe`` into train / test record lists."""
  seq_dir = os.path.join(src, "all_sqe")
  files.require_path(seq_dir, "NW-UCLA folder (expected <src>/all_sqe)", is_dir=True)
  paths, others = list_files(seq_dir)
  if others:
    print(f"warning: {seq_dir}: {len(others)} file(s) without a .json extension are not samples "
          f"and were not read (first: {others[0]!r})", file=sys.stderr)
  if not paths:
    raise DataError(f"{seq_dir} holds no .json files")
  records = []
  for path in paths:
    try:
      record = parse_file(path)
    except DataError as err:
      report.reject("invalid", str(err))
      continue
    if record["view"] not in TRAIN_VIEWS + TEST_VIEWS:
      report.reject("unknown_view", f"{path}: view {record['view']} is not 1, 2 or 3")
      continue
    records.append(record)
  records = common.dedupe(records, lambda r: r["frame_dir"], lambda r: r["path"], report)
  splits = {"train": [], "test": []}
  for record in records:
    keypoint = files.clean_keypoint(record["keypoint"], record["path"], report, max_abs=MAX_ABS)
    if keypoint is None:
      continue
    record["keypoint"] = keypoint
    splits["train" if record["view"] in TRAIN_VIEWS else "test"].append(record)
    report.keep()
  _check_val_label(src, splits["test"])
  return splits


def _check_val_label(src: str, test: list[dict]) -> None:
  """Compares the view-3 test set with CTR-GCN's ``val_label.pkl``; problems are warnings."""
  path = os.path.join(src, "val_label.pkl")
  if not os.path.exists(path):
    return
  try:
    entries = safe_pickle.load(path, "CTR-GCN test list")
  except DataError as err:
    print(f"warning: {path}: cannot read CTR-GCN's test list ({err}); not cross-checked",
          file=sys.stderr)
    return
  if not (isinstance(entries, list)
          and all(isinstance(d, dict) and isinstance(d.get("file_name"), str) for d in entries)):
    print(f"warning: {path}: not CTR-GCN's test list (expected a list of dicts with a 'file_name' "
          f"string, got {short(entries)}); not cross-checked", file=sys.stderr)
    return
  names = {d["file_name"] for d in entries}
  ours = {r["frame_dir"] for r in test}
  if names != ours:
    print(f"warning: {path}: the view-3 test set differs from CTR-GCN's list: "
          f"{len(ours - names)} extra, {len(names - ours)} missing", file=sys.stderr)


def convert(src: str, out: str, name: str = "nw_ucla", overwrite: bool = False,
            report: ConversionReport | None = None) -> str:
  """Converts the NW-UCLA folder ``src`` into dataset ``name`` under ``out``."""
  report = report if report is not None else ConversionReport()
  files.require_path(src, "NW-UCLA source folder", is_dir=True)
  splits = collect(src, report)
  path = write_dataset(
      name, out, {s: (lambda r=r: r) for s, r in splits.items()}, layout="nw-ucla",
      class_names=CLASS_NAMES, channels=["x", "y", "z"], num_persons=1,
      source="NW-UCLA (CTR-GCN all_sqe JSON), cross-view: views 1+2 train, view 3 test",
      default_splits={"train": "train", "test": "test"}, report=report, overwrite=overwrite,
      extra_metadata={"protocol": "cross_view"})
  common.print_report(report, {s: len(r) for s, r in splits.items()})
  return path


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("src", None, "folder with all_sqe/ (and val_label.pkl)", flag_values=fv,
                      required=True)


def main(argv=None) -> str:
  args = common.parse_flags(define_flags, argv, __doc__, name_default="nw_ucla")
  return convert(args.src, args.out or common.default_data_dir(), args.name, args.overwrite)


if __name__ == "__main__":
  sys.exit(common.run_cli(main))
