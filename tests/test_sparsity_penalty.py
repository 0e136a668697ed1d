"""The group-lasso penalty: value, NaN-safety, lambda schedule, and its effect in warm-up."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stgcn_jax import training
from stgcn_jax import sparsity as sp
from stgcn_jax.models import get_model


def small_tree():
  w0 = jnp.arange(1.0, 7.0).reshape(1, 1, 2, 3)          # block0 gcn kernel
  t0 = -jnp.arange(1.0, 5.0).reshape(2, 1, 1, 2)         # block0 tcn kernel
  w1 = jnp.full((1, 1, 2, 2), 3.0)                       # block1 gcn kernel
  params = {"backbone": {"block0": {"gcn": {"conv": {"kernel": w0, "bias": jnp.ones(3) * 9}},
                                    "tcn": {"conv": {"kernel": t0}}},
                         "block1": {"gcn": {"conv": {"kernel": w1}}},
                         "data_bn": {"scale": jnp.ones(4) * 7}},
            "cls_head": {"fc_cls": {"kernel": jnp.ones((2, 2)) * 5}}}
  masks = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
  masks["backbone"]["block0"]["gcn"]["conv"]["kernel"] = jnp.array(
      [True, False, True, False, True, False]).reshape(1, 1, 2, 3)   # prunes 2, 4, 6
  masks["backbone"]["block0"]["tcn"]["conv"]["kernel"] = jnp.array(
      [False, True, True, True]).reshape(2, 1, 1, 2)                 # prunes -1
  masks["backbone"]["block1"]["gcn"]["conv"]["kernel"] = jnp.array(
      [False, False, True, True]).reshape(1, 1, 2, 2)                # prunes 3, 3
  masks["cls_head"]["fc_cls"]["kernel"] = jnp.zeros((2, 2), bool)    # not prunable: ignored
  masks["backbone"]["data_bn"]["scale"] = jnp.zeros(4, bool)         # not prunable: ignored
  return params, masks


def test_penalty_equals_hand_computation():
  params, masks = small_tree()
  expected = np.sqrt(2**2 + 4**2 + 6**2 + 1**2) + np.sqrt(3**2 + 3**2)
  assert float(sp.group_lasso(params, masks)) == pytest.approx(expected, rel=1e-6)
  norms = sp.group_norms(params, masks)
  assert set(norms) == {"block0", "block1"}
  assert float(norms["block1"]) == pytest.approx(np.sqrt(18.0))
  # With the head prunable, it is one more group.
  spec = sp.PrunableSpec(include_head=True)
  assert float(sp.group_lasso(params, masks, spec)) == pytest.approx(expected + 10.0, rel=1e-6)


def test_penalty_gradient_is_finite_for_an_all_zero_group():
  params, masks = small_tree()
  params["backbone"]["block1"]["gcn"]["conv"]["kernel"] = jnp.zeros((1, 1, 2, 2))
  grads = jax.grad(sp.group_lasso)(params, masks)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  np.testing.assert_array_equal(grads["backbone"]["block1"]["gcn"]["conv"]["kernel"], 0.0)
  # Elsewhere the gradient is W * (1 - M) / ||group||, and exactly 0 on kept and unprunable leaves.
  g0 = grads["backbone"]["block0"]["gcn"]["conv"]["kernel"].ravel()
  norm0 = np.sqrt(4 + 16 + 36 + 1)
  np.testing.assert_allclose(g0, np.array([0, 2, 0, 4, 0, 6]) / norm0, rtol=1e-6)
  np.testing.assert_array_equal(grads["backbone"]["block0"]["gcn"]["conv"]["bias"], 0.0)
  np.testing.assert_array_equal(grads["cls_head"]["fc_cls"]["kernel"], 0.0)


def test_lambda_schedules():
  assert float(sp.penalty_weight(3, 0.5, "constant", 60)) == 0.5
  assert [float(sp.penalty_weight(e, 1.0, "ramp", 4)) for e in (0, 1, 2, 4, 9)] == [
      0.0, 0.25, 0.5, 1.0, 1.0]
  with pytest.raises(ValueError, match="lambda_schedule must be one of"):
    sp.penalty_weight(0, 1.0, "cosine", 4)


def test_penalty_shrinks_masked_out_weights_in_warmup():
  model = get_model("stgcn", 5, base_channels=8, num_stages=3, inflate_stages=(3,),
                    down_stages=(3,))
  x = jax.random.normal(jax.random.key(1), (2, 2, 16, 25, 3))
  batch = {"x": x, "label": jnp.array([1, 3], jnp.int32)}
  results = {}
  for lam in (0.0, 1.0):
    cfg = training.resolve(dict(sparsity=0.8, warmup_epochs=5, num_epochs=10, steps_per_epoch=1,
                                penalty_lambda=lam, weight_decay=0.0))
    state = training.create_train_state(model, jax.random.key(0), x, cfg)
    step = jax.jit(training.make_train_step(model, cfg, "warmup"))
    before = float(sp.group_lasso(state.params, state.masks))
    for _ in range(5):
      state, metrics = step(state, batch)
    results[lam] = float(sp.group_lasso(state.params, state.masks))
    if lam == 0.0:
      assert float(metrics["loss"]) == float(metrics["ce"])
      assert float(metrics["penalty"]) > 0
  assert results[1.0] < before
  assert results[1.0] < results[0.0]


def test_proximal_update_zeroes_a_block_below_the_threshold_and_shrinks_the_others():
  params, masks = small_tree()
  norm0 = np.sqrt(2**2 + 4**2 + 6**2 + 1**2)           # block0's masked-out norm
  norm1 = np.sqrt(18.0)                                # block1's
  threshold = (norm1 + norm0) / 2                      # between the two: block1 below it
  out, alive = sp.penalty.proximal_group_lasso(params, masks, threshold)
  b0, b1 = out["backbone"]["block0"], out["backbone"]["block1"]
  m1 = np.asarray(masks["backbone"]["block1"]["gcn"]["conv"]["kernel"])
  k1 = np.asarray(b1["gcn"]["conv"]["kernel"])
  assert np.all(k1[~m1] == 0.0)                        # exactly zero, not small
  np.testing.assert_array_equal(k1[m1], 3.0)           # kept weights untouched
  assert not np.asarray(alive["backbone"]["block1"]["gcn"]["conv"]["kernel"])[~m1].any()
  # block0 is shrunk by exactly `threshold` in norm, along its own direction.
  norms = sp.group_norms(out, masks)
  assert float(norms["block0"]) == pytest.approx(norm0 - threshold, rel=1e-6)
  assert float(norms["block1"]) == 0.0
  np.testing.assert_array_equal(b0["gcn"]["conv"]["bias"], 9.0)           # not prunable
  np.testing.assert_array_equal(out["cls_head"]["fc_cls"]["kernel"], 5.0)
  # Once zero, it stays exactly zero under any positive threshold.
  again, _ = sp.penalty.proximal_group_lasso(out, masks, 1e-9)
  assert np.all(np.asarray(again["backbone"]["block1"]["gcn"]["conv"]["kernel"])[~m1] == 0.0)


def test_proximal_warmup_reaches_exact_zeros():
  model = get_model("stgcn", 4, base_channels=4, num_stages=2, inflate_stages=(),
                    down_stages=())
  x = jax.random.normal(jax.random.key(1), (4, 2, 8, 25, 3))
  batch = {"x": x, "label": jnp.array([0, 1, 2, 3], jnp.int32)}
  cfg = training.resolve(dict(mode="generator", sparsity=0.8, warmup_epochs=8, num_epochs=10,
                              steps_per_epoch=1, penalty_update="proximal", penalty_lambda=5.0,
                              learning_rate=0.4, batch_size=128))
  state = training.create_train_state(model, jax.random.key(0), x, cfg)
  step = jax.jit(training.make_train_step(model, cfg, "warmup"))
  state, first = step(state, batch)
  assert float(first["penalty"]) > 0     # the norm before the first proximal step
  for _ in range(3):
    state, metrics = step(state, batch)
  assert float(sp.group_lasso(state.params, state.masks)) == 0.0
  assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) == pytest.approx(
      float(metrics["ce"]))              # the loss is CE only: the penalty acts by the prox
