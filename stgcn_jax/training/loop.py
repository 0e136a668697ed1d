"""``train_and_evaluate(config, workdir)``: the training loop.

Data-parallel over every device with a 1-D mesh ``("data",)``: batches are sharded along it, the
train state is replicated, and one jitted, donated step runs the same code on one CPU or many
accelerators (multi-host with ``config.distributed``). BatchNorm statistics therefore cover the
global batch, exactly as on one device.

Model selection never sees the test split: ``val`` is held out from the training data
(``config.val_fraction``, by performer where the names carry one, else stratified by class; or the
dataset's own ``val`` split) and validated every ``config.eval_every_epochs``. BatchNorm statistics
are re-estimated exactly (``precise_bn``, ``config.precise_bn_batches`` training batches) after the
warm-up -> fine-tune switch, before every validation and after training.

The workdir holds ``config.json``, ``metrics.jsonl``, ``checkpoints/`` (orbax: the train state,
the data-iterator position, the phase), ``best/`` (best by validation, when validation runs),
``model/`` (the final masked model, loadable by ``checkpoint.load_model``), ``results.json`` and
``scores.npz`` (clip-averaged softmax scores of the test split, for ``experiments.fuse``). A run
started again with the same workdir resumes from its latest checkpoint; on CPU the result is
bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P

from stgcn_jax import checkpoint, data, models, precise_bn, sparsity
from stgcn_jax.training import ensemble as ens
from stgcn_jax.training.evaluate import accuracy_report, eval_batch_size, evaluate_source, scores_of
from stgcn_jax.training.optim import phase_at
from stgcn_jax.training.state import abstract_state, create_train_state, start_finetune
from stgcn_jax.training.step import PHASES, make_eval_step, make_train_step
from stgcn_jax.training.workdir import (MetricsLogger, RunError, checkpoint_manager, prepare_workdir,
                                        progress_bar, restore_newest_intact, save_checkpoint,
                                        trim_metrics, write_json)

__all__ = ["RunError", "train_and_evaluate", "run_seeds", "model_options"]


def _dataset(config) -> tuple[str, data.DatasetInfo]:
  data_dir = os.path.abspath(os.path.expanduser(config.data_dir or data.default_data_dir()))
  if config.dataset == "synthetic":
    data.ensure_synthetic(data_dir)
  elif not data.exists(config.dataset, data_dir):
    raise RunError(f"dataset {config.dataset!r} not found under {data_dir}: convert it first "
                   "(see data_prep/README.md, e.g. python -m data_prep.nw_ucla --src ... --out "
                   f"{data_dir}) or pass --data_dir")
  return data_dir, data.info(config.dataset, data_dir)


def _pipeline(config, info, train: bool, num_clips: int | None = None) -> data.Pipeline:
  if num_clips is None:
    num_clips = 1 if train else config.num_clips_test
  return data.Pipeline(data.PipelineConfig(
      clip_len=config.clip_len, num_clips=num_clips,
      test_mode=not train, modality=config.modality, normalize=config.normalize,
      align_spine=config.align_spine, rotate=config.rotate if train else 0.0,
      num_person=config.num_person), info)


def model_options(config) -> dict[str, Any]:
  """Backbone options: ``config.model`` (shared block list), ``config.model_options`` (JSON)."""
  options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config.model).items()}
  if config.model_options:
    try:
      extra = json.loads(config.model_options)
    except json.JSONDecodeError as err:
      raise RunError(f"config.model_options must be a JSON object, got {config.model_options!r} "
                     f"({err})") from None
    if not isinstance(extra, dict):
      raise RunError(f"config.model_options must be a JSON object, got {config.model_options!r}")
    options.update(extra)
  options.setdefault("num_person", config.num_person)
  return options


def _build_model(config, info):
  in_channels = info.num_channels * len(config.modality.split(","))
  return models.get_model(config.backbone, info.num_classes, layout=info.layout,
                          in_channels=in_channels, **model_options(config))


def _pretrained(config, model):
  if not config.pretrained:
    if config.mode == "lth":
      print("note: mode=lth without --pretrained: scores are learned over random weights")
    return None
  loaded, variables = checkpoint.load_model(config.pretrained)
  mine, theirs = model.backbone, loaded.backbone
  if (type(mine) is not type(theirs) or loaded.num_classes != model.num_classes
      or mine.layout != theirs.layout):
    raise RunError(
        f"--pretrained {config.pretrained}: a {type(theirs).__name__} with {loaded.num_classes} "
        f"classes on layout {theirs.layout.name!r}, but this run builds a {type(mine).__name__} "
        f"with {model.num_classes} classes on layout {mine.layout.name!r}")
  return variables


class _Trainer:
  """Holds the jitted functions and shardings of one run."""

  def __init__(self, config, model, sp_cfg):
    self.config, self.model, self.sp_cfg = config, model, sp_cfg
    self.ensemble = sp_cfg.mode == "ensemble"
    n = jax.device_count()
    if config.batch_size % n:
      raise RunError(f"batch_size {config.batch_size} must be a multiple of the {n} devices")
    self.mesh = jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P("data"))
    make_step = ens.make_ensemble_train_step if self.ensemble else make_train_step
    per_member = ((lambda f: ens.over_members(f, sp_cfg.ensemble_batching)) if self.ensemble
                  else (lambda f: f))
    switch = ens.start_finetune_ensemble if self.ensemble else start_finetune
    jit_step = lambda f: jax.jit(f, in_shardings=(self.replicated, self.batch_sharding),
                                 out_shardings=(self.replicated, self.replicated),
                                 donate_argnums=0)
    self.steps = {phase: jit_step(make_step(model, sp_cfg, phase)) for phase in PHASES}
    self.switch = jax.jit(switch, in_shardings=self.replicated, out_shardings=self.replicated,
                          donate_argnums=0)
    jit_eval = lambda f: jax.jit(per_member(f), in_shardings=(self.replicated, self.batch_sharding),
                                 out_shardings=self.replicated)
    # The model a phase trains: dense in the generator's warm-up, params * masks otherwise.
    masked = {phase: not (phase == "warmup" and sp_cfg.warmup_steps > 0) for phase in PHASES}
    self.evals = {phase: jit_eval(make_eval_step(model, masked=masked[phase]))
                  for phase in PHASES}
    self.moments = {phase: jit_eval(precise_bn.make_moments_fn(model, masked=masked[phase]))
                    for phase in PHASES}
    self.batch_metrics = {phase: jit_eval(_batch_metrics_fn(model, masked[phase]))
                          for phase in PHASES}

  def create_state(self, seeds: dict, sample_x, variables):
    if self.ensemble:
      members = seeds["members"]
      state = ens.create_ensemble_state(
          self.model, [jax.random.key(m["init"]) for m in members], sample_x, self.sp_cfg,
          variables=variables, mask_keys=[jax.random.key(m["mask"]) for m in members])
    else:
      state = create_train_state(self.model, jax.random.key(seeds["init"]), sample_x,
                                          self.sp_cfg, variables=variables,
                                          mask_key=jax.random.key(seeds["mask"]))
    return jax.device_put(state, self.replicated)

  def global_batch(self, batch: dict, keys=("x", "label")) -> dict:
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, batch[k]) for k in keys}

  def members(self, state) -> list:
    if not self.ensemble:
      return [state]
    return [ens.member_state(state, i) for i in range(len(self.sp_cfg.ensemble_sparsities))]


def _batch_metrics_fn(model, masked: bool):
  """``(state, batch) -> {'loss', 'accuracy'}``: CE and accuracy of one batch in training mode
  (batch statistics, no dropout, nothing updated)."""
  def fn(state, batch):
    params = sparsity.apply_masks(state.params, state.masks) if masked else state.params
    logits, _ = model.apply({"params": params, "batch_stats": state.batch_stats}, batch["x"],
                            train=True, mutable=["batch_stats"],
                            rngs={"dropout": jax.random.key(0)})
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    acc = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
    return {"loss": ce, "accuracy": acc}
  return fn


def run_seeds(config) -> dict:
  """The run's seeds, derived from ``config.seed`` and the sparsity (``ens.member_seed``), so that
  runs of different sparsity (sweep cells, ensemble members) are independent: ``init`` (weights,
  dropout), ``data`` (order, augmentation) and ``mask`` (the mask draw; the run seed itself when
  ``config.nested_masks``). A joint ensemble has one ``init``/``mask`` pair per member and the run
  seed as its shared data seed."""
  seed = int(config.seed)

  def one(s: float) -> dict:
    member = ens.member_seed(seed, s)
    return {"sparsity": float(s), "init": member, "data": member,
            "mask": seed if config.nested_masks else member}

  if config.mode == "ensemble":
    return {"run": seed, "data": seed, "nested_masks": bool(config.nested_masks),
            "members": [one(s) for s in config.ensemble_sparsities]}
  return {"run": seed, "nested_masks": bool(config.nested_masks),
          **one(0.0 if config.mode == "dense" else config.sparsity)}


def _train_val_sources(config, info, data_dir):
  """(train source, validation source or None, a note on how val was made)."""
  train_src = data.load(config.dataset, data_dir, config.train_split)
  if config.val_split:
    return train_src, data.load(config.dataset, data_dir, config.val_split), config.val_split
  if "val" in info.default_splits and info.default_splits["val"] != info.resolve_split(
      config.test_split):
    return train_src, data.load(config.dataset, data_dir, "val"), "the dataset's val split"
  if not config.val_fraction:
    return train_src, None, "none"
  train_idx, val_idx, how = data.holdout(train_src, config.val_fraction, config.seed)
  if len(val_idx) == 0:
    raise RunError(f"--config.val_fraction={config.val_fraction} holds out no sample of the "
                   f"{len(train_src)} training samples; raise it or set it to 0")
  note = (f"{len(val_idx)} of {len(train_src)} training samples held out "
          f"({'whole performers' if how == 'performer' else 'stratified by class'})")
  return (data.Subset(train_src, train_idx, "train-val"),
          data.Subset(train_src, val_idx, "val"), note)


def _sparsity_record(trainer, state) -> dict:
  spec = sparsity.prunable_spec(trainer.sp_cfg)
  reports = [sparsity.sparsity_report(jax.device_get(m.params), jax.device_get(m.masks), spec)
             for m in trainer.members(state)]
  keys = ("prunable_sparsity", "total_sparsity", "nonzero_params", "total_params",
          "prunable_params", "prunable_nonzero")
  if len(reports) == 1:
    return {k: reports[0][k] for k in keys}
  return {"members": [{k: r[k] for k in keys} for r in reports]}


def _precise_bn(trainer, state, phase: str, source, pipeline, config, seed: int):
  """``state`` with exact population BN statistics over ``config.precise_bn_batches`` training
  batches (at most one pass over ``source``; the same batches every time), for the model that
  ``phase`` trains."""
  if not config.precise_bn_batches:
    return state
  moments = [trainer.moments[phase](state, trainer.global_batch(batch, ("x",))["x"])
             for batch in _bn_batches(source, pipeline, config, seed, config.precise_bn_batches)]
  stats = precise_bn.precise_batch_stats(state.batch_stats, moments)
  return state.replace(batch_stats=jax.device_put(stats, trainer.replicated))


def _bn_batches(source, pipeline, config, seed: int, count: int) -> list[dict]:
  """The first ``count`` (at most one epoch of) training batches of the fixed stream ``seed``:
  the precise-BN batches, and the switch's fixed batch (the first of them)."""
  it = data.BatchIterator(source, pipeline, config.batch_size // jax.process_count(), train=True,
                          seed=seed, num_epochs=1, prefetch=False)
  batches = [batch for _, batch in zip(range(min(int(count), it.steps_per_epoch)), it)]
  it.close()
  return batches


def _switch_record(trainer, state) -> dict:
  """Per block, the norm of the weights the mask removes (per member for an ensemble)."""
  host = jax.device_get(state)
  spec = sparsity.prunable_spec(trainer.sp_cfg)
  members = trainer.members(host)
  norms = [{b: float(v) for b, v in sparsity.group_norms(m.params, m.masks, spec).items()}
           for m in members]
  return {"masked_norm": norms[0] if len(norms) == 1 else norms,
          "masked_norm_total": [sum(n.values()) for n in norms] if len(norms) > 1
                               else sum(norms[0].values())}


def _fixed_batch_metrics(trainer, state, batch, phase: str) -> dict:
  out = jax.device_get(trainer.batch_metrics[phase](state, trainer.global_batch(batch)))
  return {k: np.asarray(v).tolist() for k, v in out.items()}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains, evaluates on the test split and writes the workdir; returns ``results.json``."""
  t_start = time.time()
  if config.distributed:
    jax.distributed.initialize()
  workdir = prepare_workdir(workdir, config)
  data_dir, info = _dataset(config)
  model = _build_model(config, info)
  train_src, val_src, val_note = _train_val_sources(config, info, data_dir)
  test_src = data.load(config.dataset, data_dir, config.test_split)
  seeds = run_seeds(config)
  per_process = config.batch_size // jax.process_count()
  if config.train_repeat < 1:
    raise RunError(f"config.train_repeat must be >= 1, got {config.train_repeat}")
  train_pipe = _pipeline(config, info, True)
  if len(train_src) // jax.process_count() < per_process:
    raise RunError(f"the {config.train_split!r} split has {len(train_src)} training samples, fewer "
                   f"than one batch of {config.batch_size}; lower --batch_size")
  train_it = data.BatchIterator(train_src, train_pipe, per_process, train=True, seed=seeds["data"],
                                repeat=config.train_repeat)
  steps_per_epoch = config.steps_per_epoch or train_it.steps_per_epoch
  sp_cfg = sparsity.resolve(config, steps_per_epoch=steps_per_epoch)
  trainer = _Trainer(config, model, sp_cfg)
  bn_seed = seeds["data"] + 1  # the precise-BN batches: their own, fixed stream

  write_json(os.path.join(workdir, "config.json"),
              {**config.to_dict(), "steps_per_epoch": steps_per_epoch, "seeds": seeds,
               "validation": val_note})
  variables = _pretrained(config, model)
  sample_x = jnp.zeros((1, config.num_person, config.clip_len, info.num_joints,
                        model.backbone.in_channels), jnp.float32)
  state = trainer.create_state(seeds, sample_x, variables)

  mngr = checkpoint_manager(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
  validate = bool(config.eval_every_epochs) and val_src is not None
  best_mngr = checkpoint_manager(os.path.join(workdir, "best"), 1, best=True) if validate else None
  restored = restore_newest_intact(mngr, state, workdir)
  # metrics.jsonl keeps what the restored step had written before its checkpoint, nothing after.
  trim_metrics(os.path.join(workdir, "metrics.jsonl"), restored[1] if restored else None)
  logger = MetricsLogger(workdir, config.tensorboard)
  if restored is not None:
    state = restored[0].state
    train_it.set_state(restored[0].meta["iterator"])
    print(f"resumed from {workdir}/checkpoints at step {restored[1]}")
  step = int(np.ravel(jax.device_get(state.step))[0])  # ensembles carry one step per member
  total = sp_cfg.total_steps
  if step == 0:
    logger.write(0, {"split": "sparsity", "phase": phase_at(0, sp_cfg),
                     **_sparsity_record(trainer, state)})
    print(f"validation: {val_note}")

  pbar = progress_bar(total, step, config.progress_bar)
  val_pipe = _pipeline(config, info, False, num_clips=1)
  t_log, step_log = time.time(), step
  try:
    while step < total:
      phase = "warmup" if step < sp_cfg.warmup_steps else "finetune"
      if phase == "finetune" and step == sp_cfg.warmup_steps and step > 0:
        state = _switch(trainer, state, step, train_src, train_pipe, config, bn_seed, logger,
                        pbar)
      batch = trainer.global_batch(next(train_it))
      state, metrics = trainer.steps[phase](state, batch)
      step += 1
      epoch_end = step % steps_per_epoch == 0
      if step % config.log_every_steps == 0 or epoch_end or step == total:
        record = {k: np.asarray(v).tolist() for k, v in jax.device_get(metrics).items()}
        loss = np.asarray(record["loss"])
        if not np.all(np.isfinite(loss)):
          raise RunError(f"the loss became {loss.tolist()} at step {step} (epoch "
                         f"{step / steps_per_epoch:.2f}, phase {phase}); lower --learning_rate "
                         "or check the data for NaN/Inf")
        now = time.time()
        rate = (step - step_log) / max(now - t_log, 1e-9)  # includes compiles and checkpoints
        t_log, step_log = now, step
        logger.write(step, {"split": "train", "epoch": step / steps_per_epoch, "phase": phase,
                            "elapsed_s": now - t_start, "steps_per_s": rate, **record})
        if pbar is not None:
          pbar.set_postfix(loss=f"{np.mean(loss):.3f}", acc=f"{np.mean(record['accuracy']):.3f}",
                           phase=phase)
      if pbar is not None:
        pbar.update(1)
      if epoch_end or step == total:
        epoch = math.ceil(step / steps_per_epoch)
        metrics_val = None
        if validate and (epoch % config.eval_every_epochs == 0 or step == total):
          # Validated (and kept as best) with exact statistics; training goes on with its own.
          val_state = _precise_bn(trainer, state, phase, train_src, train_pipe, config, bn_seed)
          acc = accuracy_report(*scores_of(trainer, val_state, val_src, val_pipe, config, phase))
          logger.write(step, {"split": "val", "epoch": epoch, "phase": phase, "top1": acc["top1"],
                              "top5": acc["top5"]})
          # The best model is one of the kind the run delivers: sparse for the generator.
          if phase == "finetune" or sp_cfg.warmup_steps == 0:
            metrics_val = {"top1": acc["top1"]}
        if epoch % config.checkpoint_every_epochs == 0 or step == total:
          meta = {"iterator": train_it.get_state(), "step": step, "epoch": epoch,
                  "phase": phase_at(step, sp_cfg)}
          save_checkpoint(mngr, state, step, meta)
          if best_mngr is not None and metrics_val is not None:
            save_checkpoint(best_mngr, val_state, step, meta, metrics_val)
  finally:
    if pbar is not None:
      pbar.close()
    train_it.close()
  train_time = time.time() - t_start

  # The final model: its test accuracy with the running (EMA) statistics, for the record, then
  # with the exact population statistics that the saved model carries.
  test_pipe = _pipeline(config, info, False)
  summary = ("top1", "top5", "mean_class_accuracy")
  ema = (accuracy_report(*scores_of(trainer, state, test_src, test_pipe, config))
         if config.precise_bn_batches else None)
  state = _precise_bn(trainer, state, "finetune", train_src, train_pipe, config, bn_seed)
  results = _final_evaluation(config, trainer, state, test_src, info, workdir)
  results["precise_bn_batches"] = int(config.precise_bn_batches)
  results["without_precise_bn"] = {k: (ema or results)[k] for k in summary}
  results["validation"] = val_note
  results["seeds"] = seeds
  if best_mngr is not None and best_mngr.best_step() is not None:
    best_step = best_mngr.best_step()
    if best_step == step:  # the final model itself (the same precise-BN batches): already tested
      acc = results
    else:
      best = best_mngr.restore(best_step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state(state)))).state
      acc = accuracy_report(*scores_of(trainer, best, test_src, test_pipe, config))
    val_top1 = [json.loads(line)["top1"] for line in open(os.path.join(workdir, "metrics.jsonl"))
                if '"split": "val"' in line and json.loads(line)["step"] == best_step]
    results["best_by_val"] = {"step": int(best_step), "epoch": best_step / steps_per_epoch,
                              "val_top1": val_top1[-1] if val_top1 else None,
                              **{k: acc[k] for k in summary}}
  results["train_time_s"] = train_time
  results["hardware"] = {"platform": jax.default_backend(), "device_count": jax.device_count(),
                         "device_kind": jax.devices()[0].device_kind,
                         "process_count": jax.process_count(), "cpu_count": os.cpu_count()}
  record = _sparsity_record(trainer, state)
  if "members" in record:  # joint ensemble: per-member counts, top level = dense size and sums
    for member, counts in zip(results["members"], record["members"]):
      member.update(counts)
    dense = record["members"][0]
    results.update(prunable_params=dense["prunable_params"], total_params=dense["total_params"],
                   prunable_nonzero=sum(m["prunable_nonzero"] for m in record["members"]),
                   nonzero_params=sum(m["nonzero_params"] for m in record["members"]))
  else:
    results.update(record)
  logger.write(step, {"split": "test", **{k: v for k, v in results.items()
                                          if isinstance(v, (int, float))}})
  logger.close()
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, "results.json"), results)
  mngr.close()
  if best_mngr is not None:
    best_mngr.close()
  return results


def _switch(trainer, state, step, train_src, train_pipe, config, bn_seed, logger, pbar):
  """The warm-up -> fine-tune switch, logged: per block the masked-out norm that the prune
  removes, and one fixed training batch's loss / accuracy just before and just after it."""
  batch = _bn_batches(train_src, train_pipe, config, bn_seed, 1)[0]
  before = _fixed_batch_metrics(trainer, state, batch, "warmup")
  norms = _switch_record(trainer, state)
  state = trainer.switch(state)
  after = _fixed_batch_metrics(trainer, state, batch, "finetune")
  state = _precise_bn(trainer, state, "finetune", train_src, train_pipe, config, bn_seed)
  logger.write(step, {"split": "switch", "phase": "finetune", **norms,
                      "before": before, "after": after, **_sparsity_record(trainer, state)})
  message = (f"switch at step {step}: masked-out norm {np.round(norms['masked_norm_total'], 4)}; "
             f"fixed batch loss {np.round(before['loss'], 3)} -> {np.round(after['loss'], 3)}, "
             f"accuracy {np.round(before['accuracy'], 3)} -> {np.round(after['accuracy'], 3)}")
  (pbar.write if pbar is not None else print)(message)
  return state


def _final_evaluation(config, trainer, state, test_src, info, workdir) -> dict:
  """The 10-clip test: scores.npz, the final masked model, and the accuracy report."""
  pipe = _pipeline(config, info, False)
  out = evaluate_source(trainer, state, test_src, pipe, eval_batch_size(config), config.seed)
  scores, labels = out["scores"], out["labels"]
  names = np.array([test_src[i]["frame_dir"] for i in range(len(test_src))])
  extra = {}
  if trainer.ensemble:
    member_scores, scores = scores, scores.sum(0)
    extra = {"member_scores": member_scores,
             "member_sparsities": np.array(trainer.sp_cfg.ensemble_sparsities, np.float32)}
  results = accuracy_report(scores, labels)
  if trainer.ensemble:
    results["members"] = [dict(sparsity=s, **{k: v for k, v in accuracy_report(m, labels).items()
                                              if k != "confusion_matrix"})
                          for s, m in zip(trainer.sp_cfg.ensemble_sparsities, member_scores)]
  if jax.process_index() == 0:
    tmp = os.path.join(workdir, "scores.tmp.npz")
    np.savez(tmp, scores=scores.astype(np.float32), labels=labels, index=np.arange(len(labels)),
             names=names, **extra)
    os.replace(tmp, os.path.join(workdir, "scores.npz"))
    # The final model(s) with the statistics they were tested with: model/, or one model
    # checkpoint per member of a joint ensemble (members/s<sparsity>/).
    spec = checkpoint.model_spec_json(
        config.backbone, info.num_classes, info.layout, trainer.model.backbone.in_channels,
        model_options(config), class_names=info.class_names,
        pipeline=dict(pipe.config.__dict__, channels=list(info.channels)))
    targets = ([os.path.join(workdir, "members", f"s{s:g}") for s in trainer.sp_cfg.ensemble_sparsities]
               if trainer.ensemble else [os.path.join(workdir, "model")])
    for target, member in zip(targets, trainer.members(state)):
      host = jax.device_get(member)
      variables = {"params": sparsity.apply_masks(host.params, host.masks),
                   "batch_stats": host.batch_stats}
      checkpoint.save_model(target, spec, variables, overwrite=True)
  return results
