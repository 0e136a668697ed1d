"""pyskl checkpoints <-> Flax variables of these models (the command: ``python -m experiments.convert``).

Flax parameter paths mirror pyskl's module names; the mapping is a handful of renaming rules
(``block{i}`` <-> ``gcn.{i}`` / ``net.{i}``, ``down/conv`` <-> ``down.0``, ...) plus the leaf rules:

=====================  =========================  ==========================================
Flax leaf              pyskl key suffix           layout change
=====================  =========================  ==========================================
Conv ``kernel``        ``weight``                 ``(kt, 1, cin, cout)`` <- ``(cout, cin, kt, 1)``
Conv1d ``kernel``      ``weight``                 ``(k, cin, cout)`` <- ``(cout, cin, k)``
Dense ``kernel``       ``weight``                 ``(in, out)`` <- ``(out, in)``
BN ``scale``/``bias``  ``weight``/``bias``        --
BN ``mean``/``var``    ``running_mean``/``_var``  (``batch_stats`` collection)
``A``, ``PA``, ...     same name                  --
=====================  =========================  ==========================================

Buffers that a Flax model computes itself (``num_batches_tracked``, the top-level ``backbone.A`` of
AA-GCN/CTR-GCN and ST-GCN's fixed ``gcn.A``) are accepted and checked, not loaded: a fixed graph
that differs from the model's own is refused, since the model would silently compute something else.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stgcn_jax import npz
from stgcn_jax.errors import UserError
from stgcn_jax.models import abstract_variables
from stgcn_jax.models.base import Recognizer

__all__ = ["ConversionError", "from_pyskl", "to_pyskl", "pyskl_key", "load_state_dict"]


class ConversionError(UserError):
  """A state_dict that does not fit the model; the message lists the offending keys."""


# (pattern on the dotted Flax path, replacement); applied in order.
_RULES: list[tuple[str, str]] = [
    (r"\.down\.conv\.", ".down.0."), (r"\.down\.bn\.", ".down.1."),
    (r"\.pre\.", ".pre.0."), (r"\.pre_bn\.", ".pre.1."),
    (r"\.branch(\d+)_pw\.", r".branches.\1.0."), (r"\.branch(\d+)_pw_bn\.", r".branches.\1.1."),
    (r"\.branch(\d+)_tconv\.", r".branches.\1.3.conv."),
    (r"\.branch(\d+)_tconv_bn\.", r".branches.\1.3.bn."),
    (r"\.branch(\d+)_pool_bn\.", r".branches.\1.4."),
    (r"\.branch(\d+)_conv\.", r".branches.\1."),
    (r"\.transform_bn\.", ".transform.0."), (r"\.transform_conv\.", ".transform.2."),
    (r"\.(conv_[abd]|convs)_(\d+)\.", r".\1.\2."),
]
_LEAF = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}


def pyskl_key(model: Recognizer, path: tuple[str, ...]) -> str:
  """The pyskl state_dict key of the Flax leaf at ``path`` (without the collection name)."""
  blocks, renames = model.backbone.pyskl_blocks, model.backbone.pyskl_units
  parts = list(path)
  if parts[0] == "backbone" and len(parts) > 1 and parts[1].startswith("block"):
    parts[1:2] = [blocks, parts[1][len("block"):]]
    if len(parts) > 3:
      parts[3] = renames.get(parts[3], parts[3])
  parts[-1] = _LEAF.get(parts[-1], parts[-1])
  key = "." + ".".join(parts) + "."
  for pattern, repl in _RULES:
    key = re.sub(pattern, repl, key)
  return key.strip(".")


# PyTorch weight layout <- Flax kernel layout, by kernel rank (Conv2d, Conv1d, Linear).
_TORCH_FROM_FLAX = {4: (3, 2, 0, 1), 3: (2, 1, 0), 2: (1, 0)}


def _to_torch_layout(leaf: str, x: np.ndarray) -> np.ndarray:
  perm = _TORCH_FROM_FLAX.get(x.ndim) if leaf == "kernel" else None
  return x if perm is None else np.transpose(x, perm)


def _from_torch_layout(leaf: str, x: np.ndarray) -> np.ndarray:
  perm = _TORCH_FROM_FLAX.get(x.ndim) if leaf == "kernel" else None
  return x if perm is None else np.transpose(x, np.argsort(perm))


def _flat(tree) -> dict[tuple[str, ...], Any]:
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    out[tuple(p.key for p in path)] = leaf
  return out


def _fixed_graph_buffers(model: Recognizer) -> dict[str, np.ndarray]:
  """Graph buffers pyskl saves that this model computes itself, with the values it uses."""
  return model.backbone.pyskl_fixed_buffers()


def from_pyskl(state_dict: Mapping[str, Any], model: Recognizer, *, strict: bool = True,
               atol: float = 1e-6) -> dict[str, Any]:
  """Flax variables ``{'params', 'batch_stats'}`` of ``model`` from a pyskl ``state_dict``.

  Keys may carry a ``state_dict.`` or ``module.`` prefix (DDP checkpoints). Missing keys, unexpected
  keys and shape mismatches are collected and refused together in one ``ConversionError``.
  ``strict=False`` ignores unexpected keys (e.g. extra heads); missing keys and shape mismatches are
  always fatal, since a half-loaded model is a silent error.
  """
  sd = {}
  for key, value in state_dict.items():
    for prefix in ("module.", "state_dict."):
      if key.startswith(prefix):
        key = key[len(prefix):]
    sd[key] = np.asarray(value)
  abstract = abstract_variables(model)
  expected: dict[str, tuple[str, tuple[str, ...], Any]] = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in _flat(abstract.get(collection, {})).items():
      expected[pyskl_key(model, path)] = (collection, path, leaf)

  missing = sorted(k for k in expected if k not in sd)
  buffers = _fixed_graph_buffers(model)
  ignorable = set(buffers) | {k for k in sd if k.endswith("num_batches_tracked")}
  unexpected = sorted(k for k in sd if k not in expected and k not in ignorable)
  bad_shape, bad_graph = [], []
  loaded: dict[str, dict] = {"params": {}, "batch_stats": {}}
  for key, (collection, path, leaf) in expected.items():
    if key not in sd:
      continue
    value = _from_torch_layout(path[-1], sd[key].astype(np.float32))
    if value.shape != leaf.shape:
      bad_shape.append(f"{key}: checkpoint {tuple(sd[key].shape)} vs model "
                       f"{tuple(_to_torch_layout(path[-1], np.empty(leaf.shape)).shape)}")
      continue
    node = loaded[collection]
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = jnp.asarray(value)
  for key, ours in buffers.items():
    if key in sd and (sd[key].shape != ours.shape or
                      not np.allclose(sd[key], ours, atol=atol, rtol=0)):
      bad_graph.append(f"{key}: the checkpoint's fixed graph differs from the model's "
                       f"(layout {model.backbone.layout.name!r}, mode "
                       f"{getattr(model.backbone, 'graph_mode', '?')!r})")
  problems = []
  if missing:
    problems.append(f"missing keys ({len(missing)}): {missing}")
  if unexpected and strict:
    problems.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
  if bad_shape:
    problems.append(f"shape mismatches ({len(bad_shape)}): {bad_shape}")
  if bad_graph:
    problems.append(f"graph mismatches ({len(bad_graph)}): {bad_graph}")
  if problems:
    raise ConversionError(f"state_dict does not fit {type(model.backbone).__name__} with "
                          f"{model.num_classes} classes on layout "
                          f"{model.backbone.layout.name!r}:\n  " + "\n  ".join(problems))
  return {k: v for k, v in loaded.items() if v}


def to_pyskl(variables: Mapping[str, Any], model: Recognizer) -> dict[str, np.ndarray]:
  """The pyskl state_dict (numpy, PyTorch layouts) of Flax ``variables``; inverse of ``from_pyskl``."""
  out = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in _flat(variables.get(collection, {})).items():
      out[pyskl_key(model, path)] = _to_torch_layout(path[-1], np.asarray(leaf))
  for key, value in _fixed_graph_buffers(model).items():
    out[key] = np.asarray(value)
  return out


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a pyskl ``.pth`` (needs torch) or an ``.npz`` state_dict (keys as in pyskl, or ``sd/<key>``)."""
  if path.endswith(".npz"):
    arrays = npz.read_npz(path, ConversionError)   # checked: truncated, corrupted, no pickle
    keys = [k for k in arrays if k.startswith("sd/")]
    if keys:
      return {k[3:]: arrays[k] for k in keys}
    return arrays
  if path.endswith((".pth", ".pt")):
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as err:
      raise ConversionError(f"{path}: reading .pth files needs torch "
                            "(pip install 'stgcn-jax[torch]'), or save the state_dict as .npz") from err
    try:
      ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
      raise ConversionError(f"{path}: cannot read the .pth file (truncated, corrupted, or "
                            f"holds more than tensors: {str(err).splitlines()[0][:200]})") from None
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    return {k: v.detach().cpu().numpy() for k, v in sd.items() if hasattr(v, "detach")}
  raise ConversionError(f"{path}: expected a .pth or .npz state_dict")

