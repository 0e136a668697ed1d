"""Export a trained model for deployment.

  python -m experiments.export --model=runs/X --out=model.npz                    # compressed sparse
  python -m experiments.export --model=runs/X --out=model.shlo --format=stablehlo

``--model`` is a model checkpoint directory (``model.json`` + ``variables/``), a training workdir
(its ``model/`` is used) or, for ``--format=stablehlo``, a sparse ``.npz`` export.

``sparse``: one ``.npz`` (no pickle) with the kept weights of every prunable kernel, a packed bit
mask, every other parameter and BatchNorm statistic dense, and the model spec;
``stgcn_jax.export.sparse.load_sparse(FILE)`` rebuilds ``(model, variables)`` bit for bit.

``stablehlo``: ``jax.export`` of the eval-mode forward pass with the weights as constants, for
input ``float32 (B, M, T, V, C)`` (B symbolic); ``FILE.json`` documents the input contract. Run it
with jax and numpy only: ``jax.export.deserialize(open(FILE, 'rb').read()).call(x)``.
"""

import sys

from absl import flags, logging

from stgcn_jax import cli, runtime


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("model", None, "model checkpoint dir, training workdir or sparse .npz",
                      flag_values=fv)
  flags.DEFINE_string("out", None, "output file", flag_values=fv)
  flags.DEFINE_enum("format", "sparse", ["sparse", "stablehlo"], "what to write", flag_values=fv)
  flags.DEFINE_integer("frames", None, "stablehlo: T of the input (default: the pipeline clip_len "
                       "recorded in model.json, else 100)", flag_values=fv)
  flags.DEFINE_enum("batch", "symbolic", ["symbolic", "1"],
                    "stablehlo: a symbolic batch dimension or a fixed batch of 1", flag_values=fv)
  flags.DEFINE_list("platforms", ["cpu", "cuda"],
                    "stablehlo: the platforms to lower for (cpu, cuda, rocm, tpu)", flag_values=fv)
  flags.DEFINE_bool("compress", True, "sparse: deflate the .npz (np.savez_compressed)",
                    flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "replace an existing --out", flag_values=fv)


def main(argv=None) -> int:
  """The command (``argv`` without the program name; None: ``sys.argv[1:]``); its exit status: a
  user mistake (a ``stgcn_jax.errors.UserError``) is one ``error:`` line and 2 (``cli.run``)."""
  return cli.run(_export, argv)


def _export(argv) -> int:
  """Exports; a user mistake raises a ``UserError``. An ``OSError`` (a file that cannot be read
  or written, named in its message) becomes a ``cli.UsageError``; anything else is a bug."""
  args = cli.parse(define_flags, argv, doc=__doc__)
  logging.set_verbosity(logging.WARNING)
  runtime.configure_xla()
  import os  # pylint: disable=import-outside-toplevel
  from stgcn_jax.export import deploy, sparse, stablehlo  # pylint: disable=import-outside-toplevel
  if not args.model or not args.out:
    raise cli.UsageError("--model and --out are required")
  out = args.out
  if os.path.exists(out) and not args.overwrite:
    raise cli.UsageError(f"{out} already exists; choose another --out or pass --overwrite")
  if os.path.isdir(out):
    raise cli.UsageError(f"{out} is a directory; --out must be a file")
  try:
    if args.format == "sparse":
      model_dir = deploy.resolve_model_dir(args.model)
      _, variables, spec = deploy.load_any(model_dir)
      summary = sparse.save_sparse(out, spec, variables, compress=args.compress)
      dense = deploy.size_on_disk(model_dir)
      print(f"wrote {out}: {summary['bytes']:,} bytes ({summary['bytes'] / dense:.1%} of the "
            f"{dense:,}-byte checkpoint {model_dir}); {summary['kept_weights']:,} of "
            f"{summary['sparse_weights']:,} prunable weights kept, "
            f"{summary['dense_params']:,} other values dense")
    else:
      model, variables, spec = deploy.load_any(args.model)
      frames = args.frames
      if frames is None:
        frames = int((spec.get("pipeline") or {}).get("clip_len", 100))
      if not 1 <= frames <= stablehlo.MAX_FRAMES:
        raise cli.UsageError(f"--frames must be in 1..{stablehlo.MAX_FRAMES}, got {frames}")
      contract = stablehlo.export_stablehlo(out, model, variables, spec, frames=frames,
                                         symbolic_batch=args.batch == "symbolic",
                                         platforms=args.platforms)
      shape = ", ".join(str(s) for s in contract["input"]["shape"])
      print(f"wrote {out} ({deploy.size_on_disk(out):,} bytes; input float32 ({shape}), output "
            f"logits {tuple(contract['output']['shape'])}, platforms "
            f"{','.join(contract['platforms'])}) and {out}.json (the input contract)")
  except OSError as err:
    raise cli.UsageError(str(err)) from err
  return 0


if __name__ == "__main__":
  sys.exit(main())
