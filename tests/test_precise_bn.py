"""Precise BatchNorm: exact population statistics, and an eval mode that matches training mode."""

import jax
import jax.numpy as jnp
import numpy as np

from stgcn_jax import training
from stgcn_jax import models, sparsity
from stgcn_jax.training import precise_bn


def _tiny_model():
  return models.get_model("stgcn", 3, layout="nw-ucla", in_channels=3, base_channels=4,
                          num_stages=2, inflate_stages=(), down_stages=(), num_person=1)


def test_combine_moments_is_the_population_mean_and_unbiased_variance():
  rng = np.random.default_rng(0)
  batches = [rng.normal(3.0, 2.0, (n, 5)) for n in (7, 7, 4)]   # unequal sizes too
  per_batch = [(b.mean(0), b.var(0), len(b)) for b in batches]
  mean, var = precise_bn.combine_moments(per_batch)
  everything = np.concatenate(batches)
  np.testing.assert_allclose(mean, everything.mean(0), rtol=1e-12)
  np.testing.assert_allclose(var, everything.var(0, ddof=1), rtol=1e-12)


def test_precise_stats_of_the_first_bn_equal_a_hand_computation():
  model = _tiny_model()
  xs = [np.random.default_rng(i).normal(size=(6, 1, 8, 20, 3)).astype(np.float32) + i
        for i in range(3)]
  cfg = training.resolve(mode="generator", sparsity=0.5, steps_per_epoch=1, num_epochs=2,
                         warmup_epochs=1)
  state = training.create_train_state(model, jax.random.key(0), jnp.asarray(xs[0]), cfg)
  moments = jax.jit(precise_bn.make_moments_fn(model, masked=True))
  stats = precise_bn.precise_batch_stats(state.batch_stats, [moments(state, x) for x in xs])
  # data_bn (type VC for ST-GCN) normalises each (joint, channel) over batch * persons * frames.
  flat = np.concatenate([x.transpose(0, 1, 2, 3, 4).reshape(-1, 20 * 3) for x in xs])
  bn = stats["backbone"]["data_bn"]
  np.testing.assert_allclose(bn["mean"], flat.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(bn["var"], flat.var(0, ddof=1), rtol=1e-4)
  # Every BatchNorm got new statistics; the tree keeps its structure.
  assert jax.tree.structure(stats) == jax.tree.structure(state.batch_stats)
  changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(stats),
                                                    jax.tree.leaves(state.batch_stats))]
  assert all(changed)


def test_eval_mode_matches_training_mode_after_precise_bn():
  """A layer whose output channel is constant (all its weights pruned): the running mean lags
  its bias, which eval mode scales by 1/sqrt(eps); precise BN removes the gap."""
  model = _tiny_model()
  x = jnp.asarray(np.random.default_rng(1).normal(size=(16, 1, 8, 20, 3)), jnp.float32)
  cfg = training.resolve(mode="generator", sparsity=0.9, steps_per_epoch=1, num_epochs=2,
                         warmup_epochs=0)
  state = training.create_train_state(model, jax.random.key(3), x, cfg)
  params = jax.tree.map(lambda p: p + 0.05, state.params)   # biases off the running means
  state = state.replace(params=sparsity.apply_masks(params, state.masks))
  train_logits, _ = model.apply({"params": state.params, "batch_stats": state.batch_stats}, x,
                                train=True, mutable=["batch_stats"])
  eval_fn = jax.jit(training.make_eval_step(model))
  before = eval_fn(state, x)
  stats = precise_bn.precise_batch_stats(
      state.batch_stats, [jax.jit(precise_bn.make_moments_fn(model, True))(state, x)])
  after = eval_fn(state.replace(batch_stats=stats), x)
  gap = lambda y: float(jnp.linalg.norm(y - train_logits) / jnp.linalg.norm(train_logits))
  assert gap(after) < 1e-2 < 0.1 < gap(before)
