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
import optax


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
