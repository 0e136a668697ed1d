"""Which parameters are prunable, and the fixed masks that prune them (docs/METHOD.md sections 1-2).

A mask tree has exactly the structure of ``params``; its leaves are bool arrays of the leaf's shape;
non-prunable leaves are all True. The forward pass of a sparse model is
``model.apply({'params': apply_masks(params, masks), ...})``.

>>> spec = PrunableSpec()                                   # default: backbone block conv kernels
>>> masks = make_masks(params, 0.8, key=jax.random.key(0))  # method="uniform"
>>> print(format_report(sparsity_report(params, masks)))

Generators (all deterministic from ``key``): ``uniform`` (exactly ``round(s * n)`` zeros per
prunable tensor; ``round`` is round-half-up), ``erk`` (RigL's Erdos-Renyi-Kernel densities, the same
global count), ``global`` / ``per_block`` (threshold i.i.d. kaiming-uniform scores over all /
per-block prunable tensors, as the reference code does) and ``predefined`` (``load_masks`` from npz
or orbax).
Generation runs eagerly on the host (numpy, seeded from the key's data and each leaf's path), not
under ``jit``; it reads only the shapes of ``params``. How each method draws is in ``draw``; saving
and loading predefined masks (``save_masks`` / ``load_masks``) is here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stgcn_jax.errors import UserError
from stgcn_jax.sparsity import draw

METHODS = ("uniform", "erk", "global", "per_block", "predefined")
ATTENTION_NAMES = ("conv_sa", "conv_ta", "fc1c", "fc2c")
_BLOCK_RE = re.compile(r"^backbone/(block\d+)/")


def path_str(keypath) -> str:
  """A tuple of keys or a jax key path -> ``'backbone/block3/tcn/conv/kernel'``."""
  parts = []
  for k in keypath:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        k = getattr(k, attr)
        break
    parts.append(str(k))
  return "/".join(parts)


@dataclasses.dataclass(frozen=True)
class PrunableSpec:
  """The prunable predicate on parameter paths (relative to the ``params`` collection).

  Default: every leaf named ``kernel`` inside ``backbone/block{i}/`` (GCN 1x1 convs, down convs,
  temporal and branch convs, residual convs), except the AA-GCN attention layers. Never biases,
  BatchNorm, data BN, graphs or gates (those leaves are not named ``kernel``).

  Attributes:
    include_head: also mask ``cls_head/fc_cls/kernel``.
    include_attention: also mask the AA-GCN attention kernels (``conv_sa``, ``conv_ta``, ``fc1c``,
      ``fc2c``).
  """
  include_head: bool = False
  include_attention: bool = False

  def __call__(self, path: str) -> bool:
    parts = path.split("/")
    if parts[-1] != "kernel":
      return False
    if path.startswith("cls_head/"):
      return self.include_head
    if not _BLOCK_RE.match(path):
      return False
    if any(part in ATTENTION_NAMES for part in parts):
      return self.include_attention
    return True


def block_of(path: str) -> str:
  """The penalty / per-block group of a path: ``block3`` for backbone blocks, else its first key."""
  m = _BLOCK_RE.match(path)
  return m.group(1) if m else path.split("/")[0]


def _leaves(tree) -> list[tuple[str, Any]]:
  return [(path_str(p), leaf) for p, leaf in jax.tree_util.tree_leaves_with_path(tree)]


def prunable_paths(params, spec: PrunableSpec | None = None) -> list[str]:
  """Sorted paths of the prunable leaves of ``params``."""
  spec = spec or PrunableSpec()
  return sorted(p for p, _ in _leaves(params) if spec(p))


def apply_masks(params, masks):
  """``params * masks`` leaf by leaf (masks may be bool or float)."""
  return jax.tree.map(lambda p, m: p * m.astype(p.dtype), params, masks)


def check_sparsity(sparsity, where: str = "sparsity") -> float:
  """Raise ``UserError`` unless ``0 <= sparsity < 1``."""
  try:
    s = float(sparsity)
  except (TypeError, ValueError):
    raise UserError(f"{where} must be a number in [0, 1), got {sparsity!r}") from None
  if not 0.0 <= s < 1.0 or math.isnan(s):
    raise UserError(f"{where} must be in [0, 1) (the fraction of prunable weights set to zero), "
                    f"got {sparsity!r}")
  return s


def make_masks(params, sparsity, *, key=None, method: str = "uniform",
               spec: PrunableSpec | None = None, path: str | None = None,
               cover_channels: bool = True):
  """A bool mask tree with the structure of ``params`` (arrays or ``ShapeDtypeStruct``s).

  Args:
    params: the parameter tree (only shapes are read, so ``jax.eval_shape`` output works).
    sparsity: fraction in [0, 1) of prunable weights to zero (ignored by ``predefined``; may be None
      there).
    key: PRNG key (required by every method but ``predefined``).
    method: one of ``METHODS``.
    spec: the prunable predicate (default ``PrunableSpec()``).
    path: the npz file or orbax checkpoint directory for ``predefined``.
    cover_channels: 'uniform' and 'erk': keep at least one weight of every output channel where
      the tensor's count allows (``cover_output_channels``; the counts are unchanged).

  Returns:
    The mask tree; non-prunable leaves are all True.
  """
  spec = spec or PrunableSpec()
  if method not in METHODS:
    raise UserError(f"mask method must be one of {METHODS}, got {method!r}")
  if method == "predefined":
    if not path:
      raise UserError("mask method 'predefined' needs path= (an .npz file or orbax checkpoint)")
    return load_masks(path, params, spec=spec)
  s = check_sparsity(sparsity)
  if key is None:
    raise UserError(f"mask method {method!r} needs a PRNG key (key=...)")
  prunable = _prunable_leaves(params, spec)
  if method in ("uniform", "erk"):
    counts = draw.kept_counts(prunable, s, method, cover_channels)
    keep = draw.draw_counted(prunable, counts, key, cover_channels)
  else:  # global / per_block: threshold i.i.d. kaiming-uniform scores
    if s >= 0.95:
      warnings.warn(f"mask method {method!r} at sparsity {s}: thresholding kaiming-uniform scores "
                    "across tensors of different fan-in can prune whole layers (docs/METHOD.md "
                    "section 9); 'uniform' keeps 1 - s of every tensor", stacklevel=2)
    group_of = (lambda p: "all") if method == "global" else block_of
    keep = draw.draw_thresholded(prunable, s, key, group_of)
  return _mask_tree(params, keep)


def _prunable_leaves(params, spec: PrunableSpec) -> dict[str, Any]:
  """``{path: leaf}`` of the prunable leaves; a ``UserError`` when ``spec`` matches none."""
  leaves = _leaves(params)
  prunable = {p: leaf for p, leaf in leaves if spec(p)}
  if not prunable:
    raise UserError("no prunable parameters: the predicate matched no leaf of params "
                    f"(spec={spec}); first paths: {[p for p, _ in leaves[:5]]}")
  return prunable


def _mask_tree(params, keep: dict[str, np.ndarray]):
  """The mask tree of ``params``: ``keep[path]`` where drawn, all True elsewhere."""
  return jax.tree_util.tree_map_with_path(
      lambda kp, leaf: jnp.asarray(keep[path_str(kp)]) if path_str(kp) in keep
      else jnp.ones(leaf.shape, bool), params)


def ones_like_masks(params):
  """The dense mask tree (all True)."""
  return jax.tree.map(lambda leaf: jnp.ones(leaf.shape, bool), params)


def validate_masks(masks, params, *, source: str = "masks") -> None:
  """Raise ``UserError`` naming every path whose presence, shape or dtype disagrees with params."""
  want = {p: leaf for p, leaf in _leaves(params)}
  got = {p: leaf for p, leaf in _leaves(masks)}
  problems = _path_problems(set(want), set(got))
  for p in sorted(set(want) & set(got)):
    if tuple(got[p].shape) != tuple(want[p].shape):
      problems.append(f"{p}: shape {tuple(got[p].shape)}, expected {tuple(want[p].shape)}")
    elif np.dtype(got[p].dtype) != np.dtype(bool):
      problems.append(f"{p}: dtype {np.dtype(got[p].dtype)}, expected bool")
  if problems:
    raise UserError(f"{source} does not match the parameter tree: " + "; ".join(problems))


def _path_problems(wanted: set[str], got: set[str]) -> list[str]:
  """The paths of ``wanted`` missing from ``got`` and those of ``got`` not wanted, as messages."""
  problems = []
  missing, extra = sorted(wanted - got), sorted(got - wanted)
  if missing:
    problems.append(f"missing paths {missing[:10]}" + (" ..." if len(missing) > 10 else ""))
  if extra:
    problems.append(f"unexpected paths {extra[:10]}" + (" ..." if len(extra) > 10 else ""))
  return problems


def save_masks(path: str, masks) -> None:
  """Write a mask tree to an ``.npz`` file keyed by '/'-joined parameter paths."""
  np.savez_compressed(path, **{p: np.asarray(m, bool) for p, m in _leaves(masks)})


def load_masks(path: str, params, *, spec: PrunableSpec | None = None):
  """Load a mask tree from an ``.npz`` file (see ``save_masks``) or an orbax checkpoint directory
  holding either a mask tree or a state with a ``masks`` entry; validate it against ``params``.

  Every path of ``params`` must be in the file and no other. ``spec`` is unused (kept for symmetry).
  """
  del spec
  path = os.fspath(path)
  if os.path.isdir(path):
    import orbax.checkpoint as ocp
    tree = ocp.StandardCheckpointer().restore(os.path.abspath(path))
    if isinstance(tree, dict) and "masks" in tree:
      tree = tree["masks"]
    flat = {p: np.asarray(v) for p, v in _leaves(tree)}
  elif os.path.isfile(path):
    with np.load(path) as data:
      flat = {k: np.asarray(data[k]) for k in data.files}
  else:
    raise UserError(f"predefined mask file {path!r} does not exist (expected an .npz file or an "
                    "orbax checkpoint directory)")
  problems = _path_problems({p for p, _ in _leaves(params)}, set(flat))
  if problems:
    raise UserError(f"predefined masks {path!r} do not match the parameter tree: "
                    + "; ".join(problems))
  tree = jax.tree_util.tree_map_with_path(lambda kp, _: flat[path_str(kp)], params)
  validate_masks(tree, params, source=f"predefined masks {path!r}")
  return jax.tree.map(jnp.asarray, tree)
