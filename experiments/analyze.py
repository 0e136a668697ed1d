"""The paper's analyses of finished runs (docs/METHOD.md section 8) as PNG figures and a table.

  python -m experiments.analyze --root=runs --out=runs/analysis
  python -m experiments.analyze --workdirs=runs/a,runs/b --out=analysis --threshold=0.5

writes to ``--out``:
  ``fig4_accuracy_vs_sparsity.png``  accuracy vs sparsity: generator with / without the penalty
                                      (penalty_lambda=0), LTH from pretrained / random weights;
  ``fig5_warmup.png``                 the generator with / without warm-up (warmup_epochs=0);
  ``fig6_max_softmax.png``            violins of each sample's maximum softmax probability for the
                                      single models, the post-hoc ensemble of the generator runs
                                      and joint ensembles (members and fusion); bottom row: only
                                      the samples whose maximum is below --threshold;
  ``runs.md``, ``runs.csv``           one row per run.
Runs are grouped by config.json; dense runs (sparsity 0) are the s=0 point of every curve, and a
figure gets one panel per (backbone, dataset, modality). Several seeds give mean +- std.
"""

import csv
import os
import sys

from absl import flags
from matplotlib.figure import Figure   # no pyplot: no global backend state, PNG via Agg
import numpy as np

from stgcn_jax import atomic, cli, fusion, run_files, runtime, scores

FIG4_GROUPS = ("generator + penalty", "generator, no penalty", "LTH, pretrained",
               "LTH, random init")
FIG5_GROUPS = ("with warm-up", "without warm-up")
FIGURES = {"fig4_accuracy_vs_sparsity.png": ("Accuracy vs sparsity", FIG4_GROUPS),
           "fig5_warmup.png": ("Warm-up ablation", FIG5_GROUPS)}
COLUMNS = ("run", "backbone", "dataset", "modality", "mode", "sparsity", "warmup_epochs",
           "penalty_lambda", "init", "seed", "top1", "top5", "mean_class_accuracy",
           "prunable_sparsity", "nonzero_params")


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_list("workdirs", [], "Workdirs of finished runs.", flag_values=fv)
  flags.DEFINE_string("root", "", "Scan this directory tree for workdirs with results.json.",
                      flag_values=fv)
  flags.DEFINE_string("out", "", "Output directory for the figures and the table (required).",
                      flag_values=fv)
  flags.DEFINE_float("threshold", 0.5, "Fig. 6 bottom row: samples whose max is below this.",
                     flag_values=fv)
  flags.DEFINE_enum("metric", "top1", ["top1", "top5", "mean_class_accuracy"],
                    "Accuracy plotted in Figs. 4 and 5.", flag_values=fv)


def find_workdirs(root: str) -> list[str]:
  """Every directory under ``root`` (itself included) that holds a results.json."""
  if not os.path.isdir(root):
    raise scores.FusionError(f"--root={root}: no such directory")
  return sorted(d for d, _, files in os.walk(root) if "results.json" in files)


_field = run_files.setting   # a field of a nested config.json: _field(config, "sparsity.level")


def _mode(config: dict) -> tuple[str, bool]:
  """The run's mode and whether it is dense (mode=dense, or sparsity 0 outside ensembles)."""
  sparsity = float(_field(config, "sparsity.level") or 0.0)
  mode = _field(config, "sparsity.mode") or ("dense" if sparsity == 0 else "generator")
  return mode, mode == "dense" or (sparsity == 0 and mode != "ensemble")


def groups_of(config: dict) -> set[str]:
  """The curves of Figs. 4 and 5 a run belongs to, from its config.json.

  Generator runs with warm-up and lambda > 0 are "generator + penalty" (Fig. 4) and "with warm-up"
  (Fig. 5); with lambda = 0 "generator, no penalty"; with warmup_epochs = 0 "without warm-up" (the
  penalty acts only during warm-up). LTH runs split on ``pretrained``. Dense runs are in no group:
  they are the s=0 point of every curve.
  """
  mode, dense = _mode(config)
  if dense:
    return set()
  if mode == "generator":
    if _field(config, "sparsity.warmup_epochs") == 0:
      return {"without warm-up"}
    if float(_field(config, "sparsity.penalty_lambda", 1.0)) > 0:
      return {"generator + penalty", "with warm-up"}
    return {"generator, no penalty"}
  if mode == "lth":
    return {"LTH, pretrained" if _field(config, "model.pretrained") else "LTH, random init"}
  return set()


def load(workdir: str) -> dict:
  """A run record: workdir, config, results, its groups and plotting key."""
  config = run_files.read_config(os.path.join(workdir, "config.json"))
  results = run_files.read_json(os.path.join(workdir, "results.json"))
  missing = [k for k in ("top1", "top5", "mean_class_accuracy") if k not in results]
  if missing:
    raise scores.FusionError(f"{workdir}/results.json lacks {', '.join(missing)}")
  mode, dense = _mode(config)
  groups = groups_of(config)
  return dict(workdir=workdir, config=config, results=results, mode=mode, dense=dense,
              sparsity=0.0 if dense else float(_field(config, "sparsity.level") or 0.0),
              groups=groups, key=tuple(str(_field(config, path, "?")) for path in (
                  "model.backbone", "data.dataset", "data.modality")))


def _panels(runs: list[dict]) -> list[tuple]:
  return sorted({r["key"] for r in runs})


def _new_figure(n: int, rows: int = 1, width: float = 5.0):
  fig = Figure(figsize=(width * n, 4.0 * rows))
  return fig, fig.subplots(rows, n, squeeze=False)


def plot_curves(runs: list[dict], groups: tuple, title: str, path: str, metric: str,
                notes: list[str]) -> bool:
  """Accuracy vs sparsity, one line per group present, one panel per key; False if none."""
  present = [g for g in groups if any(g in r["groups"] for r in runs)]
  for g in groups:
    if g not in present:
      notes.append(f"{os.path.basename(path)}: no runs for {g!r}; skipped")
  if not present:
    notes.append(f"{os.path.basename(path)}: no sparse runs of these groups; figure not written")
    return False
  keys = _panels([r for r in runs if r["groups"] & set(present)])
  fig, axes = _new_figure(len(keys))
  for ax, key in zip(axes[0], keys):
    dense = [r for r in runs if r["key"] == key and r["dense"]]
    for g in present:
      sparse = [r for r in runs if r["key"] == key and g in r["groups"]]
      if not sparse:
        continue
      members = dense + sparse
      xs = sorted({r["sparsity"] for r in members})
      vals = [[100 * r["results"][metric] for r in members if r["sparsity"] == x] for x in xs]
      ax.errorbar([100 * x for x in xs], [np.mean(v) for v in vals],
                  yerr=[np.std(v) if len(v) > 1 else 0 for v in vals], marker="o", capsize=3,
                  label=g)
    ax.set(title=" / ".join(key), xlabel="sparsity (%)", ylabel=f"{metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle(title + (" (s=0: dense)" if any(r["dense"] for r in runs) else ""))
  fig.tight_layout()
  with atomic.atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=120)
  return True


def _violin_sets(runs: list[dict], key: tuple, notes: list[str]) -> list[tuple[str, np.ndarray]]:
  """(label, max softmax per sample) for the single models and ensembles of one key."""
  have = [r for r in runs if r["key"] == key
          and os.path.exists(os.path.join(r["workdir"], "scores.npz"))]
  singles = [r for r in have if r["dense"] or "generator + penalty" in r["groups"]]
  if not singles:
    singles = [r for r in have if r["mode"] != "ensemble"]
  singles.sort(key=lambda r: (r["sparsity"], r["config"].get("seed", 0), r["workdir"]))
  sets, seen, ens_runs = [], {}, []
  for r in singles:
    run = run_files.load_run(r["workdir"])
    label = "dense" if r["dense"] else f"s={r['sparsity']:g}"
    if label in seen:
      label += f" seed {r['config'].get('seed', len(sets))}"
    elif not r["dense"]:
      ens_runs.append(run)
    seen[label] = True
    sets.append((label, run.scores.max(1)))
  if len(ens_runs) >= 2:
    try:
      aligned = fusion.align(ens_runs)
      fused = fusion.fuse([a.scores for a in aligned], normalize=True)
      sets.append(("post-hoc ensemble", fused.max(1)))
    except scores.FusionError as e:
      notes.append(f"fig6 {'/'.join(key)}: no post-hoc ensemble ({e})")
  for r in (r for r in have if r["mode"] == "ensemble"):
    run = run_files.load_run(r["workdir"])
    parts = fusion.members(run)
    for m in parts:
      sets.append((f"joint {m.name.rsplit('[', 1)[-1].rstrip(']')}", m.scores.max(1)))
    if len(parts) > 1:
      fused = fusion.fuse([m.scores for m in parts], normalize=True)
      sets.append(("joint ensemble", fused.max(1)))
  return sets


def _violins(ax, sets: list[tuple[str, np.ndarray]]) -> None:
  ok = [i for i, (_, v) in enumerate(sets) if v.size >= 2 and np.ptp(v) > 0]
  if ok:
    ax.violinplot([sets[i][1] for i in ok], positions=ok, showmedians=True)
  for i, (_, v) in enumerate(sets):
    if i not in ok and v.size:
      ax.scatter(np.full(v.size, i), v, s=8)
  ax.set_xticks(range(len(sets)), [f"{label}\nn={v.size}" for label, v in sets], rotation=30,
                ha="right", fontsize=8)
  ax.set(ylim=(0, 1.02), ylabel="max softmax probability")
  ax.grid(axis="y", alpha=0.3)


def plot_confidence(runs: list[dict], path: str, threshold: float, notes: list[str]) -> bool:
  """Fig. 6: violins over all samples (top) and over those with max < threshold (bottom)."""
  panels = [(key, sets) for key in _panels(runs) if (sets := _violin_sets(runs, key, notes))]
  if not panels:
    notes.append(f"{os.path.basename(path)}: no run has scores.npz; figure not written")
    return False
  width = max(5.0, 0.9 * max(len(s) for _, s in panels))
  fig, axes = _new_figure(len(panels), rows=2, width=width)
  for col, (key, sets) in enumerate(panels):
    _violins(axes[0, col], sets)
    axes[0, col].set_title(f"{' / '.join(key)}: all test samples")
    _violins(axes[1, col], [(label, v[v < threshold]) for label, v in sets])
    axes[1, col].set_title(f"samples with max < {threshold:g}")
  fig.tight_layout()
  with atomic.atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=120)
  return True


def table_rows(runs: list[dict], root: str = "") -> list[dict]:
  rows = []
  for r in runs:
    c, res = r["config"], r["results"]
    if r["mode"] == "ensemble":
      sparsity = "+".join(f"{float(s):g}" for s in _field(c, "sparsity.ensemble_sparsities", []))
    else:
      sparsity = f"{r['sparsity']:g}"
    generator = r["mode"] in ("generator", "ensemble")
    rows.append(dict(
        run=os.path.relpath(r["workdir"], root) if root else r["workdir"],
        backbone=r["key"][0], dataset=r["key"][1], modality=r["key"][2], mode=r["mode"],
        # Only the generator (and its joint ensembles) has a warm-up and a penalty.
        sparsity=sparsity,
        warmup_epochs=_field(c, "sparsity.warmup_epochs", "") if generator else "",
        penalty_lambda=_field(c, "sparsity.penalty_lambda", "") if generator else "",
        init=(("pretrained" if _field(c, "model.pretrained") else "random")
              if r["mode"] == "lth" else ""),
        seed=c.get("seed", ""), top1=res.get("top1"), top5=res.get("top5"),
        mean_class_accuracy=res.get("mean_class_accuracy"),
        prunable_sparsity=res.get("prunable_sparsity"),
        nonzero_params=res.get("nonzero_params",
                               sum(m.get("nonzero_params", 0) for m in res.get("members", [])))))
  rows.sort(key=lambda row: (row["backbone"], row["dataset"], row["modality"], row["mode"],
                             float(row["sparsity"].split("+")[0] or 0), str(row["seed"]),
                             row["run"]))
  return rows


def _cell(key: str, value) -> str:
  if value is None or value == "":
    return "-" if value is None else ""
  if key in ("top1", "top5", "mean_class_accuracy"):
    return f"{100 * value:.2f}"
  if key == "prunable_sparsity":
    return f"{value:.4f}"
  if key == "nonzero_params":
    return f"{value:,}"
  return str(value)


def write_table(rows: list[dict], out: str) -> tuple[str, str]:
  md, csv_path = os.path.join(out, "runs.md"), os.path.join(out, "runs.csv")
  with atomic.atomic_open(csv_path, "w", newline="") as f:
    writer = csv.DictWriter(f, COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  lines += ["| " + " | ".join(_cell(k, row[k]) for k in COLUMNS) + " |" for row in rows]
  with atomic.atomic_open(md) as f:
    f.write("Accuracies in %.\n\n" + "\n".join(lines) + "\n")
  return md, csv_path


def analyze(workdirs: list[str], out: str, threshold: float = 0.5, metric: str = "top1",
            root: str = "") -> dict:
  """Writes the figures and tables for ``workdirs``; returns {"files": [...], "notes": [...]}."""
  if not workdirs:
    raise scores.FusionError("no runs to analyze (give --workdirs or a --root with results.json)")
  runs = [load(w) for w in workdirs]
  os.makedirs(out, exist_ok=True)
  files, notes = [], []
  for name, (title, groups) in FIGURES.items():
    if plot_curves(runs, groups, title, os.path.join(out, name), metric, notes):
      files.append(os.path.join(out, name))
  path = os.path.join(out, "fig6_max_softmax.png")
  if plot_confidence(runs, path, threshold, notes):
    files.append(path)
  files.extend(write_table(table_rows(runs, root), out))
  return dict(files=files, notes=notes)


def main(argv=None) -> int:
  """The command (``argv`` without the program name; None: ``sys.argv[1:]``); a user mistake
  raises ``cli.UsageError`` or ``scores.FusionError`` (one ``error:`` line from ``cli.run``)."""
  f = cli.parse(define_flags, argv, doc=__doc__)
  runtime.configure_xla()
  if not f.out:
    raise cli.UsageError("--out is required (the directory for the figures and the table)")
  workdirs = list(f.workdirs) + (find_workdirs(f.root) if f.root else [])
  report = analyze(sorted(dict.fromkeys(os.path.normpath(w) for w in workdirs)), f.out,
                   f.threshold, f.metric, f.root)
  for note in report["notes"]:
    print(f"note: {note}")
  with open(os.path.join(f.out, "runs.md")) as table:
    print(table.read(), end="")
  for path in report["files"]:
    print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
