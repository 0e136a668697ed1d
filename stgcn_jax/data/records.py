"""Skeleton records, their validation, and the kept / repaired / rejected report of a conversion.

A *record* is one clip as it is stored (see ``stgcn_jax/data/__init__.py`` for the contract)::

  {"keypoint": float32 (M, T, V, C), "label": int, "frame_dir": str, "total_frames": int,
   "img_shape": (height, width) ints, (0, 0) when unknown}

Every converter in ``data_prep/`` builds records, passes them through :func:`check_record` (the last
gate before the store) and accounts for every input sample in a :class:`ConversionReport`: nothing is
dropped silently.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from stgcn_jax.errors import UserError

__all__ = ["DataError", "ConversionReport", "check_record", "repair_non_finite", "all_zero_message",
           "FLOAT32_MAX"]


class DataError(UserError):
  """Input that cannot be used; the message names the file / sample / field and what was expected."""


@dataclasses.dataclass
class ConversionReport:
  """Counts every input sample as kept, repaired (kept after a documented fix) or rejected."""
  kept: int = 0
  repaired: int = 0
  rejected: int = 0
  messages: list[str] = dataclasses.field(default_factory=list)
  reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  max_messages: int = 50

  def keep(self) -> None:
    self.kept += 1

  def repair(self, reason: str, message: str) -> None:
    """A sample that is kept after a fix; ``kept`` is counted separately by :meth:`keep`."""
    self.repaired += 1
    self._note(f"repaired: {message}", f"repaired/{reason}")

  def reject(self, reason: str, message: str) -> None:
    self.rejected += 1
    self._note(f"rejected: {message}", f"rejected/{reason}")

  def _note(self, message: str, key: str) -> None:
    self.reasons[key] += 1
    if len(self.messages) < self.max_messages:
      self.messages.append(message)

  def summary(self) -> str:
    lines = [f"kept {self.kept} samples ({self.repaired} of them repaired), rejected {self.rejected}"]
    for key, count in sorted(self.reasons.items()):
      lines.append(f"  {key}: {count}")
    shown = self.messages
    lines.extend(f"  {m}" for m in shown)
    hidden = self.repaired + self.rejected - len(shown)
    if hidden > 0:
      lines.append(f"  ... and {hidden} more")
    return "\n".join(lines)

  def to_json(self) -> dict:
    return {"kept": self.kept, "repaired": self.repaired, "rejected": self.rejected,
            "reasons": dict(self.reasons)}


FLOAT32_MAX = float(np.finfo(np.float32).max)


def repair_non_finite(keypoint: np.ndarray, where: str,
                      max_abs: float = FLOAT32_MAX) -> tuple[np.ndarray, str | None]:
  """Documented repair rule: a joint with an unusable coordinate becomes all-zero (missing).

  Unusable means NaN, infinite, beyond float32 (it would become inf when stored) or larger in
  magnitude than ``max_abs``, the format's plausible range (e.g. 100 for metres from a depth
  camera). Zero joints are how every format marks a joint that was not detected; the normalisation
  and sampling transforms already treat them as missing. Returns the repaired float copy and one
  message, or the input unchanged and ``None`` when every value is usable.
  """
  keypoint = np.asarray(keypoint)
  values = keypoint.astype(np.float64, copy=False)
  with np.errstate(invalid="ignore"):
    usable = np.isfinite(values) & (np.abs(values) <= min(max_abs, FLOAT32_MAX))
  if usable.all():
    return keypoint, None
  bad_joint = ~usable.all(axis=-1)                  # (M, T, V)
  m, t, v = (int(i[0]) for i in np.nonzero(bad_joint))
  first = values[m, t, v]
  kinds = []
  if not np.isfinite(values).all():
    kinds.append("NaN/inf")
  if (np.abs(values[np.isfinite(values)]) > min(max_abs, FLOAT32_MAX)).any():
    kinds.append(f"|value| > {max_abs:g}" if max_abs < FLOAT32_MAX else "beyond float32")
  keypoint = np.where(bad_joint[..., None], 0, values).astype(
      keypoint.dtype if keypoint.dtype.kind == "f" and keypoint.itemsize >= 4 else np.float32)
  return keypoint, (f"{where}: {int(bad_joint.sum())} joint(s) with {' or '.join(kinds)} "
                    f"coordinates set to 0 (first: person {m}, frame {t}, joint {v}: "
                    f"{np.array2string(first, precision=4)})")


def all_zero_message(keypoint: np.ndarray, where: str) -> str | None:
  """The documented rejection rule for a clip in which no joint was detected in any frame.

  Such a clip (every value 0, e.g. a pose estimator that found nobody) carries no information and
  normalises to garbage; converters reject it, naming it in the report. Returns the message, or
  ``None`` when at least one joint is non-zero.
  """
  if np.any(np.asarray(keypoint)):
    return None
  return f"{where}: all-zero sequence (no joint detected in any frame)"


def check_record(record: dict, *, num_joints: int, channels: int, num_classes: int,
                 where: str) -> dict:
  """Validates a record against the dataset contract and returns it with canonical dtypes.

  Raises:
    DataError: naming ``where`` (file or sample) and the field that breaks the contract.
  """
  for key in ("keypoint", "label", "frame_dir", "total_frames"):
    if key not in record:
      raise DataError(f"{where}: record has no {key!r} field")
  kp = np.asarray(record["keypoint"])
  if kp.ndim != 4:
    raise DataError(f"{where}: keypoint must have 4 axes (M, T, V, C), got shape {kp.shape}")
  m, t, v, c = kp.shape
  if m < 1 or t < 1:
    raise DataError(f"{where}: zero-length sequence (keypoint shape {kp.shape}); expected at least "
                    "one person and one frame")
  if v != num_joints:
    raise DataError(f"{where}: keypoint has {v} joints, the layout expects {num_joints}")
  if c != channels:
    raise DataError(f"{where}: keypoint has {c} channels, the dataset expects {channels}")
  if kp.dtype.kind not in "iuf":
    raise DataError(f"{where}: keypoint must hold real numbers, got dtype {kp.dtype}")
  kp = kp.astype(np.float32)
  if not np.isfinite(kp).all():
    raise DataError(f"{where}: keypoint holds NaN, infinite or beyond-float32 values")
  if not kp.any():
    raise DataError(all_zero_message(kp, where))
  label = record["label"]
  if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
    raise DataError(f"{where}: label must be an integer, got {label!r}")
  if not 0 <= int(label) < num_classes:
    raise DataError(f"{where}: label {int(label)} is outside [0, {num_classes})")
  name = str(record["frame_dir"])
  if not name:
    raise DataError(f"{where}: empty frame_dir (sample name)")
  total = int(record["total_frames"])
  if total < 1:
    raise DataError(f"{where}: total_frames must be >= 1, got {total}")
  img_shape = tuple(int(s) for s in record.get("img_shape", (0, 0)))
  if len(img_shape) != 2:
    raise DataError(f"{where}: img_shape must be (height, width), got {img_shape}")
  return {"keypoint": kp, "label": int(label), "frame_dir": name, "total_frames": total,
          "img_shape": np.asarray(img_shape, np.int32)}
