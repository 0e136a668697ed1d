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

Bodies: bodies are tracked by their 64-bit bodyID; the two with the largest motion energy (the sum
over x, y, z of the standard deviation over the body's non-zero frames, ST-GCN's ``get_nonzero_std``)
are kept, the most energetic first. Frames without a body are zero frames.

Rules for bad input (each counted in the final summary): a truncated or malformed file (wrong value
count, non-numeric value, a body with a joint count other than 25, trailing data), a file with no
body in any frame, or a name that is not ``SsssCcccPpppRrrrAaaa``: rejected with file and line.
NaN / inf coordinates: the joint becomes 0 (repaired). CRLF line endings are accepted.
"""

from __future__ import annotations

import glob
import os
import re
import sys

import numpy as np

from data_prep import common
from stgcn_jax.data import ConversionReport, DataError, write_dataset

NUM_JOINTS = 25
_HERE = os.path.dirname(os.path.abspath(__file__))
MISSING_FILE = os.path.join(_HERE, "ntu_missing_skeletons.txt")
CLASS_FILE = os.path.join(_HERE, "ntu_class_names.txt")
_NAME_RE = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})$")
XSUB60 = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
XSUB120 = XSUB60 + (45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83,
                    84, 85, 86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103)
DATASETS = {"ntu60": {"max_setup": 17, "num_classes": 60, "benchmarks": ("xsub", "xview")},
            "ntu120": {"max_setup": 32, "num_classes": 120, "benchmarks": ("xsub", "xset")}}


def _read_list(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def parse_name(name: str) -> dict:
  match = _NAME_RE.match(name)
  if not match:
    raise DataError(f"{name}: not an NTU sample name SsssCcccPpppRrrrAaaa")
  s, c, p, r, a = (int(g) for g in match.groups())
  return {"setup": s, "camera": c, "performer": p, "replication": r, "action": a}


def is_train(meta: dict, dataset: str, benchmark: str) -> bool:
  if benchmark == "xsub":
    return meta["performer"] in (XSUB60 if dataset == "ntu60" else XSUB120)
  if benchmark == "xview":
    return meta["camera"] in (2, 3)
  if benchmark == "xset":
    return meta["setup"] % 2 == 0
  raise DataError(f"unknown benchmark {benchmark!r}")


class _Lines:
  """Non-blank-aware line reader that reports 1-based line numbers."""

  def __init__(self, path: str):
    with open(path, "rb") as f:
      self.lines = f.read().decode("utf-8", errors="replace").splitlines()
    self.path, self.pos = path, 0

  def next(self, what: str) -> str:
    if self.pos >= len(self.lines):
      raise DataError(f"{self.path}:{self.pos + 1}: unexpected end of file (truncated?); expected "
                      f"{what}")
    self.pos += 1
    return self.lines[self.pos - 1]

  def integer(self, what: str) -> int:
    line = self.next(what)
    try:
      return int(line.split()[0]) if len(line.split()) == 1 else int(line)
    except ValueError:
      raise DataError(f"{self.path}:{self.pos}: expected {what} (one integer), got "
                      f"{line.strip()[:60]!r}") from None


def _is_float(text: str) -> bool:
  try:
    float(text)
    return True
  except ValueError:
    return False


def read_skeleton(path: str) -> tuple[int, dict[int, np.ndarray]]:
  """One .skeleton file -> (num_frames, {bodyID: (T, 25, 3) float64 xyz, 0 where absent})."""
  reader = _Lines(path)
  num_frames = reader.integer("the frame count")
  if num_frames < 0:
    raise DataError(f"{path}:1: negative frame count {num_frames}")
  bodies: dict[int, np.ndarray] = {}
  for t in range(num_frames):
    num_bodies = reader.integer(f"the body count of frame {t}")
    for b in range(num_bodies):
      info = reader.next(f"the info line of frame {t}, body {b}").split()
      if len(info) != 10:
        raise DataError(f"{path}:{reader.pos}: frame {t}, body {b}: body info line has "
                        f"{len(info)} values, expected 10")
      try:
        body_id = int(info[0])
      except ValueError:
        raise DataError(f"{path}:{reader.pos}: frame {t}, body {b}: bodyID {info[0]!r} is not an "
                        "integer") from None
      num_joints = reader.integer(f"the joint count of frame {t}, body {b}")
      if num_joints != NUM_JOINTS:
        raise DataError(f"{path}:{reader.pos}: frame {t}, body {b} has {num_joints} joints, "
                        f"expected {NUM_JOINTS}")
      start = reader.pos
      rows = [reader.next(f"joint {v} of frame {t}, body {b}") for v in range(NUM_JOINTS)]
      values = " ".join(rows).split()
      if len(values) != NUM_JOINTS * 12:
        for v, row in enumerate(rows):
          if len(row.split()) != 12:
            raise DataError(f"{path}:{start + v + 1}: frame {t}, body {b}, joint {v}: "
                            f"{len(row.split())} values, expected 12")
      try:
        xyz = np.array(values, dtype=np.float64).reshape(NUM_JOINTS, 12)[:, :3]
      except ValueError:
        v, bad = next((v, x) for v, row in enumerate(rows) for x in row.split() if not _is_float(x))
        raise DataError(f"{path}:{start + v + 1}: frame {t}, body {b}, joint {v}: non-numeric "
                        f"value {bad!r}") from None
      if body_id not in bodies:
        bodies[body_id] = np.zeros((num_frames, NUM_JOINTS, 3))
      bodies[body_id][t] = xyz
  rest = [i for i in range(reader.pos, len(reader.lines)) if reader.lines[i].strip()]
  if rest:
    raise DataError(f"{path}:{rest[0] + 1}: trailing data after the last frame")
  return num_frames, bodies


def motion_energy(body: np.ndarray) -> float:
  """ST-GCN's get_nonzero_std: sum over x, y, z of the std over the body's non-zero frames."""
  valid = body.sum(-1).sum(-1) != 0
  if not valid.any():
    return 0.0
  s = body[valid]
  return float(s[..., 0].std() + s[..., 1].std() + s[..., 2].std())


def to_record(path: str, max_bodies: int = 2) -> dict:
  name = os.path.basename(path).removesuffix(".skeleton")
  meta = parse_name(name)
  num_frames, bodies = read_skeleton(path)
  if num_frames == 0 or not bodies:
    raise DataError(f"{path}: zero-length sequence ({num_frames} frames, no body in any frame)")
  ids = list(bodies)
  energy = [motion_energy(bodies[i]) for i in ids]
  order = sorted(range(len(ids)), key=lambda k: -energy[k])[:max_bodies]
  kp = np.stack([bodies[ids[k]] for k in order])
  return {"keypoint": kp, "label": meta["action"] - 1, "frame_dir": name,
          "total_frames": num_frames, "img_shape": (0, 0), "meta": meta, "path": path}


def collect(srcs: list[str], dataset: str, missing: set[str], report: ConversionReport) -> list[str]:
  """The .skeleton paths of ``dataset``; other files are counted as rejected."""
  paths = []
  for src in srcs:
    common.require_path(src, "NTU skeleton folder", is_dir=True)
    paths += sorted(glob.glob(os.path.join(src, "*.skeleton")))
  if not paths:
    raise DataError(f"no .skeleton files in {srcs}")
  keep, seen = [], {}
  limits = DATASETS[dataset]
  for path in paths:
    name = os.path.basename(path).removesuffix(".skeleton")
    try:
      meta = parse_name(name)
    except DataError as err:
      report.reject("bad_name", f"{path}: {err}")
      continue
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
  common.require_path(missing_file, "missing-skeleton list", is_dir=False)
  missing = set(_read_list(missing_file))
  report = report if report is not None else ConversionReport()
  paths = collect(srcs, dataset, missing, report)
  records, outs = [], []
  for path in paths:
    try:
      record = to_record(path)
    except DataError as err:
      report.reject("invalid", str(err))
      continue
    record["keypoint"] = common.finite_or_repair(record["keypoint"], path, report)
    report.keep()
    records.append(record)
  classes = _read_list(CLASS_FILE)[:DATASETS[dataset]["num_classes"]]
  for bench in benchmarks:
    splits = {"train": [r for r in records if is_train(r["meta"], dataset, bench)],
              "test": [r for r in records if not is_train(r["meta"], dataset, bench)]}
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


def main(argv=None) -> list[str]:
  parser = common.base_parser(__doc__, name_default="")
  parser.add_argument("--src", action="append", required=True,
                      help="folder of .skeleton files (repeat for the NTU-120 second archive)")
  parser.add_argument("--dataset", choices=sorted(DATASETS), default="ntu60")
  parser.add_argument("--benchmark", default=None,
                      help="comma-separated benchmarks (default: all of the dataset's)")
  parser.add_argument("--missing", default=None,
                      help="missing-skeleton list to skip (default: the shipped official list)")
  args = parser.parse_args(argv)
  return convert(args.src, args.out or common.default_data_dir(), args.dataset,
                 args.benchmark.split(",") if args.benchmark else None, prefix=args.name or None,
                 missing_file=args.missing, overwrite=args.overwrite)


if __name__ == "__main__":
  sys.exit(common.run_cli(main))
