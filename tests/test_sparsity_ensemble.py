"""Multi-level sparsity ensembles: the joint step (vmap, lax.map, unrolled) == the members' own steps;
fusion; budget."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stgcn_jax import scores as scores_lib
from stgcn_jax import training
from stgcn_jax import sparsity as sp
from stgcn_jax.models import get_model

from conftest import assert_member_equals

SPARSITIES = (0.6, 0.8, 0.95, 0.99)


@pytest.mark.parametrize("batching", ["vmap", "map", "unroll"])
def test_ensemble_step_equals_member_steps(batching):
  model = get_model("stgcn", 5, base_channels=8, num_stages=2, inflate_stages=(2,),
                    down_stages=(2,))
  x = jax.random.normal(jax.random.key(1), (2, 2, 16, 25, 3))
  batch = {"x": x, "label": jnp.array([1, 3], jnp.int32)}
  cfg = training.resolve(dict(mode="ensemble", warmup_epochs=1, num_epochs=4, steps_per_epoch=1,
                              ensemble_sparsities=SPARSITIES, ensemble_batching=batching))
  ens = training.create_ensemble_state(model, jax.random.key(0), x, cfg)
  assert ens.step.shape == (4,)
  members = [training.member_state(ens, i) for i in range(4)]
  for i, s in enumerate(SPARSITIES):
    assert sp.sparsity_report(members[i].params, members[i].masks)["prunable_sparsity"] == (
        pytest.approx(s, abs=0.01))

  ens_steps = {p: jax.jit(training.make_ensemble_train_step(model, cfg, p)) for p in training.PHASES}
  one_steps = {p: jax.jit(training.make_train_step(model, cfg, p)) for p in training.PHASES}
  ens, ens_metrics = ens_steps["warmup"](ens, batch)
  ens = jax.jit(training.start_finetune_ensemble)(ens)
  ens, ens_metrics = ens_steps["finetune"](ens, batch)
  assert ens_metrics["loss"].shape == (4,)
  for i, m in enumerate(members):
    m, _ = one_steps["warmup"](m, batch)
    m = training.start_finetune(m)
    m, metrics = one_steps["finetune"](m, batch)
    assert_member_equals(ens, i, ens_metrics, m, metrics)

  logits = jax.jit(training.make_ensemble_eval_step(model, batching))(ens, x)
  assert logits.shape == (4, 2, 5)
  one_eval = jax.jit(training.make_eval_step(model))
  for i in range(4):
    np.testing.assert_allclose(logits[i], one_eval(training.member_state(ens, i), x), rtol=1e-4,
                               atol=1e-5)


def test_fusion_of_clip_averaged_softmax():
  logits = jax.random.normal(jax.random.key(0), (3, 4, 10, 6))    # members, N, clips, classes
  probs = scores_lib.clip_average_softmax(logits)
  assert probs.shape == (3, 4, 6)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  fused = scores_lib.fuse_scores(probs)
  np.testing.assert_allclose(fused, sum(jax.nn.softmax(logits[i], -1).mean(1) for i in range(3)),
                             rtol=1e-5)
  separate = [probs[i] for i in range(3)]                           # post-hoc: separate models
  np.testing.assert_allclose(scores_lib.fuse_scores(separate, weights=[2, 1, 1]),
                             2 * probs[0] + probs[1] + probs[2], rtol=1e-5)
  with pytest.raises(ValueError, match="one weight per member"):
    scores_lib.fuse_scores(separate, weights=[1, 1])


def test_parameter_budget_is_066_and_honest_total():
  model = get_model("stgcn", 60)
  x = jax.ShapeDtypeStruct((1, 2, 16, 25, 3), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  masks = [sp.make_masks(params, s, key=jax.random.key(i)) for i, s in enumerate(SPARSITIES)]
  budget = training.parameter_budget(params, masks)
  assert budget["prunable_budget"] == pytest.approx(0.66, abs=1e-4)
  unmasked = budget["dense_total_params"] - budget["dense_prunable_params"]
  want = (sum((1 - s) for s in SPARSITIES) * budget["dense_prunable_params"] + 4 * unmasked)
  assert budget["total_budget"] == pytest.approx(want / budget["dense_total_params"], abs=1e-4)
  assert budget["total_budget"] > budget["prunable_budget"]
  stacked = jax.tree.map(lambda *m: jnp.stack(m), *masks)
  assert training.parameter_budget(params, stacked) == budget


def test_unknown_ensemble_batching_is_refused():
  with pytest.raises(ValueError, match="config.sparsity.ensemble_batching must be one of"):
    training.resolve(dict(mode="ensemble", ensemble_batching="loop"))


def test_members_are_independent_unless_nested_masks():
  from stgcn_jax.training import loop
  model = get_model("stgcn", 5, base_channels=8, num_stages=2, inflate_stages=(2,),
                    down_stages=(2,))
  x = jnp.zeros((1, 2, 16, 25, 3))
  for nested in (False, True):
    config = training.RunConfig.from_config(dict(seed=0, mode="ensemble", nested_masks=nested,
                                               ensemble_sparsities=SPARSITIES))
    seeds = loop.run_seeds(config)
    cfg = training.resolve(dict(mode="ensemble", ensemble_sparsities=SPARSITIES,
                                nested_masks=nested,
                                mask_cover_channels=False))  # moving kept weights breaks nesting
    ens = training.create_ensemble_state(
        model, [jax.random.key(m["init"]) for m in seeds["members"]], x, cfg,
        mask_keys=[jax.random.key(m["mask"]) for m in seeds["members"]])
    members = [training.member_state(ens, i) for i in range(4)]
    kernel = lambda t: np.asarray(t["backbone"]["block1"]["tcn"]["conv"]["kernel"])
    # Initial weights differ between members.
    assert not np.allclose(kernel(members[0].params), kernel(members[1].params))
    # kept(0.99) inside kept(0.6)?  Only with nested masks.
    kept_hi, kept_lo = kernel(members[3].masks), kernel(members[0].masks)
    assert bool(np.all(kept_lo[kept_hi])) == nested
  # Every sparsity gets its own seed, a function of the run seed and the sparsity only.
  assert len({training.member_seed(0, s) for s in SPARSITIES + (0.0,)}) == 5
  assert training.member_seed(0, 0.8) != training.member_seed(1, 0.8)


def test_auto_batching_unrolls_on_cpu():
  from stgcn_jax.training import ensemble  # pylint: disable=import-outside-toplevel
  assert training.resolve(dict(mode="ensemble")).sparsity.ensemble_batching == "auto"
  expected = "unroll" if jax.default_backend() == "cpu" else "vmap"
  assert ensemble.resolve_batching("auto") == expected
  assert ensemble.resolve_batching("map") == "map"
