"""pyskl's own model trained on exactly the batches of an ``experiments.run`` command: the control
that tells the port's training apart from the recipe's seed spread.

  python -m experiments.pyskl_twin --torch_python=TORCH_PY --pyskl_src=PYSKL \\
      --config=experiments/configs/default.py:nw_ucla_cpu --backbone=ctrgcn --mode=dense --seed=1 \\
      --workdir=runs/pyskl_twin/ctrgcn_seed1

Takes the flags of ``experiments.run`` (a dense run only: pyskl has no sparse generator) and
builds what that run would train on with this project's data pipeline: its training batches in
their order (the data seed ``run_seeds`` derives from ``--seed``, so twin and run see the same
clips, augmentations and order), the learning rate of each step from the run's schedule, and the
test clips. They are written to ``WORKDIR/stream`` (about 380 MB for the NW-UCLA protocol) and
``experiments/pyskl_twin_torch.py`` trains pyskl's backbone (imported from ``--pyskl_src`` as
``experiments.bench`` does) on them under ``--torch_python`` with torch's SGD, then tests the
final model. Only the model's implementation and initialisation differ from the JAX run; comparing
twins of several seeds with the runs of those seeds says whether a gap to a pyskl figure is the
port's or the seed's. ``WORKDIR/results.json`` gets the test figures with the seeds and commands; a
stopped twin started again resumes from its last epoch. ``--stream_only`` writes the stream and
stops (no torch needed).

Like ``experiments.bench``, the torch python and pyskl checkout come from the flags or from
``$STGCN_JAX_TORCH_PYTHON`` / ``$STGCN_JAX_PYSKL_SRC``. The torch side runs on ``--threads`` CPU
threads (default 1; pin the whole command with ``taskset -c N`` to choose the core).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np
from absl import flags

from experiments import bench_pyskl, bench_timing, bench_vs_pyskl, run as run_cli
from stgcn_jax import cli, runtime
from stgcn_jax.atomic import atomic_open, atomic_path

TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyskl_twin_torch.py")
_BLOCK_LIST = ("base_channels", "num_stages", "inflate_stages", "down_stages")
# Options the twin carries over (the block list) or that do not change the model's function.
_CARRIED_OPTIONS = {*_BLOCK_LIST, "ch_ratio", "num_person", "temporal_conv"}


def define_flags(fv: flags.FlagValues, argv) -> None:
  run_cli.define_flags(fv, argv)
  flags.DEFINE_string("torch_python", None, "python with torch (default $STGCN_JAX_TORCH_PYTHON)",
                      flag_values=fv)
  flags.DEFINE_string("pyskl_src", None, "pyskl source checkout (default $STGCN_JAX_PYSKL_SRC)",
                      flag_values=fv)
  flags.DEFINE_integer("threads", 1, "torch threads of the pyskl side", flag_values=fv)
  flags.DEFINE_bool("stream_only", False, "write the stream and stop", flag_values=fv)


def model_options(config, in_channels: int) -> dict:
  """The run's backbone in pyskl's constructor spelling; what pyskl's config would not build the
  same is refused."""
  opts = dict(config.model.options)
  out = {name: (list(opts[name]) if isinstance(opts[name], (list, tuple)) else opts[name])
         for name in _BLOCK_LIST if name in opts}
  if opts.get("ch_ratio", 2) != 2:
    raise cli.UsageError(f"ch_ratio={opts['ch_ratio']}: the twin builds pyskl's configs "
                         "(ch_ratio 2)")
  if in_channels != 3:
    out["in_channels"] = in_channels
  return out


def _check(config) -> None:
  if config.sparsity.mode != "dense":
    raise cli.UsageError(f"mode {config.sparsity.mode!r}: the twin trains dense models only "
                         "(pyskl has no sparse generator); pass --mode=dense or --sparsity=0")
  if config.model.pretrained:
    raise cli.UsageError("--pretrained: the twin trains from pyskl's own initialisation")
  if config.model.backbone not in ("stgcn", "aagcn", "ctrgcn", "dgstgcn"):
    raise cli.UsageError(f"backbone {config.model.backbone!r} has no pyskl twin")


def _layout_spec(layout) -> dict | None:
  """``layout`` as ``bench_pyskl`` adds it to pyskl's graph; None for one of pyskl's own."""
  if layout.name in bench_pyskl.PYSKL_LAYOUTS:
    return None
  return {"name": layout.name, "num_node": layout.num_joints,
          "inward": [list(e) for e in layout.inward], "center": layout.center}


def write_stream(config, stream_dir: str, torch_seed: int) -> dict:
  """The run's training batches, learning rates and test clips under ``stream_dir``; its
  ``meta.json`` (written last: a stream without it is incomplete and rebuilt)."""
  # pylint: disable=import-outside-toplevel
  from stgcn_jax import data
  from stgcn_jax.training import evaluate, optim, setup
  meta_path = os.path.join(stream_dir, "meta.json")
  # What the stream depends on: the data, model and optimizer parts and the seed (not the loop's
  # logging or checkpoint settings).
  recipe = json.loads(json.dumps({k: v for k, v in config.to_dict().items()
                                  if k in ("seed", "data", "model", "optim", "sparsity")}))
  if os.path.isfile(meta_path):
    with open(meta_path) as f:
      meta = json.load(f)
    if meta.get("recipe") != recipe:
      changed = sorted(k for k in recipe if meta.get("recipe", {}).get(k) != recipe[k])
      raise cli.UsageError(f"{stream_dir} holds the stream of another command (it differs in "
                           f"{', '.join(changed) or 'its recipe'}): choose another --workdir")
    return meta
  os.makedirs(stream_dir, exist_ok=True)
  data_dir, info = setup.dataset(config)
  train_src, _, _ = setup.train_val_sources(config, info, data_dir)
  seeds = setup.run_seeds(config)
  train_it = data.BatchIterator(train_src, setup.pipeline(config, info, True),
                                config.optim.batch_size, train=True, seed=seeds["data"],
                                repeat=config.data.train_repeat, shard=(0, 1))
  cfg = config.train_config(train_it.steps_per_epoch)
  total = cfg.optim.total_steps
  schedule = optim.make_schedule(cfg.optim)
  lrs = [float(schedule(step)) for step in range(total)]
  first = next(train_it)
  x_path, y_path = (os.path.join(stream_dir, f"train_{k}.npy") for k in "xy")
  with atomic_path(x_path) as tmp:
    xs = np.lib.format.open_memmap(tmp, "w+", np.float32, (total, *first["x"].shape))
    ys = np.zeros((total, len(first["label"])), np.int32)
    xs[0], ys[0] = first["x"], first["label"]
    for step in range(1, total):
      batch = next(train_it)
      xs[step], ys[step] = batch["x"], batch["label"]
    xs.flush()
    del xs
  train_it.close()
  with atomic_open(y_path, "wb") as f:
    np.save(f, ys)
  test_src = data.load(config.data.dataset, data_dir, config.data.test_split)
  it = data.BatchIterator(test_src, setup.pipeline(config, info, False),
                          evaluate.eval_batch_size(config), train=False, seed=config.seed,
                          num_epochs=1, shard=(0, 1))
  test_x = np.zeros((len(test_src), *first["x"].shape[1:]), np.float32)
  test_x = test_x[:, None].repeat(config.data.num_clips_test, 1)
  test_y = np.zeros(len(test_src), np.int32)
  for batch in it:
    keep = batch["mask"]
    test_x[batch["index"][keep]] = batch["x"][keep]
    test_y[batch["index"][keep]] = batch["label"][keep]
  it.close()
  for name, array in (("test_x", test_x), ("test_y", test_y)):
    with atomic_open(os.path.join(stream_dir, f"{name}.npy"), "wb") as f:
      np.save(f, array)
  in_channels = info.num_channels * len(config.data.modality.split(","))
  meta = {"backbone": config.model.backbone, "num_classes": info.num_classes,
          "layout": info.layout.name, "layout_spec": _layout_spec(info.layout),
          "persons": config.data.num_person, "frames": config.data.clip_len,
          "model_options": model_options(config, in_channels),
          "steps_per_epoch": cfg.optim.steps_per_epoch, "num_epochs": cfg.optim.num_epochs,
          "lrs": lrs, "momentum": cfg.optim.momentum, "nesterov": cfg.optim.nesterov,
          "weight_decay": cfg.optim.weight_decay, "eval_batch": evaluate.eval_batch_size(config),
          "seeds": seeds, "torch_seed": torch_seed, "train_shape": list(first["x"].shape),
          "num_test": len(test_src), "recipe": recipe}
  with atomic_open(meta_path) as f:
    json.dump(meta, f, indent=1)
  return meta


def _commit() -> str | None:
  try:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(TORCH_SCRIPT),
                          capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  fv = cli.parse(lambda fv: define_flags(fv, argv), argv, doc=__doc__)
  runtime.configure_xla()
  config = run_cli._config(fv)  # pylint: disable=protected-access
  _check(config)
  changed = sorted(set(json.loads(fv.config.model.options or "{}")) - _CARRIED_OPTIONS)
  if changed:
    raise cli.UsageError(f"--config.model.options: {', '.join(changed)}: the twin builds pyskl's "
                         "own config of the backbone, which these options would change")
  side = None
  if not fv.stream_only:
    side = bench_vs_pyskl.resolve(fv.torch_python, fv.pyskl_src)
    if isinstance(side, str):
      raise cli.UsageError(f"the pyskl side is not available: {side}")
  if not fv.workdir:
    raise cli.UsageError("--workdir is required")
  workdir = os.path.abspath(fv.workdir)
  commit = _commit()            # the code that runs, before anything can change the checkout
  t0 = time.time()
  meta = write_stream(config, os.path.join(workdir, "stream"), torch_seed=int(config.seed))
  print(f"stream: {len(meta['lrs'])} batches of {meta['train_shape']}, {meta['num_test']} test "
        f"clips in {os.path.join(workdir, 'stream')} ({time.time() - t0:.0f} s)", flush=True)
  if side is None:
    return 0
  cmd = [side.python, TORCH_SCRIPT, f"--stream={os.path.join(workdir, 'stream')}",
         f"--pyskl_src={side.src}", f"--out={os.path.join(workdir, 'torch')}",
         f"--threads={fv.threads}"]
  t1 = time.time()
  proc = subprocess.run(cmd, env=bench_vs_pyskl.child_env(), check=False)
  if proc.returncode != 0:
    raise cli.UsageError(f"the pyskl side stopped with exit status {proc.returncode} "
                         f"(its command: {shlex.join(cmd)})")
  with open(os.path.join(workdir, "torch", "results.json")) as f:
    torch_results = json.load(f)
  results = {"kind": "pyskl_twin", "backbone": meta["backbone"], "seed": int(config.seed),
             "seeds": meta["seeds"], "torch_seed": meta["torch_seed"],
             "test": {k: torch_results[k] for k in ("top1", "top5", "mean_class_accuracy",
                                                     "num_samples")},
             "pyskl_side": {k: torch_results[k] for k in ("torch", "pyskl_version", "threads",
                                                          "num_params", "allocator",
                                                          "train_time_s")},
             "command": shlex.join(["python", "-m", "experiments.pyskl_twin", *argv]),
             "commit": commit, "cpu": bench_timing.cpu_model(),
             "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
             "wall_s_this_launch": time.time() - t1}
  with atomic_open(os.path.join(workdir, "results.json")) as f:
    json.dump(results, f, indent=1)
  print(f"pyskl twin test top-1 {results['test']['top1']:.4f}  top-5 {results['test']['top5']:.4f}"
        f"  mean class {results['test']['mean_class_accuracy']:.4f}")
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
