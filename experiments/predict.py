"""Predict actions with a trained model: ``python -m experiments.predict --model=M --src=PATH``.

``--model``: a model checkpoint (``model.json`` + ``variables/``), a training workdir, a
joint-ensemble workdir, or several comma-separated (a post-hoc ensemble: softmax scores summed).
``--src``: an NTU ``.skeleton`` file, a Kinetics-skeleton or NW-UCLA ``.json`` file, a pyskl
``.pkl`` (every annotation is a sample), or a directory of them; the format is told from the
extension and content, or given with ``--format``. Prints the top-k classes of every sample;
``--out FILE.json|FILE.csv`` writes them all. A bad file is one line on stderr and the rest are
predicted; a repaired sample (joints with NaN, inf or out-of-range values set to 0, as the
converters do) is one ``warning:`` line naming the file and the number of joints; exit status 0
when at least one sample was predicted, else 2.

``--stream``: frames as JSON lines on stdin (a list of persons, each V joints x C values in the
layout's joint order, or one person as V x C); every ``--hop`` frames, once ``--window`` frames are
in, one JSON line ``{"frame", "classes", "probs", "latency_ms"}`` on stdout. A line that is not a
frame is one warning and is skipped; a frame's bad joints are repaired by the same rule, one
warning per line.
"""

import os
import sys

from absl import flags, logging

from stgcn_jax import cli, runtime


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("model", None, "model checkpoint dir, training workdir, or several "
                      "comma-separated (post-hoc ensemble)", required=True, flag_values=fv)
  flags.DEFINE_string("src", None, "a raw file or a directory of raw files", flag_values=fv)
  flags.DEFINE_enum("format", None, ["ntu", "kinetics", "nw_ucla", "pyskl"],
                    "input format (default: told from the extension / content)", flag_values=fv)
  flags.DEFINE_string("layout", None, "layout of a pyskl pickle (default: the model's)",
                      flag_values=fv)
  flags.DEFINE_integer("top_k", 5, "classes shown per sample", flag_values=fv)
  flags.DEFINE_string("out", None, "write all predictions to FILE.json or FILE.csv",
                      flag_values=fv)
  flags.DEFINE_integer("batch_size", 16, "samples per model call", flag_values=fv)
  flags.DEFINE_integer("num_clips", 0, "test clips per sample (0: the model's; --stream: 1)",
                       flag_values=fv)
  flags.DEFINE_string("data_dir", None, "where converted datasets live (class names of a "
                      "workdir, the dataset of a joint-ensemble workdir)", flag_values=fv)
  flags.DEFINE_bool("stream", False, "read frames as JSON lines from stdin", flag_values=fv)
  flags.DEFINE_integer("window", 0, "--stream: frames per prediction (0: clip_len)",
                       flag_values=fv)
  flags.DEFINE_integer("hop", 0, "--stream: frames between predictions (0: window / 4)",
                       flag_values=fv)
  flags.DEFINE_string("img_shape", "0,0", "--stream: H,W of 2D pixel coordinates (0,0: unknown; "
                      "1,1 for Kinetics' normalised x, y)", flag_values=fv)


def _img_shape(text):
  try:
    h, w = (int(v) for v in text.split(","))
  except ValueError:
    raise cli.UsageError(f"--img_shape {text!r}: expected H,W integers") from None
  return h, w


def _predict_files(args, predictor) -> int:
  # pylint: disable-next=import-outside-toplevel  (after runtime.configure_xla)
  from stgcn_jax.inference import predictor as predictor_lib, raw_input
  samples, bad = raw_input.read_samples(args.src, layout=predictor.layout, fmt=args.format,
                                        pyskl_layout=args.layout,
                                        check=predictor.check_channels)
  for line in bad:
    print(f"error: {line}", file=sys.stderr)
  for sample in samples:
    for line in sample.warnings:           # repairs (the converters' coordinate rule), named
      print(f"warning: {line}", file=sys.stderr)
  if not samples:
    if not bad or os.path.isdir(args.src):
      print(f"error: no sample of {args.src} could be predicted", file=sys.stderr)
    return 2
  rows = []
  by_channels = {}
  for i, sample in enumerate(samples):
    by_channels.setdefault(sample.channels, []).append(i)
  scores = [None] * len(samples)
  for channels, idx in by_channels.items():
    result = predictor.predict([samples[i].record for i in idx], channels,
                               batch_size=args.batch_size, num_clips=args.num_clips or None)
    for j, i in enumerate(idx):
      scores[i] = result.probs[j]
  for sample, probs in zip(samples, scores):
    best = predictor_lib.top_k(probs, predictor.class_names, args.top_k)
    print(f"{sample.name} ({sample.source}):")
    for rank, (name, _, p) in enumerate(best, 1):
      print(f"  {rank}. {p:.4f}  {name}")
    rows.append({"sample": sample.name, "source": sample.source, "format": sample.format,
                 **({"label": sample.label} if sample.label is not None else {}),
                 "top_k": [{"class": n, "index": k, "prob": p} for n, k, p in best]})
  if args.out:
    predictor_lib.write_predictions(args.out, rows)
    print(f"wrote {os.path.abspath(args.out)}")
  print(f"predicted {len(samples)} sample(s) with {predictor.num_members} model(s)"
        + (f"; {len(bad)} bad file(s) or sample(s)" if bad else ""))
  return 0


def main(argv=None) -> int:
  """The command (``argv`` without the program name; None: ``sys.argv[1:]``); its exit status: a
  user mistake (a ``stgcn_jax.errors.UserError``) is one ``error:`` line and 2 (``cli.run``)."""
  return cli.run(_predict, argv)


def _predict(argv) -> int:
  """Predicts; a user mistake raises a ``UserError``. An ``OSError`` (a file that cannot be read or
  written, named in its message) becomes a ``cli.UsageError``; anything else is a bug."""
  args = cli.parse(define_flags, argv, doc=__doc__)
  logging.set_verbosity(logging.WARNING)
  runtime.configure_xla()
  # pylint: disable=import-outside-toplevel  (after runtime.configure_xla)
  from stgcn_jax.inference import sources, stream
  from stgcn_jax.inference.raw_input import PredictError
  # pylint: enable=import-outside-toplevel
  try:
    if args.stream == bool(args.src):
      raise PredictError("give either --src (files) or --stream (frames on stdin)")
    if args.top_k < 1 or args.batch_size < 1:
      raise PredictError("--top_k and --batch_size must be >= 1")
    if not 0 <= args.num_clips <= 1000 or args.batch_size > 100_000:
      raise PredictError(f"--num_clips must be in 0..1000 and --batch_size at most "
                         f"100000, got {args.num_clips} and {args.batch_size}")
    if args.out and os.path.splitext(args.out)[1].lower() not in (".json", ".csv"):
      raise PredictError(f"--out {args.out}: expected a .json or .csv file name")
    predictor = sources.load_predictor(args.model, data_dir=args.data_dir)
    for note in predictor.notes:
      print(note, file=sys.stderr)
    if args.stream:
      n = stream.stream(predictor, sys.stdin, sys.stdout, sys.stderr, window=args.window or None,
                        hop=args.hop or None, k=args.top_k, num_clips=args.num_clips or 1,
                        img_shape=_img_shape(args.img_shape))
      print(f"{n} prediction(s)", file=sys.stderr)
      status = 0
    else:
      status = _predict_files(args, predictor)
  except OSError as err:
    raise cli.UsageError(str(err)) from err
  return status


if __name__ == "__main__":
  sys.exit(main())
