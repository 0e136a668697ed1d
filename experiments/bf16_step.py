"""The sparse fine-tune train step in float32 and in bfloat16 mixed precision, side by side.

  taskset -c 1 python -m experiments.bf16_step --backbones=ctrgcn [--steps=8] [--tiny]

The step of ``experiments.bench`` (generator fine-tune, 80 % masks, NW-UCLA shape by default:
batch 16, 1 person, 52 frames, 20 joints, 10 classes), compiled twice: float32, and under
``mixed_precision.compute_dtype(bfloat16)``. Both start from the same state and batch; the timed steps
alternate (f32, bf16, f32, ...) so that both see the same machine. Prints per dtype the median
s/step, samples/s, compile time, the loss of the first step and the bf16 / f32 dot count of the
compiled program.
"""

from __future__ import annotations

import re
import statistics
import sys
import time

from absl import flags

from stgcn_jax import cli, runtime

def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("backbones", "ctrgcn", "comma-separated backbones", flag_values=fv)
  flags.DEFINE_integer("steps", 8, "timed steps per dtype (alternating)", flag_values=fv)
  flags.DEFINE_integer("batch", 16, "batch", flag_values=fv)
  flags.DEFINE_integer("persons", 1, "M", flag_values=fv)
  flags.DEFINE_integer("frames", 52, "T", flag_values=fv)
  flags.DEFINE_string("layout", "nw-ucla", "layout", flag_values=fv)
  flags.DEFINE_integer("classes", 10, "classes", flag_values=fv)
  flags.DEFINE_bool("tiny", False, "reduced model", flag_values=fv)
  flags.DEFINE_list("dtypes", ["float32", "bfloat16"],
                    "the variants: float32, bfloat16, and float32_T (float32 through the mixed "
                    "matmul's gradient formulation, to separate its effect from the dtype's)",
                    flag_values=fv)


def main(argv=None) -> int:
  FLAGS = cli.parse(define_flags, argv, doc=__doc__)  # pylint: disable=invalid-name
  runtime.configure_xla()
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from experiments import bench, bench_flags  # pylint: disable=import-outside-toplevel
  from stgcn_jax import training  # pylint: disable=import-outside-toplevel
  from stgcn_jax.models import get_model, mixed_precision  # pylint: disable=import-outside-toplevel
  print(f"jax {jax.__version__}, allocator "
        f"{'tcmalloc' if runtime.tcmalloc_loaded() else 'glibc'}", flush=True)
  for name in FLAGS.backbones.split(","):
    options = {**(bench_flags.TINY_OPTIONS if FLAGS.tiny else {}), "num_person": FLAGS.persons}
    model = get_model(name, FLAGS.classes, layout=FLAGS.layout, **options)
    shape = (FLAGS.batch, FLAGS.persons, FLAGS.frames, model.backbone.layout.num_joints, 3)
    batch = bench.make_batch(shape, FLAGS.classes, jax.random.key(1))
    cfg = bench.sparse_config(FLAGS.batch)
    rows = {}
    for dtype in FLAGS.dtypes:
      state = training.create_train_state(model, jax.random.key(0), batch["x"], cfg)
      step = jax.jit(training.make_train_step(model, cfg, "finetune"), donate_argnums=0)
      t = time.perf_counter()
      context = {"bfloat16_noT": dict(dtype=jnp.bfloat16, fold_transpose=True),  # folded x.T
                 "float32_T": dict(dtype=jnp.float32, force=True)}.get(dtype, dict(dtype=dtype))
      with mixed_precision.compute_dtype(**context):
        compiled = step.lower(state, batch).compile()
      text = compiled.as_text()
      dots = re.findall(r"= \w+\[[^=]*?\} dot\(([^)]*)\)", text)
      types = dict(re.findall(r"%([\w.\-]+) = (\w+)\[", text))
      kinds = [types.get(a.split(",")[0].strip().lstrip("%"), "?") for a in dots]
      rows[dtype] = {"compiled": compiled, "state": state, "compile_s": time.perf_counter() - t,
                     "times": [], "dots": {k: kinds.count(k) for k in sorted(set(kinds))}}
    for dtype, row in rows.items():   # one untimed step each; the first step's loss
      row["state"], metrics = row["compiled"](row["state"], batch)
      row["loss0"] = float(metrics["loss"])
    for _ in range(FLAGS.steps):
      for dtype, row in rows.items():
        t = time.perf_counter()
        row["state"], metrics = row["compiled"](row["state"], batch)
        jax.block_until_ready(metrics["loss"])
        row["times"].append(time.perf_counter() - t)
        row["loss"] = float(metrics["loss"])
    nz = {}
    for dtype, row in rows.items():
      # pruned weights must stay exactly zero: the nonzero entries where the mask is False
      st = row["state"]
      nz[dtype] = int(sum(int(jnp.count_nonzero(jnp.where(m, 0, p)))
                          for p, m in zip(jax.tree.leaves(st.params), jax.tree.leaves(st.masks))))
    for dtype, row in rows.items():
      s = statistics.median(row["times"])
      print(f"{name:8s} {dtype:8s} {s:.3f} s/step ({min(row['times']):.3f}-{max(row['times']):.3f})"
            f" {FLAGS.batch / s:6.2f} samples/s | compile {row['compile_s']:.1f} s | loss step 1 "
            f"{row['loss0']:.6f}, last {row['loss']:.6f} | pruned weights not 0: {nz[dtype]} | dots by "
            f"lhs type {row['dots']}", flush=True)
    base = statistics.median(rows[FLAGS.dtypes[0]]["times"])
    for dtype in FLAGS.dtypes[1:]:
      print(f"{name:8s} {dtype} / {FLAGS.dtypes[0]} step time "
            f"{statistics.median(rows[dtype]['times']) / base:.3f}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
