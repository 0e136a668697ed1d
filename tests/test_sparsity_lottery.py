"""The lottery-ticket (edge-popup) mode: only scores train; exact top-k; exported masks."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from stgcn_jax import training
from stgcn_jax import sparsity as sp
from stgcn_jax.models import get_model

from conftest import assert_trees_equal


def test_topk_masks_keep_exact_count():
  scores = {"a": {"kernel": jax.random.normal(jax.random.key(0), (3, 1, 4, 5))},
            "b": {"kernel": jax.random.normal(jax.random.key(1), (1, 1, 7, 3))}}
  for scope in ("per_tensor", "global", "per_block"):
    masks = sp.topk_masks(scores, 0.7, scope)
    kept = {k: int(np.count_nonzero(v["kernel"])) for k, v in masks.items()}
    if scope != "global":   # per_block: 'a' and 'b' are two groups (not backbone blocks)
      assert kept == {"a": 60 - math.floor(42.5), "b": 21 - math.floor(0.7 * 21 + 0.5)}
    else:
      assert sum(kept.values()) == 81 - math.floor(0.7 * 81 + 0.5)
    # The kept scores are the largest ones.
    flat_s = np.concatenate([np.ravel(scores[k]["kernel"]) for k in "ab"])
    flat_m = np.concatenate([np.ravel(masks[k]["kernel"]) for k in "ab"])
    if scope == "global":
      assert flat_s[flat_m].min() > flat_s[~flat_m].max()


def test_straight_through_gradient():
  params = {"backbone": {"block0": {"gcn": {"conv": {"kernel": jnp.arange(1.0, 5.0).reshape(
      1, 1, 2, 2)}}}}}
  scores = {"backbone": {"block0": {"gcn": {"conv": {"kernel": jnp.array(
      [0.4, -0.1, 0.3, 0.2]).reshape(1, 1, 2, 2)}}}}}

  def loss(s):
    eff, _ = sp.ste_params(params, s, 0.5)
    return jnp.sum(eff["backbone"]["block0"]["gcn"]["conv"]["kernel"] ** 2)

  eff, masks = sp.ste_params(params, scores, 0.5)
  keep = np.array([True, False, True, False]).reshape(1, 1, 2, 2)
  np.testing.assert_array_equal(masks["backbone"]["block0"]["gcn"]["conv"]["kernel"], keep)
  w = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
  np.testing.assert_array_equal(eff["backbone"]["block0"]["gcn"]["conv"]["kernel"], w * keep)
  g = jax.grad(loss)(scores)["backbone"]["block0"]["gcn"]["conv"]["kernel"]
  np.testing.assert_allclose(g, 2 * (w * keep) * w)     # dL/dW_eff * W


def test_lth_changes_only_scores(tmp_path):
  model = get_model("stgcn", 5, base_channels=8, num_stages=2, inflate_stages=(2,),
                    down_stages=(2,))
  x = jax.random.normal(jax.random.key(1), (2, 2, 16, 25, 3))
  batch = {"x": x, "label": jnp.array([1, 3], jnp.int32)}
  cfg = training.resolve(dict(mode="lth", sparsity=0.9, num_epochs=2, steps_per_epoch=2))
  pretrained = jax.jit(model.init)(jax.random.key(5), x)
  state = training.create_train_state(model, jax.random.key(0), x, cfg, variables=pretrained)
  assert training.phase_at(0, cfg) == "finetune"
  step = jax.jit(training.make_train_step(model, cfg, "finetune"))
  new = state
  for _ in range(3):
    new, metrics = step(new, batch)
  assert np.isfinite(float(metrics["loss"])) and float(metrics["penalty"]) == 0.0
  assert_trees_equal(new.params, pretrained["params"])
  changed = lambda a, b: jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.any(x != y)), a, b))
  assert all(changed(new.scores, state.scores))
  assert any(changed(new.batch_stats, state.batch_stats))
  rep = sp.sparsity_report(new.params, new.masks)
  for path, e in rep["per_leaf"].items():
    if e["prunable"]:
      assert e["zeros"] == math.floor(0.9 * e["size"] + 0.5), path
    else:
      assert e["zeros"] == 0, path
  # The ticket is a predefined mask for the generator's stage 2.
  path = str(tmp_path / "ticket.npz")
  sp.save_masks(path, new.masks)
  gen = training.create_train_state(model, jax.random.key(0), x, training.resolve(
            dict(mask_method="predefined", mask_path=path, warmup_epochs=0, num_epochs=2)),
            variables=pretrained)
  assert_trees_equal(gen.masks, new.masks)
