"""The workdir of a run: its checks, atomic writes, metrics log, checkpoints and safe resumption.

A workdir holds ``config.json``, ``metrics.jsonl``, ``checkpoints/`` (orbax: the train state, the
data-iterator position, the phase), ``best/``, ``model/`` (or ``members/`` for a joint ensemble),
``results.json`` and ``scores.npz``. A run refuses a workdir whose ``config.json`` shows another run,
resumes from the newest checkpoint that restores, and never logs a replayed step twice.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import os
import sys
import time

import jax
import orbax.checkpoint as ocp

from stgcn_jax import atomic, distributed, models
from stgcn_jax.errors import UserError
from stgcn_jax.training.config import config_field, migrate_record, model_options
from stgcn_jax.training.state import abstract_state

__all__ = ["RunError", "MetricsLogger", "progress_bar", "write_json", "prepare_workdir",
           "restore_newest_intact", "trim_metrics", "checkpoint_manager", "save_checkpoint",
           "check_dataset", "has_checkpoints"]


class RunError(UserError):
  """A user mistake or a failed run, reported as one clear line by ``experiments.run``."""


class MetricsLogger:
  """JSON-lines metrics (``metrics.jsonl``) and, optionally, TensorBoard via tensorboardX."""

  def __init__(self, workdir: str, tensorboard: bool):
    main = distributed.is_main()
    self._file = open(os.path.join(workdir, "metrics.jsonl"), "a") if main else None
    self._tb = None
    if tensorboard and self._file is not None:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      except ImportError as err:
        raise RunError("config.loop.tensorboard=True needs tensorboardX (pip install "
                       "tensorboardX)") from err
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, record: dict) -> None:
    if self._file is None:
      return
    self._file.write(json.dumps({"step": int(step), **record}) + "\n")
    self._file.flush()
    if self._tb is not None:
      for key, value in record.items():
        if isinstance(value, (int, float)):
          self._tb.add_scalar(f"{record.get('split', 'train')}/{key}", value, step)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()


def progress_bar(total: int, initial: int, enabled: bool):
  if not enabled or jax.process_index() != 0:
    return None
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


# The config fields that say which run a workdir holds: a run that differs in one of them cannot
# resume from the workdir's checkpoints (the rest, e.g. the epoch count, may change on a resume).
_RUN_IDENTITY = ("data.dataset", "model.backbone", "model", "data.modality", "sparsity.mode",
                 "sparsity.level", "sparsity.ensemble_sparsities", "sparsity.variants",
                 "sparsity.mask_method", "seed", "model.pretrained")
# What a run writes to metrics.jsonl at its checkpoint step after saving the checkpoint there.
_AFTER_CHECKPOINT = ("switch", "test")


def write_json(path: str, obj) -> None:
  """Writes ``obj`` as JSON under a temporary name, then renames it: never a half-written file."""
  with atomic.atomic_open(path) as f:
    json.dump(obj, f, indent=2, default=str)


def prepare_workdir(workdir: str, config) -> str:
  """The absolute workdir, created; refuses, before anything is written, a path that is a file
  and a workdir whose checkpoints belong to another run (told by its own ``config.json``)."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise RunError(f"--workdir {workdir} is a file; expected a directory (new, or an earlier "
                   "run's to resume)")
  config_path = os.path.join(workdir, "config.json")
  if has_checkpoints(workdir) and os.path.exists(config_path):
    try:
      with open(config_path) as f:
        old = json.load(f)
      if not isinstance(old, dict):
        raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
      raise RunError(f"{config_path} is unreadable ({err}), so it is unknown which run the "
                     f"checkpoints in {workdir} belong to; repair it, or choose another "
                     "--workdir") from None
    old, new = _identity(old), _identity(config.to_dict())
    differ = [k for k in _RUN_IDENTITY if k in old and k in new and old[k] != new[k]]
    if "model.backbone" in differ and "model" in differ:  # its options differ too: say the cause
      differ.remove("model")
    diffs = [f"{k}={old[k]!r} there, {new[k]!r} here" for k in differ if k != "model"]
    if "model" in differ:  # name the options that differ, not the whole option trees
      diffs += _option_diffs(old["model"], new["model"])
    if diffs:
      raise RunError(f"--workdir {workdir} holds another run ({'; '.join(diffs)}), whose "
                     "checkpoints cannot resume this one; choose another --workdir, or remove it "
                     "to start over")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as err:
    raise RunError(f"--workdir {workdir} cannot be created ({err.strerror or err})") from None
  return workdir


def has_checkpoints(workdir: str) -> bool:
  """Whether ``workdir/checkpoints`` holds a step a run would resume from."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  return os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir))


def _recorded_store(path: str) -> dict | None:
  """The ``data_store`` that ``path`` (config.json / results.json) records, if it can be read."""
  try:
    with open(path, "rb") as f:
      store = json.loads(f.read().decode("utf-8")).get("data_store")
  except (OSError, ValueError, AttributeError, RecursionError):
    return None  # unreadable: config.json is refused by prepare_workdir, results.json rewritten
  return store if isinstance(store, dict) and isinstance(store.get("fingerprint"), str) else None


def _describe_store(store: dict) -> str:
  counts = store.get("num_samples")
  counts = (", ".join(f"{k} {v}" for k, v in counts.items()) if isinstance(counts, dict)
            else "? samples")
  return (f"{store.get('dataset')!r} at {store.get('path')} ({counts}; fingerprint "
          f"{store['fingerprint'][:12]})")


def check_dataset(workdir: str, store: dict) -> str | None:
  """Refuses, before anything is written, to resume or re-evaluate a run on another dataset than
  the one its ``results.json`` / ``config.json`` record (``data.identity``: a same-name dataset in
  another ``--data_dir``, or one converted again). The same data at another path is accepted; the
  returned note says so. A workdir without checkpoints starts afresh: nothing to compare."""
  if not has_checkpoints(workdir):
    return None
  for name, what in (("results.json", "evaluated"), ("config.json", "trained")):
    old = _recorded_store(os.path.join(workdir, name))
    if old is None:
      continue
    if old["fingerprint"] != store["fingerprint"]:
      raise RunError(f"--workdir {workdir} was {what} on dataset {_describe_store(old)}, but this "
                     f"run reads another dataset of that name: {_describe_store(store)}; pass the "
                     "--data_dir that run used, or choose another --workdir")
    if old.get("path") != store["path"]:
      return (f"note: dataset {store['dataset']!r} is now read from {store['path']} (the run used "
              f"{old.get('path')}; the same data by its fingerprint)")
  return None


def _identity(record: dict) -> dict:
  """The identity fields (``_RUN_IDENTITY``, dotted paths) of a ``config.json`` as JSON values, of
  either spelling (``migrate_record``); ``model`` as the backbone's full options (so that an older
  ``config.json``, with only the block list and a JSON string of the rest, compares equal to the
  same run's)."""
  nested = migrate_record(record)
  out = {path: config_field(nested, path, _MISSING) for path in _RUN_IDENTITY}
  out = {path: value for path, value in out.items() if value is not _MISSING}
  try:
    out["model"] = json.loads(json.dumps(models.options_json(model_options(nested["model"]))))
  except (TypeError, ValueError, KeyError):
    pass  # options this version cannot read: compared as written
  return out


_MISSING = object()


def _option_diffs(old, new) -> list[str]:
  """``"gcn_attention=False there, True here"`` for every backbone option that differs."""
  if not (isinstance(old, dict) and isinstance(new, dict)):
    return [f"model={old!r} there, {new!r} here"]
  flat = lambda options: {f"{k}_{f}" if isinstance(v, dict) else k: w
                          for k, v in options.items()
                          for f, w in (v.items() if isinstance(v, dict) else [(None, v)])}
  old, new = flat(old), flat(new)
  return [f"model option {k}={old.get(k)!r} there, {new.get(k)!r} here"
          for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _damaged_file(step_dir: str) -> str | None:
  """The first of a checkpoint's JSON metadata files that does not parse, if any."""
  for root, _, files in sorted(os.walk(step_dir)):
    for name in sorted(files):
      if name in ("_METADATA", "_CHECKPOINT_METADATA", "metadata", "_sharding"):
        path = os.path.join(root, name)
        try:
          with open(path) as f:
            json.load(f)
        except (OSError, ValueError):
          return path
  return None


def restore_newest_intact(mngr, state, workdir: str, *, move_damaged: bool = True):
  """``(restored, step)`` of the newest checkpoint that restores, or ``None`` when there is none.

  A checkpoint that fails to restore (a truncated chunk, a damaged metadata file) is reported in one
  line naming it and the reason; when an older one restores, the damaged ones are moved to
  ``<workdir>/damaged_checkpoints/`` (so the run writes those steps afresh; ``move_damaged=False``
  for a reader that must leave the workdir as it is) and training resumes from it. When none
  restores, nothing is moved and the run stops with the reasons. On several processes a checkpoint
  counts as restored when it restores on every one of them.
  """
  args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state(state)),
                            meta=ocp.args.JsonRestore())
  failures = []
  for step in sorted(mngr.all_steps(), reverse=True):
    step_dir = os.path.join(mngr.directory, str(step))
    restored, err = _quiet_restore(mngr, step, args)
    if not distributed.all_agree(err is None):
      damaged = _damaged_file(step_dir)
      where = (f"{damaged} is truncated or not valid JSON" if damaged
               else _root_cause(err) if err is not None else "another process cannot restore it")
      failures.append((step_dir, f"step {step}: {where}"))
      if err is not None or distributed.is_main():
        print(f"warning: checkpoint {step_dir} cannot be restored ({where}); trying an older one",
              file=sys.stderr)
      continue
    if failures and move_damaged:
      if distributed.is_main():
        aside = os.path.join(workdir, "damaged_checkpoints")
        os.makedirs(aside, exist_ok=True)
        for path, _ in failures:
          os.replace(path, os.path.join(aside, f"{os.path.basename(path)}-{int(time.time())}"))
        print(f"moved the damaged checkpoint(s) to {aside}", file=sys.stderr)
      distributed.barrier("damaged checkpoints moved")
      mngr.reload()
    return restored, step
  if failures:
    raise RunError(f"no checkpoint in {mngr.directory} restores ("
                   f"{'; '.join(f for _, f in failures)}); move that folder away to train from "
                   "the beginning")
  return None


def _quiet_restore(mngr, step: int, args):
  """``(restored, None)``, or ``(None, error)`` without the noise of a damaged checkpoint.

  When an array cannot be read, orbax's reader tasks and tensorstore's callback threads each print
  a traceback (hundreds of lines) as they fail, are collected, or find their event loop closed;
  the caller reports the failure in one line instead.
  """
  noise = io.StringIO()
  with contextlib.redirect_stderr(noise):
    try:
      restored = mngr.restore(step, args=args)
    except Exception as err:  # pylint: disable=broad-except  (orbax raises bare Exception)
      with _muted_teardown():
        for _ in range(3):  # let the failed reads finish and be collected while muted
          gc.collect()
          time.sleep(0.3)
      return None, err
  sys.stderr.write(noise.getvalue())  # a good restore's warnings, if any, are the user's
  return restored, None


@contextlib.contextmanager
def _muted_teardown():
  """Within: the asyncio logger at CRITICAL and unraisable exceptions dropped (the failed reads'
  tracebacks); both are restored on the way out, so nothing stays muted after a failed restore."""
  asyncio_logger = logging.getLogger("asyncio")
  level, hook = asyncio_logger.level, sys.unraisablehook
  asyncio_logger.setLevel(logging.CRITICAL)
  sys.unraisablehook = lambda unraisable: None
  try:
    yield
  finally:
    sys.unraisablehook = hook
    asyncio_logger.setLevel(level)


def _root_cause(err: BaseException) -> str:
  """The innermost cause's first line (orbax wraps tensorstore's precise message twice)."""
  while err.__cause__ is not None:
    err = err.__cause__
  line = next((l for l in str(err).splitlines() if l.strip()), type(err).__name__)
  return line if len(line) < 300 else line[:300] + " ..."


def trim_metrics(path: str, step: int | None) -> None:
  """Drops the rows a resumed run will write again: after ``step`` (and, at ``step``, what was
  written after its checkpoint); every row when the run starts afresh (``step`` None)."""
  if not os.path.exists(path) or jax.process_index() != 0:
    return
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      row = json.loads(line)
      row_step = int(row["step"])
    except (ValueError, KeyError, TypeError):
      continue  # a line cut short by a kill
    if step is not None and (row_step < step or (row_step == step and
                                                 row.get("split") not in _AFTER_CHECKPOINT)):
      kept.append(line if line.endswith("\n") else line + "\n")
  if len(kept) != len(lines):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, path)


def checkpoint_manager(path: str, keep: int, best: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=False,
      best_fn=(lambda m: m["top1"]) if best else None, best_mode="max",
      keep_checkpoints_without_metrics=not best)
  return ocp.CheckpointManager(path, options=options)


def save_checkpoint(mngr, state, step: int, meta: dict, metrics: dict | None = None) -> None:
  if step in mngr.all_steps():
    return
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave(meta)), metrics=metrics)
  mngr.wait_until_finished()
