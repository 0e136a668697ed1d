"""Train and evaluate one model: ``python -m experiments.run --backbone=ctrgcn --sparsity=0.95``.

With no other flag this trains a reduced CTR-GCN on the built-in synthetic dataset (generated on
first use, no download) with the sparse generator at 95% sparsity, evaluates it with the 10-clip test
and writes ``results.json`` and ``scores.npz`` to the workdir. The shortcut flags below set fields of
``experiments/configs/default.py``; ``--config=experiments/configs/default.py:ntu60_xsub`` picks a
variant and ``--config.FIELD=VALUE`` overrides any field. Running again with the same ``--workdir``
resumes.

On several processes (hosts) every process runs the same command with ``--coordinator_address``
(process 0's HOST:PORT), ``--num_processes`` and its own ``--process_id`` (README, "Several hosts").
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from stgcn_jax import runtime

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "default.py"),
    "Config file (optionally FILE:VARIANT); fields can be overridden with --config.FIELD=VALUE.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default runs/<run name>).")

# Shortcuts for the fields users change most (None = keep the config's value).
_SHORTCUTS = {
    "backbone": (flags.DEFINE_string, "stgcn, aagcn, ctrgcn or dgstgcn"),
    "sparsity": (flags.DEFINE_float, "fraction of prunable weights removed, in [0, 1); 0 = dense"),
    "mode": (flags.DEFINE_string, "generator (default), dense, lth (with --pretrained) or ensemble"),
    "mask_method": (flags.DEFINE_string, "uniform, erk, global, per_block or predefined"),
    "mask_path": (flags.DEFINE_string, "mask file for mask_method=predefined"),
    "warmup_epochs": (flags.DEFINE_integer, "dense warm-up epochs (0 = no warm-up)"),
    "penalty_lambda": (flags.DEFINE_float, "group-lasso weight (0 = no penalty)"),
    "lambda_schedule": (flags.DEFINE_string, "constant or ramp"),
    "modality": (flags.DEFINE_string, "j, b, jm or bm"),
    "dataset": (flags.DEFINE_string, "synthetic, nw_ucla, ntu60_xsub, ... (a converted dataset)"),
    "data_dir": (flags.DEFINE_string, "where converted datasets live"),
    "epochs": (flags.DEFINE_integer, "number of epochs (config.num_epochs)"),
    "batch_size": (flags.DEFINE_integer, "global batch size"),
    "learning_rate": (flags.DEFINE_float, "learning rate for batch 128 (scaled linearly)"),
    "seed": (flags.DEFINE_integer, "random seed (init, masks, data order)"),
    "pretrained": (flags.DEFINE_string, "model checkpoint dir (python -m experiments.convert)"),
}
_FLAGS = {name: define(name, None, help_) for name, (define, help_) in _SHORTCUTS.items()}
# Several processes (stgcn_jax.distributed; each also read from $STGCN_JAX_<NAME>).
_LAUNCH = {
    "coordinator_address": flags.DEFINE_string(
        "coordinator_address", None, "HOST:PORT of process 0, for a run on several processes"),
    "num_processes": flags.DEFINE_integer("num_processes", None, "number of processes"),
    "process_id": flags.DEFINE_integer("process_id", None, "this process's id, 0 .. N-1"),
    "init_timeout": flags.DEFINE_integer(
        "init_timeout", None, "seconds to wait for every process to start (default 300)"),
    "peer_timeout": flags.DEFINE_integer(
        "peer_timeout", None, "seconds after which a silent process counts as dead (default 60)"),
}
_FIELD = {"epochs": "num_epochs"}


def _config():
  """The typed run config: the config file's fields, the shortcut flags over them, and the run
  policy (``stgcn_jax.training.config``: sparsity 0 is a dense run, a warm-up longer than a short
  run is rescaled) applied once."""
  from stgcn_jax.training.config import RunConfig  # pylint: disable=import-outside-toplevel
  flat = _CONFIG.value.to_dict()
  explicit = set()
  for name, flag in _FLAGS.items():
    if flag.value is not None:
      flat[_FIELD.get(name, name)] = flag.value
      explicit.add(_FIELD.get(name, name))
  return RunConfig.from_flat(flat, explicit=explicit)


def _run_name(config) -> str:
  parts = [config.data.dataset, config.model.backbone, config.sparsity.mode]
  if config.sparsity.mode != "dense":
    parts.append(f"s{config.sparsity.sparsity:g}")
  if config.data.modality != "j":
    parts.append(config.data.modality.replace(",", "+"))
  return "_".join(parts)


def _join(distributed, config) -> None:
  """Joins the other processes of a multi-process run (before any JAX computation); on all
  but process 0 the run's messages are then not printed again."""
  launch = distributed.Launch.resolve(**{name: flag.value for name, flag in _LAUNCH.items()})
  distributed.initialize(launch, auto=config.loop.distributed)
  if not distributed.is_main():
    sys.stdout = open(os.devnull, "w")  # pylint: disable=consider-using-with


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runtime.configure_xla()
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  # pylint: disable-next=import-outside-toplevel
  from stgcn_jax import checkpoint, data, distributed, graph
  from stgcn_jax.training import loop  # pylint: disable=import-outside-toplevel
  user_errors = (loop.RunError, checkpoint.CheckpointError, data.DataError, graph.LayoutError,
                 ValueError, FileNotFoundError)
  try:
    config = _config()
    _join(distributed, config)
    workdir = _WORKDIR.value or os.path.join("runs", _run_name(config))
    print(f"workdir: {os.path.abspath(workdir)}")
    results = loop.train_and_evaluate(config, workdir)
  except user_errors as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
  print(f"test top-1 {results['top1']:.4f}  top-5 {results['top5']:.4f}  mean class "
        f"{results['mean_class_accuracy']:.4f}  on {results['num_samples']} samples "
        f"({results['num_classes']} classes)")
  if "prunable_sparsity" in results:
    print(f"realised sparsity: {results['prunable_sparsity']:.4f} of prunable weights, "
          f"{results['total_sparsity']:.4f} of all; {results['nonzero_params']:,} nonzero "
          "parameters")
  print(f"wrote {os.path.join(workdir, 'results.json')}")


if __name__ == "__main__":
  runtime.reexec_with_tcmalloc("experiments.run", sys.argv[1:])  # see stgcn_jax.runtime
  app.run(main)
