"""Train steps: the phase switch, masked updates, checkpoint round trip, ablations, eval."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from stgcn_jax import training
from stgcn_jax import sparsity as sp
from stgcn_jax.models import get_model
from stgcn_jax.training import abstract_state

from conftest import assert_pruned_to_zero, assert_trees_equal

CFG = dict(sparsity=0.8, warmup_epochs=1, num_epochs=10, steps_per_epoch=3, weight_decay=5e-4,
           momentum=0.9, nesterov=True, lambda_schedule="ramp")


@pytest.fixture(scope="module")
def setup():
  # Two CTR-GCN blocks: the second has the GCN down conv, the residual conv and the 4-branch TCN.
  model = get_model("ctrgcn", 5, base_channels=8, num_stages=2, inflate_stages=(2,),
                    down_stages=(2,))
  x = jax.random.normal(jax.random.key(1), (2, 2, 16, 25, 3))
  batch = {"x": x, "label": jnp.array([1, 3], jnp.int32)}
  cfg = training.resolve(CFG)
  steps = {p: jax.jit(training.make_train_step(model, cfg, p)) for p in training.PHASES}
  variables = jax.jit(model.init)(jax.random.key(0), x)
  return model, batch, cfg, steps, variables


def _create(model, batch, cfg, variables, key=0):
  # Committed arrays, like a restored checkpoint's, so the jitted steps compile once.
  state = training.create_train_state(model, jax.random.key(key), batch["x"], cfg, variables=variables)
  return jax.device_put(state, jax.devices()[0])


def _leaves(tree):
  return {sp.path_str(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def _check_sparse_and_moved(before, after, masks):
  assert_pruned_to_zero(after, masks, CFG["sparsity"])
  b, a, m = _leaves(before), _leaves(after), _leaves(masks)
  for p in sp.prunable_paths(before):
    assert np.all(a[p][m[p]] != b[p][m[p]]), f"{p}: a kept weight did not move"


def _run(step, state, batch, n):
  for _ in range(n):
    state, metrics = step(state, batch)
  return state, metrics


def test_finetune_keeps_pruned_exactly_zero_across_checkpoint(setup, tmp_path):
  model, batch, cfg, steps, variables = setup
  state = _create(model, batch, cfg, variables)
  warm_structure = jax.tree.structure(state)
  state, _ = _run(steps["warmup"], state, batch, 3)   # dense: builds up momentum everywhere
  assert training.phase_at(int(state.step), cfg) == "finetune"
  state = jax.jit(training.start_finetune)(state)
  assert jax.tree.structure(state) == warm_structure  # same optimizer-state tree in both phases
  trace = _leaves(state.opt_state)
  masks = _leaves(state.masks)
  for p, m in masks.items():
    buffers = [buf for key, buf in trace.items() if key.endswith(p) and "trace" in key]
    assert len(buffers) == 1, f"{p}: expected one momentum buffer, found {len(buffers)}"
    assert np.all(buffers[0][~m] == 0.0), f"momentum of pruned {p} not zeroed"
  start = state
  state, metrics = _run(steps["finetune"], state, batch, 20)
  assert np.isfinite(float(metrics["loss"])) and float(metrics["penalty"]) == 0.0
  _check_sparse_and_moved(start.params, state.params, state.masks)

  ckpt = ocp.StandardCheckpointer()
  path = str(tmp_path.absolute() / "state")
  ckpt.save(path, state)
  ckpt.wait_until_finished()
  restored = ckpt.restore(path, abstract_state(state))
  assert_trees_equal(restored, state, bits=True)
  restored = restored.replace(apply_fn=state.apply_fn, tx=state.tx)
  mid = restored
  restored, _ = _run(steps["finetune"], restored, batch, 20)
  _check_sparse_and_moved(mid.params, restored.params, restored.masks)
  # A fine-tune checkpoint's masks feed the next run as 'predefined'.
  loaded = sp.load_masks(path, state.params)
  assert_trees_equal(loaded, state.masks)


def test_no_warmup_starts_sparse(setup):
  model, batch, _, _, variables = setup
  cfg = training.resolve(CFG, warmup_epochs=0)
  state = _create(model, batch, cfg, variables)
  assert training.phase_at(0, cfg) == "finetune"
  assert_pruned_to_zero(state.params, state.masks, CFG["sparsity"])


def test_metrics_and_lambda_ramp(setup):
  model, batch, cfg, steps, variables = setup
  state = _create(model, batch, cfg, variables)
  state, metrics = steps["warmup"](state, batch)
  assert set(metrics) >= {"loss", "ce", "penalty", "lambda", "accuracy", "grad_norm", "lr"}
  assert float(metrics["lambda"]) == 0.0          # ramp: epoch 0 of 1
  assert float(metrics["lr"]) == pytest.approx(0.1)
  assert float(metrics["penalty"]) > 0


def test_eval_step_uses_masked_params_and_clips(setup):
  model, batch, cfg, _, variables = setup
  state = _create(model, batch, cfg, variables)
  eval_step = jax.jit(training.make_eval_step(model))
  logits = eval_step(state, batch["x"])
  want = model.apply({"params": sp.apply_masks(state.params, state.masks),
                      "batch_stats": state.batch_stats}, batch["x"], train=False)
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-6)
  clips = jnp.stack([batch["x"]] * 3, axis=1)
  assert eval_step(state, clips).shape == (2, 3, 5)


def test_dense_mode_never_masks(setup):
  model, batch, _, _, variables = setup
  cfg = training.resolve(CFG, mode="dense")
  state = _create(model, batch, cfg, variables)
  assert all(bool(jnp.all(m)) for m in jax.tree.leaves(state.masks))
  assert training.phase_at(0, cfg) == "finetune"


def test_learn_scores_trains_scores_and_weights(setup):
  _, batch, _, _, _ = setup
  model = get_model("stgcn", 5, base_channels=8, num_stages=2, inflate_stages=(2,),
                    down_stages=(2,))                # cheaper to compile than CTR-GCN
  cfg = training.resolve(CFG, learn_scores=True)
  state = _create(model, batch, cfg, jax.jit(model.init)(jax.random.key(0), batch["x"]))
  assert training.start_finetune(state) is state          # the reference zeroes nothing at the switch
  for phase in training.PHASES:                            # warm-up: dense threshold; then the target
    step = jax.jit(training.make_train_step(model, cfg, phase))
    new, metrics = _run(step, state, batch, 2)
    assert np.isfinite(float(metrics["loss"]))
    for tree in ("scores", "params"):
      changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), getattr(state, tree),
                             getattr(new, tree))
      assert any(jax.tree.leaves(changed)), (phase, tree)
    rep = sp.sparsity_report(new.params, new.masks)
    assert abs(rep["prunable_sparsity"] - 0.8) < 0.01
    want = sp.masks_from_scores(new.params, new.scores, 0.8)      # re-thresholded every step
    assert_trees_equal(new.masks, want)
    state = new


def test_unknown_phase_and_bad_config():
  with pytest.raises(ValueError, match="phase must be one of"):
    training.make_train_step(None, training.resolve(), "train")
  with pytest.raises(ValueError, match="config.sparsity.mode must be one of"):
    training.resolve(dict(mode="sparse"))
  with pytest.raises(ValueError, match="warmup_epochs must be in"):
    training.resolve(dict(warmup_epochs=200))


def test_lr_warmup_schedule_values():
  from stgcn_jax.training import optim
  cfg = training.resolve(dict(learning_rate=0.1, base_batch_size=128, batch_size=64, num_epochs=10,
                              warmup_epochs=5, steps_per_epoch=10, lr_warmup_epochs=2))
  lr = optim.make_schedule(cfg.optim)
  peak = 0.05
  assert float(lr(0)) == 0.0
  assert float(lr(10)) == pytest.approx(peak / 2)                # linear over 20 steps
  assert float(lr(20)) == pytest.approx(peak)
  assert float(lr(60)) == pytest.approx(peak * 0.5 * (1 + np.cos(np.pi * 40 / 80)), rel=1e-5)
  assert float(lr(100)) == pytest.approx(0.0, abs=1e-9)
  no_warmup = optim.make_schedule(training.OptimConfig(
      learning_rate=0.1, base_batch_size=128, batch_size=64, num_epochs=10, steps_per_epoch=10))
  assert float(no_warmup(0)) == pytest.approx(peak)
  with pytest.raises(ValueError, match="lr_warmup_epochs"):
    training.resolve(dict(num_epochs=10, warmup_epochs=5, lr_warmup_epochs=10))
