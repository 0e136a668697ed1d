"""Predict actions with a trained model: ``python -m experiments.predict --model=M --src=PATH``.

``--model``: a model checkpoint (``model.json`` + ``variables/``), a training workdir, a
joint-ensemble workdir, or several comma-separated (a post-hoc ensemble: softmax scores summed).
``--src``: an NTU ``.skeleton`` file, a Kinetics-skeleton or NW-UCLA ``.json`` file, a pyskl
``.pkl`` (every annotation is a sample), or a directory of them; the format is told from the
extension and content, or given with ``--format``. Prints the top-k classes of every sample;
``--out FILE.json|FILE.csv`` writes them all. A bad file is one line on stderr and the rest are
predicted; exit status 0 when at least one sample was predicted, else 2.

``--stream``: frames as JSON lines on stdin (a list of persons, each V joints x C values in the
layout's joint order, or one person as V x C); every ``--hop`` frames, once ``--window`` frames are
in, one JSON line ``{"frame", "classes", "probs", "latency_ms"}`` on stdout.
"""

import os
import sys

from absl import app, flags, logging

from stgcn_jax import runtime

_MODEL = flags.DEFINE_string("model", None, "model checkpoint dir, training workdir, or several "
                             "comma-separated (post-hoc ensemble)", required=True)
_SRC = flags.DEFINE_string("src", None, "a raw file or a directory of raw files")
_FORMAT = flags.DEFINE_enum("format", None, ["ntu", "kinetics", "nw_ucla", "pyskl"],
                            "input format (default: told from the extension / content)")
_LAYOUT = flags.DEFINE_string("layout", None, "layout of a pyskl pickle (default: the model's)")
_TOP_K = flags.DEFINE_integer("top_k", 5, "classes shown per sample")
_OUT = flags.DEFINE_string("out", None, "write all predictions to FILE.json or FILE.csv")
_BATCH = flags.DEFINE_integer("batch_size", 16, "samples per model call")
_NUM_CLIPS = flags.DEFINE_integer("num_clips", 0, "test clips per sample (0: the model's; "
                                  "--stream: 1)")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "where converted datasets live (class names of "
                                "a workdir, the dataset of a joint-ensemble workdir)")
_STREAM = flags.DEFINE_bool("stream", False, "read frames as JSON lines from stdin")
_WINDOW = flags.DEFINE_integer("window", 0, "--stream: frames per prediction (0: clip_len)")
_HOP = flags.DEFINE_integer("hop", 0, "--stream: frames between predictions (0: window / 4)")
_IMG_SHAPE = flags.DEFINE_string("img_shape", "0,0", "--stream: H,W of 2D pixel coordinates "
                                 "(0,0: unknown; 1,1 for Kinetics' normalised x, y)")


def _img_shape(text):
  try:
    h, w = (int(v) for v in text.split(","))
  except ValueError:
    raise ValueError(f"--img_shape {text!r}: expected H,W integers") from None
  return h, w


def _predict_files(predict, predictor) -> int:
  samples, bad = predict.read_samples(_SRC.value, layout=predictor.layout, fmt=_FORMAT.value,
                                      pyskl_layout=_LAYOUT.value,
                                      check=predictor.check_channels)
  for line in bad:
    print(f"error: {line}", file=sys.stderr)
  if not samples:
    if not bad or os.path.isdir(_SRC.value):
      print(f"error: no sample of {_SRC.value} could be predicted", file=sys.stderr)
    return 2
  rows = []
  by_channels = {}
  for i, sample in enumerate(samples):
    by_channels.setdefault(sample.channels, []).append(i)
  scores = [None] * len(samples)
  for channels, idx in by_channels.items():
    result = predictor.predict([samples[i].record for i in idx], channels,
                               batch_size=_BATCH.value, num_clips=_NUM_CLIPS.value or None)
    for j, i in enumerate(idx):
      scores[i] = result.probs[j]
  for sample, probs in zip(samples, scores):
    best = predict.top_k(probs, predictor.class_names, _TOP_K.value)
    print(f"{sample.name} ({sample.source}):")
    for rank, (name, _, p) in enumerate(best, 1):
      print(f"  {rank}. {p:.4f}  {name}")
    rows.append({"sample": sample.name, "source": sample.source, "format": sample.format,
                 **({"label": sample.label} if sample.label is not None else {}),
                 "top_k": [{"class": n, "index": k, "prob": p} for n, k, p in best]})
  if _OUT.value:
    predict.write_predictions(_OUT.value, rows)
    print(f"wrote {os.path.abspath(_OUT.value)}")
  print(f"predicted {len(samples)} sample(s) with {predictor.num_members} model(s)"
        + (f"; {len(bad)} bad file(s) or sample(s)" if bad else ""))
  return 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  runtime.configure_xla()
  from stgcn_jax import checkpoint, data, graph, predict  # pylint: disable=import-outside-toplevel
  user_errors = (predict.PredictError, checkpoint.CheckpointError, data.DataError,
                 graph.LayoutError, ValueError, FileNotFoundError)
  try:
    if _STREAM.value == bool(_SRC.value):
      raise predict.PredictError("give either --src (files) or --stream (frames on stdin)")
    if _TOP_K.value < 1 or _BATCH.value < 1:
      raise predict.PredictError("--top_k and --batch_size must be >= 1")
    if _OUT.value and os.path.splitext(_OUT.value)[1].lower() not in (".json", ".csv"):
      raise predict.PredictError(f"--out {_OUT.value}: expected a .json or .csv file name")
    predictor = predict.load_predictor(_MODEL.value, data_dir=_DATA_DIR.value)
    for note in predictor.notes:
      print(note, file=sys.stderr)
    if _STREAM.value:
      n = predict.stream(predictor, sys.stdin, sys.stdout, sys.stderr, window=_WINDOW.value or None,
                         hop=_HOP.value or None, k=_TOP_K.value, num_clips=_NUM_CLIPS.value or 1,
                         img_shape=_img_shape(_IMG_SHAPE.value))
      print(f"{n} prediction(s)", file=sys.stderr)
      status = 0
    else:
      status = _predict_files(predict, predictor)
  except user_errors as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
  sys.exit(status)


if __name__ == "__main__":
  app.run(main)
