"""Numpy skeleton transforms, ported rule for rule from pyskl (``pose_related.py``, ``sampling.py``).

All functions take and return ``(M, T, V, C)`` arrays unless noted; none mutates its input.
Randomness comes from an explicit ``np.random.RandomState`` so that a clip is a pure function of
(record, seed); pyskl's test-mode sampling re-seeds a RandomState with 255 for every clip, exactly as
``np.random.seed(255)`` does in pyskl.

Deviations from pyskl, on purpose:
* ``random_rot`` on 2D data draws the angle from U(-theta, theta); pyskl calls
  ``np.random.uniform(-theta)``, i.e. U(-theta, 1). With a score channel only x and y rotate.
* ``pre_normalize_3d`` accepts M > 2 (person 1 is compared with person 0, as pyskl does for M = 2).
* ``uniform_sample`` omits pyskl's "transitional frame" snapping, a no-op for integer indices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stgcn_jax import graph
from stgcn_jax.errors import UserError

__all__ = ["pre_normalize_3d", "pre_normalize_2d", "random_rot", "rotation_3d", "bone_pairs",
           "joint_to_bone", "to_motion", "gen_feat", "uniform_sample_indices",
           "format_gcn_input", "MODALITIES", "PYSKL_BONE_PAIRS"]

MODALITIES = ("j", "b", "jm", "bm")

# pyskl JointToBone pairs (v1, v2): bone[v1] = joint[v1] - joint[v2].
PYSKL_BONE_PAIRS = {
    "nturgb+d": ((0, 1), (1, 20), (2, 20), (3, 2), (4, 20), (5, 4), (6, 5), (7, 6), (8, 20), (9, 8),
                 (10, 9), (11, 10), (12, 0), (13, 12), (14, 13), (15, 14), (16, 0), (17, 16),
                 (18, 17), (19, 18), (21, 22), (20, 20), (22, 7), (23, 24), (24, 11)),
    "openpose": ((0, 0), (1, 0), (2, 1), (3, 2), (4, 3), (5, 1), (6, 5), (7, 6), (8, 2), (9, 8),
                 (10, 9), (11, 5), (12, 11), (13, 12), (14, 0), (15, 0), (16, 14), (17, 15)),
    "coco": ((0, 0), (1, 0), (2, 0), (3, 1), (4, 2), (5, 0), (6, 0), (7, 5), (8, 6), (9, 7),
             (10, 8), (11, 0), (12, 0), (13, 11), (14, 12), (15, 13), (16, 14)),
}


# ----------------------------------------------------------------------------- normalisation
def _unit(v: np.ndarray) -> np.ndarray:
  return v / np.linalg.norm(v)


def _angle_between(v1: np.ndarray, v2) -> float:
  v2 = np.asarray(v2, np.float64)
  if np.abs(v1).sum() < 1e-6 or np.abs(v2).sum() < 1e-6:
    return 0.0
  return float(np.arccos(np.clip(np.dot(_unit(v1), _unit(v2)), -1.0, 1.0)))


def _axis_rotation(axis: np.ndarray, theta: float) -> np.ndarray:
  """Counter-clockwise rotation about ``axis`` by ``theta`` (pyskl / 2s-AGCN formula)."""
  if np.abs(axis).sum() < 1e-6 or abs(theta) < 1e-6:
    return np.eye(3)
  axis = np.asarray(axis, np.float64)
  axis = axis / np.sqrt(np.dot(axis, axis))
  a = np.cos(theta / 2.0)
  b, c, d = -axis * np.sin(theta / 2.0)
  aa, bb, cc, dd = a * a, b * b, c * c, d * d
  bc, ad, ac, ab, bd, cd = b * c, a * d, a * c, a * b, b * d, c * d
  return np.array([[aa + bb - cc - dd, 2 * (bc + ad), 2 * (bd - ac)],
                   [2 * (bc - ad), aa + cc - bb - dd, 2 * (cd + ab)],
                   [2 * (bd + ac), 2 * (cd - ab), aa + dd - bb - cc]])


def _valid_frames(person: np.ndarray) -> np.ndarray:
  """Frames of one person ``(T, V, C)`` with any joint not close to 0 (``np.isclose`` atol 1e-8)."""
  return np.nonzero(~np.all(np.abs(person) <= 1e-8, axis=(1, 2)))[0]


def pre_normalize_3d(keypoint: np.ndarray, *, zaxis: Sequence[int] = (0, 1),
                     xaxis: Sequence[int] = (8, 4), align_spine: bool = True,
                     align_center: bool = True) -> np.ndarray:
  """pyskl ``PreNormalize3D``; returns the normalised clip (its T may shrink).

  1. Keeps the frames where person 0 is not all-zero; if person 1 has more such frames, keeps
     person 1's frames and swaps persons 0 and 1.
  2. ``align_center``: subtracts the centre joint of person 0 at frame 0 (joint 1 when V == 25,
     else the last joint, as pyskl does) from every non-zero joint; zero joints stay zero.
  3. ``align_spine``: rotates so ``zaxis[0] -> zaxis[1]`` of person 0, frame 0 is parallel to +z,
     then so ``xaxis[0] -> xaxis[1]`` is parallel to +x.
  A clip that is all zeros is returned unchanged.
  """
  skeleton = np.asarray(keypoint, np.float32)
  if skeleton.sum() == 0:
    return skeleton.copy()
  index0 = _valid_frames(skeleton[0])
  if skeleton.shape[0] >= 2:
    index1 = _valid_frames(skeleton[1])
    if len(index0) < len(index1):
      order = np.r_[1, 0, np.arange(2, skeleton.shape[0])]
      skeleton = skeleton[:, index1][order]
    else:
      skeleton = skeleton[:, index0]
  else:
    skeleton = skeleton[:, index0]
  if skeleton.shape[1] == 0:          # only persons >= 2 are visible: nothing to align on
    return np.asarray(keypoint, np.float32).copy()
  if align_center:
    center = skeleton[0, 0, 1 if skeleton.shape[2] == 25 else -1].copy()
    mask = ((skeleton != 0).sum(-1) > 0)[..., None]
    skeleton = (skeleton - center) * mask
  if align_spine:
    bottom, top = skeleton[0, 0, zaxis[0]], skeleton[0, 0, zaxis[1]]
    rot_z = _axis_rotation(np.cross(top - bottom, [0, 0, 1]), _angle_between(top - bottom, [0, 0, 1]))
    skeleton = skeleton.astype(np.float64) @ rot_z.T      # pyskl: einsum('abcd,kd->abck')
    right, left = skeleton[0, 0, xaxis[0]], skeleton[0, 0, xaxis[1]]
    rot_x = _axis_rotation(np.cross(right - left, [1, 0, 0]), _angle_between(right - left, [1, 0, 0]))
    skeleton = skeleton @ rot_x.T
  return skeleton.astype(np.float32)


def pre_normalize_2d(keypoint: np.ndarray, img_shape: Sequence[int] = (1080, 1920), *,
                     threshold: float = 0.01, has_score: bool | None = None) -> np.ndarray:
  """pyskl ``PreNormalize2D`` (mode 'fix'): x, y from pixels of ``img_shape`` (h, w) to [-1, 1].

  With a score channel (C == 3, or ``has_score``), joints whose score is <= ``threshold`` get
  x = y = 0. ``img_shape`` of (0, 0) (unknown) falls back to pyskl's default 1080 x 1920.
  """
  kp = np.array(keypoint, np.float32)
  if has_score is None:
    has_score = kp.shape[-1] == 3
  h, w = (int(s) for s in img_shape)
  if h <= 0 or w <= 0:
    h, w = 1080, 1920
  kp[..., 0] = (kp[..., 0] - w / 2) / (w / 2)
  kp[..., 1] = (kp[..., 1] - h / 2) / (h / 2)
  if has_score:
    maskout = kp[..., 2] <= threshold
    kp[..., 0][maskout] = 0
    kp[..., 1][maskout] = 0
  return kp


# ----------------------------------------------------------------------------- augmentation
def rotation_3d(theta: Sequence[float]) -> np.ndarray:
  """pyskl ``RandomRot._rot3d``: R = Rz @ Ry @ Rx for Euler angles ``theta`` = (x, y, z)."""
  cos, sin = np.cos(theta), np.sin(theta)
  rx = np.array([[1, 0, 0], [0, cos[0], sin[0]], [0, -sin[0], cos[0]]])
  ry = np.array([[cos[1], 0, -sin[1]], [0, 1, 0], [sin[1], 0, cos[1]]])
  rz = np.array([[cos[2], sin[2], 0], [-sin[2], cos[2], 0], [0, 0, 1]])
  return rz @ ry @ rx


def random_rot(keypoint: np.ndarray, theta: float, rng: np.random.RandomState, *,
               has_score: bool = False) -> np.ndarray:
  """pyskl ``RandomRot``: a random rotation of all points; an all-zero clip is left alone.

  3D: three Euler angles ~ U(-theta, theta), R = Rz Ry Rx, ``x' = R x``. 2D (C == 2, or x, y with a
  score channel): one angle ~ U(-theta, theta), the score is not rotated.
  """
  kp = np.asarray(keypoint, np.float32)
  if np.all(np.isclose(kp, 0)):
    return kp.copy()
  spatial = kp.shape[-1] - int(has_score)
  if spatial == 3:
    rot = rotation_3d(rng.uniform(-theta, theta, size=3))
  elif spatial == 2:
    a = rng.uniform(-theta, theta)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
  else:
    raise UserError(f"random_rot needs 2 or 3 spatial channels, got keypoint shape {kp.shape}")
  out = kp.copy()
  out[..., :spatial] = kp[..., :spatial].astype(np.float64) @ rot.T   # einsum('ab,mtvb->mtva')
  return out


# ----------------------------------------------------------------------------- modalities
def bone_pairs(layout: str | graph.Layout) -> tuple[tuple[int, int], ...]:
  """(joint, reference) pairs: pyskl's JointToBone pairs for nturgb+d / openpose / coco, else
  (v, parent[v]) from the layout (the centre is its own parent, so its bone is 0)."""
  layout = graph.get_layout(layout)
  if layout.name in PYSKL_BONE_PAIRS and layout == graph.LAYOUTS[layout.name]:
    return PYSKL_BONE_PAIRS[layout.name]
  return tuple((v, int(p)) for v, p in enumerate(layout.parents))


def joint_to_bone(keypoint: np.ndarray, pairs, *, has_score: bool = False) -> np.ndarray:
  """bone[..., v1, :] = joint[..., v1, :] - joint[..., v2, :]; a score channel is averaged."""
  kp = np.asarray(keypoint, np.float32)
  pairs = np.asarray(pairs, np.int64)
  bone = np.zeros_like(kp)
  bone[..., pairs[:, 0], :] = kp[..., pairs[:, 0], :] - kp[..., pairs[:, 1], :]
  if has_score:
    bone[..., pairs[:, 0], -1] = (kp[..., pairs[:, 0], -1] + kp[..., pairs[:, 1], -1]) / 2
  return bone


def to_motion(data: np.ndarray, *, has_score: bool = False) -> np.ndarray:
  """Temporal difference ``x[t+1] - x[t]``, last frame 0; a score channel is averaged."""
  data = np.asarray(data, np.float32)
  motion = np.zeros_like(data)
  motion[:, :-1] = np.diff(data, axis=1)
  if has_score:
    motion[:, :-1, :, -1] = (data[:, :-1, :, -1] + data[:, 1:, :, -1]) / 2
  return motion


def gen_feat(keypoint: np.ndarray, modality: str | Sequence[str], pairs, *,
             has_score: bool = False) -> np.ndarray:
  """pyskl ``GenSkeFeat``: one modality or several concatenated on channels (``"j"`` or ``"j,b"``)."""
  feats = modality.split(",") if isinstance(modality, str) else list(modality)
  unknown = [f for f in feats if f not in MODALITIES]
  if unknown:
    raise UserError(f"unknown modality {unknown}; expected some of {MODALITIES}")
  out = {"j": np.asarray(keypoint, np.float32)}
  if "b" in feats or "bm" in feats:
    out["b"] = joint_to_bone(out["j"], pairs, has_score=has_score)
  if "jm" in feats:
    out["jm"] = to_motion(out["j"], has_score=has_score)
  if "bm" in feats:
    out["bm"] = to_motion(out["b"], has_score=has_score)
  return out[feats[0]] if len(feats) == 1 else np.concatenate([out[f] for f in feats], -1)


# ----------------------------------------------------------------------------- sampling
def _clip_indices(num_frames: int, clip_len: int, rng: np.random.RandomState, p_interval,
                  short_start) -> np.ndarray:
  old = num_frames
  ratio = rng.rand() * (p_interval[1] - p_interval[0]) + p_interval[0]
  num_frames = int(ratio * num_frames)
  off = rng.randint(old - num_frames + 1)
  if num_frames < clip_len:
    start = short_start(num_frames)
    inds = np.arange(start, start + clip_len)
  elif num_frames < 2 * clip_len:
    chosen = rng.choice(clip_len + 1, num_frames - clip_len, replace=False)
    offset = np.zeros(clip_len + 1, dtype=np.int64)
    offset[chosen] = 1
    inds = np.arange(clip_len) + np.cumsum(offset)[:-1]
  else:
    bids = np.array([i * num_frames // clip_len for i in range(clip_len + 1)])
    inds = bids[:clip_len] + rng.randint(np.diff(bids))
  return inds + off


def uniform_sample_indices(num_frames: int, clip_len: int, *, num_clips: int = 1,
                           test_mode: bool = False, rng: np.random.RandomState | None = None,
                           seed: int = 255, p_interval=(1.0, 1.0)) -> np.ndarray:
  """pyskl ``UniformSample``: ``num_clips * clip_len`` frame indices into ``[0, num_frames)``.

  Each clip splits the frames into ``clip_len`` segments and takes one frame per segment; between
  ``clip_len`` and ``2 * clip_len`` frames it inserts random +1 steps; shorter clips take
  ``clip_len`` consecutive indices that wrap around. Training draws from ``rng``; ``test_mode``
  re-seeds ``RandomState(seed)`` on every call and starts short clip i at ``i`` (fewer frames than
  clips) or ``i * num_frames // num_clips``.
  """
  if num_frames < 1:
    raise UserError(f"uniform_sample_indices needs num_frames >= 1, got {num_frames}")
  if not isinstance(p_interval, (tuple, list)):
    p_interval = (p_interval, p_interval)
  if test_mode:
    rng = np.random.RandomState(seed)
  elif rng is None:
    raise ValueError("training-mode sampling needs an rng (np.random.RandomState)")
  clips = []
  for i in range(num_clips):
    if test_mode:
      def short_start(n, i=i):
        return i if n < num_clips else i * n // num_clips
    else:
      def short_start(n):
        return rng.randint(0, n)
    clips.append(_clip_indices(num_frames, clip_len, rng, p_interval, short_start))
  return np.mod(np.concatenate(clips), num_frames)


# ----------------------------------------------------------------------------- formatting
def format_gcn_input(keypoint: np.ndarray, num_person: int = 2, num_clips: int = 1) -> np.ndarray:
  """pyskl ``FormatGCNInput``: pads with zero persons or keeps the first ``num_person`` persons,
  and splits T into clips: (M, nc*T, V, C) -> (nc, M, T, V, C)."""
  kp = np.asarray(keypoint, np.float32)
  m = kp.shape[0]
  if m < num_person:
    pad = np.zeros((num_person - m,) + kp.shape[1:], np.float32)
    kp = np.concatenate([kp, pad], axis=0)
  elif m > num_person:
    kp = kp[:num_person]
  m, t, v, c = kp.shape
  if t % num_clips:
    raise ValueError(f"format_gcn_input: T={t} is not a multiple of num_clips={num_clips}")
  return np.ascontiguousarray(kp.reshape(m, num_clips, t // num_clips, v, c).transpose(1, 0, 2, 3, 4))
