"""How the random masks of ``masks.make_masks`` are drawn (docs/METHOD.md section 2).

Per-tensor counts (``uniform``: ``round(s * n)`` zeros per tensor; ``erk``: RigL's
Erdos-Renyi-Kernel densities at the same global count) placed at random positions
(``draw_counted``), or i.i.d. kaiming-uniform scores thresholded over groups of tensors
(``draw_thresholded``: one group for ``global``, one per block for ``per_block``). Every tensor
draws from its own host RNG, seeded from the PRNG key's data and the tensor's path, so a draw does
not depend on the rest of the tree. Inputs are ``{path: leaf}`` dicts (only shapes are read);
outputs are ``{path: bool numpy array}``.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def num_pruned(n: int, sparsity: float) -> int:
  """``round(sparsity * n)`` with halves rounded up (the number of zeros in a tensor of size n)."""
  return int(math.floor(sparsity * n + 0.5))


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


def kept_counts(prunable: dict[str, Any], sparsity: float, method: str,
                cover_channels: bool = False) -> dict[str, int]:
  """The kept weights per tensor: ``n - round(s * n)`` each (``uniform``; with ``cover_channels``
  moved so that every tensor can keep one weight per output channel) or the ERK counts (``erk``)."""
  sizes = {p: _size(leaf) for p, leaf in prunable.items()}
  if method == "erk":
    dens = erk_densities({p: tuple(leaf.shape) for p, leaf in prunable.items()}, sparsity)
    total = sum(sizes.values())
    return _erk_counts(sizes, dens, total - num_pruned(total, sparsity))
  counts = {p: n - num_pruned(n, sparsity) for p, n in sizes.items()}
  if cover_channels:
    counts = channel_floor_counts(sizes, {p: int(leaf.shape[-1]) for p, leaf in
                                          prunable.items()}, counts)
  return counts


def draw_counted(prunable: dict[str, Any], counts: dict[str, int], key,
                 cover_channels: bool = False) -> dict[str, np.ndarray]:
  """Per tensor, ``counts[path]`` kept weights at random positions (then, with
  ``cover_channels``, moved by ``cover_output_channels`` with the same RNG)."""
  keep: dict[str, np.ndarray] = {}
  for p, leaf in prunable.items():
    rng = _leaf_rng(key, p)
    keep[p] = _random_keep(rng, leaf.shape, _size(leaf) - counts[p])
    if cover_channels:
      keep[p] = cover_output_channels(keep[p], rng)
  return keep


def draw_thresholded(prunable: dict[str, Any], sparsity: float, key,
                     group_of: Callable[[str], str]) -> dict[str, np.ndarray]:
  """Threshold i.i.d. kaiming-uniform scores over each group of tensors (``group_of(path)``),
  keeping ``n - round(s * n)`` of every group's ``n`` weights."""
  scores = {p: _np_kaiming_scores(_leaf_rng(key, p), leaf.shape)
            for p, leaf in prunable.items()}
  groups: dict[str, list[str]] = {}
  for p in prunable:
    groups.setdefault(group_of(p), []).append(p)
  keep: dict[str, np.ndarray] = {}
  for names in groups.values():
    keep.update(threshold_group({p: scores[p] for p in names}, sparsity))
  return keep


def threshold_group(scores: dict[str, jax.Array], sparsity: float) -> dict[str, jax.Array]:
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
