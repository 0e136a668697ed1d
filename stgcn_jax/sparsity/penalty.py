"""The "information compression" group-lasso penalty (docs/METHOD.md section 3, paper Eq. 9).

``L_p = sum over blocks l of || W_l * (1 - M_l) ||_2``: the plain L2 norm of the concatenated
masked-out prunable weights of one backbone block (summed over blocks, not averaged, no
sqrt(group size)). The norm is NaN-safe (``optax.safe_norm``): an all-zero group has value 0 and
gradient 0. Masks are under ``stop_gradient``. The warm-up loss is ``CE + lambda * L_p`` with
``lambda = penalty_weight(epoch, ...)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from stgcn_jax.errors import UserError
from stgcn_jax.sparsity.masks import PrunableSpec, block_of, path_str

LAMBDA_SCHEDULES = ("constant", "ramp")


def group_norms(params, masks, spec: PrunableSpec | None = None) -> dict[str, jax.Array]:
  """Per block: ``||W_block * (1 - M_block)||_2`` over the block's prunable leaves."""
  spec = spec or PrunableSpec()
  mask_leaves = {path_str(p): m for p, m in jax.tree_util.tree_leaves_with_path(masks)}
  groups: dict[str, list[jax.Array]] = {}
  for kp, w in jax.tree_util.tree_leaves_with_path(params):
    path = path_str(kp)
    if not spec(path):
      continue
    if path not in mask_leaves:
      raise ValueError(f"group_lasso: masks have no leaf {path!r} (masks must have the structure "
                       "of params)")
    keep = jax.lax.stop_gradient(mask_leaves[path]).astype(w.dtype)
    groups.setdefault(block_of(path), []).append((w * (1 - keep)).ravel())
  return {b: optax.safe_norm(jnp.concatenate(vs), 0.0) for b, vs in groups.items()}


def group_lasso(params, masks, spec: PrunableSpec | None = None) -> jax.Array:
  """``sum_l ||W_l * (1 - M_l)||_2`` (a scalar; 0 when nothing is prunable)."""
  norms = group_norms(params, masks, spec)
  if not norms:
    return jnp.zeros((), jnp.float32)
  return sum(norms.values())


def penalty_weight(epoch, penalty_lambda: float = 1.0, schedule: str = "constant",
                   warmup_epochs: float = 60):
  """``lambda`` at ``epoch``: ``penalty_lambda`` (constant) or ``penalty_lambda * min(1,
  epoch / warmup_epochs)`` (ramp, the reference code's ``lam='gradual'``). Traceable."""
  if schedule not in LAMBDA_SCHEDULES:
    raise UserError(f"lambda_schedule must be one of {LAMBDA_SCHEDULES}, got {schedule!r}")
  if schedule == "constant":
    return jnp.asarray(penalty_lambda, jnp.float32)
  if warmup_epochs <= 0:
    return jnp.asarray(penalty_lambda, jnp.float32)
  return penalty_lambda * jnp.minimum(1.0, jnp.asarray(epoch, jnp.float32) / warmup_epochs)


def proximal_group_lasso(params, masks, threshold, spec: PrunableSpec | None = None):
  """The group lasso's proximal operator on the masked-out weights: per block ``l``,
  ``W_l * (1 - M_l)`` is scaled by ``max(0, 1 - threshold / ||W_l * (1 - M_l)||)`` (block
  soft-thresholding); kept weights and non-prunable leaves are unchanged. A block whose masked-out
  norm is at most ``threshold`` comes out with its masked-out part exactly 0.

  Returns ``(params, alive)``: ``alive`` is a bool tree like ``masks``, False exactly on the
  masked-out entries of the blocks that were set to 0 (their momentum is reset by the caller)."""
  spec = spec or PrunableSpec()
  norms = group_norms(params, masks, spec)
  factors = {b: jnp.maximum(0.0, 1.0 - threshold / jnp.maximum(n, 1e-30)) for b, n in norms.items()}

  def shrink(kp, w, m):
    path = path_str(kp)
    if not spec(path):
      return w
    keep = m.astype(w.dtype)
    return w * keep + (w * (1 - keep)) * factors[block_of(path)].astype(w.dtype)

  def alive(kp, m):
    path = path_str(kp)
    if not spec(path):
      return m
    return m | (factors[block_of(path)] > 0)

  return (jax.tree_util.tree_map_with_path(shrink, params, masks),
          jax.tree_util.tree_map_with_path(alive, masks))
