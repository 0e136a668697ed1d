"""Skeleton data: the tfds/array_record store, pyskl's numpy transforms, a resumable iterator.

The (N, M, T, V, C) contract
----------------------------
* Stored record (one clip): ``keypoint`` float32 ``(M, T, V, C)``: M persons (1..num_persons),
  T raw frames (variable), V joints of the dataset's layout, C channels (``x, y, z`` for 3D data;
  ``x, y, score`` for 2D pose-estimator data). A joint that is all zero is missing.
  ``label`` 0-based int, ``frame_dir`` the sample name, ``total_frames`` the raw frame count,
  ``img_shape`` (h, w) for pixel data, else (0, 0).
* Model input: ``x`` float32 ``(B, M, T, V, C)`` for training and ``(B, num_clips, M, T, V, C)`` for
  evaluation (pyskl averages the softmax over clips), with ``M = PipelineConfig.num_person`` and
  ``T = clip_len``; C is multiplied by the number of modalities concatenated.

Typical use::

  from stgcn_jax import data
  data.ensure_synthetic(DIR)                                  # or: python -m data_prep.nw_ucla ...
  info = data.info("synthetic", DIR)
  train = data.load("synthetic", DIR, split="train")
  pipe = data.Pipeline(data.PipelineConfig(clip_len=64, rotate=0.1), info)
  it = data.BatchIterator(train, pipe, batch_size=16, train=True, seed=0)
  batch = next(it)            # {"x": (16, 2, 64, 25, 3), "label": (16,), "index": (16,)}
  state = it.get_state()      # JSON-able; it.set_state(state) resumes
"""

from stgcn_jax.data.builders import CONTRACT, dataset_dir, write_dataset
from stgcn_jax.data.holdout import Subset, holdout
from stgcn_jax.data.iterator import BatchIterator
from stgcn_jax.data.pipeline import Pipeline, PipelineConfig
from stgcn_jax.data.records import ConversionReport, DataError, check_record
from stgcn_jax.data.source import (DatasetInfo, SkeletonSource, default_data_dir, exists,
                                   identity, info, load)
from stgcn_jax.data.synthetic import build_synthetic, ensure_synthetic, generate_synthetic
from stgcn_jax.data import safe_pickle, transforms

__all__ = ["CONTRACT", "BatchIterator", "ConversionReport", "DataError", "DatasetInfo", "Pipeline",
           "PipelineConfig", "SkeletonSource", "Subset", "build_synthetic", "check_record", "dataset_dir",
           "default_data_dir", "ensure_synthetic", "exists", "generate_synthetic", "holdout", "info", "load",
           "identity", "make_iterator", "safe_pickle", "transforms", "write_dataset"]


def make_iterator(name: str, data_dir: str | None, split: str, batch_size: int, *, train: bool,
                  config: PipelineConfig | None = None, seed: int = 0, **kwargs) -> BatchIterator:
  """``load`` + ``Pipeline`` + ``BatchIterator`` in one call; ``config`` defaults to pyskl's
  (clip_len 100; train: 1 random clip; eval: 10 test-mode clips)."""
  src = load(name, data_dir, split)
  if config is None:
    config = PipelineConfig(num_clips=1 if train else 10, test_mode=not train)
  return BatchIterator(src, Pipeline(config, src.info), batch_size, train=train, seed=seed, **kwargs)
