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

from data_prep import common
from stgcn_jax.data import synthetic


def main(argv=None) -> str:
  parser = common.base_parser(__doc__, name_default="synthetic")
  parser.add_argument("--layout", default="nturgb+d", help="layout name or layout JSON path")
  parser.add_argument("--dims", type=int, choices=(2, 3), default=3,
                      help="3: (x, y, z) metres; 2: (x, y, score) pixels of a 1080x1920 frame")
  parser.add_argument("--num-train", type=int, default=600)
  parser.add_argument("--num-test", type=int, default=200)
  parser.add_argument("--num-classes", type=int, default=10)
  parser.add_argument("--min-frames", type=int, default=40)
  parser.add_argument("--max-frames", type=int, default=60)
  parser.add_argument("--two-person-prob", type=float, default=0.2)
  parser.add_argument("--num-subjects", type=int, default=20)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  try:
    return synthetic.build_synthetic(
        args.out or common.default_data_dir(), args.name, overwrite=args.overwrite,
        layout=args.layout, dims=args.dims, num_train=args.num_train, num_test=args.num_test,
        num_classes=args.num_classes, min_frames=args.min_frames, max_frames=args.max_frames,
        two_person_prob=args.two_person_prob, num_subjects=args.num_subjects, seed=args.seed)
  except ValueError as err:
    if isinstance(err, common.DataError):
      raise
    raise common.DataError(str(err)) from None


if __name__ == "__main__":
  sys.exit(common.run_cli(main))
