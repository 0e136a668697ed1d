"""The end of a run: the test of the final model(s), ``scores.npz``, the saved models, and the
``results.json`` record (accuracy, the best-by-validation model, sparsity counts, seeds, hardware)."""

from __future__ import annotations

import json
import os
from typing import TypedDict

import jax
import numpy as np
import orbax.checkpoint as ocp

from stgcn_jax import atomic, checkpoint, distributed, models, sparsity
from stgcn_jax.scores import accuracy_report
from stgcn_jax.training.evaluate import eval_batch_size, evaluate_source, scores_of
from stgcn_jax.training.state import abstract_state
from stgcn_jax.training import variants
from stgcn_jax.training.switch import sparsity_record

__all__ = ["Results", "Member", "final_evaluation", "best_by_validation", "hardware", "add_counts",
           "SUMMARY"]


class Member(TypedDict, total=False):
  """One member of a joint ensemble in ``results.json`` ``members``: its own accuracy and counts;
  a member of joint variants also its name, what it varies and its validation top-1."""
  sparsity: float
  name: str
  mask_method: str
  penalty_lambda: float
  init_seed: int
  mask_seed: int
  val_top1: float               # the final model (precise BN) on the validation split
  top1: float
  top5: float
  mean_class_accuracy: float
  prunable_sparsity: float
  total_sparsity: float
  prunable_params: int          # one dense model's prunable weights
  total_params: int             # one dense model's parameters
  prunable_nonzero: int
  nonzero_params: int


class Results(TypedDict, total=False):
  """``results.json``: what training writes and ``fusion`` / ``sweep`` / ``analyze`` read.

  Accuracy is of the final model (ensemble: of the members' summed scores) on the test split,
  10-clip test, with precise BN; counts are of the masked model (ensemble: top level one dense
  member's size, nonzero counts summed over the members, and every member's own in ``members``).
  """
  top1: float
  top5: float
  mean_class_accuracy: float
  num_samples: int
  num_classes: int
  confusion_matrix: list
  members: list[Member]
  seed_groups: list[dict]       # joint variants: mean and std over seeds of one setting
  auto_sparsity: dict           # --sparsity=auto: the chosen member and why (top level: its test)
  precise_bn_batches: int
  without_precise_bn: dict      # top1 / top5 / mean_class_accuracy with the running averages
  validation: str
  seeds: dict
  best_by_val: dict             # step, epoch, val_top1 and its test accuracy
  train_time_s: float
  hardware: dict
  prunable_sparsity: float
  total_sparsity: float
  prunable_params: int
  total_params: int
  prunable_nonzero: int
  nonzero_params: int

SUMMARY = ("top1", "top5", "mean_class_accuracy")


def final_evaluation(ctx, state, member_val: list[float] | None = None) -> Results:
  """The 10-clip test of the run ``ctx`` (a ``context.RunContext``): scores.npz, the final masked
  model(s), and the accuracy report: of the model, of the members' summed scores, or
  (``config.sparsity.auto_tolerance`` >= 0) of the member that ``variants.choose_sparsest`` picks
  by ``member_val``, each member's validation top-1."""
  config, runner, info, workdir = ctx.config, ctx.runner, ctx.data.info, ctx.workdir
  test_src, pipe = ctx.data.sources["test"], ctx.data.pipes["test"]
  out = evaluate_source(runner, state, test_src, pipe, eval_batch_size(config), config.seed)
  scores, labels = out["scores"], out["labels"]
  names = np.array([test_src[i]["frame_dir"] for i in range(len(test_src))])
  extra, rows, choice = {}, None, None
  if runner.sparsities is not None:  # stacked members: their scores, and their sum
    member_scores = scores
    rows = _member_rows(config, runner, member_scores, labels, member_val)
    if member_val is not None and config.sparsity.auto_tolerance >= 0:
      choice = variants.choose_sparsest(rows, config.sparsity.auto_tolerance)
    scores = member_scores.sum(0) if choice is None else member_scores[choice["index"]]
    extra = {"member_scores": member_scores, "member_names": np.array(runner.names),
             "member_sparsities": np.array(runner.sparsities, np.float32)}
  results = accuracy_report(scores, labels)
  if rows is not None:
    results["members"] = rows
    groups = variants.seed_groups(rows) if config.sparsity.mode == "variants" else []
    if groups:
      results["seed_groups"] = groups
    if choice is not None:
      results["auto_sparsity"] = choice
  if distributed.is_main():
    with atomic.atomic_path(os.path.join(workdir, "scores.npz")) as tmp:
      np.savez(tmp, scores=scores.astype(np.float32), labels=labels,
               index=np.arange(len(labels)), names=names, **extra)
  _save_models(config, runner, state, info, pipe, workdir)
  return results


def _member_rows(config, runner, member_scores, labels, member_val) -> list[Member]:
  """Each member's test accuracy; in mode 'variants' also what it is and its validation top-1."""
  rows = []
  for i, (s, m) in enumerate(zip(runner.sparsities, member_scores)):
    row = dict(sparsity=s, **{k: v for k, v in accuracy_report(m, labels).items()
                              if k != "confusion_matrix"})
    if config.sparsity.mode == "variants":
      v = runner.variants[i]
      row.update(name=runner.names[i], mask_method=v.mask_method,
                 penalty_lambda=v.penalty_lambda, init_seed=v.init_seed, mask_seed=v.mask_seed,
                 val_top1=None if member_val is None else member_val[i])
    rows.append(row)
  return rows


def _save_models(config, runner, state, info, pipe, workdir) -> None:
  """The final model(s) with the statistics they were tested with: model/, or one model
  checkpoint per stacked member (members/<name>/); saved by every process."""
  spec = checkpoint.model_spec_json(
      config.model.backbone, info.num_classes, info.layout, runner.model.backbone.in_channels,
      models.options_json(config.model.options), class_names=info.class_names,
      pipeline=dict(pipe.config.__dict__, channels=list(info.channels)))
  for target, member in zip(runner.model_dirs(workdir), runner.members(state)):
    host = jax.device_get(member)
    variables = {"params": sparsity.apply_masks(host.params, host.masks),
                 "batch_stats": host.batch_stats}
    checkpoint.save_model(target, spec, variables, overwrite=True)


def best_by_validation(ctx, state, step: int, results: dict) -> dict | None:
  """The test accuracy of the run's best-by-validation model (``best/``), with its step and val
  top-1 (``ctx``: a ``context.RunContext``)."""
  best_mngr = ctx.best_checkpoints
  if best_mngr is None or best_mngr.best_step() is None:
    return None
  best_step = best_mngr.best_step()
  if best_step == step:  # the final model itself (the same precise-BN batches): already tested
    acc = results
  else:
    best = best_mngr.restore(best_step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state(state)))).state
    acc = accuracy_report(*scores_of(ctx.runner, best, ctx.data.sources["test"],
                                     ctx.data.pipes["test"], ctx.config))
  with open(os.path.join(ctx.workdir, "metrics.jsonl")) as f:
    val_top1 = [json.loads(line)["top1"] for line in f
                if '"split": "val"' in line and json.loads(line)["step"] == best_step]
  return {"step": int(best_step), "epoch": best_step / ctx.cfg.steps_per_epoch,
          "val_top1": val_top1[-1] if val_top1 else None, **{k: acc[k] for k in SUMMARY}}


def hardware() -> dict:
  return {"platform": jax.default_backend(), "device_count": jax.device_count(),
          "device_kind": jax.devices()[0].device_kind, "process_count": jax.process_count(),
          "cpu_count": os.cpu_count()}


def add_counts(results: dict, runner, state) -> None:
  """Parameter counts: a model's own; for stacked members, each member's and, at the top level,
  one dense member's size with the nonzero counts summed over the members."""
  record = sparsity_record(runner, state)
  if "members" not in record:
    results.update(record)
    return
  for member, counts in zip(results["members"], record["members"]):
    member.update(counts)
  if "auto_sparsity" in results:   # the chosen member is the run's model
    results.update(record["members"][results["auto_sparsity"]["index"]])
    return
  dense = record["members"][0]
  results.update(prunable_params=dense["prunable_params"], total_params=dense["total_params"],
                 prunable_nonzero=sum(m["prunable_nonzero"] for m in record["members"]),
                 nonzero_params=sum(m["nonzero_params"] for m in record["members"]))
