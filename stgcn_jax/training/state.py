"""The training state: parameters, BatchNorm statistics, optimizer state and the fixed masks.

Masks live here, next to the parameters, never inside the optimizer state. ``scores`` is ``None``
unless the run learns scores (mode 'lth', or ``learn_scores=True``); it then holds one score
tensor per prunable kernel, as a nested dict with only the prunable leaves. The whole state
round-trips through orbax (``StandardSave(state)`` / ``StandardRestore(abstract_state(state))``);
``apply_fn`` and ``tx`` are static and not saved.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from stgcn_jax.sparsity import lottery
from stgcn_jax.sparsity.config import prunable_spec
from stgcn_jax.training.config import as_train_config
from stgcn_jax.sparsity.masks import apply_masks, make_masks, ones_like_masks, validate_masks
from stgcn_jax.training.optim import build_optimizer, mask_optimizer_state


@flax.struct.dataclass
class TrainState:
  """State of one model (or of a stacked ensemble, every array leaf with a leading member axis).

  Attributes:
    step: int32 scalar, the number of optimizer steps taken.
    params: the ``params`` collection (dense values; the forward multiplies by ``masks``).
    batch_stats: the ``batch_stats`` collection.
    opt_state: the optax state of ``tx`` over ``trainable()``.
    masks: bool tree with the structure of ``params`` (all True where not prunable).
    rng: PRNG key; the step's dropout key is ``fold_in(rng, step)``.
    scores: ``None`` or the learned scores (prunable leaves only).
    apply_fn: ``model.apply`` (static).
    tx: the optimizer (static).
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  masks: Any
  rng: jax.Array
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  scores: Any = None

  def trainable(self):
    """The tree the optimizer updates: ``params``, or ``{'params', 'scores'}`` with scores."""
    if self.scores is None:
      return self.params
    return {"params": self.params, "scores": self.scores}

  def with_trainable(self, trained, **changes) -> "TrainState":
    """A copy with the trained tree (as returned by ``trainable``) replaced."""
    if self.scores is None:
      return self.replace(params=trained, **changes)
    return self.replace(params=trained["params"], scores=trained["scores"], **changes)


def abstract_state(state: TrainState) -> TrainState:
  """The ``jax.ShapeDtypeStruct`` target for ``ocp.args.StandardRestore`` (keeps shardings)."""
  import orbax.checkpoint as ocp
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)


def create_train_state(model, key, sample_x, config, *, variables=None, masks=None, tx=None,
                       sparsity: float | None = None, mask_key=None) -> TrainState:
  """A fresh ``TrainState``.

  Args:
    model: a linen ``Recognizer`` (``models.get_model``).
    key: PRNG key; split into init, mask, score and dropout keys.
    sample_x: an input batch ``(B, M, T, V, C)`` for ``model.init``.
    config: a ``TrainConfig`` (``RunConfig.train_config``; in tests ``training.resolve``).
    variables: optional ``{'params', 'batch_stats'}`` to start from (pretrained / converted).
    masks: optional mask tree (overrides ``mask_method``; validated against params).
    tx: optional optimizer (``ensemble.py`` shares one between members).
    sparsity: overrides ``config.sparsity.level`` (ensemble members).
    mask_key: the key of the mask draw (default: one split from ``key``).
  """
  cfg = as_train_config(config)
  sp = cfg.sparsity
  s = sp.level if sparsity is None else float(sparsity)
  spec = prunable_spec(cfg.sparsity)
  k_init, k_mask, k_score, k_rng = jax.random.split(key, 4)
  if mask_key is not None:
    k_mask = mask_key
  if variables is None:
    variables = model.init(k_init, sample_x)
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  scores = None
  if sp.uses_scores:
    scores = lottery.init_scores(params, k_score, spec)
    masks = lottery.masks_from_scores(params, scores, s, sp.score_scope)
  elif sp.mode == "dense":
    masks = ones_like_masks(params)
  elif masks is None:
    masks = make_masks(params, s, key=k_mask, method=sp.mask_method, spec=spec,
                       path=sp.mask_path or None, cover_channels=sp.mask_cover_channels)
  else:
    validate_masks(masks, params)
  tx = tx or build_optimizer(cfg)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                     opt_state=None, masks=masks, rng=k_rng, apply_fn=model.apply, tx=tx,
                     scores=scores)
  state = state.replace(opt_state=tx.init(state.trainable()))
  if cfg.phase_at(0) == "finetune":
    state = start_finetune(state)
  return state


def start_finetune(state: TrainState) -> TrainState:
  """The warm-up -> fine-tune switch: pruned weights set to exactly 0 and the optimizer's
  momentum/trace buffers multiplied by the masks. Idempotent; a no-op for learned scores (the
  reference code zeroes nothing at the switch)."""
  if state.scores is not None:
    return state
  params = apply_masks(state.params, state.masks)
  opt_state = mask_optimizer_state(state.opt_state, state.params, state.masks)
  return state.replace(params=params, opt_state=opt_state)
