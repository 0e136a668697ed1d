"""The per-clip pipeline: a stored record -> the ``(num_clips, M, T, V, C)`` model input.

The order is pyskl's (docs/DATA.md section 2):
``PreNormalize3D`` or ``PreNormalize2D`` -> ``RandomRot`` (training) -> ``GenSkeFeat`` ->
``UniformSample`` -> ``PoseDecode`` -> ``FormatGCNInput``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stgcn_jax.data import transforms
from stgcn_jax.errors import UserError

__all__ = ["PipelineConfig", "Pipeline"]


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """How clips are made.

  Attributes:
    clip_len: frames per clip (T of the model input).
    num_clips: clips per sample; pyskl tests with 10 and trains with 1.
    test_mode: deterministic pyskl test sampling (``RandomState(seed)`` per clip) and no
      augmentation; otherwise random offsets from the caller's rng.
    modality: ``"j"``, ``"b"``, ``"jm"``, ``"bm"`` or a comma-joined combination (channels
      concatenate).
    normalize: ``"auto"`` (3D data: PreNormalize3D; data with a score channel: PreNormalize2D),
      ``"3d"``, ``"2d"`` or ``"none"``.
    align_spine: PreNormalize3D's spine / shoulder alignment (pyskl's ST/AA/CTR-GCN: True;
      DG-STGCN and the sparse recipe: False).
    zaxis, xaxis: PreNormalize3D joints (pyskl's NTU defaults; Kinect v1 uses the same indices).
    rotate: RandomRot theta in radians (0 disables); only used when not ``test_mode``.
    num_person: M of the model input (FormatGCNInput).
    seed: pyskl's test-mode seed.
  """
  clip_len: int = 100
  num_clips: int = 1
  test_mode: bool = False
  modality: str = "j"
  normalize: str = "auto"
  align_spine: bool = True
  zaxis: tuple[int, int] = (0, 1)
  xaxis: tuple[int, int] = (8, 4)
  rotate: float = 0.0
  num_person: int = 2
  seed: int = 255

  def __post_init__(self):
    if self.clip_len < 1 or self.num_clips < 1 or self.num_person < 1:
      raise UserError(f"clip_len, num_clips and num_person must be >= 1, got {self}")
    if self.normalize not in ("auto", "3d", "2d", "none"):
      raise UserError(f"normalize must be 'auto', '3d', '2d' or 'none', got {self.normalize!r}")
    feats = self.modality.split(",")
    if not all(f in transforms.MODALITIES for f in feats):
      raise UserError(f"modality {self.modality!r}: expected some of {transforms.MODALITIES}")


class Pipeline:
  """``pipeline(record, rng) -> float32 (num_clips, M, clip_len, V, C_out)`` for one dataset."""

  def __init__(self, config: PipelineConfig, dataset_info):
    self.config = config
    self.info = dataset_info
    self.has_score = bool(dataset_info.has_score)
    self.pairs = transforms.bone_pairs(dataset_info.layout)
    normalize = config.normalize
    if normalize == "auto":
      normalize = "2d" if self.has_score else ("3d" if dataset_info.num_channels == 3 else "none")
    self.normalize = normalize
    v = dataset_info.num_joints
    if normalize == "3d" and config.align_spine and max(*config.zaxis, *config.xaxis) >= v:
      raise UserError(f"align_spine joints {config.zaxis}, {config.xaxis} are outside the "
                      f"{v}-joint layout {dataset_info.layout.name!r}; set align_spine=False")

  @property
  def out_channels(self) -> int:
    return self.info.num_channels * len(self.config.modality.split(","))

  def output_shape(self) -> tuple[int, ...]:
    c = self.config
    return (c.num_clips, c.num_person, c.clip_len, self.info.num_joints, self.out_channels)

  def __call__(self, record: dict, rng: np.random.RandomState | None = None) -> np.ndarray:
    c = self.config
    kp = np.asarray(record["keypoint"], np.float32)
    if self.normalize == "3d":
      kp = transforms.pre_normalize_3d(kp, zaxis=c.zaxis, xaxis=c.xaxis, align_spine=c.align_spine)
    elif self.normalize == "2d":
      kp = transforms.pre_normalize_2d(kp, record.get("img_shape", (0, 0)),
                                       has_score=self.has_score)
    if not c.test_mode and c.rotate > 0:
      kp = transforms.random_rot(kp, c.rotate, rng, has_score=self.has_score)
    kp = transforms.gen_feat(kp, c.modality, self.pairs, has_score=self.has_score)
    inds = transforms.uniform_sample_indices(kp.shape[1], c.clip_len, num_clips=c.num_clips,
                                             test_mode=c.test_mode, rng=rng, seed=c.seed)
    return transforms.format_gcn_input(kp[:, inds], c.num_person, c.num_clips)
