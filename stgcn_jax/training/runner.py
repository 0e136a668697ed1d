"""How a run drives its model(s): one model, or a joint ensemble stacked on a leading axis.

The loop talks to a :class:`Runner` only (create the state, the jitted step of each phase, the
switch, eval / moments / batch metrics, the members, where the final models go); a
:class:`StackedRunner` runs the members of a joint ensemble by ``vmap`` / ``lax.map`` / unrolled in
the same calls. Both place the state replicated and batches sharded on a 1-D ``("data",)`` mesh.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from stgcn_jax import distributed
from stgcn_jax.training import precise_bn
from stgcn_jax.training import ensemble as ens
from stgcn_jax.training.config import TrainConfig
from stgcn_jax.training.state import create_train_state, start_finetune
from stgcn_jax.training.step import (PHASES, ce_and_accuracy, forward, make_eval_step,
                                    make_train_step)
from stgcn_jax.training.variants import member_names, run_variants
from stgcn_jax.training.workdir import RunError

__all__ = ["Runner", "StackedRunner", "make_runner"]


class Runner:
  """One model: the jitted functions and shardings of a run."""

  def __init__(self, model, cfg: TrainConfig):
    self.model, self.cfg = model, cfg
    n, batch_size = jax.device_count(), cfg.optim.batch_size
    if batch_size % n:
      raise RunError(f"batch_size {batch_size} must be a multiple of the {n} devices")
    self.mesh = jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P("data"))
    jit_step = lambda f: jax.jit(f, in_shardings=(self.replicated, self.batch_sharding),
                                 out_shardings=(self.replicated, self.replicated),
                                 donate_argnums=0)
    self.steps = {phase: jit_step(self._train_step(phase)) for phase in PHASES}
    self.switch = jax.jit(self._switch_fn(), in_shardings=self.replicated,
                          out_shardings=self.replicated, donate_argnums=0)
    jit_eval = lambda f: jax.jit(self._per_member(f),
                                 in_shardings=(self.replicated, self.batch_sharding),
                                 out_shardings=self.replicated)
    # The model a phase trains: dense in the generator's warm-up, params * masks otherwise.
    masked = {phase: cfg.masked(phase) for phase in PHASES}
    self.evals = {phase: jit_eval(make_eval_step(model, masked=masked[phase])) for phase in PHASES}
    self.moments = {phase: jit_eval(precise_bn.make_moments_fn(model, masked=masked[phase]))
                    for phase in PHASES}
    self.batch_metrics = {phase: jit_eval(_batch_metrics_fn(model, masked[phase]))
                          for phase in PHASES}

  # What stacked members change.
  sparsities: tuple[float, ...] | None = None
  variants: tuple | None = None
  names: tuple[str, ...] | None = None

  def _train_step(self, phase: str):
    return make_train_step(self.model, self.cfg, phase)

  def _switch_fn(self):
    return start_finetune

  def _per_member(self, fn):
    return fn

  def create_state(self, seeds: dict, sample_x, variables):
    state = create_train_state(self.model, jax.random.key(seeds["init"]), sample_x, self.cfg,
                               variables=variables, mask_key=jax.random.key(seeds["mask"]))
    return distributed.replicate(state, self.replicated)   # made alike on every process

  def members(self, state) -> list:
    return [state]

  def model_dirs(self, workdir: str) -> list[str]:
    """Where the final model(s) are saved, one model checkpoint per member."""
    return [os.path.join(workdir, "model")]

  # Shared.
  def global_batch(self, batch: dict, keys=("x", "label")) -> dict:
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, batch[k]) for k in keys}

  @staticmethod
  def step_of(state) -> int:
    return int(np.ravel(jax.device_get(state.step))[0])  # stacked members carry one step each


class StackedRunner(Runner):
  """Stacked members (a joint ensemble, joint variants): every array of the state has a leading
  member axis; ``variants`` says what each member is (``training.variants``)."""

  def __init__(self, model, cfg: TrainConfig, variants):
    self.variants = tuple(variants)
    self.sparsities = tuple(v.sparsity for v in self.variants)
    self.names = tuple(member_names(self.variants))
    super().__init__(model, cfg)

  def _train_step(self, phase: str):
    return ens.make_ensemble_train_step(self.model, self.cfg, phase, self.variants)

  def _switch_fn(self):
    return ens.start_finetune_ensemble

  def _per_member(self, fn):
    return ens.over_members(fn, self.cfg.sparsity.ensemble_batching)

  def create_state(self, seeds: dict, sample_x, variables):
    members = seeds["members"]
    state = ens.create_ensemble_state(
        self.model, [jax.random.key(m["init"]) for m in members], sample_x, self.cfg,
        variables=variables, mask_keys=[jax.random.key(m["mask"]) for m in members],
        variants=self.variants)
    return distributed.replicate(state, self.replicated)

  def members(self, state) -> list:
    return [ens.member_state(state, i) for i in range(len(self.variants))]

  def model_dirs(self, workdir: str) -> list[str]:
    return [os.path.join(workdir, "members", name) for name in self.names]


def make_runner(model, cfg: TrainConfig, seed: int = 0) -> Runner:
  """A ``StackedRunner`` for the members of a stacked mode (``run_variants`` under the run
  ``seed``), else a ``Runner``."""
  variants = run_variants(cfg.sparsity, seed)
  return Runner(model, cfg) if variants is None else StackedRunner(model, cfg, variants)


def _batch_metrics_fn(model, masked: bool):
  """``(state, batch) -> {'loss', 'accuracy'}``: CE and accuracy of one batch in training mode
  (batch statistics, no dropout, nothing updated)."""
  def fn(state, batch):
    logits, _ = forward(model, state, batch["x"], masked=masked, train=True,
                        mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
    ce, acc = ce_and_accuracy(logits, batch["label"])
    return {"loss": ce, "accuracy": acc}
  return fn
