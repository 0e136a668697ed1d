"""bfloat16 mixed precision (``mixed_precision.compute_dtype``, ``experiments.bench --dtype=bfloat16``):
masks, loss and the matmul's pieces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stgcn_jax import training
from stgcn_jax.models import get_model, mixed_precision

from conftest import assert_pruned_to_zero

CFG = dict(mode="generator", sparsity=0.8, warmup_epochs=0, num_epochs=10, steps_per_epoch=3,
           weight_decay=5e-4, momentum=0.9, nesterov=True)
OPTIONS = dict(base_channels=16, num_stages=2, inflate_stages=(2,), down_stages=(2,), num_person=1)


def _steps(dtype, n=3):
  model = get_model("ctrgcn", 5, layout="nw-ucla", **OPTIONS)
  x = jax.random.normal(jax.random.key(1), (4, 1, 16, 20, 3))
  batch = {"x": x, "label": jnp.array([1, 3, 0, 4], jnp.int32)}
  cfg = training.resolve(CFG)
  state = training.create_train_state(model, jax.random.key(0), x, cfg)
  with mixed_precision.compute_dtype(jnp.dtype(dtype)):   # read when the step is traced
    step = jax.jit(training.make_train_step(model, cfg, "finetune")).lower(state, batch).compile()
  losses = []
  for _ in range(n):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  return state, losses


def test_bfloat16_step_keeps_masks_and_tracks_the_float32_loss():
  f32, f32_losses = _steps("float32")
  bf16, bf16_losses = _steps("bfloat16")
  # parameters, BatchNorm statistics and optimizer state stay float32
  for leaf in jax.tree.leaves((bf16.params, bf16.batch_stats, bf16.opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
  assert_pruned_to_zero(bf16.params, bf16.masks, CFG["sparsity"])
  np.testing.assert_allclose(bf16_losses, f32_losses, rtol=2e-2)
  assert bf16_losses != f32_losses   # bfloat16 was really used


def test_float32_default_is_untouched():
  """compute_dtype float32 / None (the default) traces the plain float32 matmul: bit-identical."""
  model = get_model("ctrgcn", 5, layout="nw-ucla", **OPTIONS)
  x = jax.random.normal(jax.random.key(1), (2, 1, 16, 20, 3))
  variables = model.init(jax.random.key(0), x)
  plain = model.apply(variables, x)
  for dtype in (None, jnp.float32):
    with mixed_precision.compute_dtype(dtype):
      np.testing.assert_array_equal(model.apply(variables, x), plain)
  with mixed_precision.compute_dtype(jnp.bfloat16):
    assert not np.array_equal(model.apply(variables, x), plain)


@pytest.mark.parametrize("rows", [96, 97])   # a multiple of 16, and a prime (plain transpose)
def test_mixed_matmul_and_its_gradients(rows):
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(k1, (rows, 24))
  w = jax.random.normal(k2, (24, 40))
  g = jax.random.normal(k3, (rows, 40))
  np.testing.assert_array_equal(mixed_precision.rows_transposed(x), x.T)  # pylint: disable=protected-access
  y, vjp = jax.vjp(lambda a, b: mixed_precision.mixed_matmul(a, b, jnp.bfloat16), x, w)
  dx, dw = vjp(g)
  assert y.dtype == dx.dtype == dw.dtype == jnp.float32
  bf = lambda a: a.astype(jnp.bfloat16).astype(jnp.float32)
  # exactly the float32 products of the bfloat16-rounded operands (float32 accumulation)
  hi = jax.lax.Precision.HIGHEST
  np.testing.assert_allclose(y, jnp.dot(bf(x), bf(w), precision=hi), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, jnp.dot(bf(g), bf(w).T, precision=hi), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dw, jnp.dot(bf(x).T, bf(g), precision=hi), rtol=1e-5, atol=1e-4)
