"""Deploying a model beside its two formats: find and load a model in any of its forms, and size it.

``resolve_model_dir`` finds a model checkpoint (or a workdir's ``model/``), ``load_any`` loads a
checkpoint, a workdir or a sparse ``.npz``; ``size_on_disk``, ``sparse_size_bound`` and
``zero_channel_fraction`` measure what an export costs and what structure a mask leaves.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from stgcn_jax import checkpoint
from stgcn_jax.export.sparse import ExportError, load_sparse_with_spec, nonzero_bits
from stgcn_jax.sparsity import masks as masks_lib

__all__ = ["resolve_model_dir", "load_any", "size_on_disk", "sparse_size_bound",
           "zero_channel_fraction"]

_COLLECTIONS = ("params", "batch_stats")




def size_on_disk(path: str) -> int:
  """Bytes of a file, or the total of every regular file under a directory tree."""
  if os.path.isfile(path):
    return os.path.getsize(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: no such file or directory")
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      if os.path.isfile(full) and not os.path.islink(full):
        total += os.path.getsize(full)
  return total


def resolve_model_dir(path: str) -> str:
  """A model checkpoint directory (has ``model.json``), or a training workdir's ``model/``."""
  if not os.path.exists(path):
    raise ExportError(f"{path}: no such file or directory")
  if os.path.isfile(os.path.join(path, "model.json")):
    return path
  sub = os.path.join(path, "model")
  if os.path.isfile(os.path.join(sub, "model.json")):
    return sub
  hint = ""
  if os.path.isdir(os.path.join(path, "checkpoints")):
    hint = (" (a training workdir without model/: an ensemble run (mode=ensemble) or an unfinished "
            "run writes none)")
  raise ExportError(f"{path}: not a model checkpoint (no model.json) nor a training workdir with "
                    f"model/model.json{hint}")


def load_any(path: str):
  """``(model, variables, spec)`` from a model checkpoint dir, a workdir or a sparse ``.npz``."""
  if os.path.isfile(path):
    return load_sparse_with_spec(path)
  model_dir = resolve_model_dir(path)
  model, variables = checkpoint.load_model(model_dir)
  return model, variables, checkpoint.read_spec(model_dir)


def sparse_size_bound(variables, *, prunable: masks_lib.PrunableSpec | None = None,
                      overhead: int = 64 << 10) -> int:
  """The bytes a sparse export may take: kept prunable values + 1 bit a prunable weight + every
  other leaf dense + ``overhead``."""
  prunable = prunable or masks_lib.PrunableSpec()
  total = overhead
  for collection in _COLLECTIONS:
    for keypath, leaf in jax.tree_util.tree_leaves_with_path(variables.get(collection, {})):
      leaf = np.asarray(leaf)
      if collection == "params" and prunable(masks_lib.path_str(keypath)):
        total += np.count_nonzero(nonzero_bits(leaf)) * leaf.itemsize + (leaf.size + 7) // 8
      else:
        total += leaf.nbytes
  return int(total)


def zero_channel_fraction(params, prunable: masks_lib.PrunableSpec | None = None):
  """``(removable, total)`` output channels (last kernel axis) of the prunable kernels whose whole
  kernel slice is zero: the only structure unstructured masks could hand to a channel-removing
  export."""
  prunable = prunable or masks_lib.PrunableSpec()
  dead = total = 0
  for keypath, leaf in jax.tree_util.tree_leaves_with_path(params):
    if not prunable(masks_lib.path_str(keypath)):
      continue
    leaf = np.asarray(leaf)
    per_channel = np.count_nonzero(leaf.reshape(-1, leaf.shape[-1]), axis=0)
    dead += int(np.sum(per_channel == 0))
    total += int(leaf.shape[-1])
  return dead, total
