"""The warm-up -> fine-tune switch, exact (precise) BatchNorm statistics, and the sparsity records
the loop logs."""

from __future__ import annotations

import jax
import numpy as np

from stgcn_jax import data, sparsity
from stgcn_jax.training import precise_bn

__all__ = ["sparsity_record", "precise_bn_state", "bn_batches", "switch_record",
           "fixed_batch_metrics", "switch"]


def sparsity_record(runner, state) -> dict:
  spec = sparsity.prunable_spec(runner.cfg.sparsity)
  reports = [sparsity.sparsity_report(jax.device_get(m.params), jax.device_get(m.masks), spec)
             for m in runner.members(state)]
  keys = ("prunable_sparsity", "total_sparsity", "nonzero_params", "total_params",
          "prunable_params", "prunable_nonzero")
  if len(reports) == 1:
    return {k: reports[0][k] for k in keys}
  return {"members": [{k: r[k] for k in keys} for r in reports]}


def precise_bn_state(ctx, state, phase: str):
  """``state`` with exact population BN statistics over ``config.loop.precise_bn_batches``
  training batches of the run ``ctx`` (a ``context.RunContext``; at most one pass over its
  training source, the same batches every time), for the model that ``phase`` trains."""
  count, runner = ctx.config.loop.precise_bn_batches, ctx.runner
  if not count:
    return state
  batches = bn_batches(ctx.data.sources["train"], ctx.data.pipes["train"], ctx.config,
                       ctx.data.bn_seed, count)
  moments = [runner.moments[phase](state, runner.global_batch(batch, ("x",))["x"])
             for batch in batches]
  stats = precise_bn.precise_batch_stats(state.batch_stats, moments)
  return state.replace(batch_stats=jax.device_put(stats, runner.replicated))


def bn_batches(source, pipeline, config, seed: int, count: int) -> list[dict]:
  """The first ``count`` (at most one epoch of) training batches of the fixed stream ``seed``:
  the precise-BN batches, and the switch's fixed batch (the first of them)."""
  it = data.BatchIterator(source, pipeline, config.optim.batch_size // jax.process_count(),
                          train=True, seed=seed, num_epochs=1, prefetch=False)
  batches = [batch for _, batch in zip(range(min(int(count), it.steps_per_epoch)), it)]
  it.close()
  return batches


def switch_record(runner, state) -> dict:
  """Per block, the norm of the weights the mask removes (per member for an ensemble)."""
  host = jax.device_get(state)
  spec = sparsity.prunable_spec(runner.cfg.sparsity)
  members = runner.members(host)
  norms = [{b: float(v) for b, v in sparsity.group_norms(m.params, m.masks, spec).items()}
           for m in members]
  return {"masked_norm": norms[0] if len(norms) == 1 else norms,
          "masked_norm_total": [sum(n.values()) for n in norms] if len(norms) > 1
                               else sum(norms[0].values())}


def fixed_batch_metrics(runner, state, batch, phase: str) -> dict:
  out = jax.device_get(runner.batch_metrics[phase](state, runner.global_batch(batch)))
  return {k: np.asarray(v).tolist() for k, v in out.items()}


def switch(ctx, state, step: int, pbar):
  """The warm-up -> fine-tune switch of the run ``ctx`` (a ``context.RunContext``), logged: per
  block the masked-out norm that the prune removes, and one fixed training batch's loss /
  accuracy just before and just after it."""
  runner = ctx.runner
  batch = bn_batches(ctx.data.sources["train"], ctx.data.pipes["train"], ctx.config,
                     ctx.data.bn_seed, 1)[0]
  before = fixed_batch_metrics(runner, state, batch, "warmup")
  norms = switch_record(runner, state)
  state = runner.switch(state)
  after = fixed_batch_metrics(runner, state, batch, "finetune")
  state = precise_bn_state(ctx, state, "finetune")
  ctx.logger.write(step, {"split": "switch", "phase": "finetune", **norms,
                          "before": before, "after": after, **sparsity_record(runner, state)})
  message = (f"switch at step {step}: masked-out norm {np.round(norms['masked_norm_total'], 4)}; "
             f"fixed batch loss {np.round(before['loss'], 3)} -> {np.round(after['loss'], 3)}, "
             f"accuracy {np.round(before['accuracy'], 3)} -> {np.round(after['accuracy'], 3)}")
  (pbar.write if pbar is not None else print)(message)
  return state
