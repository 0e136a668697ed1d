"""Deploy a trained model: a compressed sparse file, and a portable StableHLO artifact.

Sparse export (``save_sparse`` / ``load_sparse``): one ``.npz`` file (no pickle) holding

* ``spec``: the model spec (``model.json``'s content) as UTF-8 JSON bytes;
* ``index``: JSON bytes listing every leaf of ``params`` and ``batch_stats`` in order: its key path,
  shape, dtype and whether it is stored ``sparse`` or ``dense``;
* ``values_<dtype>``: the kept (bit-pattern nonzero) entries of every sparse leaf, concatenated in
  index order (C order within a leaf);
* ``mask``: ``np.packbits`` of the concatenated keep masks of the sparse leaves (one bit a weight);
* ``dense_<dtype>``: every other leaf (biases, BatchNorm, graphs, dense kernels), concatenated.

A leaf is stored sparse when the prunable predicate (``sparsity.PrunableSpec()``: the backbone's
block conv kernels) says so, or when it is any other ``kernel`` with more than 1/32 of its entries
zero (then the bit mask costs less than the zeros). "Kept" means a nonzero bit pattern, so ``-0.0``
and NaNs survive: ``load_sparse`` returns bit-identical weights and hence bit-identical logits.
The few concatenated arrays keep the zip overhead to a few hundred bytes whatever the model size.

Portable artifact (``export_stablehlo``, ``input_contract``, ``JOINT_NAMES``: defined in
``stgcn_jax.stablehlo``, re-exported here): ``jax.export`` of the eval-mode forward pass with the
weights baked in as constants, input ``float32 (B, M, T, V, C)`` with a symbolic batch ``B``;
``FILE`` holds ``Exported.serialize()`` and ``FILE.json`` the input contract. Running it needs only
``jax`` and ``numpy``::

    exp = jax.export.deserialize(open(FILE, "rb").read())
    logits = exp.call(x)      # x: float32 (B, M, T, V, C) -> (B, num_classes)
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stgcn_jax import atomic, checkpoint, models
from stgcn_jax.sparsity import masks as masks_lib
from stgcn_jax.stablehlo import JOINT_NAMES, export_stablehlo, input_contract

__all__ = ["FORMAT", "ExportError", "resolve_model_dir", "load_any", "save_sparse", "load_sparse",
           "export_stablehlo", "input_contract", "size_on_disk", "sparse_size_bound",
           "zero_channel_fraction", "JOINT_NAMES"]

FORMAT = "stgcn-jax-sparse-v1"
_COLLECTIONS = ("params", "batch_stats")
_SPARSE_GAIN = 1.0 / 32.0   # a non-prunable kernel is stored sparse above this zero fraction
_MAX_JSON_BYTES = 64 << 20


class ExportError(ValueError):
  """A model or export file that cannot be read or written (a user error)."""


# ----------------------------------------------------------------------------- files


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


def _atomic_write(path: str, data: bytes) -> None:
  with atomic.atomic_open(path, "wb") as f:
    f.write(data)


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
    model, variables = load_sparse(path)
    return model, variables, _read_spec_from_npz(path)
  model_dir = resolve_model_dir(path)
  model, variables = checkpoint.load_model(model_dir)
  with open(os.path.join(model_dir, "model.json")) as f:
    spec = json.load(f)
  return model, variables, spec


# ----------------------------------------------------------------------------- sparse format


def _keys(keypath) -> list[str]:
  return masks_lib.path_str(keypath).split("/")


def _nonzero_bits(a: np.ndarray) -> np.ndarray:
  """True where the entry is kept: not equal to zero (NaNs are kept; -0.0 is not: a masked weight
  written as ``w * 0`` is -0.0 for negative ``w``, and it comes back as +0.0, an equal value)."""
  return np.asarray(a) != 0


def _is_sparse(path: str, leaf: np.ndarray, collection: str, spec) -> bool:
  if collection != "params" or leaf.dtype.kind not in "fc" or leaf.size == 0:
    return False
  if spec(path):
    return True
  if path.split("/")[-1] == "kernel":
    return 1.0 - float(np.count_nonzero(_nonzero_bits(leaf))) / leaf.size > _SPARSE_GAIN
  return False


def save_sparse(path: str, spec: dict, variables: dict[str, Any], *,
                prunable: masks_lib.PrunableSpec | None = None, compress: bool = True) -> dict:
  """Write ``variables`` (``params`` and ``batch_stats``) and the model ``spec`` to one ``.npz``.

  Returns a summary: bytes written, number of sparse / dense leaves, prunable weights, kept weights.
  ``compress`` uses ``np.savez_compressed`` (deflate; the bit mask of a 95 %-sparse model shrinks by
  about a third, the float values hardly at all).
  """
  prunable = prunable or masks_lib.PrunableSpec()
  index, values, dense, bits = [], {}, {}, []
  summary = {"sparse_leaves": 0, "dense_leaves": 0, "sparse_weights": 0, "kept_weights": 0,
             "dense_params": 0}
  for collection in _COLLECTIONS:
    if collection not in variables:
      continue
    for keypath, leaf in jax.tree_util.tree_leaves_with_path(variables[collection]):
      leaf = np.asarray(jax.device_get(leaf))
      keys = _keys(keypath)
      p = "/".join(keys)
      entry = {"collection": collection, "keys": keys, "shape": list(leaf.shape),
               "dtype": leaf.dtype.str}
      flat = leaf.reshape(-1)
      if _is_sparse(p, leaf, collection, prunable):
        keep = _nonzero_bits(flat)
        entry["storage"] = "sparse"
        entry["kept"] = int(keep.sum())
        values.setdefault(leaf.dtype.str, []).append(flat[keep])
        bits.append(keep)
        summary["sparse_leaves"] += 1
        summary["sparse_weights"] += int(flat.size)
        summary["kept_weights"] += entry["kept"]
      else:
        entry["storage"] = "dense"
        dense.setdefault(leaf.dtype.str, []).append(flat)
        summary["dense_leaves"] += 1
        summary["dense_params"] += int(flat.size)
      index.append(entry)
  arrays = {
      "format": np.frombuffer(FORMAT.encode(), np.uint8),
      "spec": np.frombuffer(json.dumps(spec).encode(), np.uint8),
      "index": np.frombuffer(json.dumps(index).encode(), np.uint8),
      "mask": np.packbits(np.concatenate(bits) if bits else np.zeros(0, bool)),
  }
  dtypes = sorted(set(values) | set(dense))
  arrays["dtypes"] = np.frombuffer(json.dumps(dtypes).encode(), np.uint8)
  for i, dt in enumerate(dtypes):
    if dt in values:
      arrays[f"values_{i}"] = np.concatenate(values[dt])
    if dt in dense:
      arrays[f"dense_{i}"] = np.concatenate(dense[dt])
  buf = io.BytesIO()
  (np.savez_compressed if compress else np.savez)(buf, **arrays)
  _atomic_write(path, buf.getvalue())
  summary["bytes"] = len(buf.getvalue())
  return summary


def _open_npz(path: str):
  try:
    f = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as err:
    raise ExportError(f"{path}: not a sparse model export ({err})") from None
  if not hasattr(f, "files") or "format" not in f.files:
    raise ExportError(f"{path}: not a sparse model export (expected an .npz written by "
                      "`python -m experiments.export --format=sparse`)")
  fmt = bytes(f["format"]).decode("utf-8", "replace")
  if fmt != FORMAT:
    raise ExportError(f"{path}: unknown sparse export format {fmt!r}; expected {FORMAT!r}")
  return f


def _json_field(f, name: str, path: str):
  if name not in f.files:
    raise ExportError(f"{path}: field {name!r} is missing")
  raw = f[name]
  if raw.dtype != np.uint8 or raw.size > _MAX_JSON_BYTES:
    raise ExportError(f"{path}: field {name!r} is not JSON bytes")
  try:
    return json.loads(bytes(raw).decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as err:
    raise ExportError(f"{path}: field {name!r} is not valid JSON ({err})") from None


def _read_spec_from_npz(path: str) -> dict:
  with _open_npz(path) as f:
    return _json_field(f, "spec", path)


def _set(tree: dict, keys: list[str], value) -> None:
  for k in keys[:-1]:
    tree = tree.setdefault(k, {})
  tree[keys[-1]] = value


def load_sparse(path: str):
  """``(model, variables)`` from a file written by ``save_sparse``; the weights are identical (every
  zero comes back as +0.0).

  The rebuilt tree is checked against the model's own variable shapes.
  """
  with _open_npz(path) as f:
    spec = _json_field(f, "spec", path)
    index = _json_field(f, "index", path)
    dtypes = _json_field(f, "dtypes", path)
    try:
      mask = np.unpackbits(f["mask"]).astype(bool)
      values = {dt: f[f"values_{i}"] for i, dt in enumerate(dtypes) if f"values_{i}" in f.files}
      dense = {dt: f[f"dense_{i}"] for i, dt in enumerate(dtypes) if f"dense_{i}" in f.files}
    except (KeyError, ValueError) as err:
      raise ExportError(f"{path}: damaged sparse export ({err})") from None
  offsets = {("v", dt): 0 for dt in values} | {("d", dt): 0 for dt in dense}
  bit = 0
  variables: dict[str, dict] = {}
  try:
    for entry in index:
      dt, shape = entry["dtype"], tuple(int(s) for s in entry["shape"])
      n = int(np.prod(shape, dtype=np.int64))
      if entry["storage"] == "sparse":
        keep = mask[bit:bit + n]
        bit += n
        k = offsets[("v", dt)]
        kept = int(keep.sum())
        flat = np.zeros(n, np.dtype(dt))
        flat[keep] = values[dt][k:k + kept]
        offsets[("v", dt)] = k + kept
        if len(keep) != n or kept != entry["kept"]:
          raise ExportError(f"{path}: mask of {'/'.join(entry['keys'])} is damaged")
      else:
        k = offsets[("d", dt)]
        flat = dense[dt][k:k + n]
        offsets[("d", dt)] = k + n
        if flat.size != n:
          raise ExportError(f"{path}: values of {'/'.join(entry['keys'])} are truncated")
      _set(variables.setdefault(entry["collection"], {}), entry["keys"], flat.reshape(shape))
  except (KeyError, TypeError) as err:
    raise ExportError(f"{path}: damaged index ({err!r})") from None
  try:
    model = checkpoint.build_model(spec)
  except (KeyError, TypeError, ValueError) as err:
    raise ExportError(f"{path}: spec does not build a model ({err})") from None
  want = models.abstract_variables(model)
  got_struct = jax.tree.structure(variables)
  if got_struct != jax.tree.structure(want) or any(
      tuple(a.shape) != tuple(b.shape)
      for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(want))):
    raise ExportError(f"{path}: the stored variables do not fit a {spec.get('backbone')} model "
                      "built from its spec")
  return model, jax.tree.map(jnp.asarray, variables)


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
        total += np.count_nonzero(_nonzero_bits(leaf)) * leaf.itemsize + (leaf.size + 7) // 8
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
