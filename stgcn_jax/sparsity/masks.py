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
under ``jit``; it reads only the shapes of ``params``.
"""

from __future__ import annotations

import dataclasses

import math
import os
import re
import warnings
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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


def num_pruned(n: int, sparsity: float) -> int:
  """``round(sparsity * n)`` with halves rounded up (the number of zeros in a tensor of size n)."""
  return int(math.floor(sparsity * n + 0.5))


def check_sparsity(sparsity, where: str = "sparsity") -> float:
  """Raise ``ValueError`` unless ``0 <= sparsity < 1``."""
  try:
    s = float(sparsity)
  except (TypeError, ValueError):
    raise ValueError(f"{where} must be a number in [0, 1), got {sparsity!r}") from None
  if not 0.0 <= s < 1.0 or math.isnan(s):
    raise ValueError(f"{where} must be in [0, 1) (the fraction of prunable weights set to zero), "
                     f"got {sparsity!r}")
  return s


def _leaf_rng(key, path: str) -> np.random.Generator:
  """A host RNG seeded from the PRNG key's data and the leaf path (stable across param trees)."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  words = [int(w) for w in np.asarray(key).ravel()]
  return np.random.default_rng(words + [zlib.crc32(path.encode())])


def _size(leaf) -> int:
  return int(np.prod(leaf.shape, dtype=np.int64))


def kaiming_uniform_scores(key, shape, dtype=jnp.float32):
  """U(-sqrt(6 / fan_in), +sqrt(6 / fan_in)), ``fan_in = prod(shape[:-1])`` (torch's default)."""
  fan_in = max(1, int(np.prod(shape[:-1], dtype=np.int64)))
  bound = math.sqrt(6.0 / fan_in)
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def _np_kaiming_scores(rng: np.random.Generator, shape) -> np.ndarray:
  fan_in = max(1, int(np.prod(shape[:-1], dtype=np.int64)))
  bound = math.sqrt(6.0 / fan_in)
  return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def _random_keep(rng: np.random.Generator, shape, n_zero: int) -> np.ndarray:
  """A bool array with exactly ``n_zero`` False entries at uniformly random positions."""
  n = int(np.prod(shape, dtype=np.int64))
  keep = np.ones((n,), bool)
  keep[rng.permutation(n)[:n_zero]] = False
  return keep.reshape(shape)


def cover_output_channels(keep: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """``keep`` with the same number of kept entries, moved so that every output channel (last axis)
  keeps at least one weight while any channel keeps two or more: for each dead channel, one kept
  entry of the channel that keeps the most moves to a random position of the dead one.

  An output channel whose weights are all pruned computes a constant; the BatchNorm after it then
  sees variance ~0, scales it by 1/sqrt(eps) in eval mode (where any lag of the running mean becomes
  a large activation) and gives the masked-out weights of that channel gradients amplified by as
  much while the warm-up's penalty empties them. At 95 % sparsity a 16-input 1x1 conv loses 44 %
  of its output channels that way by chance (0.95 ** 16)."""
  keep = keep.copy()
  cols = keep.reshape(-1, keep.shape[-1])
  for j in rng.permutation(cols.shape[1]):
    if cols[:, j].any():
      continue
    counts = cols.sum(0)
    donor = int(np.argmax(counts))
    if counts[donor] < 2:
      break
    cols[rng.choice(np.flatnonzero(cols[:, donor])), donor] = False
    cols[rng.integers(cols.shape[0]), j] = True
  return cols.reshape(keep.shape)


def channel_floor_counts(sizes: dict[str, int], channels: dict[str, int],
                         counts: dict[str, int]) -> dict[str, int]:
  """Kept counts with the same total as ``counts`` in which every tensor keeps at least one weight
  per output channel (``channels``): tensors below that floor are raised to it, and the weights
  this costs are taken from the other tensors in proportion to what they keep above their floor
  (largest remainders). Where the total cannot cover every floor, ``counts`` is returned."""
  floor = {p: min(channels[p], sizes[p]) for p in sizes}
  total = sum(counts.values())
  if sum(floor.values()) > total:
    return dict(counts)
  raised = {p: max(counts[p], floor[p]) for p in sizes}
  excess = sum(raised.values()) - total
  if excess == 0:
    return raised
  spare = {p: raised[p] - floor[p] for p in sizes if raised[p] > floor[p] and counts[p] > floor[p]}
  pool = sum(spare.values())
  cut = {p: excess * v / pool for p, v in spare.items()}
  take = {p: int(np.floor(c)) for p, c in cut.items()}
  for p in sorted(cut, key=lambda q: cut[q] - take[q], reverse=True)[:excess - sum(take.values())]:
    take[p] += 1
  return {p: raised[p] - take.get(p, 0) for p in sizes}


def keep_largest(values_flat, n_zero: int):
  """Flat bool: False at the ``n_zero`` smallest entries (exact count, ties broken by position).
  numpy in, numpy out; jax in, jax out (jittable, ``n_zero`` static)."""
  if isinstance(values_flat, np.ndarray):
    keep = np.ones(values_flat.shape, bool)
    keep[np.argsort(values_flat, kind="stable")[:n_zero]] = False
    return keep
  order = jnp.argsort(values_flat)
  return jnp.ones(values_flat.shape, bool).at[order[:n_zero]].set(False)


def erk_densities(shapes: dict[str, tuple[int, ...]], sparsity: float,
                  power_scale: float = 1.0) -> dict[str, float]:
  """RigL's Erdos-Renyi-Kernel densities: ``density_l = eps * (sum(shape) / prod(shape))**power``,
  with layers whose density would exceed 1 made dense and ``eps`` re-solved, so that the total
  number of kept weights is ``(1 - sparsity) * sum(n_l)``."""
  dense: set[str] = set()
  while True:
    divisor, rhs, raw = 0.0, 0.0, {}
    for name, shape in shapes.items():
      n = float(np.prod(shape))
      if name in dense:
        rhs -= n * sparsity
      else:
        rhs += n * (1.0 - sparsity)
        raw[name] = (float(np.sum(shape)) / n) ** power_scale
        divisor += raw[name] * n
    if not raw:
      return {name: 1.0 for name in shapes}
    eps = rhs / divisor
    max_raw = max(raw.values())
    if max_raw * eps <= 1.0:
      break
    dense.update(name for name, r in raw.items() if r == max_raw)
  return {name: 1.0 if name in dense else eps * raw[name] for name in shapes}


def _erk_counts(sizes: dict[str, int], densities: dict[str, float], total_keep: int):
  """Integer kept counts per tensor, proportional to ``densities``, summing to ``total_keep``."""
  ideal = {p: min(sizes[p], densities[p] * sizes[p]) for p in sizes}
  counts = {p: min(sizes[p], int(math.floor(v))) for p, v in ideal.items()}
  deficit = total_keep - sum(counts.values())
  order = sorted(sizes, key=lambda p: (-(ideal[p] - counts[p]), p))
  while deficit > 0:  # largest remainder first, skipping full tensors
    progressed = False
    for p in order:
      if deficit and counts[p] < sizes[p]:
        counts[p] += 1
        deficit -= 1
        progressed = True
    if not progressed:
      break
  return counts


def make_masks(params, sparsity, *, key=None, method: str = "uniform",
               spec: PrunableSpec | None = None, path: str | None = None,
               cover_channels: bool = False):
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
    raise ValueError(f"mask method must be one of {METHODS}, got {method!r}")
  if method == "predefined":
    if not path:
      raise ValueError("mask method 'predefined' needs path= (an .npz file or orbax checkpoint)")
    return load_masks(path, params, spec=spec)
  s = check_sparsity(sparsity)
  if key is None:
    raise ValueError(f"mask method {method!r} needs a PRNG key (key=...)")
  leaves = _leaves(params)
  prunable = {p: leaf for p, leaf in leaves if spec(p)}
  if not prunable:
    raise ValueError("no prunable parameters: the predicate matched no leaf of params "
                     f"(spec={spec}); first paths: {[p for p, _ in leaves[:5]]}")
  keep: dict[str, np.ndarray] = {}
  if method == "uniform":
    sizes = {p: _size(leaf) for p, leaf in prunable.items()}
    counts = {p: n - num_pruned(n, s) for p, n in sizes.items()}
    if cover_channels:
      counts = channel_floor_counts(sizes, {p: int(leaf.shape[-1]) for p, leaf in
                                            prunable.items()}, counts)
    for p, leaf in prunable.items():
      rng = _leaf_rng(key, p)
      keep[p] = _random_keep(rng, leaf.shape, sizes[p] - counts[p])
      if cover_channels:
        keep[p] = cover_output_channels(keep[p], rng)
  elif method == "erk":
    sizes = {p: _size(leaf) for p, leaf in prunable.items()}
    dens = erk_densities({p: tuple(leaf.shape) for p, leaf in prunable.items()}, s)
    total = sum(sizes.values())
    counts = _erk_counts(sizes, dens, total - num_pruned(total, s))
    for p, leaf in prunable.items():
      rng = _leaf_rng(key, p)
      keep[p] = _random_keep(rng, leaf.shape, sizes[p] - counts[p])
      if cover_channels:
        keep[p] = cover_output_channels(keep[p], rng)
  else:  # global / per_block: threshold i.i.d. kaiming-uniform scores
    if s >= 0.95:
      warnings.warn(f"mask method {method!r} at sparsity {s}: thresholding kaiming-uniform scores "
                    "across tensors of different fan-in can prune whole layers (docs/METHOD.md "
                    "section 9); 'uniform' keeps 1 - s of every tensor", stacklevel=2)
    scores = {p: _np_kaiming_scores(_leaf_rng(key, p), leaf.shape)
              for p, leaf in prunable.items()}
    groups: dict[str, list[str]] = {}
    for p in prunable:
      groups.setdefault("all" if method == "global" else block_of(p), []).append(p)
    for names in groups.values():
      keep.update(_threshold_group({p: scores[p] for p in names}, s))
  return jax.tree_util.tree_map_with_path(
      lambda kp, leaf: jnp.asarray(keep[path_str(kp)]) if path_str(kp) in keep
      else jnp.ones(leaf.shape, bool), params)


def _threshold_group(scores: dict[str, jax.Array], sparsity: float) -> dict[str, jax.Array]:
  """Keep the ``n - round(s * n)`` largest scores over the concatenation of a group of tensors."""
  names = list(scores)
  host = all(isinstance(v, np.ndarray) for v in scores.values())
  cat = np.concatenate if host else jnp.concatenate
  flat = cat([scores[p].ravel() for p in names])
  kept = keep_largest(flat, num_pruned(flat.size, sparsity))
  out, offset = {}, 0
  for p in names:
    n = scores[p].size
    out[p] = kept[offset:offset + n].reshape(scores[p].shape)
    offset += n
  return out


def ones_like_masks(params):
  """The dense mask tree (all True)."""
  return jax.tree.map(lambda leaf: jnp.ones(leaf.shape, bool), params)


def validate_masks(masks, params, *, source: str = "masks") -> None:
  """Raise ``ValueError`` naming every path whose presence, shape or dtype disagrees with params."""
  want = {p: leaf for p, leaf in _leaves(params)}
  got = {p: leaf for p, leaf in _leaves(masks)}
  problems = []
  missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
  if missing:
    problems.append(f"missing paths {missing[:10]}" + (" ..." if len(missing) > 10 else ""))
  if extra:
    problems.append(f"unexpected paths {extra[:10]}" + (" ..." if len(extra) > 10 else ""))
  for p in sorted(set(want) & set(got)):
    if tuple(got[p].shape) != tuple(want[p].shape):
      problems.append(f"{p}: shape {tuple(got[p].shape)}, expected {tuple(want[p].shape)}")
    elif np.dtype(got[p].dtype) != np.dtype(bool):
      problems.append(f"{p}: dtype {np.dtype(got[p].dtype)}, expected bool")
  if problems:
    raise ValueError(f"{source} does not match the parameter tree: " + "; ".join(problems))


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
    raise ValueError(f"predefined mask file {path!r} does not exist (expected an .npz file or an "
                     "orbax checkpoint directory)")
  leaves = _leaves(params)
  wanted = {p for p, _ in leaves}
  missing, extra = sorted(wanted - set(flat)), sorted(set(flat) - wanted)
  if missing or extra:
    problems = []
    if missing:
      problems.append(f"missing paths {missing[:10]}" + (" ..." if len(missing) > 10 else ""))
    if extra:
      problems.append(f"unexpected paths {extra[:10]}" + (" ..." if len(extra) > 10 else ""))
    raise ValueError(f"predefined masks {path!r} do not match the parameter tree: "
                     + "; ".join(problems))
  tree = jax.tree_util.tree_map_with_path(lambda kp, _: flat[path_str(kp)], params)
  validate_masks(tree, params, source=f"predefined masks {path!r}")
  return jax.tree.map(jnp.asarray, tree)
