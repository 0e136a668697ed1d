"""Fuse finished runs at the score level (docs/METHOD.md sections 5 and 6).

Multi-level sparsity ensemble (the same backbone at several sparsities; equal weights by default):

  python -m experiments.fuse --workdirs=runs/s0.6,runs/s0.8,runs/s0.95,runs/s0.99 --out=runs/ens

prints each member's and the fusion's top-1/top-5/mean class accuracy and the parameter budget
(nonzero prunable weights summed over members / one dense model's prunable weights, 0.66 for
{0.6, 0.8, 0.95, 0.99}, and the honest total over all parameters). A joint-ensemble workdir
(mode=ensemble) given here contributes each of its members.

Multi-stream fusion (weights j:b:jm:bm = 2:2:1:1 unless --stream_weights says otherwise):

  python -m experiments.fuse --streams=j:runs/j,b:runs/b,jm:runs/jm,bm:runs/bm --out=runs/4s

Runs are aligned by their test-record index; runs with different samples, labels or classes are
refused. ``--out`` receives ``fusion.json`` (and ``fused_scores.npz`` with --save_scores).
"""

import json
import os
import sys

from absl import flags
import numpy as np

from stgcn_jax import atomic, cli, fusion, run_files, runtime, scores



def define_flags(fv: flags.FlagValues) -> None:
  """The CLI's flags, on the program's own registry (``stgcn_jax.cli``)."""
  flags.DEFINE_list("workdirs", [], "Ensemble members: workdirs of one backbone at several "
                    "sparsities (joint-ensemble workdirs expand to their members).", flag_values=fv)
  flags.DEFINE_list("weights", [], "Member weights for --workdirs (default: equal).",
                    flag_values=fv)
  flags.DEFINE_list("streams", [], "Streams as NAME:WORKDIR, e.g. j:DIR,b:DIR,jm:DIR,bm:DIR.",
                    flag_values=fv)
  flags.DEFINE_list("stream_weights", [], "Stream weights in the order of --streams (default: "
                    "j=2, b=2, jm=1, bm=1).", flag_values=fv)
  flags.DEFINE_string("out", "", "Directory for fusion.json (nothing is written if empty).",
                      flag_values=fv)
  flags.DEFINE_bool("save_scores", False, "Also write fused_scores.npz to --out.", flag_values=fv)


def _floats(values: list[str], flag: str) -> list[float]:
  """The weights of ``--flag``: finite numbers >= 0, not all 0 (an empty list: the defaults)."""
  given = f"--{flag}={','.join(map(str, values))}"
  try:
    weights = [float(v) for v in values]
  except (TypeError, ValueError):
    raise scores.FusionError(f"{given}: expected comma-separated numbers") from None
  if weights and not all(np.isfinite(w) and w >= 0 for w in weights):
    raise scores.FusionError(f"{given}: every weight must be a finite number >= 0")
  if weights and not any(w > 0 for w in weights):
    raise scores.FusionError(f"{given}: at least one weight must be > 0")
  return weights


def _check_out(out: str) -> None:
  """Refuses, before any run is read, an ``--out`` that is (or lies under) a file."""
  problem = atomic.file_in_the_way(out)
  if problem:
    raise scores.FusionError(f"--out={out}: {problem}; expected a directory for fusion.json")


def _ensemble_runs(workdirs, weights) -> tuple[list[run_files.Run], list[float]]:
  runs = [m for d in workdirs for m in fusion.members(run_files.load_run(d))]
  weights = weights or [1.0] * len(runs)
  if len(weights) != len(runs):
    raise scores.FusionError(f"--weights has {len(weights)} values for {len(runs)} members "
                             f"({', '.join(r.name for r in runs)})")
  backbones = sorted({str(r.setting("model.backbone", "?")) for r in runs})
  if len(backbones) > 1:
    print(f"warning: the members have different backbones ({', '.join(backbones)})")
  return runs, weights


def _stream_runs(items, stream_weights) -> tuple[list[run_files.Run], list[float], list[str]]:
  streams = []
  for item in items:
    name, sep, workdir = item.partition(":")
    if not sep or not name or not workdir:
      raise scores.FusionError(f"--streams entry {item!r}: expected NAME:WORKDIR (e.g. j:runs/j)")
    streams.append((name, workdir))
  names = [n for n, _ in streams]
  if len(set(names)) != len(names):
    raise scores.FusionError(f"--streams names a stream twice: {','.join(names)}")
  if stream_weights:
    weights = stream_weights
    if len(weights) != len(streams):
      raise scores.FusionError(f"--stream_weights has {len(weights)} values for {len(streams)} "
                               f"streams ({','.join(names)})")
  else:
    unknown = [n for n in names if n not in fusion.STREAM_WEIGHTS]
    if unknown:
      raise scores.FusionError(f"no default weight for stream(s) {','.join(unknown)} (defaults "
                               "exist for j, b, jm, bm); pass --stream_weights")
    weights = [fusion.STREAM_WEIGHTS[n] for n in names]
  runs = []
  for name, workdir in streams:
    run = run_files.load_run(workdir)
    modality = run.setting("data.modality")
    if modality is not None and modality != name:
      print(f"warning: stream {name}: {workdir} was trained on modality {modality!r}")
    runs.append(run)
  return runs, weights, names


def _line(label: str, sparsity, metrics: dict, weight=None) -> str:
  s = "" if sparsity is None else f"{sparsity:.4g}"
  w = "" if weight is None else f"{weight:g}"
  return (f"{label:<48} {s:>8} {w:>6} {100 * metrics['top1']:8.2f} {100 * metrics['top5']:8.2f} "
          f"{100 * metrics['mean_class_accuracy']:8.2f}")


def run_fusion(workdirs=(), weights=(), streams=(), stream_weights=(), out: str = "",
               save_scores: bool = False) -> dict:
  """Loads, aligns and fuses runs (the CLI's flags as arguments); prints and returns the report.

  Args:
    workdirs: ensemble members (joint-ensemble workdirs expand to their members).
    weights: one weight per member (strings or numbers; default equal).
    streams: ``"NAME:WORKDIR"`` items; exactly one of ``workdirs`` and ``streams`` is given.
    stream_weights: one weight per stream (default ``fusion.STREAM_WEIGHTS``, 2:2:1:1).
    out: directory for ``fusion.json`` ("" writes nothing).
    save_scores: also write ``fused_scores.npz`` (scores, labels, index, names) to ``out``.

  Raises:
    scores.FusionError: for runs that cannot be fused (one line naming the workdirs).
  """
  if bool(workdirs) == bool(streams):
    raise scores.FusionError("give exactly one of --workdirs (ensemble) or --streams (streams)")
  weights, stream_weights = _floats(weights, "weights"), _floats(stream_weights, "stream_weights")
  if out:
    _check_out(out)
  if workdirs:
    kind, (runs, weights), labels = "ensemble", _ensemble_runs(workdirs, weights), None
  else:
    kind, (runs, weights, labels) = "streams", _stream_runs(streams, stream_weights)
  runs = fusion.align(runs)
  labels = labels or [r.name for r in runs]
  fused = fusion.fuse([r.scores for r in runs], weights)
  y = runs[0].labels
  members = []
  print(f"{'run':<48} {'sparsity':>8} {'weight':>6} {'top1':>8} {'top5':>8} {'mca':>8}")
  for label, run, weight in zip(labels, runs, weights):
    metrics = fusion.evaluate(run.scores, y)
    members.append(dict(name=label, workdir=run.name, sparsity=run.sparsity, weight=weight,
                        modality=run.setting("data.modality"), **metrics))
    print(_line(f"{label}: {run.name}" if kind == "streams" else label, run.sparsity, metrics,
                weight))
  metrics = fusion.evaluate(fused, y)
  print(_line(f"fusion ({':'.join(f'{w:g}' for w in weights)})", None, metrics))
  report = dict(kind=kind, weights=weights, members=members,
                fused=dict(num_samples=int(len(y)), num_classes=runs[0].num_classes, **metrics),
                parameter_budget=None)
  if kind == "ensemble":
    report["parameter_budget"] = _print_budget(runs)
  report["disk_sizes"] = _print_sizes(runs)
  if out:
    _write(out, report, fused, runs[0], save_scores)
  return report


def _print_budget(runs) -> dict | None:
  try:
    budget = scores.parameter_budget([r.results for r in runs], [r.name for r in runs])
  except scores.FusionError as e:
    print(f"parameter budget not computed: {e}")
    return None
  print(f"parameter budget: {budget['prunable_budget']:.4f} x one dense model's prunable "
        f"weights ({budget['prunable_nonzero']:,} nonzero prunable over {len(runs)} members / "
        f"{budget['dense_prunable_params']:,.0f})")
  print(f"honest total:     {budget['total_budget']:.4f} x one dense model's parameters "
        f"({budget['nonzero_params']:,} nonzero incl. unmasked layers and heads / "
        f"{budget['dense_total_params']:,.0f})")
  return budget


def _print_sizes(runs) -> dict | None:
  sizes = run_files.disk_sizes(runs)
  if sizes is None:
    print("size on disk: not computed (a member has no saved model/)")
    return None
  for member in sizes["members"]:
    print(f"size on disk: {member['name']}: sparse export {member['sparse_bytes'] / 1024:,.0f} "
          f"KiB, checkpoint {member['checkpoint_bytes'] / 1024:,.0f} KiB")
  print(f"size on disk: all {len(runs)} members: sparse export "
        f"{sizes['sparse_bytes'] / 1024:,.0f} KiB, checkpoints "
        f"{sizes['checkpoint_bytes'] / 1024:,.0f} KiB")
  return sizes


def _write(out: str, report: dict, fused, first, save_scores: bool) -> None:
  """fusion.json (and fused_scores.npz), each under a temporary name and then renamed."""
  path = os.path.join(out, "fusion.json")
  try:
    os.makedirs(out, exist_ok=True)
    with atomic.atomic_open(path) as f:
      json.dump(report, f, indent=2)
    print(f"wrote {path}")
    if save_scores:
      path = os.path.join(out, "fused_scores.npz")
      extra = {} if first.names is None else {"names": first.names}
      with atomic.atomic_path(path) as tmp:
        np.savez(tmp, scores=fused.astype(np.float32), labels=first.labels, index=first.index,
                 **extra)
      print(f"wrote {path}")
  except OSError as err:
    raise scores.FusionError(f"--out={out}: cannot write {path} ({err.strerror or err})") \
        from None


def main(argv=None) -> int:
  fv = cli.parse(define_flags, argv, doc=__doc__)
  runtime.configure_xla()
  run_fusion(fv.workdirs, fv.weights, fv.streams, fv.stream_weights, fv.out, fv.save_scores)
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
