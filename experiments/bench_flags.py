"""The command line of ``experiments.bench``: its flags, the ``--shape`` presets, ``--threads``."""

from __future__ import annotations

import os
import sys
import types

import jax
from absl import flags

from experiments import bench_vs_pyskl
from stgcn_jax import cli
from stgcn_jax import runtime
from stgcn_jax.models import layers

__all__ = ["BACKBONES", "SHAPES", "define_flags", "parse_flags", "fill_defaults", "pin_threads",
           "backbone_names"]

BACKBONES = ("stgcn", "aagcn", "ctrgcn", "dgstgcn")

# --shape presets; a flag given on the command line overrides its field.
SHAPES = {"ntu": dict(batch=16, persons=2, frames=100, layout="nturgb+d", classes=60),
          "nw-ucla": dict(batch=16, persons=1, frames=52, layout="nw-ucla", classes=10)}
TINY_OPTIONS = dict(base_channels=8, num_stages=2, inflate_stages=(2,), down_stages=(2,))  # --tiny


def define_flags(fv: flags.FlagValues) -> None:
  def define(kind, name, default, help_text):
    kind(name, default, help_text, flag_values=fv)
  define(flags.DEFINE_string, "backbones", ",".join(BACKBONES), "comma-separated backbones")
  flags.DEFINE_enum("shape", None, list(SHAPES),
                    "preset input shape: ntu (16, 2, 100, 25, 3), 60 classes; nw-ucla (16, 1, 52, "
                    "20, 3), layout nw-ucla, 10 classes", flag_values=fv)
  define(flags.DEFINE_integer, "threads", None,
         "pin JAX and torch to this many CPUs (default: every CPU this process may use)")
  define(flags.DEFINE_string, "torch_python", None,
         f"a python with torch for the pyskl columns (default ${bench_vs_pyskl.TORCH_PYTHON_ENV}, "
         "else this python if it has torch)")
  define(flags.DEFINE_string, "pyskl_src", None,
         f"a pyskl source checkout for the pyskl columns (default ${bench_vs_pyskl.PYSKL_SRC_ENV})")
  define(flags.DEFINE_integer, "batch", None,
         "batch size (default 16 on CPU, the reference; 64 on accelerators)")
  define(flags.DEFINE_integer, "steps", 3, "timed steps per measurement (median)")
  define(flags.DEFINE_integer, "rounds", 1,
         "measurements per backbone, pyskl's and ours alternating (each side's rate: the median "
         "over rounds; the ratio: the median of the rounds' ratios, with their range)")
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "computation precision",
                    flag_values=fv)
  define(flags.DEFINE_integer, "frames", 100, "T of the input")
  define(flags.DEFINE_integer, "persons", 2, "M of the input")
  define(flags.DEFINE_string, "layout", "nturgb+d",
         "skeleton layout (its joints are V): nturgb+d (25), nw-ucla (20), coco, openpose")
  define(flags.DEFINE_integer, "classes", 60, "classes of the head")
  flags.DEFINE_enum("conv_impl", "custom_vjp", list(layers.TEMPORAL_CONV_IMPLS),
                    "how (k x 1) convs are differentiated: the custom_vjp of layers.py or "
                    "XLA's own gradient (the 'before' figures)", flag_values=fv)
  define(flags.DEFINE_bool, "tiny", False,
         "tiny models (8 channels, 2 blocks) and T=16: a smoke test, not a benchmark")
  define(flags.DEFINE_string, "ensemble_backbones", "stgcn",
         "backbones for the 4-member ensemble comparison ('' to skip)")
  define(flags.DEFINE_string, "ensemble_batching", "vmap,map,unroll",
         "how the ensemble step runs its members: some of vmap, map, unroll")
  define(flags.DEFINE_integer, "ensemble_steps", 1, "timed ensemble steps")
  define(flags.DEFINE_integer, "ensemble_warmup", 0, "untimed ensemble steps first")
  define(flags.DEFINE_bool, "pipeline", True,
         "measure the input pipeline (--nopipeline, also --no-pipeline, to skip)")
  define(flags.DEFINE_integer, "pipeline_clips", 64, "clips in the pipeline's store")
  define(flags.DEFINE_integer, "pipeline_batches", 8, "timed pipeline batches")
  define(flags.DEFINE_integer, "matmul_n", None, "default 2048 (256 with --tiny)")
  define(flags.DEFINE_string, "json", None, "write the results here")
  define(flags.DEFINE_bool, "deploy", False,
         "measure deployment instead: export sizes and batch-1 latency")
  define(flags.DEFINE_string, "deploy_sparsities", "0,0.8,0.95,0.99",
         "--deploy: comma-separated sparsities (uniform random masks)")
  define(flags.DEFINE_integer, "deploy_steps", 10, "--deploy: timed batch-1 calls per row")


def parse_flags(argv=None, doc: str | None = None) -> types.SimpleNamespace:
  """The flags as a namespace, ``--shape``'s preset filled in where a field's flag was not given;
  touches no JAX backend."""
  fv = cli.parse(define_flags, argv, doc=doc)
  args = types.SimpleNamespace(**{name: fv[name].value for name in fv})
  for name, value in SHAPES.get(args.shape, {}).items():
    if not fv[name].present:
      setattr(args, name, value)
  for name in ("threads", "rounds"):
    value = getattr(args, name)
    if value is not None and value < 1:
      raise cli.UsageError(f"--{name}={value}: expected 1 or more")
  return args


def fill_defaults(args: types.SimpleNamespace) -> types.SimpleNamespace:
  """The defaults that depend on the backend and on ``--tiny``, and the CPUs this process uses."""
  accel = jax.default_backend() != "cpu"
  args.cpus = (sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else list(range(os.cpu_count() or 1)))
  args.deploy_sparsities = [float(v) for v in args.deploy_sparsities.split(",") if v]
  if args.batch is None:
    args.batch = 64 if accel else 16
  if args.tiny:
    args.frames = min(args.frames, 16)
    args.pipeline_clips = min(args.pipeline_clips, 8)
    args.pipeline_batches = min(args.pipeline_batches, 2)
  if args.matmul_n is None:
    args.matmul_n = 256 if args.tiny else 2048
  return args


def pin_threads(threads: int | None) -> None:
  """``--threads``: pins this process (and the pyskl processes it starts) before JAX starts."""
  if threads is None:
    return
  try:
    runtime.limit_cpu_threads(threads)
  except cli.UserError as err:
    raise cli.UsageError(f"--threads={threads}: {err}") from None
  if _backend_started():
    print(f"[bench] warning: JAX's backend had already started: its thread pools keep their size, "
          f"pinned to {threads} CPUs", file=sys.stderr)


def _backend_started() -> bool:
  try:
    from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):
    return False


def backbone_names(args: types.SimpleNamespace) -> list[str]:
  """``--backbones`` as a list; an unknown name is a usage error."""
  names = [n for n in args.backbones.split(",") if n]
  unknown = sorted(set(names) - set(BACKBONES))
  if unknown:
    raise cli.UsageError(f"unknown backbones {unknown}; expected some of {BACKBONES}")
  return names
