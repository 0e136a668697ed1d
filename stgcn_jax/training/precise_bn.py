"""Precise BatchNorm: population statistics re-estimated with the final weights and masks.

The running statistics that BatchNorm keeps during training are an exponential moving average over
the last ~10 steps of *changing* weights. After the warm-up -> fine-tune switch, and in a sparse
model whose channels can have (almost) zero variance, that average is not what the final model
computes: in eval mode a channel of variance ~0 is scaled by ``1/sqrt(eps)`` ~ 316, so a lag of
0.01 between the running mean and the true mean becomes an activation of ~3, and a network that
scores 75 % with batch statistics can predict one class for everything in eval mode.

``precise_batch_stats`` runs the training-mode forward (batch statistics, the phase's masks, no
update) over N training batches, collects every BatchNorm's per-batch mean, biased variance and
element count, and combines them exactly (Chan et al.'s pairwise formula, float64 on the host):
the population mean and the *unbiased* population variance of each channel over all N batches,
in the same convention as PyTorch's running ``var``. It returns a new ``batch_stats`` tree.

>>> moments = jax.jit(make_moments_fn(model, masked=True))
>>> stats = precise_batch_stats(state.batch_stats, (moments(state, b["x"]) for b in batches))
>>> state = state.replace(batch_stats=stats)
"""

from __future__ import annotations

from typing import Iterable

import jax
import numpy as np

from stgcn_jax.training.step import forward

__all__ = ["make_moments_fn", "precise_batch_stats", "combine_moments"]

# The dropout key of the statistics pass is fixed (seed 0), so the pass is deterministic. It is made
# inside the traced function: a key made at import would start the XLA backend before
# ``runtime.configure_xla()`` and ``jax.distributed.initialize()`` can run.
_DROPOUT_SEED = 0


def make_moments_fn(model, masked: bool):
  """``moments(state, x) -> tree``: each BatchNorm's batch ``mean``, biased ``var`` and ``count``
  for one training-mode forward of ``x`` (``params * masks`` when ``masked``, else the dense
  params, as in the warm-up). The state is not changed."""
  def moments(state, x):
    _, out = forward(model, state, x, masked=masked, train=True,
                     mutable=["batch_stats", "bn_moments"],
                     rngs={"dropout": jax.random.key(_DROPOUT_SEED)})
    return out["bn_moments"]
  return moments


def combine_moments(per_batch: list[tuple[np.ndarray, np.ndarray, float]]
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Population ``(mean, unbiased var)`` from per-batch ``(mean, biased var, count)``, exactly."""
  counts = np.array([float(n) for _, _, n in per_batch], np.float64)
  means = np.stack([np.asarray(m, np.float64) for m, _, _ in per_batch])
  variances = np.stack([np.asarray(v, np.float64) for _, v, _ in per_batch])
  total = counts.sum()
  w = (counts / total).reshape((-1,) + (1,) * (means.ndim - 1))
  mean = (w * means).sum(0)
  m2 = (counts.reshape(w.shape) * (variances + np.square(means - mean))).sum(0)
  return mean, m2 / max(total - 1.0, 1.0)


def precise_batch_stats(batch_stats, moments: Iterable) -> dict:
  """A ``batch_stats`` tree whose ``mean``/``var`` are the exact population statistics of the
  moment trees in ``moments`` (from ``make_moments_fn``; a leading member axis is allowed)."""
  collected = [jax.device_get(m) for m in moments]
  if not collected:
    raise ValueError("precise BN needs at least one batch")

  def path_of(kp) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "name", k)) for k in kp)

  flat = [dict((path_of(kp), leaf) for kp, leaf in jax.tree_util.tree_leaves_with_path(m))
          for m in collected]

  def new_leaf(kp, old):
    path = path_of(kp)
    module, stat = path[:-1], path[-1]
    if stat not in ("mean", "var"):
      return old
    key = lambda s: module + (s,)
    if key("mean") not in flat[0]:
      raise ValueError(f"precise BN: BatchNorm {'/'.join(map(str, module))} saw no batch (is it "
                       "used in the training-mode forward?)")
    per_batch = [(f[key("mean")], f[key("var")], np.ravel(f[key("count")])[0]) for f in flat]
    mean, var = combine_moments(per_batch)
    value = mean if stat == "mean" else var
    return np.asarray(value, np.asarray(old).dtype).reshape(np.shape(old))

  return jax.tree_util.tree_map_with_path(new_leaf, jax.device_get(batch_stats))
