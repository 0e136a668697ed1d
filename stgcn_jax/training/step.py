"""The train and eval steps, pure functions of (state, batch) that the loop jits with shardings.

>>> cfg = run_config.train_config(steps_per_epoch)   # a TrainConfig: optim + sparsity
>>> state = create_train_state(model, key, sample_x, cfg)
>>> warm = jax.jit(make_train_step(model, cfg, "warmup"), donate_argnums=0)
>>> tune = jax.jit(make_train_step(model, cfg, "finetune"), donate_argnums=0)
>>> for step in ...:
...   if step == cfg.warmup_steps: state = jax.jit(start_finetune)(state)   # once; idempotent
...   state, metrics = (warm if cfg.phase_at(step) == "warmup" else tune)(state, batch)
>>> logits = jax.jit(make_eval_step(model))(state, x)       # x: (B, M, T, V, C) or (B, clips, ...)

Phases (docs/METHOD.md section 3): 'warmup' = dense forward, loss ``CE + lambda * group_lasso``, dense
updates; 'finetune' = forward with ``params * masks``, CE only, updates multiplied by the masks.
``start_finetune`` is the switch: pruned weights become exactly 0 and the momentum buffers are
multiplied by the masks. Mode 'dense' never masks; mode 'lth' has the single phase 'finetune' in
which only the scores train; ``learn_scores`` reproduces the reference code (scores trained by the
STE with the weights, dense threshold in warm-up, target threshold in fine-tune, no update masking).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from stgcn_jax.sparsity import lottery
from stgcn_jax.sparsity.config import GENERATOR_MODES, prunable_spec
from stgcn_jax.sparsity.masks import apply_masks
from stgcn_jax.sparsity.penalty import group_lasso, penalty_weight, proximal_group_lasso
from stgcn_jax.training.config import TrainConfig, as_train_config
from stgcn_jax.training.optim import make_schedule, mask_optimizer_state
from stgcn_jax.training.state import TrainState

PHASES = ("warmup", "finetune")


def make_train_step(model, config, phase: str):
  """``train_step(state, batch) -> (state, metrics)`` for ``phase`` in ``PHASES``.

  ``config``: a ``TrainConfig`` (``RunConfig.train_config``). ``batch = {'x':
  (B, M, T, V, C) float32, 'label': (B,) int32}``. Metrics: ``loss``, ``ce``, ``penalty`` (the
  unweighted group lasso; 0 outside warm-up), ``lambda``, ``accuracy``, ``grad_norm`` (of the
  trained tree), ``lr`` (at this step).
  """
  if phase not in PHASES:
    raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
  cfg = as_train_config(config)
  sp, spec, schedule = cfg.sparsity, prunable_spec(cfg.sparsity), make_schedule(cfg.optim)
  flags = _PhaseFlags.of(cfg, phase)
  masked, proximal = flags.masked, flags.proximal
  loss_fn = _loss_fn(model, cfg, flags)

  def train_step(state: TrainState, batch):
    dropout_key = jax.random.fold_in(state.rng, state.step)
    trained = state.trainable()
    (loss, (batch_stats, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        trained, state, batch, dropout_key)
    upd_masks = state.masks if (masked and state.scores is None) else None
    updates, opt_state = state.tx.update(grads, state.opt_state, trained, masks=upd_masks)
    trained = optax.apply_updates(trained, updates)
    if upd_masks is not None:  # belt and braces: p * 1 = p, and pruned entries stay exactly 0
      trained = apply_masks(trained, upd_masks)
    if proximal:  # block soft-thresholding at the step size of heavy-ball SGD, lr / (1 - momentum)
      threshold = aux["lambda"] * schedule(state.step) / (1.0 - cfg.optim.momentum)
      trained, alive = proximal_group_lasso(trained, state.masks, threshold, spec)
      # A group set to 0 also forgets its momentum, which would otherwise push it out again.
      opt_state = mask_optimizer_state(opt_state, trained, alive)
    new_state = state.with_trainable(trained, step=state.step + 1, opt_state=opt_state,
                                     batch_stats=batch_stats)
    if new_state.scores is not None:
      new_state = new_state.replace(masks=lottery.masks_from_scores(
          new_state.params, new_state.scores, sp.level, sp.score_scope))
    metrics = dict(loss=loss, grad_norm=optax.tree.norm(grads), lr=schedule(state.step), **aux)
    return new_state, metrics

  return train_step


class _PhaseFlags(NamedTuple):
  """What a phase does, given the mode: ``warm`` (dense forward), ``use_penalty`` (the group
  lasso), ``proximal`` (applied after the step), ``masked`` (forward and updates masked)."""
  warm: bool
  use_penalty: bool
  proximal: bool
  masked: bool

  @classmethod
  def of(cls, cfg: TrainConfig, phase: str) -> _PhaseFlags:
    sp = cfg.sparsity
    warm = phase == "warmup" and sp.mode != "lth"
    use_penalty = warm and sp.mode in GENERATOR_MODES
    proximal = use_penalty and sp.penalty_update == "proximal" and not sp.learn_scores
    return cls(warm, use_penalty, proximal, cfg.masked(phase))


def _loss_fn(model, cfg: TrainConfig, flags: _PhaseFlags):
  """``loss_fn(trained, state, batch, dropout_key) -> (loss, (batch_stats, aux))`` of a phase:
  CE, plus the group lasso in a generator's warm-up (by gradient, or only reported when the
  penalty is proximal)."""
  sp, spec = cfg.sparsity, prunable_spec(cfg.sparsity)
  warm, use_penalty, proximal, masked = flags

  def loss_fn(trained, state: TrainState, batch, dropout_key):
    if state.scores is None:
      params, eff, target = trained, trained, state.masks
    else:   # the scores' masks, by a straight-through estimator (already applied: not masked)
      params, scores = trained["params"], trained["scores"]
      s_fwd = 0.0 if warm else sp.level
      eff, fwd_masks = lottery.ste_params(params, scores, s_fwd, sp.score_scope)
      target = fwd_masks if s_fwd == sp.level else state.masks
    logits, new_vars = forward(model, state, batch["x"], params=eff,
                               masked=masked and state.scores is None, train=True,
                               mutable=["batch_stats"], rngs={"dropout": dropout_key})
    ce, acc = ce_and_accuracy(logits, batch["label"])
    if use_penalty:
      pen = group_lasso(params, target, spec)
      epoch = state.step // cfg.steps_per_epoch
      lam = penalty_weight(epoch, sp.penalty_lambda, sp.lambda_schedule, sp.warmup_epochs)
      if sp.penalty_lambda == 0 or proximal:  # proximal: applied after the step, not by gradient
        pen = jax.lax.stop_gradient(pen)
    else:
      pen, lam = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)
    loss = ce + (0.0 if proximal else lam) * pen
    aux = {"ce": ce, "penalty": pen, "accuracy": acc, "lambda": lam}
    return loss, (new_vars["batch_stats"], aux)

  return loss_fn


def make_eval_step(model, masked: bool = True):
  """``eval_step(state, x) -> logits``: eval mode, ``params * masks`` (the dense params if not
  ``masked``: the model a generator's warm-up trains; ``TrainConfig.masked``); ``x`` is
  ``(B, M, T, V, C)`` or ``(B, clips, M, T, V, C)`` (logits ``(B, clips, classes)``)."""
  def eval_step(state: TrainState, x):
    return forward(model, state, x, masked=masked, train=False)
  return eval_step


def forward(model, state: TrainState, x, *, masked: bool, train: bool, params=None, **apply_kw):
  """``model.apply`` of ``params`` (default the state's ``params``), times its ``masks`` if
  ``masked``, with the state's BatchNorm statistics: the one masked forward of the train step,
  evaluation, precise BN and the switch records. ``apply_kw``: ``mutable``, ``rngs``."""
  params = state.params if params is None else params
  if masked:
    params = apply_masks(params, state.masks)
  return model.apply({"params": params, "batch_stats": state.batch_stats}, x, train=train,
                     **apply_kw)


def ce_and_accuracy(logits, labels) -> tuple[jax.Array, jax.Array]:
  """The batch's mean cross-entropy and top-1 accuracy."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return ce, jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
