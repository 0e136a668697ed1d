"""Throughput of the four backbones, side by side with pyskl's (PyTorch) own models.

  python -m experiments.bench [--backbones=stgcn,aagcn,ctrgcn,dgstgcn] [--shape=ntu|nw-ucla]
                              [--threads=N] [--batch=16] [--steps=3] [--rounds=1]
                              [--dtype=float32]
                              [--torch_python=PY --pyskl_src=DIR] [--json=bench.json] [--tiny]
  python -m experiments.bench --deploy [--backbones=...] [--deploy_sparsities=0,0.8,0.95,0.99]

For each backbone, at the shape of ``--shape`` (``ntu``, the default: batch 16, M=2, T=100, V=25,
C=3, 60 classes; ``nw-ucla``: batch 16, M=1, T=52, the 20-joint nw-ucla layout, 10 classes; the
flags ``--batch --persons --frames --layout --classes`` override single fields), float32:
  * the real sparse fine-tune train step (``stgcn_jax.training.make_train_step``, generator mode,
    80 % sparsity), jitted with the state donated, and the eval step, in samples/s: median of
    ``--steps`` timed steps after one untimed step, ``block_until_ready`` on every step (with
    ``--rounds=R``, R such measurements alternating with pyskl's, and the median over them);
  * pyskl's own model at the same shape, steps and CPUs, timed in the same run by
    ``experiments/bench_pyskl.py`` under a python that has torch (``bench_vs_pyskl``: a train step
    is forward + cross-entropy + backward + SGD, inference runs under ``inference_mode``), and the
    ratios; the parameter counts of both models side by side (the same model is timed). Without
    torch or a pyskl checkout the table says in one line why the pyskl columns are empty; at the
    ntu shape with 2 threads it then shows the ratios to ``docs/BACKBONES.md`` section 10's
    figures (``REFERENCE``), marked, and at other shapes none;
  * compile times (pyskl: its first train and inference step); XLA's memory analysis of the
    compiled step and the process's peak RSS (or the device's peak bytes in use where the backend
    reports memory stats); the system share of a train step's CPU time;
  * achieved GFLOP/s from XLA's cost analysis, and as a fraction of a dense f32 matmul's rate
    measured in the same run.
``--threads=N`` pins the process to N CPUs before JAX starts (``runtime.limit_cpu_threads``: XLA:CPU
sizes its thread pools from that; N = 1 also turns off Eigen's multi-threading) and gives torch
``set_num_threads(N)`` on the same CPUs; without it both use every CPU the process may use.
Once per run: the 4-member ensemble step (members vmapped, ``lax.map``-ped or unrolled,
``--ensemble_batching``) against 4x one step (``--ensemble_backbones``),
the input pipeline's rate on NTU-shaped synthetic clips next to the train step's consumption
rate, the load average and the share of CPU time other processes used during the run (the
machine is shared: a busy machine makes every figure an upper bound on time).

``--dtype=bfloat16``: mixed precision, float32 params, BN and optimizer: the models traced under
``mixed_precision.compute_dtype(bfloat16)`` (1x1 convolutions as bfloat16 matmuls with float32
accumulation: what a CPU with AMX speeds up, ``experiments/BENCHMARKS.md``, "bfloat16 on this
CPU") and ``jax.default_matmul_precision`` (every convolution and matmul on an accelerator; see
``precision``). On an accelerator use a larger
``--batch`` (64 is the default there).

``--deploy`` measures deployment instead (``bench_deploy``): for each backbone and sparsity (uniform
random masks, pruned weights stored as zeros), the nonzero parameters, the size on disk of the
sparse export (``stgcn_jax.export.sparse.save_sparse``) and of the dense orbax model checkpoint, the
fraction of output channels whose kernel slice is entirely zero (what a channel-removing export
could drop), and the batch-1 eval latency (input (1, M, T, 25, 3)) on the current device.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Machine facts and timing helpers (bench_deploy imports them from bench_timing as well).
from experiments.bench_timing import (ContentionMeter, compile_jitted, cpu_model,
                                      matmul_peak_gflops, peak_memory_bytes, time_calls)
from experiments import bench_vs_pyskl
# The command line and the table (re-exported: the tests read them from here).
# pylint: disable=unused-import
from experiments.bench_flags import (BACKBONES, SHAPES, TINY_OPTIONS, backbone_names, define_flags,
                                     fill_defaults, parse_flags, pin_threads)
from experiments.bench_table import format_table
# pylint: enable=unused-import
from stgcn_jax import atomic, cli
from stgcn_jax import training
from stgcn_jax import runtime
from stgcn_jax.models import get_model, mixed_precision

# pyskl reference, PyTorch 2.13.0+cpu, 2 threads, batch 16, input (16, 2, 100, 25, 3), 60 classes,
# on the project's standard 2-vCPU AMD EPYC (AVX-512) machine; the rep-1 medians of 5 steps.
# Source: docs/BACKBONES.md section 10 (the reference harness's bench_results.json).
REFERENCE = {
    "source": "docs/BACKBONES.md section 10: pyskl, PyTorch 2.13.0+cpu, torch.set_num_threads(2), "
              "batch 16, (16, 2, 100, 25, 3), 60 classes, idle 2-vCPU AMD EPYC, median of 5 steps",
    "batch": 16,
    "train_samples_per_s": {"stgcn": 2.84, "aagcn": 2.69, "ctrgcn": 3.60, "dgstgcn": 3.05},
    "infer_samples_per_s": {"stgcn": 7.10, "aagcn": 6.27, "ctrgcn": 6.76, "dgstgcn": 7.55},
    "fwd_gflop_per_sample": {"stgcn": 11.40, "aagcn": 12.95, "ctrgcn": 5.94, "dgstgcn": 4.99},
}


# ----------------------------------------------------------------------------- the model


def precision(dtype: str):
  """The context every model is traced and compiled under.

  ``bfloat16``: ``jax.default_matmul_precision("bfloat16")``: on accelerators, convolutions and
  matmuls then take bfloat16 inputs with float32 accumulation. On XLA:CPU that changes nothing
  (``docs/STACK.md`` section 7), so the models are also traced under
  ``mixed_precision.compute_dtype(bfloat16)``: their 1x1 convolutions run as bfloat16 matmuls with float32
  accumulation (YNNPACK, AMX where the CPU has it), while params, BN and the optimizer stay float32.
  """
  stack = contextlib.ExitStack()
  stack.enter_context(
      jax.default_matmul_precision("bfloat16" if dtype == "bfloat16" else "highest"))
  stack.enter_context(mixed_precision.compute_dtype(jnp.bfloat16 if dtype == "bfloat16" else None))
  return stack


def sparse_config(batch: int, **overrides) -> Any:
  """The generator-mode fine-tune configuration (80 % sparsity, no warm-up: sparse from step 0)."""
  return training.resolve(dict(mode="generator", sparsity=0.8, warmup_epochs=0, num_epochs=100,
                               steps_per_epoch=1000, batch_size=batch, base_batch_size=batch),
                          **overrides)


def model_and_shape(name: str, args) -> tuple[Any, tuple[int, ...]]:
  """The benchmarked model and its input shape (batch, M, T, V, C) from the flags."""
  options = {**(TINY_OPTIONS if args.tiny else {}), "temporal_conv": args.conv_impl,
             "num_person": args.persons}
  model = get_model(name, args.classes, layout=args.layout, **options)
  joints = model.backbone.layout.num_joints
  return model, (args.batch, args.persons, args.frames, joints, 3)


def make_batch(shape: tuple[int, ...], classes: int, key) -> dict[str, jax.Array]:
  kx, kl = jax.random.split(key)
  return {"x": jax.random.normal(kx, shape, jnp.float32),
          "label": jax.random.randint(kl, (shape[0],), 0, classes, jnp.int32)}


def bench_backbone(name: str, args, peak_gflops: float, pyskl_round=None
                   ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """Train and inference figures of one backbone (see the module docstring), and pyskl's figures
  of each round.

  ``args.rounds`` rounds, each ``pyskl_round()`` (pyskl's figures for this backbone; not called
  when None) then ``args.steps`` timed steps of ours: the two sides are measured about a minute
  apart, so a machine whose speed drifts (a shared host) moves both. Each side's rate is the
  median over the rounds; the measured ratio is the median of the rounds' ratios
  (``bench_vs_pyskl.merge``).
  """
  model, shape = model_and_shape(name, args)
  batch = make_batch(shape, args.classes, jax.random.key(1))
  cfg = sparse_config(args.batch)
  state = training.create_train_state(model, jax.random.key(0), batch["x"], cfg)
  row: dict[str, Any] = {"backbone": name, "shape": list(shape), "dtype": args.dtype,
                         "num_params": int(sum(p.size for p in jax.tree.leaves(state.params)))}

  train_jit = jax.jit(training.make_train_step(model, cfg, "finetune"), donate_argnums=0)
  train, row["train_compile_s"], train_info = compile_jitted(train_jit, state, batch)
  holder = {"state": state}
  del state

  def train_once():
    holder["state"], metrics = train(holder["state"], batch)
    holder["loss"] = metrics["loss"]
    return metrics["loss"]

  eval_jit = jax.jit(training.make_eval_step(model))
  infer, row["infer_compile_s"], infer_info = compile_jitted(eval_jit, holder["state"], batch["x"])

  rounds, pyskl_rounds = [], []
  for _ in range(args.rounds):
    if pyskl_round is not None:
      pyskl_rounds.append(pyskl_round())
    usage: dict[str, float] = {}
    train_times = time_calls(train_once, args.steps, warmup=1, usage=usage)
    infer_times = time_calls(lambda: infer(holder["state"], batch["x"]), args.steps, warmup=1)
    rounds.append({"train_step_s": statistics.median(train_times), "train_step_s_all": train_times,
                   "infer_step_s": statistics.median(infer_times), "infer_step_s_all": infer_times,
                   "train_cpu_per_step": usage})
  row["rounds"] = rounds
  row["train_cpu_per_step"] = rounds[-1]["train_cpu_per_step"]   # user / system s, minor faults
  row["train_loss_finite"] = bool(np.isfinite(float(holder["loss"])))
  for kind in ("train", "infer"):
    row[f"{kind}_step_s"] = statistics.median(r[f"{kind}_step_s"] for r in rounds)
    row[f"{kind}_step_s_all"] = [t for r in rounds for t in r[f"{kind}_step_s_all"]]
    row[f"{kind}_samples_per_s"] = args.batch / row[f"{kind}_step_s"]

  for kind, info in (("train", train_info), ("infer", infer_info)):
    row[f"{kind}_xla_gflop_per_step"] = info["flops"] / 1e9 if info["flops"] else None
    row[f"{kind}_xla_memory"] = info["memory"]
    if info["flops"]:
      rate = info["flops"] / row[f"{kind}_step_s"] / 1e9
      row[f"{kind}_gflops"] = rate
      row[f"{kind}_fraction_of_matmul_peak"] = rate / peak_gflops
    else:
      row[f"{kind}_gflops"] = row[f"{kind}_fraction_of_matmul_peak"] = None
  row["peak_memory_bytes"], row["peak_memory_kind"] = peak_memory_bytes()
  comparable = (not args.tiny and args.frames == 100 and args.persons == 2
                and args.classes == 60 and args.layout == "nturgb+d" and len(args.cpus) == 2)
  for kind in ("train", "infer"):
    ref = REFERENCE[f"{kind}_samples_per_s"].get(name)
    row[f"{kind}_ratio_to_pyskl"] = row[f"{kind}_samples_per_s"] / ref if (
        ref and comparable) else None
  row["load_avg_after"] = list(os.getloadavg())
  return row, pyskl_rounds


def bench_ensemble(name: str, args, single_step_s: float | None, batching: str) -> dict[str, Any]:
  """The 4-member ensemble fine-tune step (members batched as ``batching``) against 4x one
  member's step."""
  model, shape = model_and_shape(name, args)
  batch = make_batch(shape, args.classes, jax.random.key(2))
  cfg = sparse_config(args.batch, mode="ensemble", ensemble_sparsities=(0.6, 0.8, 0.95, 0.99),
                      ensemble_batching=batching)
  state = training.create_ensemble_state(model, jax.random.key(0), batch["x"], cfg)
  step_jit = jax.jit(training.make_ensemble_train_step(model, cfg, "finetune"), donate_argnums=0)
  step, compile_s, info = compile_jitted(step_jit, state, batch)
  holder = {"state": state}
  del state

  def once():
    holder["state"], metrics = step(holder["state"], batch)
    return metrics["loss"]

  times = time_calls(once, args.ensemble_steps, warmup=args.ensemble_warmup)
  members = len(cfg.sparsity.ensemble_sparsities)
  out = {"backbone": name, "batching": batching, "members": members, "compile_s": compile_s,
         "step_s": statistics.median(times), "step_s_all": times,
         "xla_gflop_per_step": info["flops"] / 1e9 if info["flops"] else None,
         "xla_memory": info["memory"]}
  if single_step_s:
    out["members_x_single_step_s"] = members * single_step_s
    out["speedup_vs_sequential"] = members * single_step_s / out["step_s"]
  out["samples_per_s_per_member"] = args.batch / out["step_s"]
  return out


def bench_pipeline(args, train_rates: dict[str, float]) -> dict[str, Any]:
  """``data_bench.pipeline_rate`` on NTU-shaped clips next to the train steps' consumption."""
  from experiments import data_bench  # pylint: disable=g-import-not-at-top
  from stgcn_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory(prefix="stgcn_bench_") as tmp:
    start = time.perf_counter()
    store = data_bench.ntu_shaped_store(tmp, num_clips=args.pipeline_clips)
    write_s = time.perf_counter() - start
    rate = data_bench.pipeline_rate(
        store, tmp, split="train", batch_size=args.batch, num_batches=args.pipeline_batches,
        config=pipeline.PipelineConfig(clip_len=args.frames, modality="j", rotate=0.1),
        warmup=1)
  return {"dataset": "NTU-shaped synthetic (M=2, V=25, 60-300 raw frames, spine align, rot 0.1)",
          "clips": args.pipeline_clips, "store_write_s": write_s, "samples_per_s": rate,
          "train_consumption_samples_per_s": train_rates,
          "pipeline_over_fastest_consumer":
              rate / max(train_rates.values()) if train_rates else None}


def parse_args(argv=None) -> types.SimpleNamespace:
  """The flags (``argv`` without the program name; None: ``sys.argv[1:]``) as a namespace, with
  the defaults that depend on the backend and on ``--tiny`` filled in."""
  return fill_defaults(parse_flags(argv, __doc__))


def run(args: types.SimpleNamespace) -> dict[str, Any]:
  """Every measurement; returns the result dict (what ``--json`` writes)."""
  names = backbone_names(args)
  nproc = os.cpu_count() or 1
  load_start = [round(v, 2) for v in os.getloadavg()]
  warnings = []
  # The reference harness's threshold (docs/BACKBONES.md section 10).
  if load_start[0] > nproc + 0.5:
    warnings.append(f"the machine was busy before the run (1-min load {load_start[0]} on {nproc} "
                    "cpus): timings are upper bounds")
  meter = ContentionMeter().start()
  started = time.perf_counter()
  pyskl_side, pyskl_round = bench_vs_pyskl.prepare(args, jax.default_backend())
  with precision(args.dtype):
    peak = matmul_peak_gflops(args.matmul_n, args.steps, jnp.float32)
  result: dict[str, Any] = {
      "command": "python -m experiments.bench " + " ".join(sys.argv[1:]),
      "args": vars(args),
      "reference": REFERENCE,
      "pyskl": pyskl_side,
      "machine": {"nproc": nproc, "cpu_model": cpu_model(), "backend": jax.default_backend(),
                  "device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
                  "allocator": "tcmalloc" if runtime.tcmalloc_loaded() else "system malloc",
                  "load_avg_start": load_start, "conv_impl": args.conv_impl, "cpus": args.cpus,
                  "matmul_n": args.matmul_n, "matmul_gflops": peak, "matmul_dtype": args.dtype},
      "backbones": [], "ensemble": [], "pipeline": None, "warnings": warnings,
  }
  for name in names:
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    with precision(args.dtype):
      row, pyskl_rounds = bench_backbone(
          name, args, peak, pyskl_round and (lambda name=name: pyskl_round(name)))
    bench_vs_pyskl.merge(row, pyskl_rounds, warnings)
    result["backbones"].append(row)
  single = {r["backbone"]: r["train_step_s"] for r in result["backbones"]}
  for name in [n for n in args.ensemble_backbones.split(",") if n]:
    for batching in [b for b in args.ensemble_batching.split(",") if b]:
      print(f"[bench] ensemble {name} ({batching}) ...", file=sys.stderr, flush=True)
      with precision(args.dtype):
        result["ensemble"].append(bench_ensemble(name, args, single.get(name), batching))
  if args.pipeline:
    print("[bench] input pipeline ...", file=sys.stderr, flush=True)
    result["pipeline"] = bench_pipeline(
        args, {r["backbone"]: r["train_samples_per_s"] for r in result["backbones"]})
  share = meter.stop()
  m = result["machine"]
  m["other_cpu_share"] = share
  m["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
  m["wall_s"] = time.perf_counter() - started
  if share is not None and share > 0.15:
    warnings.append(f"other processes used {share:.0%} of the CPU during the run: contended, "
                    "timings are upper bounds")
  return result


def main(argv=None) -> dict[str, Any]:
  runtime.configure_xla()
  args = parse_flags(argv, __doc__)
  pin_threads(args.threads)   # before JAX starts: XLA:CPU sizes its thread pools then
  args = fill_defaults(args)
  if args.deploy:
    from experiments import bench_deploy  # pylint: disable=import-outside-toplevel
    result = bench_deploy.run_deploy(args)
    print(bench_deploy.format_deploy_table(result))
  else:
    result = run(args)
    print(format_table(result))
  if args.json:
    with atomic.atomic_open(args.json) as f:
      json.dump(result, f, indent=2, default=str)
  return result


if __name__ == "__main__":
  runtime.reexec_with_tcmalloc("experiments.bench", sys.argv[1:])  # see stgcn_jax.runtime
  sys.exit(cli.run(main))
