"""Convert a pyskl checkpoint into a stgcn-jax model checkpoint.

  python -m experiments.convert --src=ctrgcn_j.pth --backbone=ctrgcn --num_classes=60 --out=DIR
      [--layout=nturgb+d] [--in_channels=3] [--option=KEY=JSON ...] [--non_strict]

``--src`` is a pyskl ``.pth`` (needs torch) or an ``.npz`` state_dict; ``--out`` is the model
checkpoint directory (``model.json`` + ``variables/``, must not exist) that
``experiments.run --pretrained=DIR``, ``experiments.predict`` and ``experiments.export`` load. The
mapping is :mod:`stgcn_jax.models.pyskl` (``from_pyskl``).
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from stgcn_jax import checkpoint, cli, models
from stgcn_jax.models.pyskl import ConversionError, from_pyskl, load_state_dict

def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("src", None, "pyskl .pth or .npz state_dict", flag_values=fv, required=True)
  flags.DEFINE_enum("backbone", None, sorted(models.BACKBONES), "the checkpoint's backbone",
                    flag_values=fv, required=True)
  flags.DEFINE_integer("num_classes", None, "classes of the checkpoint's head", flag_values=fv,
                       required=True)
  flags.DEFINE_string("layout", "nturgb+d", "layout name (nturgb+d, coco, openpose, nw-ucla) or a "
                      "layout JSON file", flag_values=fv)
  flags.DEFINE_integer("in_channels", 3, "input channels", flag_values=fv)
  flags.DEFINE_multi_string("option", [], "backbone option KEY=JSON, e.g. "
                            "--option=gcn_attention=false (repeatable)", flag_values=fv)
  flags.DEFINE_string("out", None, "output directory (must not exist)", flag_values=fv,
                      required=True)
  flags.DEFINE_bool("non_strict", False, "ignore unexpected keys", flag_values=fv)


def convert(argv=None) -> int:
  """Converts; a user mistake raises a ``stgcn_jax.errors.UserError`` (``ConversionError``,
  ``checkpoint.CheckpointError``, ``graph.LayoutError``, ``cli.UsageError``, ...)."""
  args = cli.parse(define_flags, argv, doc=__doc__)
  options = {}
  for item in args.option:
    key, sep, value = item.partition("=")
    if not sep:
      raise cli.UsageError(f"--option {item!r}: expected KEY=VALUE")
    try:
      options[key] = json.loads(value)
    except json.JSONDecodeError:
      options[key] = value
  if not os.path.exists(args.src):
    raise ConversionError(f"{args.src}: no such file")
  model = models.get_model(args.backbone, args.num_classes, layout=args.layout,
                           in_channels=args.in_channels, **options)
  variables = from_pyskl(load_state_dict(args.src), model, strict=not args.non_strict)
  spec = checkpoint.model_spec_json(args.backbone, args.num_classes, args.layout,
                                    args.in_channels, options)
  checkpoint.save_model(args.out, spec, variables)
  print(f"wrote {args.out} ({args.backbone}, {args.num_classes} classes)")
  return 0


def main(argv=None) -> int:
  """The command: 0, or 2 after one ``error: ...`` line on stderr for a user mistake."""
  return cli.run(convert, argv)


if __name__ == "__main__":
  sys.exit(main())
