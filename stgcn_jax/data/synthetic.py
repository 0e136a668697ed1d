"""A built-in synthetic skeleton dataset: real class structure, no download, deterministic.

Every class is a fixed recipe of limb oscillations: two joints chosen for the class, each swinging
its whole subtree about its parent joint around a class-specific axis, with a class-specific
frequency, amplitude and phase, plus a slow class-specific drift of the body. Subjects differ in
size, bone lengths, facing direction, speed, amplitude and sensor noise; train and test use
different subjects (a cross-subject split). Clips have 40-60 frames by default and a fraction has a
second person doing the mirrored motion. Any layout works: nturgb+d and nw-ucla start from a Kinect
rest pose, other layouts from a tree of fixed random bone directions.
"""

from __future__ import annotations

import os

import numpy as np

from stgcn_jax import graph
from stgcn_jax.data import builders, source
from stgcn_jax.errors import UserError

__all__ = ["generate_synthetic", "build_synthetic", "ensure_synthetic"]

# Kinect v2 (NTU) rest pose in metres, y up; joint order as in the NTU README.
_NTU_REST = np.array([
    [0, 0, 0], [0, .30, 0], [0, .62, 0], [0, .76, 0], [.18, .52, 0], [.22, .27, 0], [.24, .03, 0],
    [.25, -.04, 0], [-.18, .52, 0], [-.22, .27, 0], [-.24, .03, 0], [-.25, -.04, 0],
    [.10, -.02, 0], [.11, -.42, 0], [.11, -.82, 0], [.11, -.86, .10], [-.10, -.02, 0],
    [-.11, -.42, 0], [-.11, -.82, 0], [-.11, -.86, .10], [0, .52, 0], [.26, -.12, 0],
    [.22, -.05, .03], [-.26, -.12, 0], [-.22, -.05, .03]], np.float64)


def _rest_pose(layout: graph.Layout) -> np.ndarray:
  if layout == graph.LAYOUTS["nturgb+d"]:
    return _NTU_REST.copy()
  if layout == graph.LAYOUTS["nw-ucla"]:
    pose = _NTU_REST[:20].copy()
    pose[2] = _NTU_REST[20]          # joint 3 is the shoulder centre in Kinect v1
    return pose
  rng = np.random.default_rng(layout.num_joints)
  pose = np.zeros((layout.num_joints, 3))
  children = {v: [] for v in range(layout.num_joints)}
  for child, parent in layout.inward:
    children[parent].append(child)
  stack = [(layout.center, np.array([0.0, 1.0, 0.0]))]
  while stack:
    v, heading = stack.pop()
    for child in children[v]:
      d = heading + 0.9 * rng.standard_normal(3)
      d /= np.linalg.norm(d)
      pose[child] = pose[v] + rng.uniform(0.12, 0.3) * d
      stack.append((child, d))
  return pose


def _subtrees(layout: graph.Layout) -> list[np.ndarray]:
  parents = layout.parents
  out = []
  for v in range(layout.num_joints):
    members = [u for u in range(layout.num_joints) if _is_descendant(u, v, parents, layout.center)]
    out.append(np.array(members))
  return out


def _is_descendant(u: int, v: int, parents: np.ndarray, center: int) -> bool:
  while True:
    if u == v:
      return True
    if u == center:
      return False
    u = int(parents[u])


def _rotations(axis: np.ndarray, angles: np.ndarray) -> np.ndarray:
  """Rodrigues: (T, 3, 3) rotations by ``angles`` about the unit ``axis``."""
  k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
  s, c = np.sin(angles)[:, None, None], np.cos(angles)[:, None, None]
  return np.eye(3) + s * k + (1 - c) * (k @ k)


def _class_recipes(layout: graph.Layout, num_classes: int, rng: np.random.Generator) -> list:
  movable = [v for v in range(layout.num_joints) if v != layout.center]
  order = rng.permutation(movable)
  recipes = []
  for c in range(num_classes):
    comps = []
    # Classes 2k and 2k + 1 move the same first joint; the second component tells them apart.
    for joint in (order[(c // 2) % len(order)], order[(num_classes // 2 + c) % len(order)]):
      axis = rng.standard_normal(3)
      comps.append({"joint": int(joint), "axis": axis / np.linalg.norm(axis),
                    "freq": rng.uniform(0.5, 3.0), "amp": rng.uniform(0.3, 0.9),
                    "phase": rng.uniform(0, 2 * np.pi)})
    recipes.append({"comps": comps, "drift": rng.normal(0, 0.15, 3)})
  return recipes


def _yaw(angle: float) -> np.ndarray:
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _person_motion(rest, recipe, subject, subtrees, parents, t, rng, mirror: bool) -> np.ndarray:
  pose = rest * subject["scale"] * (1 + subject["bone_noise"])
  pos = np.broadcast_to(pose, (len(t),) + pose.shape).copy()
  for comp in recipe["comps"]:
    angles = comp["amp"] * subject["amp"] * np.sin(
        2 * np.pi * comp["freq"] * subject["speed"] * t + comp["phase"] + rng.normal(0, 0.3)
        + (np.pi if mirror else 0.0))
    rot = _rotations(comp["axis"], angles)
    members, pivot = subtrees[comp["joint"]], pos[:, parents[comp["joint"]]][:, None]
    pos[:, members] = pivot + np.einsum("tij,tvj->tvi", rot, pos[:, members] - pivot)
  pos += recipe["drift"] * t[:, None, None]
  pos = pos @ _yaw(subject["yaw"] + (np.pi if mirror else 0.0)).T
  pos += subject["offset"] + rng.normal(0, subject["noise"], pos.shape)
  return pos


def generate_synthetic(*, num_train: int = 600, num_test: int = 200, num_classes: int = 10,
                       layout: str | graph.Layout = "nturgb+d", min_frames: int = 40,
                       max_frames: int = 60, two_person_prob: float = 0.2, dims: int = 3,
                       num_subjects: int = 20, seed: int = 0) -> tuple[dict, list[str]]:
  """Generates the clips in memory: ``({"train": [record, ...], "test": [...]}, class_names)``.

  ``dims=3`` gives (x, y, z) in metres; ``dims=2`` gives pixel (x, y) in a 1080 x 1920 frame plus a
  score channel, like 2D pose-estimator output.
  """
  layout = graph.get_layout(layout)
  if dims not in (2, 3):
    raise UserError(f"dims must be 2 or 3, got {dims}")
  if not 1 <= min_frames <= max_frames:
    raise UserError(f"need 1 <= min_frames <= max_frames, got {min_frames}, {max_frames}")
  if num_classes < 2 or num_subjects < 2:
    raise UserError("need at least 2 classes and 2 subjects")
  if num_train < 1 or num_test < 1:
    raise UserError(f"need at least 1 training and 1 test sample, got {num_train}, {num_test}")
  if not 0 <= two_person_prob <= 1:
    raise UserError(f"two_person_prob must be in [0, 1], got {two_person_prob}")
  rng = np.random.default_rng(seed)
  rest, subtrees, parents = _rest_pose(layout), _subtrees(layout), layout.parents
  recipes = _class_recipes(layout, num_classes, rng)
  subjects = [{"scale": rng.uniform(0.85, 1.15), "bone_noise": rng.normal(0, 0.05, rest.shape),
               "yaw": rng.uniform(-0.5, 0.5), "speed": rng.uniform(0.8, 1.2),
               "amp": rng.uniform(0.8, 1.2), "noise": rng.uniform(0.01, 0.03),
               "offset": np.array([rng.uniform(-0.5, 0.5), 0.0, rng.uniform(2.5, 3.5)])}
              for _ in range(num_subjects)]
  num_test_subjects = max(1, num_subjects // 4)
  split_subjects = {"train": range(num_subjects - num_test_subjects),
                    "test": range(num_subjects - num_test_subjects, num_subjects)}
  splits = {}
  for split, count in (("train", num_train), ("test", num_test)):
    records = []
    for k in range(count):
      label, subj_id = k % num_classes, list(split_subjects[split])[k // num_classes
                                                                    % len(split_subjects[split])]
      subject, frames = subjects[subj_id], int(rng.integers(min_frames, max_frames + 1))
      t = np.linspace(0.0, 1.0, frames)
      people = [_person_motion(rest, recipes[label], subject, subtrees, parents, t, rng, False)]
      if rng.random() < two_person_prob:
        partner = dict(subject, offset=subject["offset"] + np.array([1.0, 0.0, 0.0]))
        people.append(_person_motion(rest, recipes[label], partner, subtrees, parents, t, rng, True))
      kp = np.stack(people)
      img_shape = (0, 0)
      if dims == 2:
        score = rng.uniform(0.6, 1.0, kp.shape[:-1] + (1,))
        kp = np.concatenate([960 + 400 * kp[..., :1], 540 - 400 * kp[..., 1:2], score], -1)
        img_shape = (1080, 1920)
      records.append({"keypoint": kp.astype(np.float32), "label": label,
                      "frame_dir": f"{split}_c{label:02d}_s{subj_id:02d}_r{k:04d}",
                      "total_frames": frames, "img_shape": img_shape})
    splits[split] = records
  class_names = [f"motion_{c:02d}" for c in range(num_classes)]
  return splits, class_names


def build_synthetic(data_dir: str | None = None, name: str = "synthetic", *,
                    overwrite: bool = False, **kwargs) -> str:
  """Generates and writes the synthetic dataset; returns its directory. kwargs: generate_synthetic."""
  data_dir = data_dir or source.default_data_dir()
  splits, class_names = generate_synthetic(**kwargs)
  layout = graph.get_layout(kwargs.get("layout", "nturgb+d"))
  dims = kwargs.get("dims", 3)
  meta = {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in kwargs.items()}
  return builders.write_dataset(
      name, data_dir, {s: (lambda r=r: r) for s, r in splits.items()}, layout=layout,
      class_names=class_names, channels=["x", "y", "z"] if dims == 3 else ["x", "y", "score"],
      num_persons=max(r["keypoint"].shape[0] for rs in splits.values() for r in rs),
      source="stgcn_jax.data.synthetic (generated)", default_splits={"train": "train",
                                                                     "test": "test"},
      overwrite=overwrite, extra_metadata={"generator": meta})


def ensure_synthetic(data_dir: str | None = None, name: str = "synthetic", **kwargs) -> str:
  """The synthetic dataset's directory, building it first if it is not in ``data_dir``."""
  data_dir = data_dir or source.default_data_dir()
  if source.exists(name, data_dir):
    return builders.dataset_dir(name, data_dir)
  os.makedirs(data_dir, exist_ok=True)
  return build_synthetic(data_dir, name, **kwargs)
