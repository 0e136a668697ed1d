"""The sparse ``.npz`` export of a model: ``save_sparse`` writes it, ``load_sparse`` reads it back.

The format (``stgcn_jax.export`` describes it): ``format``, ``spec`` (the
model spec as UTF-8 JSON bytes), ``index`` (JSON: every leaf of ``params`` and ``batch_stats`` with
its key path, shape, dtype and storage), ``dtypes`` (JSON: the dtype of ``values_<i>`` /
``dense_<i>``), ``mask`` (packed keep bits of the sparse leaves), ``values_<i>`` (their kept
entries) and ``dense_<i>`` (every other leaf), concatenated in index order.

``load_sparse`` trusts nothing in the file: it is read by ``stgcn_jax.npz.read_npz`` (no pickle, no
allocation larger than the file's own arrays, CRC checked), the spec is checked like a
``model.json`` (``checkpoint.check_spec``), the index must list exactly the leaves and shapes of the
model the spec builds, before anything is allocated, and the mask and value arrays must hold
exactly what the index says. Every failure is one :class:`ExportError` naming the file and field.
"""

from __future__ import annotations

import io
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stgcn_jax import atomic, checkpoint, npz
from stgcn_jax.errors import UserError
from stgcn_jax.sparsity import masks as masks_lib

__all__ = ["FORMAT", "ExportError", "save_sparse", "load_sparse", "load_sparse_with_spec",
           "nonzero_bits"]

FORMAT = "stgcn-jax-sparse-v1"
_COLLECTIONS = ("params", "batch_stats")
_SPARSE_GAIN = 1.0 / 32.0   # a non-prunable kernel is stored sparse above this zero fraction
_MAX_JSON_BYTES = 64 << 20


class ExportError(UserError):
  """A model or export file that cannot be read or written (a user error)."""


def _atomic_write(path: str, data: bytes) -> None:
  with atomic.atomic_open(path, "wb") as f:
    f.write(data)


def _keys(keypath) -> list[str]:
  return masks_lib.path_str(keypath).split("/")


def nonzero_bits(a: np.ndarray) -> np.ndarray:
  """True where the entry is kept: not equal to zero (NaNs are kept; -0.0 is not: a masked weight
  written as ``w * 0`` is -0.0 for negative ``w``, and it comes back as +0.0, an equal value)."""
  return np.asarray(a) != 0


def _is_sparse(path: str, leaf: np.ndarray, collection: str, spec) -> bool:
  if collection != "params" or leaf.dtype.kind not in "fc" or leaf.size == 0:
    return False
  if spec(path):
    return True
  if path.split("/")[-1] == "kernel":
    return 1.0 - float(np.count_nonzero(nonzero_bits(leaf))) / leaf.size > _SPARSE_GAIN
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
        keep = nonzero_bits(flat)
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


def _arrays(path: str) -> dict[str, np.ndarray]:
  """The arrays of a sparse export, format checked."""
  try:
    arrays = npz.read_npz(path)
  except npz.NpzError as err:
    detail = str(err)[len(path) + 2:] if str(err).startswith(f"{path}: ") else str(err)
    kind = "not a sparse model export" if "not an .npz" in detail else "damaged sparse export"
    raise ExportError(f"{path}: {kind}: {detail}") from None
  fmt = arrays.get("format")
  if fmt is None or fmt.dtype != np.uint8 or fmt.ndim != 1 or fmt.size > 256:
    raise ExportError(f"{path}: not a sparse model export (expected an .npz written by "
                      "`python -m experiments.export --format=sparse`)")
  fmt = bytes(fmt).decode("utf-8", "replace")
  if fmt != FORMAT:
    raise ExportError(f"{path}: unknown sparse export format {fmt[:80]!r}; expected {FORMAT!r}")
  return arrays


def _json_field(arrays: dict, name: str, path: str):
  raw = arrays.get(name)
  if raw is None:
    raise ExportError(f"{path}: field {name!r} is missing")
  if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > _MAX_JSON_BYTES:
    raise ExportError(f"{path}: field {name!r} is not JSON bytes (uint8, 1-D)")
  try:
    return json.loads(bytes(raw).decode("utf-8"))
  except (UnicodeDecodeError, ValueError, RecursionError) as err:
    raise ExportError(f"{path}: field {name!r} is not valid JSON ({str(err)[:200]})") from None


def _dtype(value, where: str) -> str:
  """A canonical plain numeric dtype string (``<f4``), else ExportError."""
  try:
    dtype = np.dtype(value) if isinstance(value, str) and len(value) <= 8 else None
  except TypeError:
    dtype = None
  if dtype is None or dtype.kind not in "biufc" or dtype.str != value or dtype.names:
    raise ExportError(f"{where}: dtype {str(value)[:40]!r} is not a plain numeric dtype string "
                      "such as '<f4'")
  return value


def _model(spec, path: str):
  """The model of the file's spec and its leaves ``{collection/key/...: (shape, dtype kind)}``."""
  try:
    model, want = checkpoint.build_checked(spec, f"{path}: field 'spec'")
  except checkpoint.CheckpointError as err:
    raise ExportError(str(err)) from None
  leaves = {f"{c}/" + "/".join(_keys(p)): (tuple(leaf.shape), np.dtype(leaf.dtype).kind)
            for c in _COLLECTIONS
            for p, leaf in jax.tree_util.tree_leaves_with_path(want.get(c, {}))}
  return model, leaves


def _entries(index, dtypes, leaves: dict, path: str) -> list[dict]:
  """The index checked against the model's leaves: each as ``{name, collection, keys, shape, size,
  dtype, storage, kept}``, every leaf of the model once, in the model's shapes."""
  if not isinstance(index, list) or not all(isinstance(e, dict) for e in index):
    raise ExportError(f"{path}: field 'index' must be a list of leaf objects")
  out, seen = [], set()
  for k, e in enumerate(index):
    where = f"{path}: index[{k}]"
    keys, collection, storage = e.get("keys"), e.get("collection"), e.get("storage")
    if collection not in _COLLECTIONS or storage not in ("sparse", "dense") or \
        not isinstance(keys, list) or not keys or not all(isinstance(s, str) for s in keys):
      raise ExportError(f"{where}: expected collection params / batch_stats, storage sparse / "
                        "dense and keys a list of strings")
    name = f"{collection}/" + "/".join(keys)
    shape = e.get("shape")
    if name not in leaves or name in seen or not isinstance(shape, list) or \
        [s if isinstance(s, int) and not isinstance(s, bool) else None for s in shape] != \
        list(leaves[name][0]):
      raise ExportError(f"{where}: {name} {str(shape)[:60]} is not a leaf of the model the spec "
                        f"builds{f' (it has {leaves[name][0]})' if name in leaves else ''}, or "
                        "is listed twice")
    seen.add(name)
    kept = e.get("kept", 0)
    if storage == "sparse" and (not isinstance(kept, int) or isinstance(kept, bool) or kept < 0):
      raise ExportError(f"{where}: kept {str(kept)[:40]} is not a count")
    dtype = _dtype(e.get("dtype"), where)
    if dtype not in dtypes or np.dtype(dtype).kind != leaves[name][1]:
      raise ExportError(f"{where}: dtype {dtype!r} of {name} is not listed in field 'dtypes' or "
                        f"is not of the model's kind {leaves[name][1]!r}")
    out.append({"name": name, "collection": collection, "keys": keys, "shape": tuple(shape),
                "size": int(np.prod(shape, dtype=np.int64)), "dtype": dtype, "storage": storage,
                "kept": kept})
  missing = sorted(set(leaves) - seen)
  if missing:
    raise ExportError(f"{path}: the index lacks {len(missing)} leaf / leaves of the model the spec "
                      f"builds (first: {missing[0]})")
  return out


def _take(pools: dict, key: tuple, count: int, what: str, path: str) -> np.ndarray:
  """The next ``count`` entries of the 1-D array ``pools[key]``, else ExportError."""
  array, start = pools.get(key, (None, 0))
  if array is None or start + count > array.size:
    have = 0 if array is None else array.size - start
    field = key[0] if key[0] == "mask" else f"{key[0]}_{key[1]}"
    raise ExportError(f"{path}: {what}: {count} values needed, {have} left in field {field!r} "
                      "(truncated or tampered)")
  pools[key] = (array, start + count)
  return array[start:start + count]


def _pools(arrays: dict, dtypes: list, path: str) -> dict:
  """``{(values | dense | mask, i): (1-D array, 0)}`` with each array's dtype checked."""
  pools = {}
  for i, dt in enumerate(dtypes):
    for kind in ("values", "dense"):
      array = arrays.get(f"{kind}_{i}")
      if array is not None:
        if array.ndim != 1 or array.dtype.str != dt:
          raise ExportError(f"{path}: field '{kind}_{i}' must be 1-D {dt}, got {array.ndim}-D "
                            f"{array.dtype.str}")
        pools[(kind, i)] = (array, 0)
  mask = arrays.get("mask")
  if mask is None or mask.dtype != np.uint8 or mask.ndim != 1:
    raise ExportError(f"{path}: field 'mask' is missing or not packed bits (uint8, 1-D)")
  pools[("mask", 0)] = (np.unpackbits(mask).astype(bool), 0)
  return pools


def _rebuild(entries: list[dict], pools: dict, dtypes: list, path: str) -> dict:
  """The variables tree; every mask bit and value of the file used exactly once."""
  variables: dict[str, dict] = {}
  for e in entries:
    i, n = dtypes.index(e["dtype"]), e["size"]
    if e["storage"] == "sparse":
      keep = _take(pools, ("mask", 0), n, f"mask of {e['name']}", path)
      if int(keep.sum()) != e["kept"]:
        raise ExportError(f"{path}: the mask of {e['name']} keeps {int(keep.sum())} weights, the "
                          f"index says {e['kept']} (damaged)")
      flat = np.zeros(n, np.dtype(e["dtype"]))
      flat[keep] = _take(pools, ("values", i), e["kept"], f"values of {e['name']}", path)
    else:
      flat = _take(pools, ("dense", i), n, f"values of {e['name']}", path)
    tree = variables.setdefault(e["collection"], {})
    for key in e["keys"][:-1]:
      tree = tree.setdefault(key, {})
    tree[e["keys"][-1]] = flat.reshape(e["shape"])
  for (kind, i), (array, used) in pools.items():
    rest = array[used:]
    if rest.size >= (8 if kind == "mask" else 1) or rest.any():
      raise ExportError(f"{path}: field '{kind}{'' if kind == 'mask' else f'_{i}'}' holds "
                        f"{rest.size} more entries than the index uses (damaged)")
  return variables


def load_sparse_with_spec(path: str):
  """``(model, variables, spec)`` from a file written by :func:`save_sparse`."""
  arrays = _arrays(path)
  spec = _json_field(arrays, "spec", path)
  index = _json_field(arrays, "index", path)
  dtypes = _json_field(arrays, "dtypes", path)
  if not isinstance(dtypes, list) or len(set(map(str, dtypes))) != len(dtypes) or len(dtypes) > 16:
    raise ExportError(f"{path}: field 'dtypes' must be a list of distinct dtype strings")
  dtypes = [_dtype(dt, f"{path}: field 'dtypes'") for dt in dtypes]
  model, leaves = _model(spec, path)
  entries = _entries(index, dtypes, leaves, path)
  variables = _rebuild(entries, _pools(arrays, dtypes, path), dtypes, path)
  return model, jax.tree.map(jnp.asarray, variables), spec


def load_sparse(path: str):
  """``(model, variables)`` from a file written by :func:`save_sparse`; the weights are the saved
  bits, except that a zero of a sparse leaf comes back as +0.0. Raises :class:`ExportError` naming
  the file and field."""
  model, variables, _ = load_sparse_with_spec(path)
  return model, variables
