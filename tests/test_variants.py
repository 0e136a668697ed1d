"""Joint variants (``training.variants``): the spec, the joint step == each member's own run,
error bars over seeds, the automatic sparsity choice."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stgcn_jax import training
from stgcn_jax.models import get_model
from stgcn_jax.training import setup
from stgcn_jax.training.variants import Variant, VariantSpecError, parse_variants

from conftest import assert_member_equals

BASE = Variant(0.95, "uniform", 1.0, 0, 0, 0)
# Penalty on/off, plus a member with another sparsity, mask method and seed.
SPEC = "s=0.6;lambda=0,1|mask=erk;s=0.9;seed=3"


def test_spec_is_the_product_of_its_axes():
  members = parse_variants("s=0.8,0.95;lambda=0,1", BASE)
  assert [(v.sparsity, v.penalty_lambda) for v in members] == [(0.8, 0), (0.8, 1), (0.95, 0),
                                                              (0.95, 1)]
  assert training.member_names(members) == ["s0.8_lambda0", "s0.8_lambda1", "s0.95_lambda0",
                                            "s0.95_lambda1"]
  seeds = parse_variants("seed=0,1,2", BASE)
  assert [(v.init_seed, v.mask_seed) for v in seeds] == [(0, 0), (1, 1), (2, 2)]
  assert training.member_names(seeds) == ["s0.95_seed0", "s0.95_seed1", "s0.95_seed2"]
  assert training.member_names(parse_variants(SPEC, BASE)) == [
      "s0.6_lambda0_maskuniform_seed0", "s0.6_lambda1_maskuniform_seed0", "s0.9_lambda1_maskerk_seed3"]


@pytest.mark.parametrize("spec, token", [
    ("s=0.8;foo=1", "unknown axis 'foo'"), ("s=1.2", "bad value '1.2' for sparsity"),
    ("lambda=-1", "bad value '-1' for penalty_lambda"), ("mask=rand", "bad value 'rand'"),
    ("s=0.8,,0.9", "an empty value"), ("s=0.8;s=0.9", "axis 's' appears twice"),
    ("s0.8", "expected AXIS=V1,V2"), ("s=0.8,0.8", "listed twice"),
    ("seed=1;mask_seed=2", "'seed' sets init_seed and mask_seed")])
def test_bad_spec_names_the_bad_token(spec, token):
  with pytest.raises(VariantSpecError, match=token):
    parse_variants(spec, BASE)
  with pytest.raises(ValueError, match=token):   # and so does the run config
    training.RunConfig.from_config(dict(mode="variants", variants=spec))


@pytest.mark.parametrize("batching", ["unroll", pytest.param("vmap", marks=pytest.mark.slow)])
def test_joint_variants_equal_separate_runs(batching):
  model = get_model("stgcn", 5, base_channels=8, num_stages=2, inflate_stages=(2,),
                    down_stages=(2,))
  x = jax.random.normal(jax.random.key(1), (2, 2, 16, 25, 3))
  batch = {"x": x, "label": jnp.array([1, 3], jnp.int32)}
  flat = dict(mode="variants", variants=SPEC, warmup_epochs=1, num_epochs=3, steps_per_epoch=1,
              ensemble_batching=batching, sparsity=0.95, seed=0)
  run = training.RunConfig.from_config(flat)
  cfg, seeds = run.train_config(1), setup.run_seeds(run)
  members = training.run_variants(cfg.sparsity, run.seed)
  joint = training.create_ensemble_state(
      model, [jax.random.key(m["init"]) for m in seeds["members"]], x, cfg,
      mask_keys=[jax.random.key(m["mask"]) for m in seeds["members"]], variants=members)
  steps = {p: jax.jit(training.make_ensemble_train_step(model, cfg, p, members))
           for p in training.PHASES}
  for phase in ("warmup", "finetune", "finetune"):
    if phase == "finetune" and int(joint.step[0]) == cfg.warmup_steps:
      joint = jax.jit(training.start_finetune_ensemble)(joint)
    joint, joint_metrics = steps[phase](joint, batch)

  for i, v in enumerate(members):
    # A separate run: the member's own sparsity, mask method, lambda and seed.
    own = training.RunConfig.from_config(dict(flat, mode="generator", variants="",
                                            sparsity=v.sparsity, mask_method=v.mask_method,
                                            penalty_lambda=v.penalty_lambda, seed=v.init_seed))
    own_seeds, own_cfg = setup.run_seeds(own), own.train_config(1)
    assert (own_seeds["init"], own_seeds["mask"]) == (seeds["members"][i]["init"],
                                                       seeds["members"][i]["mask"])
    state = training.create_train_state(model, jax.random.key(own_seeds["init"]), x, own_cfg,
                                        mask_key=jax.random.key(own_seeds["mask"]))
    for phase in ("warmup", "finetune", "finetune"):
      if phase == "finetune" and int(state.step) == own_cfg.warmup_steps:
        state = training.start_finetune(state)
      state, metrics = jax.jit(training.make_train_step(model, own_cfg, phase))(state, batch)
    assert_member_equals(joint, i, joint_metrics, state, metrics)


@pytest.mark.parametrize("batching", ["vmap", "map", "unroll"])
def test_member_groups_come_back_in_member_order(batching):
  # Members 0 and 2 share a function, member 1 has its own: grouped, run, and put back in order.
  from stgcn_jax.training.ensemble import over_member_groups  # pylint: disable=import-outside-toplevel
  double, shift = (lambda m, b: (2 * m, m.sum() + b)), (lambda m, b: (m + 10, m.sum() - b))
  stacked = jnp.arange(6.0).reshape(3, 2)
  out, total = jax.jit(over_member_groups([double, shift, double], batching))(stacked, 1.0)
  np.testing.assert_array_equal(out, [[0, 2], [12, 13], [8, 10]])
  np.testing.assert_array_equal(total, [2, 4, 10])


def _row(name, s, val, top1=0.5, seed=0, lam=1.0):
  return dict(name=name, sparsity=s, val_top1=val, top1=top1, mask_method="uniform",
              penalty_lambda=lam, init_seed=seed, mask_seed=seed)


def test_auto_keeps_the_sparsest_within_tolerance_of_the_best():
  rows = [_row("s0.6", 0.6, 0.90), _row("s0.8", 0.8, 0.91), _row("s0.95", 0.95, 0.905),
          _row("s0.99", 0.99, 0.85)]
  choice = training.choose_sparsest(rows, 1.0)
  assert (choice["chosen"], choice["index"]) == ("s0.95", 2)
  assert "s0.99" in choice["reason"] and "91.0%" in choice["reason"]
  assert training.choose_sparsest(rows, 0.0)["chosen"] == "s0.8"
  assert training.choose_sparsest(rows, 10.0)["chosen"] == "s0.99"


def test_seed_groups_give_mean_and_std():
  rows = [_row("a", 0.8, 0.8, 0.6, seed=0), _row("b", 0.8, 0.9, 0.8, seed=1),
          _row("c", 0.8, 0.9, 0.8, seed=0, lam=0.0)]
  (group,) = training.seed_groups(rows)
  assert group["seeds"] == [0, 1] and group["top1_mean"] == pytest.approx(0.7)
  assert group["top1_std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
