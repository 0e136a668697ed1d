"""The backbones' joint contractions, einsum against the forms the models use, forward + backward.

  taskset -c 1 python -m experiments.bench_graph [--reps=9] [--tiny]

At the NW-UCLA shape (batch 16, 1 person, 20 joints) and each stage of a full-size model (64
channels x 52 frames, 128 x 26, 256 x 13), the value and both gradients of ``sum(y * r)`` (``r``
a fixed random cotangent) for:
  * ST-GCN's ``einsum("btvkc,kvw->btwc")`` (3 subsets) against ``layers.graph_matmul``;
  * AA-GCN's per-sample ``einsum("btvc,bvw->btwc")`` against ``layers.graph_matmul`` and its
    ``einsum("btvc,btwc->bvw")`` against ``layers.graph_gram``;
  * DG-STGCN's ``einsum("btvkc,bvwkc->btwkc")`` (8 subsets of C/8 channels) against
    ``layers.refined_graph_conv`` over the (subset, channel) pairs.
Prints the median milliseconds of each and the largest difference of the outputs and gradients,
relative to the einsum's largest entry.
"""

from __future__ import annotations

import os
import statistics
import sys

from absl import flags

from stgcn_jax import cli, runtime


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_integer("reps", 9, "timed calls per function (median)", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_bool("tiny", False, "tiny shapes (a smoke run)", flag_values=fv)


def cases(tiny: bool):
  """(name, shape label, einsum form, our form, argument shapes) of every contraction timed."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from stgcn_jax.models import layers  # pylint: disable=import-outside-toplevel

  def stgcn_ours(z, a):
    b, t, v, k, c = z.shape
    return layers.graph_matmul(z.reshape(b, t, v * k, c),
                               jnp.transpose(a, (1, 0, 2)).reshape(v * k, -1))

  def dgstgcn_ours(p, g):
    b, t, v, k, c = p.shape
    y = layers.refined_graph_conv((p.reshape(b, t, v, k * c),), (g.reshape(b, v, -1, k * c),))
    return y.reshape(b, t, -1, k, c)

  b, v = (2, 5) if tiny else (16, 20)
  stages = ((4, 6),) if tiny else ((64, 52), (128, 26), (256, 13))
  for c, t in stages:
    label = f"C {c}, T {t}"
    yield ("ST-GCN graph", label, lambda z, a: jnp.einsum("btvkc,kvw->btwc", z, a), stgcn_ours,
           ((b, t, v, 3, c), (3, v, v)))
    yield ("AA-GCN graph", label, lambda x, g: jnp.einsum("btvc,bvw->btwc", x, g),
           layers.graph_matmul, ((b, t, v, c), (b, v, v)))
    yield ("AA-GCN gram", label, lambda x, y: jnp.einsum("btvc,btwc->bvw", x, y),
           layers.graph_gram, ((b, t, v, c // 4), (b, t, v, c // 4)))
    yield ("DG-STGCN graph", label, lambda p, g: jnp.einsum("btvkc,bvwkc->btwkc", p, g),
           dgstgcn_ours, ((b, t, v, 8, max(c // 8, 1)), (b, v, v, 8, max(c // 8, 1))))


def main(argv=None) -> int:
  args = cli.parse(define_flags, argv, doc=__doc__)
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from experiments import bench_timing  # pylint: disable=import-outside-toplevel
  print(f"jax {jax.__version__}, {bench_timing.cpu_model()}, "
        f"{len(os.sched_getaffinity(0))} CPU(s) allowed, "
        f"allocator {'tcmalloc' if runtime.tcmalloc_loaded() else 'glibc'}", flush=True)
  print(f"{'contraction':15s} {'stage':14s} {'einsum ms':>10s} {'ours ms':>8s} {'ratio':>6s} "
        f"{'max rel diff':>12s}")
  for name, label, ref, ours, shapes in cases(args.tiny):
    keys = jax.random.split(jax.random.key(0), len(shapes))
    inputs = [jax.random.normal(k, s, jnp.float32) for k, s in zip(keys, shapes)]
    r = jax.random.normal(jax.random.key(1), jax.eval_shape(ref, *inputs).shape)
    fns = [jax.jit(jax.value_and_grad(lambda *a, f=f: jnp.sum(f(*a) * r),
                                      argnums=tuple(range(len(inputs))))) for f in (ref, ours)]
    outs = [jax.tree.leaves(fn(*inputs)) for fn in fns]
    diff = max(float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
               for want, got in zip(*outs))
    t_ref, t_ours = (statistics.median(
        bench_timing.time_calls(lambda fn=fn: fn(*inputs), args.reps, warmup=2)) for fn in fns)
    print(f"{name:15s} {label:14s} {t_ref * 1e3:10.2f} {t_ours * 1e3:8.2f} "
          f"{t_ours / t_ref:6.2f} {diff:12.1e}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
