"""``python -m experiments.bench --deploy``: model size on disk and batch-1 latency per sparsity.

For each backbone and sparsity (uniform random masks, pruned weights stored as zeros): the nonzero
parameters, the size on disk of the sparse export (``stgcn_jax.export.sparse.save_sparse``) and of the
dense orbax model checkpoint, the fraction of output channels whose kernel slice is entirely zero
(what a channel-removing export could drop), and the batch-1 eval latency on the current device.
"""

from __future__ import annotations

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

from experiments.bench_flags import TINY_OPTIONS, backbone_names
from experiments.bench_timing import ContentionMeter, compile_jitted, cpu_model, time_calls
from experiments.bench_table import _fmt
from stgcn_jax import sparsity as sp
from stgcn_jax.models import get_model

__all__ = ["bench_deploy", "run_deploy", "format_deploy_table"]


def bench_deploy(name: str, args, tmp: str) -> list[dict[str, Any]]:
  """One row per sparsity in ``args.deploy_sparsities`` for backbone ``name`` (see the docstring).

  Every sparsity runs the same compiled eval program (the masked weights are zeros in dense
  tensors, which is what a masked model is to XLA), so latency differences are noise."""
  from stgcn_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from stgcn_jax.export import deploy, sparse  # pylint: disable=g-import-not-at-top
  options = dict(TINY_OPTIONS) if args.tiny else {}
  model = get_model(name, args.classes, **options)
  spec = checkpoint.model_spec_json(name, args.classes, "nturgb+d", 3, options)
  x = jax.random.normal(jax.random.key(1), (1, args.persons, args.frames, 25, 3), jnp.float32)
  variables = jax.jit(model.init)(jax.random.key(0), x)
  variables = {k: variables[k] for k in ("params", "batch_stats")}
  infer = jax.jit(lambda v, x: model.apply(v, x, train=False))
  _, compile_s, _ = compile_jitted(infer, variables, x)
  rows = []
  for s in args.deploy_sparsities:
    if s > 0:
      masks = sp.make_masks(variables["params"], s, key=jax.random.key(2), method="uniform")
      params = jax.device_get(sp.apply_masks(variables["params"], masks))
    else:
      params = jax.device_get(variables["params"])
    v = {"params": params, "batch_stats": jax.device_get(variables["batch_stats"])}
    ckpt = os.path.join(tmp, f"{name}_s{s:g}_ckpt")
    checkpoint.save_model(ckpt, spec, v)
    npz = os.path.join(tmp, f"{name}_s{s:g}.npz")
    summary = sparse.save_sparse(npz, spec, v)
    dead, channels = deploy.zero_channel_fraction(params)
    v_dev = jax.device_put(v)
    times = time_calls(lambda: infer(v_dev, x), args.deploy_steps, warmup=1)
    rows.append({
        "backbone": name, "sparsity": s, "input_shape": list(x.shape),
        "num_params": int(sum(np.size(a) for a in jax.tree.leaves(params))),
        "nonzero_params": int(sum(np.count_nonzero(a) for a in jax.tree.leaves(params))),
        "prunable_weights": summary["sparse_weights"], "kept_prunable": summary["kept_weights"],
        "sparse_export_bytes": deploy.size_on_disk(npz),
        "dense_checkpoint_bytes": deploy.size_on_disk(ckpt),
        "zero_channels": dead, "prunable_channels": channels,
        "latency_ms_mean": 1e3 * statistics.mean(times),
        "latency_ms_p50": 1e3 * statistics.median(times),
        "latency_ms_all": [1e3 * t for t in times], "compile_s": compile_s})
    print(f"[bench] deploy {name} s={s:g}: {rows[-1]['latency_ms_p50']:.1f} ms", file=sys.stderr,
          flush=True)
  return rows


def run_deploy(args: types.SimpleNamespace) -> dict[str, Any]:
  """The ``--deploy`` measurements; returns the result dict (what ``--json`` writes)."""
  names = backbone_names(args)
  for s in args.deploy_sparsities:
    sp.check_sparsity(s, "--deploy_sparsities")
  meter = ContentionMeter().start()
  started = time.perf_counter()
  result: dict[str, Any] = {
      "command": "python -m experiments.bench " + " ".join(sys.argv[1:]), "args": vars(args),
      "machine": {"nproc": os.cpu_count() or 1, "cpu_model": cpu_model(),
                  "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
                  "jax": jax.__version__, "load_avg_start": [round(v, 2) for v in os.getloadavg()]},
      "deploy": [], "warnings": []}
  with tempfile.TemporaryDirectory(prefix="stgcn_deploy_") as tmp:
    for name in names:
      print(f"[bench] deploy {name} ...", file=sys.stderr, flush=True)
      result["deploy"].extend(bench_deploy(name, args, tmp))
  share = meter.stop()
  result["machine"]["other_cpu_share"] = share
  result["machine"]["wall_s"] = time.perf_counter() - started
  if share is not None and share > 0.15:
    result["warnings"].append(f"other processes used {share:.0%} of the CPU during the run: "
                              "contended, latencies are upper bounds")
  return result


def format_deploy_table(result: dict[str, Any]) -> str:
  m = result["machine"]
  lines = [f"machine: {m['cpu_model']}, {m['nproc']} cpus, backend {m['backend']} ({m['device']}); "
           f"other processes used {_fmt(m.get('other_cpu_share'), '.0%')} of the CPU", ""]
  # ckpt KB: the orbax model checkpoint of the same (masked) weights, which orbax's compression
  # already shrinks; vs dense: the sparse export over the unpruned (s=0) checkpoint.
  head = (f"{'backbone':<8} {'sparsity':>8} {'nonzero':>10} {'sparse KB':>10} {'ckpt KB':>8} "
          f"{'/ckpt':>6} {'/dense':>6} {'0-chan':>7} {'lat mean ms':>11} {'p50 ms':>8}")
  lines += [head, "-" * len(head)]
  dense = {r["backbone"]: r["dense_checkpoint_bytes"] for r in result["deploy"]
           if r["sparsity"] == 0}
  for r in result["deploy"]:
    base = dense.get(r["backbone"])
    lines.append(
        f"{r['backbone']:<8} {r['sparsity']:8.2f} {r['nonzero_params']:10,d} "
        f"{r['sparse_export_bytes'] / 1024:10.0f} {r['dense_checkpoint_bytes'] / 1024:8.0f} "
        f"{r['sparse_export_bytes'] / r['dense_checkpoint_bytes']:6.1%} "
        f"{_fmt(base and r['sparse_export_bytes'] / base, '6.1%'):>6} "
        f"{r['zero_channels'] / max(1, r['prunable_channels']):7.2%} "
        f"{r['latency_ms_mean']:11.1f} {r['latency_ms_p50']:8.1f}")
  for w in result["warnings"]:
    lines.append(f"WARNING: {w}")
  return "\n".join(lines)
