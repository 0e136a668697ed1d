"""Multi-level sparsity ensembles (docs/METHOD.md section 5, paper Table 2).

Joint training: members of one backbone at several sparsities are stacked along a leading axis of
every array in the ``TrainState`` (own params, masks, BN statistics, optimizer state, rng) and
trained by one jitted step, each with its own CE loss on the same batch. The step runs the members
by ``jax.vmap`` (``ensemble_batching="vmap"``, docs/METHOD.md section 5), by ``jax.lax.map`` (``"map"``)
or unrolled one after another (``"unroll"``); inference likewise is one call. vmap turns every conv
into a grouped conv, which XLA runs slowly on CPU and GPU (experiments/BENCHMARKS.md).
Post-hoc fusion (the paper's default) sums the clip-averaged softmax scores of separately trained
members.

>>> ens = create_ensemble_state(model, key, x, cfg, sparsities=(0.6, 0.8, 0.95, 0.99))
>>> step = jax.jit(make_ensemble_train_step(model, cfg, "warmup"))
>>> ens, metrics = step(ens, batch)                     # metrics[k]: (members,)
>>> logits = jax.jit(make_ensemble_eval_step(model))(ens, x)
>>> probs = scores.fuse_scores(scores.clip_average_softmax(logits))       # stgcn_jax.scores
>>> parameter_budget(params, ens.masks)["prunable_budget"]   # 0.66 for {0.6, 0.8, 0.95, 0.99}
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stgcn_jax import scores
from stgcn_jax.errors import UserError
from stgcn_jax.sparsity.config import ENSEMBLE_BATCHING, GENERATOR_MODES
from stgcn_jax.training.config import TrainConfig, as_train_config
from stgcn_jax.sparsity.masks import PrunableSpec, check_sparsity, path_str
from stgcn_jax.training.optim import build_optimizer
from stgcn_jax.training.state import TrainState, create_train_state, start_finetune
from stgcn_jax.training.step import make_eval_step, make_train_step
from stgcn_jax.training.variants import Variant

# The fields a member of a plain multi-level ensemble does not set (its seeds come as keys).
_BASE = Variant(0.0, "uniform", 1.0, 0, 0, 0)


def member_seed(seed: int, sparsity: float) -> int:
  """A 31-bit seed for the member / run of ``sparsity`` under the run seed ``seed``: different
  sparsities (and seeds) give independent streams (``numpy.random.SeedSequence``)."""
  words = [int(seed) & 0xFFFFFFFF, int(round(check_sparsity(sparsity) * 1_000_000))]
  return int(np.random.SeedSequence(words).generate_state(1)[0] >> 1)


def stack_states(states: Sequence[TrainState]) -> TrainState:
  """Stack member states (same structure, same static ``apply_fn``/``tx``) along axis 0."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def member_state(state: TrainState, i: int) -> TrainState:
  """Member ``i`` of a stacked state."""
  return jax.tree.map(lambda x: x[i], state)


def member_config(cfg: TrainConfig, variant: Variant | None) -> TrainConfig:
  """The config member ``variant`` trains with: ``cfg`` with its sparsity, mask method and penalty
  weight (``cfg`` itself for ``None``)."""
  if variant is None:
    return cfg
  return dataclasses.replace(cfg, sparsity=dataclasses.replace(
      cfg.sparsity, level=variant.sparsity, mask_method=variant.mask_method,
      penalty_lambda=variant.penalty_lambda))


def create_ensemble_state(model, key, sample_x, config, sparsities: Sequence[float] | None = None,
                          *, variables=None, mask_keys=None,
                          variants: Sequence[Variant] | None = None) -> TrainState:
  """A stacked ``TrainState`` of generator members, one per sparsity (default
  ``config.sparsity.ensemble_sparsities``) or one per ``variants`` member (``training.variants``:
  its sparsity and mask method), each with its own init, mask and dropout keys.

  ``key`` is one key (split into one per member) or a sequence of per-member keys; ``mask_keys``
  optionally gives each member's mask key (the same key for all gives nested 'uniform' masks)."""
  cfg = as_train_config(config)
  sp = cfg.sparsity
  if sp.uses_scores:
    raise UserError("ensembles train fixed-mask generator members; set learn_scores=False and "
                    f"mode='ensemble' or 'generator' (got mode={sp.mode!r}, "
                    f"learn_scores={sp.learn_scores})")
  if sp.mode not in GENERATOR_MODES:
    raise UserError(f"ensemble members need mode 'ensemble', 'variants' or 'generator', got "
                    f"{sp.mode!r}")
  if variants is None:
    sparsities = tuple(sp.ensemble_sparsities if sparsities is None else sparsities)
    variants = [dataclasses.replace(_BASE, sparsity=float(s), mask_method=sp.mask_method,
                                    penalty_lambda=sp.penalty_lambda) for s in sparsities]
  if not variants:
    raise UserError("an ensemble needs at least one member")
  tx = build_optimizer(cfg)
  keys = list(key) if isinstance(key, (list, tuple)) else jax.random.split(key, len(variants))
  mask_keys = list(mask_keys) if mask_keys is not None else [None] * len(variants)
  if len(keys) != len(variants) or len(mask_keys) != len(variants):
    raise UserError(f"{len(variants)} members need as many keys and mask keys, got "
                    f"{len(keys)} and {len(mask_keys)}")
  return stack_states([create_train_state(model, k, sample_x, member_config(cfg, v), tx=tx,
                                          sparsity=v.sparsity, variables=variables, mask_key=mk)
                       for k, mk, v in zip(keys, mask_keys, variants)])


def resolve_batching(batching: str) -> str:
  """``"auto"``: ``"unroll"`` on a CPU (2.7x faster than ``"vmap"`` there, whose grouped
  convolutions XLA:CPU runs slowly; experiments/BENCHMARKS.md), ``"vmap"`` on an accelerator."""
  if batching != "auto":
    return batching
  return "unroll" if jax.default_backend() == "cpu" else "vmap"


def over_members(fn, batching: str = "auto"):
  """``fn(member, shared)`` applied to every member of a stacked first argument, the second shared:
  ``"vmap"`` (one batched computation), ``"map"`` (``jax.lax.map``, an XLA loop over the members)
  or ``"unroll"`` (the members traced one after another into the same function); ``"auto"``:
  ``resolve_batching``."""
  batching = resolve_batching(batching)
  if batching == "vmap":
    return jax.vmap(fn, in_axes=(0, None))
  if batching == "map":
    return lambda stacked, shared: jax.lax.map(lambda member: fn(member, shared), stacked)
  if batching == "unroll":
    def unrolled(stacked, shared):
      n = jax.tree.leaves(stacked)[0].shape[0]
      return stack_states([fn(member_state(stacked, i), shared) for i in range(n)])
    return unrolled
  raise UserError(f"ensemble batching must be one of {ENSEMBLE_BATCHING}, got {batching!r}")


def over_member_groups(fns: Sequence, batching: str = "auto"):
  """Like ``over_members``, with member ``i`` run by ``fns[i]``: members whose functions are the
  same object form a group, batched as ``batching`` says (unrolled: each member its own); the
  outputs come back in member order."""
  batching = resolve_batching(batching)
  groups: dict[int, list[int]] = {}
  for i, fn in enumerate(fns):
    groups.setdefault(id(fn), []).append(i)
  if len(groups) == 1:
    return over_members(fns[0], batching)
  if batching == "unroll":
    return lambda stacked, shared: stack_states(
        [fn(member_state(stacked, i), shared) for i, fn in enumerate(fns)])
  order = np.argsort([i for idx in groups.values() for i in idx])  # grouped -> member order

  def grouped(stacked, shared):
    outs = [over_members(fns[idx[0]], batching)(
        jax.tree.map(lambda x, idx=idx: x[np.asarray(idx)], stacked), shared)
            for idx in groups.values()]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs)[order], *outs)
  return grouped


def make_ensemble_train_step(model, config, phase: str,
                             variants: Sequence[Variant] | None = None):
  """``step(stacked_state, batch) -> (stacked_state, metrics)``: ``make_train_step`` over the
  members (the batch is shared), batched as ``config.sparsity.ensemble_batching`` says; every metric
  has shape ``(members,)``. ``variants``: each member's own penalty weight (members that share one
  share a step: ``over_member_groups``)."""
  cfg = as_train_config(config)
  batching = cfg.sparsity.ensemble_batching
  if variants is None:
    return over_members(make_train_step(model, cfg, phase), batching)
  steps: dict[float, object] = {}
  for v in variants:   # only the penalty weight changes what the step computes
    if v.penalty_lambda not in steps:
      steps[v.penalty_lambda] = make_train_step(
          model, member_config(cfg, dataclasses.replace(v, sparsity=cfg.sparsity.level,
                                                        mask_method=cfg.sparsity.mask_method)),
          phase)
  return over_member_groups([steps[v.penalty_lambda] for v in variants], batching)


start_finetune_ensemble = jax.vmap(start_finetune)


def make_ensemble_eval_step(model, batching: str = "vmap"):
  """``eval_step(stacked_state, x) -> logits (members, B, [clips,] classes)`` in one call."""
  return over_members(make_eval_step(model), batching)


def parameter_budget(params, member_masks, spec: PrunableSpec | None = None) -> dict:
  """The ensemble's parameter cost relative to one dense model, from its masks: the counts each
  member's ``results.json`` would hold, through ``scores.parameter_budget`` (the same keys:
  ``prunable_budget`` = nonzero prunable weights summed over the members / one dense model's, the
  paper's 0.66; ``total_budget`` the same over all parameters, unmasked ones included).

  Args:
    params: one member's parameter tree (arrays or shapes; no member axis).
    member_masks: a sequence of mask trees, or one stacked mask tree (leading member axis).
    spec: the prunable predicate.
  """
  spec = spec or PrunableSpec()
  leaves = [(path_str(p), leaf) for p, leaf in jax.tree_util.tree_leaves_with_path(params)]
  if isinstance(member_masks, (list, tuple)):
    members = [dict((path_str(p), np.asarray(m)) for p, m in
                    jax.tree_util.tree_leaves_with_path(t)) for t in member_masks]
  else:
    flat = dict((path_str(p), np.asarray(m)) for p, m in
                jax.tree_util.tree_leaves_with_path(member_masks))
    k = next(iter(flat.values())).shape[0]
    members = [{p: m[i] for p, m in flat.items()} for i in range(k)]
  dense_prunable = sum(int(np.prod(l.shape)) for p, l in leaves if spec(p))
  dense_total = sum(int(np.prod(l.shape)) for _, l in leaves)
  results = [{"prunable_params": dense_prunable, "total_params": dense_total,
              "prunable_nonzero": sum(int(np.count_nonzero(m[p])) for p, _ in leaves if spec(p)),
              "nonzero_params": sum(int(np.count_nonzero(m[p])) for p, _ in leaves)}
             for m in members]
  return scores.parameter_budget(results)
