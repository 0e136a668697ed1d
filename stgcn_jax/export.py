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

Portable artifact (``export_stablehlo``): ``jax.export`` of the eval-mode forward pass with the
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
from stgcn_jax import graph as graph_lib
from stgcn_jax.sparsity import masks as masks_lib

__all__ = ["FORMAT", "ExportError", "resolve_model_dir", "load_any", "save_sparse", "load_sparse",
           "export_stablehlo", "input_contract", "size_on_disk", "sparse_size_bound",
           "zero_channel_fraction", "JOINT_NAMES"]

FORMAT = "stgcn-jax-sparse-v1"
_COLLECTIONS = ("params", "batch_stats")
_SPARSE_GAIN = 1.0 / 32.0   # a non-prunable kernel is stored sparse above this zero fraction
_MAX_JSON_BYTES = 64 << 20

# The joint order of the built-in layouts (documentation for the input contract).
JOINT_NAMES = {
    "nturgb+d": [  # Kinect v2, NTU RGB+D's 1-based joint numbers minus one
        "spine_base", "spine_mid", "neck", "head", "left_shoulder", "left_elbow", "left_wrist",
        "left_hand", "right_shoulder", "right_elbow", "right_wrist", "right_hand", "left_hip",
        "left_knee", "left_ankle", "left_foot", "right_hip", "right_knee", "right_ankle",
        "right_foot", "spine_shoulder", "left_hand_tip", "left_thumb", "right_hand_tip",
        "right_thumb"],
    "nw-ucla": [  # Kinect v1
        "hip_center", "spine", "shoulder_center", "head", "left_shoulder", "left_elbow",
        "left_wrist", "left_hand", "right_shoulder", "right_elbow", "right_wrist", "right_hand",
        "left_hip", "left_knee", "left_ankle", "left_foot", "right_hip", "right_knee",
        "right_ankle", "right_foot"],
    "coco": [
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
        "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
        "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"],
    "openpose": [  # OpenPose COCO-18
        "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
        "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
        "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear"],
}


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


# ----------------------------------------------------------------------------- StableHLO


def _layout_json(layout: graph_lib.Layout) -> dict:
  return {"name": layout.name, "num_joints": layout.num_joints, "center": layout.center,
          "edges": [list(e) for e in layout.inward]}


def input_contract(spec: dict, model, frames: int) -> dict:
  """The sidecar JSON of a StableHLO artifact: what goes in, what comes out."""
  bb = model.backbone
  layout = bb.layout
  pipe = spec.get("pipeline")
  recorded = isinstance(pipe, dict)
  if not recorded:  # the training config's defaults (experiments/configs/default.py)
    pipe = {"modality": "j", "normalize": "auto", "align_spine": False, "clip_len": frames,
            "num_clips": 1, "num_person": bb.num_person}
  modality = str(pipe.get("modality", "j"))
  c_raw = bb.in_channels // max(1, len(modality.split(",")))
  contract = {
      "format": "jax.export serialized StableHLO (jax.export.deserialize(bytes).call(x))",
      "jax_version": jax.__version__,
      "model": {"backbone": spec.get("backbone"), "num_classes": int(model.num_classes),
                "options": spec.get("options", {})},
      "input": {
          "dtype": "float32", "shape": ["B", bb.num_person, frames, layout.num_joints,
                                        bb.in_channels],
          "axes": ["batch (symbolic: any B >= 1)", "M persons (missing persons are zeros)",
                   "T frames", "V joints", "C channels"],
          "layout": _layout_json(layout),
          "joint_order": JOINT_NAMES.get(layout.name,
                                         [f"joint_{i}" for i in range(layout.num_joints)]),
          "channels": _channel_names(modality, c_raw),
      },
      "preprocessing": {
          "recorded_in_checkpoint": recorded,
          "pipeline": pipe,
          "steps": _pipeline_steps(pipe, c_raw),
      },
      "output": {"name": "logits", "dtype": "float32", "shape": ["B", int(model.num_classes)],
                 "note": "unnormalised class scores; softmax for probabilities. For the multi-clip "
                         "test, run each clip and average the softmax."},
  }
  if not recorded:
    contract["preprocessing"]["note"] = (
        "model.json does not record the pipeline: these are the defaults of "
        "experiments/configs/default.py (check the training config of this model)")
  names = spec.get("class_names")
  if names:
    contract["output"]["class_names"] = list(names)
  return contract


def _channel_names(modality: str, c_raw: int) -> list[str]:
  base = {2: ["x", "y"], 3: ["x", "y", "z (3D data) or score (2D keypoints)"]}.get(
      c_raw, [f"c{i}" for i in range(c_raw)])
  kinds = {"j": "joint", "b": "bone", "jm": "joint_motion", "bm": "bone_motion"}
  return [f"{kinds.get(m, m)}_{c}" for m in modality.split(",") for c in base]


def _pipeline_steps(pipe: dict, c_raw: int) -> list[str]:
  norm = pipe.get("normalize", "auto")
  steps = [
      "keypoints (M, T_raw, V, C) in the layout's joint order, float32",
      f"normalize={norm!r} ('auto': PreNormalize3D for 3D data, PreNormalize2D for 2D data "
      "with a score channel). PreNormalize3D: keep the frames where person 0 (or person 1, if "
      "it has more) is not all zero; subtract the centre joint of person 0 at the first kept "
      "frame (joint 1 when V == 25, else the last joint) from every non-zero joint"
      + ("; rotate so joints 0->1 point along +z and 8->4 along +x" if pipe.get("align_spine")
         else "; no spine rotation (align_spine=False)")
      + ". PreNormalize2D: x, y from pixels to [-1, 1] by the image size (default 1080 x 1920); "
      "joints with score <= 0.01 get x = y = 0",
      f"features: modality {pipe.get('modality', 'j')!r} (j = joints, b = bones "
      "joint - parent, jm / bm = frame differences); several are concatenated on C",
      f"test sampling: {pipe.get('num_clips', 1)} clip(s) of T={pipe.get('clip_len')} frames "
      "(pyskl UniformSampleFrames, test mode, seed 255), persons padded with zeros / cut to M",
  ]
  return steps


def export_stablehlo(path: str, model, variables, spec: dict, *, frames: int = 100,
                     symbolic_batch: bool = True, platforms=None) -> dict:
  """Serialize the eval-mode forward pass (weights as constants) to ``path``; contract to
  ``path + '.json'``. Returns the contract."""
  bb = model.backbone
  consts = {k: variables[k] for k in _COLLECTIONS if k in variables}

  def infer(x):
    return model.apply(consts, x, train=False)

  tail = (bb.num_person, int(frames), bb.layout.num_joints, bb.in_channels)
  if symbolic_batch:
    (b,) = jax.export.symbolic_shape("b")
    arg = jax.ShapeDtypeStruct((b,) + tail, jnp.float32)
  else:
    arg = jax.ShapeDtypeStruct((1,) + tail, jnp.float32)
  kwargs = {"platforms": tuple(platforms)} if platforms else {}
  exported = jax.export.export(jax.jit(infer), **kwargs)(arg)
  contract = input_contract(spec, model, int(frames))
  if not symbolic_batch:
    contract["input"]["shape"][0] = 1
    contract["input"]["axes"][0] = "batch (fixed: 1)"
    contract["output"]["shape"][0] = 1
  contract["platforms"] = list(exported.platforms)
  _atomic_write(path, bytes(exported.serialize()))
  _atomic_write(path + ".json", (json.dumps(contract, indent=2) + "\n").encode())
  return contract
