"""Top-1 of trained models on every NW-UCLA view, the training views included.

  python -m experiments.by_view --workdirs=runs/nw_ucla_cpu/stgcn_s0,runs/nw_ucla_cpu/stgcn_s0.8 \
      --src=../shared/data/nw_ucla/all_sqe --out=experiments/results/nw_ucla_by_view.json

Each model (a training workdir or a model checkpoint) predicts every raw NW-UCLA file of ``--src``
(``aXX_sYY_eZZ_vNN.json``: the label in the file, the view in the name) with its own test
pipeline, as ``experiments.predict`` does; one line per model gives top-1 on each view. The
cross-view protocol trains on views 1 and 2 and tests on view 3, so the table tells two causes of a
test gap apart: a model that scores lower on the training views too underfits; one that fits them
as well as another and scores lower on view 3 generalises worse across views. ``--out`` keeps the
figures as JSON (atomic), one entry per model with its hits and counts per view, and keeps the
models a file already holds (a later call adds or replaces models); ``--readme``
puts the table between the file's ``<!-- report:nw_ucla_by_view begin -->`` and
``<!-- report:nw_ucla_by_view end -->`` lines.
"""

import collections
import json
import os
import sys

from absl import flags, logging

from stgcn_jax import atomic, cli, runtime


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_list("workdirs", None, "training workdirs or model checkpoints, comma-separated",
                    required=True, flag_values=fv)
  flags.DEFINE_string("src", None, "a directory of raw NW-UCLA .json files", required=True,
                      flag_values=fv)
  flags.DEFINE_string("out", None, "write the figures to this .json file", flag_values=fv)
  flags.DEFINE_integer("batch_size", 16, "samples per model call", flag_values=fv)
  flags.DEFINE_string("readme", None, "put the table between this file's report markers",
                      flag_values=fv)


def view_of(name: str) -> str:
  """``"v03"`` of the sample ``a01_s01_e00_v03`` (the NW-UCLA reader has checked the form)."""
  return "v" + name.rsplit("_v", 1)[1]


def by_view(predictor, samples, batch_size: int = 16) -> dict:
  """Per view: ``{"hits", "count", "top1"}`` of ``predictor`` on ``samples`` (each labelled)."""
  hits, counts = collections.Counter(), collections.Counter()
  probs = predictor.predict([s.record for s in samples], samples[0].channels,
                            batch_size=batch_size).probs
  for sample, p in zip(samples, probs):
    view = view_of(sample.name)
    counts[view] += 1
    hits[view] += int(int(p.argmax()) == sample.label)
  return {v: {"hits": hits[v], "count": counts[v], "top1": hits[v] / counts[v]}
          for v in sorted(counts)}


def markdown(table: dict) -> str:
  """One row per model (its folder's name), one top-1 column per view."""
  views = sorted({v for per_view in table.values() for v in per_view})
  lines = ["| model | " + " | ".join(f"view {int(v[1:])}" for v in views) + " |",
           "|---|" + "---|" * len(views)]
  for model, per_view in table.items():
    cells = [f"{100 * per_view[v]['top1']:.1f}" if v in per_view else "" for v in views]
    lines.append(f"| {os.path.basename(os.path.normpath(model))} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _previous(path: str, src_name: str) -> dict:
  """The models already in ``path`` (a file this program wrote from the same ``--src``), else {}."""
  if not os.path.exists(path):
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
    models, src = old["models"], old["src"]
  except (OSError, ValueError, KeyError, TypeError) as err:
    raise cli.UsageError(f"--out {path}: exists and is not a file of this program ({err}); "
                         "move it away or name another file") from None
  if src != src_name:
    raise cli.UsageError(f"--out {path}: holds figures of --src {src!r}, not {src_name!r}; "
                         "name another file")
  return dict(models)


def _main(argv) -> int:
  args = cli.parse(define_flags, argv, doc=__doc__)
  logging.set_verbosity(logging.WARNING)
  runtime.configure_xla()
  # pylint: disable=import-outside-toplevel  (after runtime.configure_xla)
  from stgcn_jax.data import DataError
  from stgcn_jax.inference import raw_input, sources
  # pylint: enable=import-outside-toplevel
  if args.out and not args.out.lower().endswith(".json"):
    raise cli.UsageError(f"--out {args.out}: expected a .json file name")
  if not os.path.isdir(args.src):
    raise cli.UsageError(f"--src {args.src}: expected a directory of NW-UCLA .json files")
  src_name = os.path.basename(os.path.normpath(args.src))
  table = _previous(args.out, src_name) if args.out else {}
  read = {}     # the samples, once per layout
  for workdir in args.workdirs:
    predictor = sources.load_predictor(workdir)
    if predictor.layout.name not in read:
      samples, bad = raw_input.read_samples(args.src, layout=predictor.layout, fmt="nw_ucla",
                                            check=predictor.check_channels)
      if bad:
        raise DataError(f"{len(bad)} file(s) of {args.src} cannot be read (every file must be a "
                        f"labelled NW-UCLA file); the first: {bad[0]}")
      read[predictor.layout.name] = samples
    table[workdir] = by_view(predictor, read[predictor.layout.name], args.batch_size)
    print(f"{workdir}: " + "  ".join(f"{v} {100 * r['top1']:.1f} % ({r['count']})"
                                     for v, r in table[workdir].items()))
  if args.out:
    with atomic.atomic_open(args.out, "w") as f:
      json.dump({"src": src_name, "models": table}, f, indent=1)
      f.write("\n")
    print(f"wrote {os.path.abspath(args.out)}")
  if args.readme:
    from experiments import report  # pylint: disable=import-outside-toplevel
    report.splice(args.readme, "nw_ucla_by_view", markdown(table))
    print(f"updated {args.readme}")
  return 0


def main(argv=None) -> int:
  """The command (``argv`` without the program name); a user mistake is one ``error:`` line, 2."""
  return cli.run(_main, argv)


if __name__ == "__main__":
  sys.exit(main())
