"""Input-pipeline throughput: store read + transforms + batching, in samples per second.

  python -m experiments.data_bench [--nw_ucla_src=../shared/data/nw_ucla] [--batches=20]
      [--batch_size=16] [--data_dir=DIR]

measures NW-UCLA (converted into a temporary store if ``--data_dir`` does not hold ``nw_ucla``) and
NTU-shaped clips (M = 2, V = 25, C = 3, 60-300 raw frames -> T = 100, PreNormalize3D with spine
alignment, RandomRot, bone + motion features) for training batches and for 10-clip test batches.
:func:`pipeline_rate` is the function the project's main benchmark (``experiments.bench``) calls.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from absl import flags

from stgcn_jax import cli
from stgcn_jax.data import builders, iterator, pipeline, source, synthetic

__all__ = ["pipeline_rate", "ntu_shaped_store", "main"]


def pipeline_rate(name: str, data_dir: str, *, split: str = "train",
                  config: pipeline.PipelineConfig | None = None, batch_size: int = 16,
                  num_batches: int = 20, train: bool = True, prefetch: bool = True,
                  warmup: int = 2, num_threads: int = 0) -> float:
  """Samples per second delivered by ``BatchIterator`` over ``split`` of dataset ``name``.

  ``warmup`` batches are drawn and not timed; then ``num_batches`` batches are timed.
  """
  src = source.load(name, data_dir, split)
  config = config or pipeline.PipelineConfig(num_clips=1 if train else 10, test_mode=not train)
  it = iterator.BatchIterator(src, pipeline.Pipeline(config, src.info), batch_size, train=train,
                              seed=0, num_epochs=10**9, shard=(0, 1), prefetch=prefetch,
                              num_threads=num_threads)
  for _ in range(warmup):
    next(it)
  start = time.perf_counter()
  for _ in range(num_batches):
    next(it)
  elapsed = time.perf_counter() - start
  it.close()
  return num_batches * batch_size / elapsed


def ntu_shaped_store(data_dir: str, name: str = "ntu_shaped", num_clips: int = 256) -> str:
  """A store of ``num_clips`` NTU-shaped clips (2 persons, 25 joints, 60-300 frames); its name."""
  if not source.exists(name, data_dir):
    splits, classes = synthetic.generate_synthetic(
        num_train=num_clips, num_test=max(16, num_clips // 4), num_classes=60,
        layout="nturgb+d", min_frames=60, max_frames=300, two_person_prob=1.0, seed=0)
    builders.write_dataset(name, data_dir, {s: (lambda r=r: r) for s, r in splits.items()},
                           layout="nturgb+d", class_names=classes, channels=["x", "y", "z"],
                           num_persons=2, source="benchmark: NTU-shaped synthetic clips",
                           default_splits={"train": "train", "test": "test"})
  return name


def _default_nw_ucla_src() -> str:
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return os.path.join(os.path.dirname(repo), "shared", "data", "nw_ucla")


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("data_dir", None, "store with nw_ucla (default: a temp dir)", flag_values=fv)
  flags.DEFINE_string("nw_ucla_src", _default_nw_ucla_src(), "raw NW-UCLA (converted when "
                      "--data_dir lacks nw_ucla)", flag_values=fv)
  flags.DEFINE_integer("batches", 20, "timed training batches per row", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_integer("batch_size", 16, "samples per batch", lower_bound=1, flag_values=fv)


def main(argv=None) -> int:
  args = cli.parse(define_flags, argv, doc=__doc__)
  with tempfile.TemporaryDirectory(prefix="stgcn_data_bench_") as tmp:
    data_dir = args.data_dir or tmp
    rows = []
    if not source.exists("nw_ucla", data_dir):
      if os.path.isdir(args.nw_ucla_src):
        from data_prep import nw_ucla  # pylint: disable=g-import-not-at-top
        start = time.perf_counter()
        nw_ucla.convert(args.nw_ucla_src, data_dir)
        print(f"converted NW-UCLA in {time.perf_counter() - start:.1f} s")
      else:
        print(f"NW-UCLA not found at {args.nw_ucla_src}; skipped")
    if source.exists("nw_ucla", data_dir):
      ucla = dict(clip_len=52, num_person=1)
      rows.append(("nw_ucla train (T=52, M=1, rot 0.1)", pipeline_rate(
          "nw_ucla", data_dir, config=pipeline.PipelineConfig(rotate=0.1, **ucla),
          batch_size=args.batch_size, num_batches=args.batches)))
      rows.append(("nw_ucla test (10 clips)", pipeline_rate(
          "nw_ucla", data_dir, split="test", train=False, batch_size=args.batch_size,
          num_batches=max(1, args.batches // 4),
          config=pipeline.PipelineConfig(num_clips=10, test_mode=True, **ucla))))
    start = time.perf_counter()
    ntu = ntu_shaped_store(tmp)
    print(f"wrote the NTU-shaped store in {time.perf_counter() - start:.1f} s")
    for modality in ("j", "bm"):
      rows.append((f"ntu-shaped train (T=100, M=2, {modality}, spine align, rot 0.1)", pipeline_rate(
          ntu, tmp, batch_size=args.batch_size, num_batches=args.batches,
          config=pipeline.PipelineConfig(modality=modality, rotate=0.1))))
    rows.append(("ntu-shaped test (10 clips, j)", pipeline_rate(
        ntu, tmp, split="test", train=False, batch_size=args.batch_size,
        num_batches=max(1, args.batches // 4),
        config=pipeline.PipelineConfig(num_clips=10, test_mode=True))))
  width = max(len(r[0]) for r in rows)
  for label, rate in rows:
    print(f"{label:<{width}}  {rate:8.0f} samples/s")
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
