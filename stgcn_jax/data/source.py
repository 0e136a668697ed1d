"""Reading the store: ``load`` (a random-access source of one split) and ``info`` (the metadata).

Reading goes through ``tfds.builder_from_directory(...).as_data_source(split)``: array_record files,
numpy records, no TensorFlow and no need for the builder class.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from stgcn_jax import graph
from stgcn_jax.data.builders import VERSION, dataset_dir, recover_swap
from stgcn_jax.data.records import DataError

__all__ = ["DEFAULT_DATA_DIR", "DatasetInfo", "SkeletonSource", "info", "load", "exists",
           "default_data_dir", "identity"]

DEFAULT_DATA_DIR = "~/.stgcn_jax/data"


def default_data_dir() -> str:
  """``$STGCN_JAX_DATA_DIR`` if set, else ``~/.stgcn_jax/data``."""
  return os.path.expanduser(os.environ.get("STGCN_JAX_DATA_DIR", DEFAULT_DATA_DIR))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a dataset is: its skeleton layout, classes, splits and clip contract."""
  name: str
  path: str
  layout: graph.Layout
  num_classes: int
  class_names: tuple[str, ...]
  splits: dict            # split name -> number of samples
  default_splits: dict    # role ("train", "test") -> split name
  num_persons: int
  channels: tuple[str, ...]
  metadata: dict

  @property
  def num_joints(self) -> int:
    return self.layout.num_joints

  @property
  def num_channels(self) -> int:
    return len(self.channels)

  @property
  def has_score(self) -> bool:
    """Whether the last channel is a detection confidence (2D pose data)."""
    return self.channels[-1] == "score"

  def resolve_split(self, split: str) -> str:
    """A split name, or a role ("train", "test", "val") mapped through ``default_splits``."""
    base = split.split("[", 1)[0]
    if base in self.splits:
      return split
    if base in self.default_splits:
      return self.default_splits[base] + split[len(base):]
    raise DataError(f"dataset {self.name!r} has no split {split!r}; splits are "
                    f"{sorted(self.splits)}, roles {self.default_splits}")


def exists(name: str, data_dir: str | None = None) -> bool:
  """Whether dataset ``name`` has been written under ``data_dir``."""
  path = dataset_dir(name, data_dir or default_data_dir())
  recover_swap(path, cleanup=False)
  return os.path.exists(os.path.join(path, "dataset_info.json"))


def _builder(path: str):
  """The tfds reader of the dataset at ``path``; cached until the dataset is written again."""
  stat = os.stat(os.path.join(path, "dataset_info.json"))
  return _cached_builder(path, stat.st_ino, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _cached_builder(path: str, inode: int, mtime_ns: int):
  del inode, mtime_ns  # the cache key: a replaced dataset is read afresh
  return tfds.builder_from_directory(path)


def _check_exists(name: str, data_dir: str) -> str:
  path = dataset_dir(name, data_dir)
  recover_swap(path, cleanup=False)   # a converter's --overwrite that a kill interrupted
  if not os.path.exists(os.path.join(path, "dataset_info.json")):
    root = os.path.dirname(os.path.dirname(path))
    have = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, VERSION))) \
        if os.path.isdir(root) else []
    raise DataError(f"dataset {name!r} not found under {root} (expected {path}/dataset_info.json);"
                    f" datasets there: {have or 'none'}. Convert it with data_prep first.")
  return path


def info(name: str, data_dir: str | None = None) -> DatasetInfo:
  """The stored metadata of dataset ``name``."""
  data_dir = data_dir or default_data_dir()
  path = _check_exists(name, data_dir)
  builder = _builder(path)
  meta = dict(builder.info.metadata or {})
  splits = {s: int(builder.info.splits[s].num_examples) for s in builder.info.splits}
  return DatasetInfo(
      name=name, path=path, layout=graph.get_layout(meta["layout"]),
      num_classes=int(meta["num_classes"]), class_names=tuple(meta["class_names"]),
      splits=splits, default_splits=dict(meta.get("default_splits", {})),
      num_persons=int(meta["num_persons"]), channels=tuple(meta["channels"]), metadata=meta)


def identity(dataset_info: DatasetInfo) -> dict:
  """What tells this stored dataset from another of the same name (a re-conversion, another
  store): ``{"dataset", "path", "num_samples": {split: n}, "fingerprint"}``, the fingerprint a
  sha256 of ``metadata.json`` and of every split's sample count and size in bytes. Runs record it
  (``data_store`` in config.json and results.json) so that a re-evaluation or a fusion on other
  data is refused."""
  digest = hashlib.sha256()
  try:
    with open(os.path.join(dataset_info.path, "metadata.json"), "rb") as f:
      digest.update(f.read())
  except OSError as err:
    raise DataError(f"dataset {dataset_info.name!r} in {dataset_info.path}: metadata.json cannot "
                    f"be read ({err.strerror or err}); convert the dataset again with --overwrite"
                    ) from None
  splits = _builder(dataset_info.path).info.splits
  sizes = {s: [int(splits[s].num_examples), int(splits[s].num_bytes)] for s in splits}
  digest.update(json.dumps(sizes, sort_keys=True).encode())
  return {"dataset": dataset_info.name, "path": dataset_info.path,
          "num_samples": {s: n for s, (n, _) in sorted(sizes.items())},
          "fingerprint": digest.hexdigest()}


class SkeletonSource:
  """Random access to one split: ``len(src)``, ``src[i]`` -> a record dict.

  A record is ``{"keypoint": float32 (M, T, V, C), "label": int, "frame_dir": str,
  "total_frames": int, "img_shape": int32 (2,), "index": i}``.
  """

  def __init__(self, data_source, dataset_info: DatasetInfo, split: str):
    self._source = data_source
    self.info = dataset_info
    self.split = split

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    n = len(self._source)
    if not -n <= index < n:
      raise IndexError(f"index {index} out of range for split {self.split!r} of {n} samples")
    with _damaged_files_are_data_errors(self.info, self.split):
      record = self._source[int(index) % n]
    return self._decode(record, int(index) % n)

  def __getitems__(self, indices) -> list[dict]:
    with _damaged_files_are_data_errors(self.info, self.split):
      records = self._source.__getitems__([int(i) for i in indices])
    return [self._decode(r, int(i)) for r, i in zip(records, indices)]

  @staticmethod
  def _decode(record: dict, index: int) -> dict:
    name = record["frame_dir"]
    return {"keypoint": np.asarray(record["keypoint"], np.float32), "label": int(record["label"]),
            "frame_dir": name.decode() if isinstance(name, bytes) else str(name),
            "total_frames": int(record["total_frames"]), "img_shape": record["img_shape"],
            "index": index}

  def __repr__(self) -> str:
    return f"SkeletonSource({self.info.name!r}, split={self.split!r}, len={len(self)})"


def load(name: str, data_dir: str | None = None, split: str = "train") -> SkeletonSource:
  """A random-access source over ``split`` of dataset ``name``.

  Args:
    name: the dataset name given to the converter (``nw_ucla``, ``synthetic``, ``ntu60_xsub``...).
    data_dir: root of the store (default :func:`default_data_dir`).
    split: a split name, a role ("train" / "test") from the dataset's ``default_splits``, or a
      tfds slice such as ``"train[:10%]"``.
  """
  dataset_info = info(name, data_dir)
  split = dataset_info.resolve_split(split)
  with _damaged_files_are_data_errors(dataset_info, split):
    data_source = _builder(dataset_info.path).as_data_source(split=split)
  return SkeletonSource(data_source, dataset_info, split)


@contextlib.contextmanager
def _damaged_files_are_data_errors(dataset_info: DatasetInfo, split: str):
  """array_record reports a truncated or corrupted file as RuntimeError / OSError deep inside its
  reader; a user needs the dataset, the split and what to do."""
  try:
    yield
  except (RuntimeError, OSError, TypeError, ValueError) as err:  # what a damaged record raises
    detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
    raise DataError(f"dataset {dataset_info.name!r}, split {split!r} in {dataset_info.path}: the "
                    f"array_record files are truncated or corrupted ({detail}); convert the "
                    "dataset again with --overwrite") from None
