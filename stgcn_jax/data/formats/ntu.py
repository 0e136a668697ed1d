"""NTU RGB+D raw ``.skeleton`` files: the sample name, the bodies, and one file -> one record.

A sample name is ``SsssCcccPpppRrrrAaaa`` (setup, camera, performer, replication, action); a file
is named after its sample with a ``.skeleton`` suffix in any letter case. :func:`read_bodies` reads
a file (only a regular file, at most ``MAX_FILE_BYTES``) and checks its structure, naming file and
line; :func:`to_record` keeps the two most energetic bodies. The format's rules are listed in
:mod:`data_prep.ntu`, the converter, which also applies the benchmark protocols.
"""

from __future__ import annotations

import os
import re

import numpy as np

from stgcn_jax.data.formats import files
from stgcn_jax.data.records import DataError

SUFFIX = ".skeleton"
NAME_RE = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})\Z", re.ASCII | re.IGNORECASE)
NUM_JOINTS = 25
VALUES_PER_JOINT = 12
LINES_PER_BODY = 2 + NUM_JOINTS            # info line, joint count, one line per joint
MAX_ABS_METRES = 100.0                     # coordinate rule: |x|, |y|, |z| beyond this -> joint 0
MAX_FILE_BYTES = 256 * 2**20               # the largest official file is a few MB
_INT_RE = re.compile(r"^[+-]?[0-9]+\Z")


def read_bytes(path: str) -> bytes:
  """The content of the regular .skeleton file ``path`` (:func:`files.read_regular_file`, at most
  ``MAX_FILE_BYTES``); :class:`Unreadable` for anything else, so a FIFO is rejected instead of
  waited on."""
  return files.read_regular_file(path, ".skeleton file", MAX_FILE_BYTES)


class _Lines:
  """Line reader over a whole file that reports 1-based line numbers (LF or CRLF)."""

  def __init__(self, path: str):
    text = read_bytes(path).decode("utf-8", errors="replace").removeprefix("\ufeff")
    self.lines = [line.removesuffix("\r") for line in text.split("\n")]
    self.path, self.pos = path, 0

  def remaining(self) -> int:
    return len(self.lines) - self.pos

  def next(self, what: str) -> str:
    if self.pos >= len(self.lines):
      raise DataError(f"{self.path}:{self.pos + 1}: unexpected end of file (truncated?); expected "
                      f"{what}")
    self.pos += 1
    return self.lines[self.pos - 1]

  def integer(self, what: str) -> int:
    line = self.next(what)
    if not _INT_RE.match(line.strip()):
      raise DataError(f"{self.path}:{self.pos}: expected {what} (one integer), got "
                      f"{line.strip()[:60]!r}")
    try:
      return int(line)
    except ValueError:                       # more digits than Python converts
      raise DataError(f"{self.path}:{self.pos}: {what} {line.strip()[:60]!r} is out of range") \
          from None

  def count(self, what: str, per_item: int) -> int:
    """A non-negative count of items that take at least ``per_item`` lines each."""
    value = self.integer(what)
    if value < 0:
      raise DataError(f"{self.path}:{self.pos}: {what} is {value}, expected 0 or more")
    if value * per_item > self.remaining():
      raise DataError(f"{self.path}:{self.pos}: {what} is {value}, which needs at least "
                      f"{value * per_item} more lines but the file has {self.remaining()}: "
                      "unexpected end of file (truncated?) or a corrupted count")
    return value


def _is_float(text: str) -> bool:
  try:
    float(text)
    return True
  except ValueError:
    return False


def read_bodies(path: str) -> tuple[int, dict[int, tuple[np.ndarray, np.ndarray]]]:
  """One .skeleton file -> (num_frames, {bodyID: (frame indices (n,), xyz (n, 25, 3) float64)}).

  Every count is checked against the lines left in the file before anything is allocated, so the
  memory used is proportional to the file's size. Raises DataError naming file and line.
  """
  reader = _Lines(path)
  num_frames = reader.count("the frame count", 1)
  frames: dict[int, list[int]] = {}
  coords: dict[int, list[np.ndarray]] = {}
  for t in range(num_frames):
    num_bodies = reader.count(f"the body count of frame {t}", LINES_PER_BODY)
    seen: dict[int, int] = {}
    for b in range(num_bodies):
      info = reader.next(f"the info line of frame {t}, body {b}").split()
      if len(info) != 10:
        raise DataError(f"{path}:{reader.pos}: frame {t}, body {b}: body info line has "
                        f"{len(info)} values, expected 10")
      if not _INT_RE.match(info[0]) or len(info[0]) > 21:
        raise DataError(f"{path}:{reader.pos}: frame {t}, body {b}: bodyID {info[0][:30]!r} is not "
                        "a 64-bit integer")
      body_id = int(info[0])
      if body_id in seen:
        raise DataError(f"{path}:{reader.pos}: frame {t}, body {b}: bodyID {body_id} appears twice "
                        f"in the frame (first on line {seen[body_id]})")
      seen[body_id] = reader.pos
      num_joints = reader.integer(f"the joint count of frame {t}, body {b}")
      if num_joints != NUM_JOINTS:
        raise DataError(f"{path}:{reader.pos}: frame {t}, body {b} has {num_joints} joints, "
                        f"expected {NUM_JOINTS}")
      start = reader.pos
      rows = [reader.next(f"joint {v} of frame {t}, body {b}") for v in range(NUM_JOINTS)]
      values = " ".join(rows).split()
      if len(values) != NUM_JOINTS * VALUES_PER_JOINT:
        for v, row in enumerate(rows):
          if len(row.split()) != VALUES_PER_JOINT:
            raise DataError(f"{path}:{start + v + 1}: frame {t}, body {b}, joint {v}: "
                            f"{len(row.split())} values, expected {VALUES_PER_JOINT}")
      try:
        xyz = np.array(values, dtype=np.float64).reshape(NUM_JOINTS, VALUES_PER_JOINT)[:, :3]
      except ValueError:
        v, bad = next((v, x) for v, row in enumerate(rows) for x in row.split() if not _is_float(x))
        raise DataError(f"{path}:{start + v + 1}: frame {t}, body {b}, joint {v}: non-numeric "
                        f"value {bad[:30]!r}") from None
      frames.setdefault(body_id, []).append(t)
      coords.setdefault(body_id, []).append(xyz)
  rest = [i for i in range(reader.pos, len(reader.lines)) if reader.lines[i].strip()]
  if rest:
    raise DataError(f"{path}:{rest[0] + 1}: trailing data after the last frame")
  return num_frames, {i: (np.array(frames[i]), np.stack(coords[i])) for i in frames}


def read_skeleton(path: str) -> tuple[int, dict[int, np.ndarray]]:
  """One .skeleton file -> (num_frames, {bodyID: (T, 25, 3) float64 xyz, 0 where absent}).

  Dense per body (memory T x bodies); :func:`to_record` uses :func:`read_bodies` instead.
  """
  num_frames, sparse = read_bodies(path)
  bodies = {}
  for body_id, (frames, xyz) in sparse.items():
    bodies[body_id] = np.zeros((num_frames, NUM_JOINTS, 3))
    bodies[body_id][frames] = xyz
  return num_frames, bodies


def motion_energy(body: np.ndarray) -> float:
  """ST-GCN's get_nonzero_std: sum over x, y, z of the std over the body's non-zero frames."""
  valid = body.sum(-1).sum(-1) != 0
  if not valid.any():
    return 0.0
  s = body[valid]
  return float(s[..., 0].std() + s[..., 1].std() + s[..., 2].std())


def usable(xyz: np.ndarray) -> np.ndarray:
  """``xyz`` with the joints the coordinate rule would repair set to 0 (for ranking only)."""
  with np.errstate(invalid="ignore"):
    good = (np.isfinite(xyz) & (np.abs(xyz) <= MAX_ABS_METRES)).all(-1, keepdims=True)
  return np.where(good, xyz, 0.0)


def to_record(path: str, max_bodies: int = 2) -> dict:
  """One .skeleton file -> a record with the ``max_bodies`` most energetic bodies.

  ``keypoint`` is (M, T, 25, 3) float64 as read; apply the coordinate rule
  (``files.clean_keypoint(..., max_abs=MAX_ABS_METRES)``) before storing it.
  """
  name = stem(os.path.basename(path))
  meta = parse_name(name)
  name = name.upper()
  num_frames, bodies = read_bodies(path)
  if num_frames == 0 or not bodies:
    raise DataError(f"{path}: zero-length sequence ({num_frames} frames, no body in any frame)")
  ids = list(bodies)
  energy = [motion_energy(usable(bodies[i][1])) for i in ids]
  order = sorted(range(len(ids)), key=lambda k: -energy[k])[:max_bodies]
  kp = np.zeros((len(order), num_frames, NUM_JOINTS, 3))
  for m, k in enumerate(order):
    frames, xyz = bodies[ids[k]]
    kp[m, frames] = xyz
  return {"keypoint": kp, "label": meta["action"] - 1, "frame_dir": name,
          "total_frames": num_frames, "img_shape": (0, 0), "meta": meta, "path": path}


def stem(file_name: str) -> str:
  """``file_name`` without a ``.skeleton`` suffix in any letter case."""
  return file_name[:-len(SUFFIX)] if file_name.lower().endswith(SUFFIX) else file_name


def parse_name(name: str) -> dict:
  match = NAME_RE.match(name)
  if not match:
    raise DataError(f"{name}: not an NTU sample name SsssCcccPpppRrrrAaaa")
  s, c, p, r, a = (int(g) for g in match.groups())
  return {"setup": s, "camera": c, "performer": p, "replication": r, "action": a}
