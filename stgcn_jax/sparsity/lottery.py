"""Score-based masks: the lottery-ticket baseline (docs/METHOD.md section 4) and ``learn_scores``.

Edge-popup style: one score tensor per prunable kernel (kaiming-uniform init); the forward uses
``W * topk_mask(S, s)`` with a straight-through gradient to ``S`` (``dL/dS = dL/dW_eff * W``, as the
reference ``GetSubnet``). The threshold keeps the ``n - round(s * n)`` largest raw (signed) scores,
per tensor by default, or over all / per-block prunable tensors. In mode 'lth' only the scores
train (``training/step.py`` freezes every parameter through ``optax.masked``; BatchNorm running statistics
still update). Weights come from a pretrained variables dict (e.g. ``convert.from_pyskl``) passed to
``create_train_state(..., variables=...)``, or from random init.

>>> scores = init_scores(params, key)
>>> masks = masks_from_scores(params, scores, 0.95)        # a full mask tree
>>> save_masks("ticket.npz", masks)                        # reusable as mask_method='predefined'
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import traverse_util

from stgcn_jax.errors import UserError
from stgcn_jax.sparsity.draw import (kaiming_uniform_scores, keep_largest, num_pruned,
                                     threshold_group)
from stgcn_jax.sparsity.masks import PrunableSpec, block_of, check_sparsity, path_str

SCOPES = ("per_tensor", "global", "per_block")


def _flat(tree):
  return traverse_util.flatten_dict(tree)


def init_scores(params, key, spec: PrunableSpec | None = None):
  """Kaiming-uniform (fan_in, relu gain) scores for every prunable leaf of ``params``."""
  spec = spec or PrunableSpec()
  flat = {k: v for k, v in _flat(params).items() if spec(path_str(k))}
  if not flat:
    raise UserError(f"init_scores: no prunable parameters under spec={spec}")
  keys = jax.random.split(key, len(flat))
  return traverse_util.unflatten_dict(
      {k: kaiming_uniform_scores(kk, v.shape, v.dtype) for kk, (k, v) in zip(keys, sorted(
          flat.items()))})


def topk_masks(scores, sparsity: float, scope: str = "per_tensor"):
  """Bool tree (structure of ``scores``): keep the ``n - round(s * n)`` largest scores."""
  s = check_sparsity(sparsity)
  if scope not in SCOPES:
    raise UserError(f"score threshold scope must be one of {SCOPES}, got {scope!r}")
  flat = {path_str(k): v for k, v in _flat(scores).items()}
  if s == 0.0:
    keep = {p: jnp.ones(v.shape, bool) for p, v in flat.items()}
  elif scope == "per_tensor":
    keep = {p: keep_largest(v.ravel(), num_pruned(v.size, s)).reshape(v.shape)
            for p, v in flat.items()}
  else:
    groups: dict[str, dict] = {}
    for p, v in flat.items():
      groups.setdefault("all" if scope == "global" else block_of(p), {})[p] = v
    keep = {}
    for g in groups.values():
      keep.update(threshold_group(g, s))
  return traverse_util.unflatten_dict({k: keep[path_str(k)] for k in _flat(scores)})


def full_masks(params, subset_masks):
  """A full mask tree: ``subset_masks`` where given, all True elsewhere."""
  sub = _flat(subset_masks)
  return jax.tree_util.tree_map_with_path(
      lambda kp, leaf: sub[tuple(k.key for k in kp)] if tuple(k.key for k in kp) in sub
      else jnp.ones(leaf.shape, bool), params)


def masks_from_scores(params, scores, sparsity: float, scope: str = "per_tensor"):
  """The full bool mask tree that thresholding ``scores`` at ``sparsity`` gives."""
  return full_masks(params, topk_masks(scores, sparsity, scope))


def ste_params(params, scores, sparsity: float, scope: str = "per_tensor"):
  """``(W * topk_mask(S, s)`` with a straight-through gradient to S, the full bool mask tree)``."""
  sub = topk_masks(jax.lax.stop_gradient(scores), sparsity, scope)
  flat_s, flat_m = _flat(scores), _flat(sub)

  def eff(kp, w):
    k = tuple(x.key for x in kp)
    if k not in flat_s:
      return w
    s = flat_s[k]
    gate = flat_m[k].astype(w.dtype) + (s - jax.lax.stop_gradient(s))  # value: the 0/1 mask
    return w * gate

  return jax.tree_util.tree_map_with_path(eff, params), full_masks(params, sub)
