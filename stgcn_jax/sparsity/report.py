"""Realised sparsity of a mask tree: per leaf, per block, over prunable weights and over all params.

>>> rep = sparsity_report(params, masks)
>>> rep["prunable_sparsity"], rep["total_sparsity"], rep["nonzero_params"]
>>> print(format_report(rep))

Counts are mask-based: an entry is "zero" when its mask is False (the forward uses
``params * masks``). All values are Python ints/floats, so the dict can be logged as JSON.
"""

from __future__ import annotations

import numpy as np

import jax

from stgcn_jax.sparsity.masks import PrunableSpec, block_of, path_str


def sparsity_report(params, masks, spec: PrunableSpec | None = None) -> dict:
  """The realised sparsity of ``masks`` (same structure as ``params``).

  Returns:
    A dict with ``prunable_sparsity``, ``total_sparsity``, ``nonzero_params``, ``total_params``,
    ``prunable_params``, ``prunable_nonzero``, ``per_leaf`` (path -> {size, zeros, sparsity,
    prunable}) and ``per_block`` (block -> {size, zeros, sparsity} over its prunable leaves).
  """
  spec = spec or PrunableSpec()
  per_leaf, per_block = {}, {}
  total = zeros = p_total = p_zeros = 0
  mask_leaves = dict((path_str(p), m) for p, m in jax.tree_util.tree_leaves_with_path(masks))
  for kp, leaf in jax.tree_util.tree_leaves_with_path(params):
    path = path_str(kp)
    if path not in mask_leaves:
      raise ValueError(f"sparsity_report: masks have no leaf {path!r} (masks must have the "
                       "structure of params)")
    size = int(np.prod(leaf.shape, dtype=np.int64))
    z = size - int(np.count_nonzero(np.asarray(mask_leaves[path])))
    prunable = spec(path)
    per_leaf[path] = dict(size=size, zeros=z, sparsity=z / max(size, 1), prunable=prunable)
    total, zeros = total + size, zeros + z
    if prunable:
      p_total, p_zeros = p_total + size, p_zeros + z
      b = per_block.setdefault(block_of(path), dict(size=0, zeros=0))
      b["size"] += size
      b["zeros"] += z
  for b in per_block.values():
    b["sparsity"] = b["zeros"] / max(b["size"], 1)
  return dict(prunable_sparsity=p_zeros / max(p_total, 1), total_sparsity=zeros / max(total, 1),
              nonzero_params=total - zeros, total_params=total, prunable_params=p_total,
              prunable_nonzero=p_total - p_zeros, per_block=per_block, per_leaf=per_leaf)


def format_report(report: dict, per_leaf: bool = False) -> str:
  """A human-readable table of a ``sparsity_report``."""
  lines = [f"prunable sparsity {report['prunable_sparsity']:.4f} "
           f"({report['prunable_nonzero']:,} / {report['prunable_params']:,} prunable kept); "
           f"total sparsity {report['total_sparsity']:.4f} "
           f"({report['nonzero_params']:,} / {report['total_params']:,} parameters nonzero)"]
  lines.append(f"{'block':<12}{'size':>12}{'zeros':>12}{'sparsity':>10}")
  blocks = sorted(report["per_block"], key=lambda b: (len(b), b))
  for b in blocks:
    e = report["per_block"][b]
    lines.append(f"{b:<12}{e['size']:>12,}{e['zeros']:>12,}{e['sparsity']:>10.4f}")
  if per_leaf:
    width = max((len(p) for p in report["per_leaf"]), default=10) + 2
    lines.append(f"{'leaf':<{width}}{'size':>12}{'zeros':>12}{'sparsity':>10}  prunable")
    for p, e in report["per_leaf"].items():
      lines.append(f"{p:<{width}}{e['size']:>12,}{e['zeros']:>12,}{e['sparsity']:>10.4f}  "
                   f"{'yes' if e['prunable'] else 'no'}")
  return "\n".join(lines)
