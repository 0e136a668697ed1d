"""``train_and_evaluate(config, workdir)``: the training loop, for a ``RunConfig`` (``config.py``).

Data-parallel over every device with a 1-D mesh ``("data",)``: batches are sharded along it, the
train state is replicated, and one jitted, donated step runs the same code on one CPU or many
accelerators. BatchNorm statistics therefore cover the global batch, exactly as on one device.
On several processes (hosts; ``stgcn_jax.distributed``: ``experiments.run --coordinator_address``,
or ``loop.distributed`` on a cluster JAX detects) process ``p`` reads its block of every global
batch, so the run equals one process with all the devices; every process enters the steps and the
orbax saves and restores, process 0 alone writes the plain files, and the workdir is one folder
that every process sees.

Model selection never sees the test split: ``val`` is held out from the training data
(``data.val_fraction``, by performer where the names carry one, else stratified by class; or the
dataset's own ``val`` split) and validated every ``loop.eval_every_epochs``. BatchNorm statistics
are re-estimated exactly (``precise_bn``, ``loop.precise_bn_batches`` training batches) after the
warm-up -> fine-tune switch, before every validation and after training.

The workdir holds ``config.json``, ``metrics.jsonl``, ``checkpoints/`` (orbax: the train state,
the data-iterator position, the phase), ``best/`` (best by validation, when validation runs),
``model/`` (the final masked model, loadable by ``checkpoint.load_model``), ``results.json`` and
``scores.npz`` (clip-averaged softmax scores of the test split, for ``experiments.fuse``). A run
started again with the same workdir resumes from its latest checkpoint; on CPU the result is
bit-identical to an uninterrupted run. ``config.json`` and ``results.json`` record the dataset
(``data.identity``: path, sample counts, fingerprint), and a run on a workdir whose checkpoints were
trained or evaluated on another dataset of the same name is refused before anything is written.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stgcn_jax import checkpoint, data, distributed
from stgcn_jax.errors import Stopped
from stgcn_jax.training import results as results_lib
from stgcn_jax.training import setup
from stgcn_jax.training import switch as switch_lib
from stgcn_jax.training.config import RunConfig, TrainConfig
from stgcn_jax.training.context import RunContext, RunData
from stgcn_jax.scores import accuracy_report
from stgcn_jax.training.evaluate import member_top1, scores_of
from stgcn_jax.training.preemption import StopRequest
from stgcn_jax.training.runner import Runner, make_runner
from stgcn_jax.training.setup import run_seeds
from stgcn_jax.training.workdir import (MetricsLogger, RunError, check_dataset, checkpoint_manager,
                                        prepare_workdir, progress_bar, restore_newest_intact,
                                        save_checkpoint, trim_metrics, write_json)

__all__ = ["RunError", "train_and_evaluate", "run_seeds"]


def train_and_evaluate(config: RunConfig | Any, workdir: str) -> dict:
  """Trains, evaluates on the test split and writes the workdir; returns ``results.json``.

  ``config`` is a ``RunConfig`` or a nested ConfigDict / dict (``RunConfig.from_config``)."""
  t_start = time.time()
  if not isinstance(config, RunConfig):
    config = RunConfig.from_config(config)
  distributed.initialize(auto=config.loop.distributed)   # once; nothing on one process
  with distributed.guard():
    workdir = prepare_workdir(workdir, config)
    distributed.check_shared_dir(workdir)
    run, state = _start(config, workdir, t_start)
    try:
      state, step = _train(run, state)
    finally:
      run.data.train_it.close()
    return _finish(run, state, step, time.time() - t_start)


def _record(config: RunConfig, cfg: TrainConfig, **facts) -> dict:
  """``config.json``: the nested config with the run's steps per epoch, and the run's facts."""
  record = config.to_dict()
  record["optim"]["steps_per_epoch"] = cfg.steps_per_epoch
  return {**record, **facts}


def _start(config: RunConfig, workdir: str, t_start: float) -> tuple[RunContext, Any]:
  """The run's data, model, runner and state, resumed from the newest intact checkpoint."""
  data_dir, info = setup.dataset(config)
  store = data.identity(info)
  note = check_dataset(workdir, store)   # before anything is written
  if note and distributed.is_main():
    print(note)
  model = setup.build_model(config, info)
  train_src, val_src, val_note = setup.train_val_sources(config, info, data_dir)
  if config.sparsity.auto_tolerance >= 0 and val_src is None:
    raise RunError("--sparsity=auto chooses by validation top-1, and this run has no validation "
                   "split (config.data.val_fraction=0 and no val split); hold some training data "
                   "out with --config.data.val_fraction=0.1 or name one with "
                   "--config.data.val_split=SPLIT")
  seeds = run_seeds(config)
  batch_size = config.optim.batch_size
  per_process = batch_size // jax.process_count()
  if len(train_src) // jax.process_count() < per_process:
    raise RunError(f"the {config.data.train_split!r} split has {len(train_src)} training samples, "
                   f"fewer than one batch of {batch_size}; lower --batch_size")
  pipes = {"train": setup.pipeline(config, info, True),
           "val": setup.pipeline(config, info, False, num_clips=1),
           "test": setup.pipeline(config, info, False)}
  train_it = data.BatchIterator(train_src, pipes["train"], per_process, train=True,
                                seed=seeds["data"], repeat=config.data.train_repeat)
  cfg = config.train_config(train_it.steps_per_epoch)
  runner = make_runner(model, cfg, config.seed)
  sample_x = jnp.zeros((1, config.data.num_person, config.data.clip_len, info.num_joints,
                        model.backbone.in_channels), jnp.float32)
  state = runner.create_state(seeds, sample_x, setup.pretrained_variables(config, model))
  mngr = checkpoint_manager(os.path.join(workdir, "checkpoints"), config.loop.keep_checkpoints)
  restored = _restore(mngr, state, workdir)
  if distributed.is_main():
    write_json(os.path.join(workdir, "config.json"),
               _record(config, cfg, seeds=seeds, validation=val_note, data_store=store))
  validate = bool(config.loop.eval_every_epochs) and val_src is not None
  # best/ keeps one model: joint variants are compared member by member at the end instead.
  best_mngr = (checkpoint_manager(os.path.join(workdir, "best"), 1, best=True)
               if validate and config.sparsity.mode != "variants" else None)
  _recover_models(runner, workdir)
  # metrics.jsonl keeps what the restored step had written before its checkpoint, nothing after.
  trim_metrics(os.path.join(workdir, "metrics.jsonl"), restored[1] if restored else None)
  distributed.barrier("workdir prepared")   # process 0's files are in place for every process
  splits = RunData(info, {"train": train_src, "val": val_src,
                          "test": data.load(config.data.dataset, data_dir, config.data.test_split)},
                   pipes, train_it, val_note, bn_seed=seeds["data"] + 1)  # precise BN: own stream
  run = RunContext(config, cfg, runner, splits, workdir, seeds, mngr, best_mngr,
                   MetricsLogger(workdir, config.loop.tensorboard), t_start)
  if restored is not None:
    state = restored[0].state
    train_it.set_state(restored[0].meta["iterator"])
    if distributed.is_main():
      print(f"resumed from {workdir}/checkpoints at step {restored[1]}")
  return run, state


def _restore(mngr, state, workdir: str):
  """The newest intact checkpoint (``restore_newest_intact``), before config.json is written:
  checkpoints of another run, in a workdir without its config.json, are refused here and leave
  the workdir as it was (so the run they belong to is not refused afterwards as another run)."""
  try:
    return restore_newest_intact(mngr, state, workdir)
  except RunError as err:
    if os.path.exists(os.path.join(workdir, "config.json")):
      raise
    raise RunError(f"{err}; {workdir}/config.json is missing, so they may be the checkpoints of "
                   "another run (another backbone or model options)") from None


def _recover_models(runner: Runner, workdir: str) -> None:
  """Finishes or rolls back a save of the final model(s) that a kill interrupted."""
  if not distributed.is_main():
    return
  for target in runner.model_dirs(workdir):
    note = checkpoint.recover_model_swap(target)
    if note:
      print(f"note: {note}")


def _train(run: RunContext, state) -> tuple[Any, int]:
  """The loop: one jitted step a batch, the switch, logs, validation and checkpoints."""
  loop_cfg, cfg, runner = run.config.loop, run.cfg, run.runner
  step, total = runner.step_of(state), cfg.total_steps
  if step == 0:
    run.logger.write(0, {"split": "sparsity", "phase": cfg.phase_at(0),
                         **switch_lib.sparsity_record(runner, state)})
    print(f"validation: {run.data.val_note}")
  pbar = progress_bar(total, step, loop_cfg.progress_bar)
  clock = [time.time(), step]  # when and at which step the last train record was written
  try:
    with StopRequest() as stop:
      while step < total:
        phase = cfg.phase_at(step)
        if phase == "finetune" and step == cfg.warmup_steps and step > 0:
          state = switch_lib.switch(run, state, step, pbar)
        state, metrics = runner.steps[phase](state, runner.global_batch(next(run.data.train_it)))
        step += 1
        epoch_end = step % run.cfg.steps_per_epoch == 0
        if step % loop_cfg.log_every_steps == 0 or epoch_end or step == total:
          _log_train(run, step, phase, metrics, pbar, clock)
        if pbar is not None:
          pbar.update(1)
        if epoch_end or step == total:
          _end_of_epoch(run, state, step, phase)
        if step < total and stop.requested(step):
          _stop(run, state, step)
  finally:
    if pbar is not None:
      pbar.close()
  return state, step


def _stop(run: RunContext, state, step: int) -> None:
  """SIGTERM (``training.preemption``): saves the train state and the data position at ``step``
  (mid-epoch too), then stops the run with one line saying how to resume."""
  save_checkpoint(run.checkpoints, state, step, _checkpoint_meta(run, step))
  raise Stopped(f"SIGTERM at step {step} of {run.cfg.total_steps} (epoch "
                f"{step / run.cfg.steps_per_epoch:.2f}); the train state is saved in "
                f"{run.workdir}/checkpoints: run the same command to resume")


def _checkpoint_meta(run: RunContext, step: int) -> dict:
  """What a checkpoint keeps besides the state: the data position, step, epoch and phase."""
  return {"iterator": run.data.train_it.get_state(), "step": step,
          "epoch": math.ceil(step / run.cfg.steps_per_epoch), "phase": run.cfg.phase_at(step)}


def _log_train(run: RunContext, step: int, phase: str, metrics, pbar, clock: list) -> None:
  record = {k: np.asarray(v).tolist() for k, v in jax.device_get(metrics).items()}
  loss = np.asarray(record["loss"])
  if not np.all(np.isfinite(loss)):
    raise RunError(f"the loss became {loss.tolist()} at step {step} (epoch "
                   f"{step / run.cfg.steps_per_epoch:.2f}, phase {phase}); lower --learning_rate "
                   "or check the data for NaN/Inf")
  now = time.time()
  rate = (step - clock[1]) / max(now - clock[0], 1e-9)  # includes compiles and checkpoints
  clock[:] = [now, step]
  run.logger.write(step, {"split": "train", "epoch": step / run.cfg.steps_per_epoch, "phase": phase,
                          "elapsed_s": now - run.t_start, "steps_per_s": rate, **record})
  if pbar is not None:
    pbar.set_postfix(loss=f"{np.mean(loss):.3f}", acc=f"{np.mean(record['accuracy']):.3f}",
                     phase=phase)


def _end_of_epoch(run: RunContext, state, step: int, phase: str) -> None:
  """Validation (with exact BN statistics, on a copy) and the checkpoints of an epoch's end."""
  config, total = run.config, run.cfg.total_steps
  epoch = math.ceil(step / run.cfg.steps_per_epoch)
  metrics_val = val_state = None
  if run.data.sources["val"] is not None and config.loop.eval_every_epochs and (
      epoch % config.loop.eval_every_epochs == 0 or step == total):
    val_state = switch_lib.precise_bn_state(run, state, phase)
    if config.sparsity.mode == "variants":
      top1, members = member_top1(run.runner, val_state, run.data.sources["val"],
                                  run.data.pipes["val"], config, phase)
      run.logger.write(step, {"split": "val", "epoch": epoch, "phase": phase, "top1": top1,
                              "members_top1": members})
    else:
      acc = accuracy_report(*scores_of(run.runner, val_state, run.data.sources["val"],
                                       run.data.pipes["val"], config, phase))
      run.logger.write(step, {"split": "val", "epoch": epoch, "phase": phase,
                              "top1": acc["top1"], "top5": acc["top5"]})
      # The best model is one of the kind the run delivers: sparse for the generator.
      if phase == "finetune" or run.cfg.warmup_steps == 0:
        metrics_val = {"top1": acc["top1"]}
  if epoch % config.loop.checkpoint_every_epochs == 0 or step == total:
    meta = _checkpoint_meta(run, step)
    save_checkpoint(run.checkpoints, state, step, meta)
    if run.best_checkpoints is not None and metrics_val is not None:
      save_checkpoint(run.best_checkpoints, val_state, step, meta, metrics_val)


def _finish(run: RunContext, state, step: int, train_time: float) -> dict:
  """The final model's test (with running and with exact BN statistics), results.json."""
  config, runner, test_src = run.config, run.runner, run.data.sources["test"]
  running = state   # with the running BN averages
  state = switch_lib.precise_bn_state(run, state, "finetune")
  member_val = None
  if config.sparsity.mode == "variants" and run.data.sources["val"] is not None:
    member_val = member_top1(runner, state, run.data.sources["val"], run.data.pipes["val"],
                             config)[1]
  results = results_lib.final_evaluation(run, state, member_val)
  ema = (accuracy_report(*scores_of(runner, running, test_src, run.data.pipes["test"], config,
                                    member=results.get("auto_sparsity", {}).get("index")))
         if config.loop.precise_bn_batches else None)
  results["precise_bn_batches"] = int(config.loop.precise_bn_batches)
  results["without_precise_bn"] = {k: (ema or results)[k] for k in results_lib.SUMMARY}
  results["validation"] = run.data.val_note
  results["seeds"] = run.seeds
  results["data_store"] = data.identity(run.data.info)   # what fusion and a re-evaluation check
  best = results_lib.best_by_validation(run, state, step, results)
  if best is not None:
    results["best_by_val"] = best
  results["train_time_s"] = train_time
  results["hardware"] = results_lib.hardware()
  results_lib.add_counts(results, runner, state)
  run.logger.write(step, {"split": "test", **{k: v for k, v in results.items()
                                              if isinstance(v, (int, float))}})
  run.logger.close()
  if jax.process_index() == 0:
    write_json(os.path.join(run.workdir, "results.json"), results)
  run.checkpoints.close()
  if run.best_checkpoints is not None:
    run.best_checkpoints.close()
  distributed.barrier("run finished")   # results.json is written before any process leaves
  return results
