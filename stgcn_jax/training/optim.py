"""Optimizers: the SGD recipe (docs/METHOD.md section 7) and the element-wise masked-updates transform.

One optimizer serves both phases, so the optimizer-state tree has the same structure in warm-up and
fine-tune (an orbax checkpoint from either phase restores into one abstract target)::

  tx = make_optimizer(cfg.optim)                    # chain(decay, sgd, [freeze], masked_updates())
  updates, opt_state = tx.update(grads, opt_state, params)               # warm-up: dense
  updates, opt_state = tx.update(grads, opt_state, params, masks=masks)  # fine-tune: masked

The masks travel as an optax extra argument (``GradientTransformationExtraArgs``); they are never
part of the optimizer state. ``optax.masked`` handles the per-leaf choices (``frozen``: leaves that
do not train at all; ``decay_mask``: leaves that get weight decay).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from stgcn_jax.training.config import OptimConfig, as_train_config


def masked_updates() -> optax.GradientTransformationExtraArgs:
  """Multiply the incoming (final) updates by the ``masks`` extra argument, element-wise.

  ``update(updates, state, params=None, *, masks=None)``: without ``masks`` it is the identity.
  Place it last in ``optax.chain`` so that neither momentum nor weight decay can move a masked
  entry.
  """
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, masks=None, **extra_args):
    del params, extra_args
    if masks is None:
      return updates, state
    try:
      out = jax.tree.map(lambda u, m: u * m.astype(u.dtype), updates, masks)
    except ValueError as e:
      raise ValueError("masked_updates: masks must have exactly the structure of the updates "
                       f"(the trained tree): {e}") from None
    return out, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def make_schedule(config: OptimConfig) -> Callable[[Any], jax.Array]:
  """The learning rate at a step: peak ``learning_rate * batch_size / base_batch_size``.

  Without LR warm-up, cosine decay to 0 over ``num_epochs * steps_per_epoch`` steps (constant
  within an epoch if ``lr_by_epoch``). With ``lr_warmup_epochs = w``, a linear ramp from 0 to the
  peak over ``w * steps_per_epoch`` steps, then the cosine decay to 0 over the remaining steps
  (``optax.warmup_cosine_decay_schedule``).
  """
  config.check()
  peak = config.peak_learning_rate
  if config.lr_warmup_epochs > 0:
    warmup = max(1, int(round(config.lr_warmup_epochs * config.steps_per_epoch)))
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, config.total_steps, end_value=0.0)
  if not config.lr_by_epoch:
    return optax.cosine_decay_schedule(peak, config.total_steps, alpha=0.0)
  by_epoch = optax.cosine_decay_schedule(peak, config.num_epochs, alpha=0.0)
  return lambda step: by_epoch(jnp.asarray(step) // config.steps_per_epoch)


def make_optimizer(config: OptimConfig, *, frozen=None,
                   decay_mask=None) -> optax.GradientTransformationExtraArgs:
  """``chain(add_decayed_weights, sgd(schedule, momentum, nesterov), [freeze], masked_updates())``.

  Args:
    config: the run's ``OptimConfig``.
    frozen: optional per-leaf bool tree (or prefix tree / callable) over the trained tree: True
      leaves get zero updates (``optax.masked(optax.set_to_zero(), frozen)``). Must be the same in
      every phase of a run.
    decay_mask: optional per-leaf bool tree (or callable): which leaves get weight decay (default:
      all, as the reference recipe).
  """
  parts = [optax.add_decayed_weights(config.weight_decay, mask=decay_mask)]
  if config.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  parts += [optax.sgd(make_schedule(config), momentum=config.momentum or None,
                     nesterov=config.nesterov and bool(config.momentum))]
  if frozen is not None:
    parts.append(optax.masked(optax.set_to_zero(), frozen))
  parts.append(masked_updates())
  return optax.chain(*parts)


def mask_optimizer_state(opt_state, params, masks):
  """Multiply every sub-tree of ``opt_state`` that has the structure of ``params`` (momentum /
  trace buffers) by ``masks``; everything else (counts, empty states) is unchanged."""
  treedef = jax.tree.structure(params)

  def is_params_like(node):
    if node is None or isinstance(node, (jax.Array, optax.MaskedNode)):
      return False
    try:
      return jax.tree.structure(node) == treedef and not isinstance(node, optax.EmptyState)
    except Exception:  # pylint: disable=broad-except
      return False

  def fn(node):
    if is_params_like(node):
      return jax.tree.map(lambda b, m: b * m.astype(b.dtype), node, masks)
    return node

  return jax.tree.map(fn, opt_state, is_leaf=is_params_like)


def phase_at(step: int, config) -> str:
  """'warmup' for ``step < warmup_steps`` (generator modes), else 'finetune'
  (``TrainConfig.phase_at``)."""
  return as_train_config(config).phase_at(step)


def build_optimizer(config) -> optax.GradientTransformationExtraArgs:
  """The one optimizer of a run (LTH: every parameter frozen, only the scores train)."""
  cfg = as_train_config(config)
  frozen = {"params": True, "scores": False} if cfg.sparsity.mode == "lth" else None
  return make_optimizer(cfg.optim, frozen=frozen)
