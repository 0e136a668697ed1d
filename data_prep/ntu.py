"""Converts NTU RGB+D 60 / 120 raw ``.skeleton`` files into the store, one dataset per benchmark.

  python -m data_prep.ntu --src nturgb+d_skeletons [--src more_skeletons] --out DIR \
      --dataset ntu60 [--benchmark xsub,xview]

writes ``ntu60_xsub`` and ``ntu60_xview`` (``ntu120``: ``xsub``, ``xset``), each with ``train`` and
``test`` splits, layout ``nturgb+d``, C = 3 (x, y, z camera space, metres), M <= 2 and the raw frame
count as ``total_frames``. Protocols (NTU README): NTU-60 xsub trains on performers 1 2 4 5 8 9 13
14 15 16 17 18 19 25 27 28 31 34 35 38, xview on cameras 2 and 3; NTU-120 xsub adds 45 46 47 49 50
52 53 54 55 56 57 58 59 70 74 78 80 81 82 83 84 85 86 89 91 92 93 94 95 97 98 100 103, xset trains
on even setups. Samples in the official missing-skeleton list (``ntu_missing_skeletons.txt``,
shipped here; ``--missing FILE`` replaces it) are skipped and counted.

Sources: every entry of a ``--src`` folder whose name ends in ``.skeleton`` in any letter case
(``.SKELETON`` copies from case-folding file systems are accepted) is a sample; the sample name is
the rest of the file name, upper-cased (``s001c001p001r001a011.skeleton`` is
``S001C001P001R001A011``). Other entries are not samples and are ignored.

Bodies: bodies are tracked by their 64-bit bodyID; the two with the largest motion energy (the sum
over x, y, z of the standard deviation over the body's non-zero frames, ST-GCN's
``get_nonzero_std``) are kept, the most energetic first. Frames without a body are zero frames.

Rules for bad input (each counted in the final summary, with a message naming the file):
* a directory, FIFO, device or dangling symbolic link named ``*.skeleton``: rejected as
  ``not_a_file`` (only regular files are ever read, so a FIFO cannot hang the run); a file that
  cannot be read (permissions, I/O error) or is larger than 256 MiB: rejected as ``unreadable``.
  The other files convert.
* a truncated or malformed file (wrong value count, non-numeric value, a negative count, a frame or
  body count larger than the remaining lines can hold, a body with a joint count other than 25, the
  same bodyID twice in one frame, trailing data), a file with no body in any frame, or a name that
  is not ``SsssCcccPpppRrrrAaaa``: rejected with file and line (and frame / body where it applies).
* a coordinate that is NaN, infinite, or larger in magnitude than 100 m (``MAX_ABS_METRES``; the
  Kinect v2 sees a few metres): the joint becomes 0 (missing), the sample is kept and counted as
  repaired. Such joints are ignored when bodies are ranked by motion energy.
* a sequence in which every joint is 0 in every frame (after the repair): rejected as ``all_zero``.
* ``--missing FILE`` that is not UTF-8 text with one sample name per line (``#`` comments allowed):
  one error line naming the file (and line), exit status 2.
CRLF line endings and a UTF-8 byte-order mark are accepted.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import flags

from data_prep import common
from data_prep.ntu_protocol import DATASETS, MISSING_FILE, class_names, is_train, read_missing_list
from stgcn_jax.data import ConversionReport, DataError, dataset_dir, write_dataset
from stgcn_jax.data.builders import recover_swap
from stgcn_jax.data.formats import files
from stgcn_jax.data.formats.files import Unreadable
from stgcn_jax.data.formats.ntu import MAX_ABS_METRES, SUFFIX, parse_name, stem, to_record


def _list_sources(src: str) -> list[str]:
  files.require_path(src, "NTU skeleton folder", is_dir=True)
  try:
    names = os.listdir(src)
  except OSError as err:
    raise DataError(f"NTU skeleton folder {src!r}: cannot list it ({err.strerror or err})") \
        from None
  return sorted(os.path.join(src, n) for n in names if n.lower().endswith(SUFFIX))


def collect(srcs: list[str], dataset: str, missing: set[str],
            report: ConversionReport) -> list[str]:
  """The .skeleton paths of ``dataset``; every other entry named ``*.skeleton`` is counted as
  rejected (not a regular file, bad name, not in the dataset, missing list, duplicate)."""
  paths = []
  for src in srcs:
    paths += _list_sources(src)
  if not paths:
    raise DataError(f"no .skeleton files in {srcs}")
  keep, seen = [], {}
  limits = DATASETS[dataset]
  for path in paths:
    try:
      files.check_regular_file(path, ".skeleton file")
    except Unreadable as err:
      report.reject(err.reason, str(err))
      continue
    name = stem(os.path.basename(path))
    try:
      meta = parse_name(name)
    except DataError as err:
      report.reject("bad_name", f"{path}: {err}")
      continue
    name = name.upper()
    if meta["setup"] > limits["max_setup"] or not 1 <= meta["action"] <= limits["num_classes"]:
      report.reject("not_in_dataset", f"{path}: setup {meta['setup']} / action {meta['action']} "
                                      f"is not part of {dataset}")
    elif name in missing:
      report.reject("missing_skeleton_list", f"{path}: in the official missing-skeleton list")
    elif name in seen:
      report.reject("duplicate", f"{path}: duplicate sample name (first seen in {seen[name]})")
    else:
      seen[name] = path
      keep.append(path)
  return keep


def _plan(records: list[dict], dataset: str, benchmarks: list[str], prefix: str, out: str,
          overwrite: bool) -> dict[str, dict[str, list[dict]]]:
  """Every benchmark's train and test records, checked before any dataset is written: a split
  that would be empty, or a dataset that exists without ``overwrite``, is refused up front, so a
  conversion of several benchmarks writes all of them or none."""
  plan = {}
  for bench in benchmarks:
    splits = {"train": [r for r in records if is_train(r["meta"], dataset, bench)],
              "test": [r for r in records if not is_train(r["meta"], dataset, bench)]}
    empty = [s for s, rs in splits.items() if not rs]
    if empty:
      raise DataError(f"{prefix}_{bench}: split {empty[0]!r} would have no samples (of the "
                      f"{len(records)} converted, {len(splits['train'])} train, "
                      f"{len(splits['test'])} test); nothing was written")
    target = dataset_dir(f"{prefix}_{bench}", out)
    recover_swap(target)
    if os.path.exists(target) and not overwrite:
      raise DataError(f"{target} already exists; pass --overwrite to replace it (nothing was "
                      "written)")
    plan[bench] = splits
  return plan


def convert(srcs: list[str], out: str, dataset: str = "ntu60", benchmarks=None, *,
            prefix: str | None = None, missing_file: str | None = None, overwrite: bool = False,
            report: ConversionReport | None = None) -> list[str]:
  """Converts NTU files under ``srcs``; returns the written dataset directories."""
  if dataset not in DATASETS:
    raise DataError(f"--dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
  benchmarks = list(benchmarks or DATASETS[dataset]["benchmarks"])
  for bench in benchmarks:
    if bench not in DATASETS[dataset]["benchmarks"]:
      raise DataError(f"{dataset} has benchmarks {DATASETS[dataset]['benchmarks']}, not {bench!r}")
  missing_file = missing_file or MISSING_FILE
  files.require_path(missing_file, "missing-skeleton list", is_dir=False)
  missing = read_missing_list(missing_file)
  report = report if report is not None else ConversionReport()
  paths = collect(srcs, dataset, missing, report)
  records, outs = [], []
  for path in paths:
    try:
      record = to_record(path)
    except Unreadable as err:
      report.reject(err.reason, str(err))
      continue
    except DataError as err:
      report.reject("invalid", str(err))
      continue
    keypoint = files.clean_keypoint(record["keypoint"], path, report, max_abs=MAX_ABS_METRES)
    if keypoint is None:                    # all-zero: rejected (and named) by clean_keypoint
      continue
    record["keypoint"] = keypoint.astype(np.float32)
    report.keep()
    records.append(record)
  classes = class_names(dataset)
  plan = _plan(records, dataset, benchmarks, prefix or dataset, out, overwrite)
  for bench, splits in plan.items():
    outs.append(write_dataset(
        f"{prefix or dataset}_{bench}", out, {s: (lambda r=r: r) for s, r in splits.items()},
        layout="nturgb+d", class_names=classes, channels=["x", "y", "z"],
        num_persons=max((r["keypoint"].shape[0] for r in records), default=1),
        source=f"NTU RGB+D raw .skeleton files, {dataset} {bench}",
        default_splits={"train": "train", "test": "test"}, report=report, overwrite=overwrite,
        extra_metadata={"protocol": f"{dataset}_{bench}"}))
    print(f"{prefix or dataset}_{bench}: train {len(splits['train'])}, test {len(splits['test'])}")
  print(report.summary())
  return outs


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_multi_string("src", None, "folder of .skeleton files (repeat for the NTU-120 "
                            "second archive)", flag_values=fv, required=True)
  flags.DEFINE_enum("dataset", "ntu60", sorted(DATASETS), "which NTU RGB+D", flag_values=fv)
  flags.DEFINE_string("benchmark", None, "comma-separated benchmarks (default: all of the "
                      "dataset's)", flag_values=fv)
  flags.DEFINE_string("missing", None, "missing-skeleton list to skip (default: the shipped "
                      "official list)", flag_values=fv)


def main(argv=None) -> list[str]:
  args = common.parse_flags(define_flags, argv, __doc__, name_default="")
  return convert(args.src, args.out or common.default_data_dir(), args.dataset,
                 args.benchmark.split(",") if args.benchmark else None, prefix=args.name or None,
                 missing_file=args.missing, overwrite=args.overwrite)


if __name__ == "__main__":
  sys.exit(common.run_cli(main))
