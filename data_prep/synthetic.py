"""Writes the built-in synthetic dataset (no download; deterministic from ``--seed``).

  python -m data_prep.synthetic --out DIR [--name synthetic] [--layout nturgb+d] [--dims 3]
      [--num-train 600] [--num-test 200] [--num-classes 10] [--min-frames 40] [--max-frames 60]
      [--two-person-prob 0.2] [--seed 0]

Each class is a fixed recipe of limb oscillations and body drift; subjects differ in size, bone
lengths, facing, speed and noise, and the test split uses unseen subjects. See
``stgcn_jax/data/synthetic.py``; ``stgcn_jax.data.ensure_synthetic(DIR)`` does the same from Python.
"""

from __future__ import annotations

import sys

from absl import flags

from data_prep import common
from stgcn_jax.data import synthetic


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("layout", "nturgb+d", "layout name or layout JSON path", flag_values=fv)
  flags.DEFINE_integer("dims", 3, "3: (x, y, z) metres; 2: (x, y, score) pixels of a 1080x1920 "
                       "frame", lower_bound=2, upper_bound=3, flag_values=fv)
  flags.DEFINE_integer("num_train", 600, "training samples", flag_values=fv)
  flags.DEFINE_integer("num_test", 200, "test samples", flag_values=fv)
  flags.DEFINE_integer("num_classes", 10, "classes", flag_values=fv)
  flags.DEFINE_integer("min_frames", 40, "shortest sample", flag_values=fv)
  flags.DEFINE_integer("max_frames", 60, "longest sample", flag_values=fv)
  flags.DEFINE_float("two_person_prob", 0.2, "share of two-person samples", flag_values=fv)
  flags.DEFINE_integer("num_subjects", 20, "subjects", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "the generator's seed", flag_values=fv)


def main(argv=None) -> str:
  args = common.parse_flags(define_flags, argv, __doc__, name_default="synthetic")
  return synthetic.build_synthetic(
      args.out or common.default_data_dir(), args.name, overwrite=args.overwrite,
      layout=args.layout, dims=args.dims, num_train=args.num_train, num_test=args.num_test,
      num_classes=args.num_classes, min_frames=args.min_frames, max_frames=args.max_frames,
      two_person_prob=args.two_person_prob, num_subjects=args.num_subjects, seed=args.seed)


if __name__ == "__main__":
  sys.exit(common.run_cli(main))
