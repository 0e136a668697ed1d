"""Results as data: a grid's finished runs as small committed JSON files, and the table and plot
made from those files (never typed by hand).

  # 1. one JSON file per finished run, and per ensemble fused from them, into --results:
  python -m experiments.report --collect=runs/nw_ucla_cpu --results=experiments/results/nw_ucla
  # 2. the table (Markdown) and the plot, from --results alone (no workdir needed):
  python -m experiments.report --results=experiments/results/nw_ucla \\
      --table=experiments/results/nw_ucla/table.md --plot=docs/figures/nw_ucla_grid.png \\
      --readme=README.md

``--collect`` reads every workdir under ROOT that has a ``results.json``: its ``config.json``,
``metrics.jsonl`` (the warm-up -> fine-tune switch record), ``sweep_times.json`` (wall time of
every launch) and ``launch.json`` (commit, command, pinned core, allocator: written by the grid's
launcher). For each backbone it also fuses the multi-level ensemble of the generator runs at
0.6/0.8/0.95/0.99 (seed 0, the default penalty) and the dense seed ensemble of the dense runs with
seeds 0..3 (``experiments.fuse``'s code path), when all their members are there. A record is the
run's summary only: no weights, no scores.

A folder of ``experiments.pyskl_twin`` workdirs is collected the same way (``--collect=runs/
pyskl_twin --results=experiments/results/nw_ucla_pyskl_twin``); its table sets each twin beside
the dense run of its backbone and seed in ``--compare`` (the run whose batches it trained on), with
their means over the seeds.

The table has one row per run and ensemble with its test top-1 / top-5 / mean class accuracy, the
gap to its dense model, the nonzero parameters, the size of its sparse export, the wall time, the
commit, the hardware and the command. ``--readme`` replaces the text between the markers
``<!-- report:NAME begin -->`` and ``<!-- report:NAME end -->`` (NAME: the results folder's name).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import sys

from absl import flags

from experiments.sweep import ENSEMBLE_LEVELS, wall_seconds
from stgcn_jax import atomic, cli, run_files
from stgcn_jax.errors import UserError

SCHEMA = 1
DENSE_SEEDS = (0, 1, 2, 3)
SUMMARY = ("top1", "top5", "mean_class_accuracy")
TWIN = "pyskl_twin"      # the kind of an experiments.pyskl_twin record


class ReportError(UserError):
  """A result file or workdir that cannot be reported (one line naming it)."""


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("collect", "", "A runs root: write a record of each finished run (and of "
                      "the ensembles fused from them) into --results first.", flag_values=fv)
  flags.DEFINE_string("results", "experiments/results/nw_ucla", "Folder of the JSON records.",
                      flag_values=fv)
  flags.DEFINE_string("table", "", "Write the Markdown table here.", flag_values=fv)
  flags.DEFINE_string("plot", "", "Write the accuracy-against-nonzero-parameters plot here (PNG).",
                      flag_values=fv)
  flags.DEFINE_string("readme", "", "Replace the table between this file's report markers.",
                      flag_values=fv)
  flags.DEFINE_string("compare", "experiments/results/nw_ucla", "For a --results folder of "
                      "experiments.pyskl_twin records: the folder of the dense runs they twin.",
                      flag_values=fv)


# ----------------------------------------------------------------------------- collecting


def _read(path: str, default=None):
  if not os.path.exists(path):
    if default is not None:
      return default
    raise ReportError(f"{path}: not found")
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ReportError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None


def last_metrics(workdir: str, split: str) -> dict | None:
  """The last record of ``split`` in the run's ``metrics.jsonl`` (None if there is none)."""
  path = os.path.join(workdir, "metrics.jsonl")
  found = None
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        if f'"split": "{split}"' in line:
          found = json.loads(line)
  return found


def switch_of(workdir: str) -> dict | None:
  """The switch record: step, masked-out norm, the fixed batch's loss/accuracy before and after."""
  found = last_metrics(workdir, "switch")
  if found is None:
    return None
  return {"step": found["step"], "masked_norm_total": found["masked_norm_total"],
          "before": {k: found["before"][k] for k in ("loss", "accuracy")},
          "after": {k: found["after"][k] for k in ("loss", "accuracy")}}


def validation_of(workdir: str) -> dict | None:
  """The last validation (the final model's, when the run validates at its end): step and top-1,
  the figure to choose a recipe by (never the test split's)."""
  found = last_metrics(workdir, "val")
  return None if found is None else {"step": found["step"], "top1": found["top1"]}


def run_record(workdir: str, name: str) -> dict:
  """The committed summary of one finished run."""
  config = run_files.read_config(os.path.join(workdir, "config.json"))
  field = lambda path: run_files.setting(config, path)
  res = _read(os.path.join(workdir, "results.json"))
  launch = _read(os.path.join(workdir, "launch.json"), default={})
  sizes = run_files.disk_sizes([run_files.load_run(workdir)])
  mode = field("sparsity.mode")
  generator = mode == "generator"   # only the generator has a warm-up and a penalty
  return {
      "schema": SCHEMA, "kind": "run", "name": name, "protocol": config.get("variant"),
      "dataset": field("data.dataset"), "backbone": field("model.backbone"), "mode": mode,
      "sparsity": float(field("sparsity.level")) if mode != "dense" else 0.0,
      "seed": int(config["seed"]),
      "penalty_lambda": float(field("sparsity.penalty_lambda")) if generator else None,
      "warmup_epochs": field("sparsity.warmup_epochs") if generator else None,
      "lambda_schedule": (field("sparsity.lambda_schedule") or "constant") if generator else None,
      "penalty_update": (field("sparsity.penalty_update") or "gradient") if generator else None,
      "num_epochs": field("optim.num_epochs"),
      "test": {k: res[k] for k in SUMMARY}, "num_test_samples": res["num_samples"],
      "without_precise_bn": res.get("without_precise_bn"),
      **{k: res[k] for k in ("prunable_sparsity", "nonzero_params", "total_params",
                             "prunable_nonzero", "prunable_params")},
      "sparse_export_bytes": sizes and sizes["sparse_bytes"],
      "checkpoint_bytes": sizes and sizes["checkpoint_bytes"],
      "switch": switch_of(workdir), "validation": validation_of(workdir),
      "seeds": res.get("seeds"),
      "commit": launch.get("commit"), "command": launch.get("command"),
      "hardware": {**res.get("hardware", {}), **{k: launch[k] for k in
                                                  ("cpu", "pinned_core", "allocator", "nice")
                                                  if k in launch}},
      "wall_s": wall_seconds(workdir), "train_time_s": res.get("train_time_s"),
      **auto_choice(res),
  }


def twin_record(workdir: str, name: str) -> dict:
  """The committed summary of one finished ``experiments.pyskl_twin`` (its results.json, named)."""
  res = _read(os.path.join(workdir, "results.json"))
  # The command as a user reruns it: the machine's torch and pyskl paths left to the environment
  # ($STGCN_JAX_TORCH_PYTHON, $STGCN_JAX_PYSKL_SRC), the workdir under runs/pyskl_twin/.
  args = [a for a in shlex.split(res.get("command") or "")
          if not a.startswith(("--torch_python=", "--pyskl_src=", "--workdir="))]
  command = shlex.join(args + [f"--workdir=runs/pyskl_twin/{name}"]) if args else None
  return {"schema": SCHEMA, "name": name, **{k: v for k, v in res.items() if k != "schema"},
          "kind": TWIN, "command": command}


def auto_choice(res: dict) -> dict:
  """For a ``--sparsity=auto`` run, whose top-level figures are the chosen member's: that member's
  sparsity and validation, the levels it chose from, and the reason (empty for other runs)."""
  choice = res.get("auto_sparsity")
  if not choice:
    return {}
  chosen = res["members"][choice["index"]]
  return {"sparsity": float(chosen["sparsity"]),
          "validation": {"step": None, "top1": chosen["val_top1"]},
          "auto": {"chosen": choice["chosen"], "tolerance_points": choice["tolerance_points"],
                   "levels": [m["sparsity"] for m in res["members"]], "reason": choice["reason"]}}


def ensemble_record(name: str, kind: str, members: dict[str, str], records: dict) -> dict:
  """The record of a score-level ensemble (equal weights) of finished runs ``{name: workdir}``."""
  from experiments import fuse  # pylint: disable=import-outside-toplevel
  report = fuse.run_fusion(workdirs=list(members.values()))
  first = records[next(iter(members))]
  budget = report["parameter_budget"]
  return {
      "schema": SCHEMA, "kind": kind, "name": name, "protocol": first["protocol"],
      "dataset": first["dataset"], "backbone": first["backbone"], "members": list(members),
      "test": {k: report["fused"][k] for k in SUMMARY},
      "num_test_samples": report["fused"]["num_samples"],
      "nonzero_params": budget["nonzero_params"], "prunable_budget": budget["prunable_budget"],
      "total_budget": budget["total_budget"],
      "sparse_export_bytes": (report.get("disk_sizes") or {}).get("sparse_bytes"),
      "commit": sorted({records[m]["commit"] for m in members if records[m]["commit"]}),
      "command": "python -m experiments.fuse --workdirs=" + ",".join(
          os.path.join("runs", first["protocol"] or "", m) for m in members),
  }


def default_generator(record: dict) -> bool:
  """A generator run of the protocol's own recipe: lambda 1, constant, gradient penalty, the
  warm-up 60 % of the epochs (the paper's 60 of 100)."""
  return (record.get("kind") == "run" and record["mode"] == "generator"
          and record["penalty_lambda"] == 1.0
          and record.get("lambda_schedule", "constant") == "constant"
          and record.get("penalty_update", "gradient") == "gradient"
          and record.get("warmup_epochs") in (None, round(0.6 * record["num_epochs"])))


def _ensembles(records: dict, workdirs: dict) -> list[tuple[str, str, dict]]:
  """(name, kind, {member: workdir}) of every ensemble whose members all finished."""
  out = []
  for backbone in sorted({r["backbone"] for r in records.values()}):
    mine = {n: r for n, r in records.items() if r["backbone"] == backbone}
    levels = {r["sparsity"]: n for n, r in mine.items() if default_generator(r) and r["seed"] == 0}
    if all(s in levels for s in ENSEMBLE_LEVELS):
      out.append((f"{backbone}_ensemble", "ensemble",
                  {levels[s]: workdirs[levels[s]] for s in ENSEMBLE_LEVELS}))
    dense = {r["seed"]: n for n, r in mine.items() if r["mode"] == "dense"}
    if all(s in dense for s in DENSE_SEEDS):
      out.append((f"{backbone}_dense_seed_ensemble", "seed_ensemble",
                  {dense[s]: workdirs[dense[s]] for s in DENSE_SEEDS}))
  return out


def collect(root: str, results: str) -> list[str]:
  """Writes a record of every finished run under ``root`` and of its ensembles; returns paths."""
  workdirs = {os.path.basename(os.path.dirname(p)): os.path.dirname(p)
              for p in sorted(glob.glob(os.path.join(root, "*", "results.json")))}
  if not workdirs:
    raise ReportError(f"{root}: no finished run (no */results.json)")
  twins = {name for name, wd in workdirs.items()
           if _read(os.path.join(wd, "results.json")).get("kind") == TWIN}
  if twins and len(twins) != len(workdirs):
    raise ReportError(f"{root}: pyskl twins ({', '.join(sorted(twins))}) beside experiments.run "
                      "workdirs; collect each kind into its own --results folder")
  if twins:
    records = {name: twin_record(wd, name) for name, wd in workdirs.items()}
  else:
    records = {name: run_record(wd, name) for name, wd in workdirs.items()}
    for name, kind, members in _ensembles(records, workdirs):
      records[name] = ensemble_record(name, kind, members, records)
  os.makedirs(results, exist_ok=True)
  written = []
  for name, record in records.items():
    path = os.path.join(results, f"{name}.json")
    with atomic.atomic_open(path) as f:
      json.dump(record, f, indent=1)
      f.write("\n")
    written.append(path)
  return written


# ----------------------------------------------------------------------------- the table


def load_records(results: str) -> list[dict]:
  paths = sorted(glob.glob(os.path.join(results, "*.json")))
  if not paths:
    raise ReportError(f"{results}: no result files (*.json)")
  records = []
  for path in paths:
    record = _read(path)
    missing = [k for k in ("schema", "kind", "name", "backbone", "test") if k not in record]
    if missing or record["schema"] != SCHEMA:
      raise ReportError(f"{path}: not a report record of schema {SCHEMA} (missing "
                        f"{', '.join(missing) or 'nothing'}; schema {record.get('schema')!r})")
    records.append(record)
  return records


def _order(record: dict) -> tuple:
  kind = record["kind"]
  if kind != "run":
    return (record["backbone"], 5 if kind == "ensemble" else 6, 0, 0, "")
  group = {"dense": 0, "generator": 2, "lth": 4}.get(record["mode"], 7)
  if record["mode"] == "dense" and record["seed"]:
    group = 1
  if record["mode"] == "generator" and not default_generator(record):
    group = 3
  return (record["backbone"], group, record["sparsity"], record["seed"], record["name"])


def label(record: dict) -> str:
  """What a row is, in words: 'dense', 'dense (seed 2)', 'generator 0.95', 'lottery ticket 0.8',
  'generator 0.95, lambda 0', 'ensemble 0.6+0.8+0.95+0.99', 'dense seed ensemble (4)'."""
  kind = record["kind"]
  if kind == "ensemble":
    return "ensemble " + "+".join(f"{s:g}" for s in ENSEMBLE_LEVELS)
  if kind == "seed_ensemble":
    return f"dense seed ensemble ({len(record['members'])})"
  mode, s = record["mode"], record["sparsity"]
  if record.get("auto"):
    levels = "/".join(f"{x:g}" for x in record["auto"]["levels"])
    return f"--sparsity=auto: chose {s:g} of {levels}"
  if mode == "dense":
    return "dense" + (f" (seed {record['seed']})" if record["seed"] else "")
  text = {"generator": "generator", "lth": "lottery ticket"}.get(mode, mode) + f" {s:g}"
  if mode == "generator":
    if record["penalty_lambda"] != 1.0:
      text += f", lambda {record['penalty_lambda']:g}"
    if record.get("lambda_schedule", "constant") != "constant":
      text += f", lambda {record['lambda_schedule']}"
    if record.get("penalty_update", "gradient") != "gradient":
      text += f", {record['penalty_update']} update"
    if record.get("warmup_epochs") not in (None, round(0.6 * record["num_epochs"])):
      text += f", warm-up {record['warmup_epochs']} of {record['num_epochs']}"
  return text + (f" (seed {record['seed']})" if record["seed"] else "")


def _dense_top1(records: list[dict]) -> dict[str, float]:
  return {r["backbone"]: r["test"]["top1"] for r in records
          if r["kind"] == "run" and r["mode"] == "dense" and r["seed"] == 0}


def _hardware(record: dict) -> str:
  hw = record.get("hardware") or {}
  if not hw:
    return ""
  if hw.get("platform") not in (None, "cpu"):
    return hw.get("device_kind", hw["platform"])
  text = hw.get("cpu", "CPU")
  if "pinned_core" in hw:
    text += ", 1 core"
    if hw.get("nice", 0) > 0:  # the core was lent to other work: the wall time includes waits
      text += f" shared at nice {hw['nice']}"
  return text + (f", {hw['allocator']}" if hw.get("allocator") else "")


def table_rows(records: list[dict]) -> list[dict]:
  """The table's rows as values (what the test checks), in display order."""
  dense = _dense_top1(records)
  rows = []
  for r in sorted(records, key=_order):
    top1 = r["test"]["top1"]
    base = dense.get(r["backbone"])
    rows.append({
        "backbone": r["backbone"], "run": label(r), "top1": 100 * top1,
        "val_top1": None if not r.get("validation") else 100 * r["validation"]["top1"],
        "top5": 100 * r["test"]["top5"], "mean_class": 100 * r["test"]["mean_class_accuracy"],
        "vs_dense": None if base is None or label(r) == "dense" else 100 * (top1 - base),
        "nonzero_params": r.get("nonzero_params"),
        "kib": None if r.get("sparse_export_bytes") is None else r["sparse_export_bytes"] / 1024,
        "minutes": None if r.get("wall_s") is None else r["wall_s"] / 60,
        "commit": ",".join(c[:7] for c in r["commit"]) if isinstance(r.get("commit"), list)
                  else (r.get("commit") or "")[:7],
        "hardware": _hardware(r), "command": current_spelling(r.get("command") or "")})
  return rows


def current_spelling(command: str) -> str:
  """``command`` with each ``--config.FIELD`` of the flat config of earlier versions (a cell run
  at an older commit) in today's nested spelling, which ``experiments.run`` reads the same."""
  from stgcn_jax.training.config import LEGACY_NAMES  # pylint: disable=import-outside-toplevel
  return re.sub(r"--config\.(\w+)(?=[= ']|$)",
                lambda m: f"--config.{LEGACY_NAMES.get(m.group(1), m.group(1))}", command)


def _fmt(value, spec: str) -> str:
  return "" if value is None else format(value, spec)


def markdown(rows: list[dict]) -> str:
  """The table; a 'val top-1' column (the final model's validation) where any run validated."""
  val = any(r["val_top1"] is not None for r in rows)
  lines = ["| backbone | run | " + "val top-1 | " * val + "top-1 | top-5 | mean class | vs dense "
           "| nonzero params | sparse export | wall | commit | hardware | command |",
           "|---|---|" + "---|" * val + "---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['backbone']} | {r['run']} | " + f"{_fmt(r['val_top1'], '.1f')} | " * val
        + f"{r['top1']:.1f} | {r['top5']:.1f} | "
        f"{r['mean_class']:.1f} | {_fmt(r['vs_dense'], '+.1f')} | "
        f"{_fmt(r['nonzero_params'], ',d')} | {_fmt(r['kib'], ',.0f')}{' KiB' * bool(r['kib'])} "
        f"| {_fmt(r['minutes'], '.0f')}{' min' * (r['minutes'] is not None)} | {r['commit']} | "
        f"{r['hardware']} | `{r['command']}` |")
  return "\n".join(lines) + "\n"


def twin_rows(twins: list[dict], runs: list[dict]) -> list[dict]:
  """One row per pyskl twin beside the dense run of its backbone and seed (whose batches it
  trained on), then each backbone's mean over the seeds that have both."""
  dense = {(r["backbone"], r["seed"]): r for r in runs
           if r["kind"] == "run" and r["mode"] == "dense"}
  rows = []
  for t in sorted(twins, key=lambda t: (t["backbone"], t["seed"])):
    run = dense.get((t["backbone"], t["seed"]))
    if run is not None and run.get("seeds") and run["seeds"].get("data") != t["seeds"]["data"]:
      raise ReportError(f"{t['name']}: its data seed {t['seeds']['data']} is not that of the "
                        f"dense run {run['name']} ({run['seeds']['data']})")
    without = (run or {}).get("without_precise_bn") or {}
    rows.append({"backbone": t["backbone"], "seed": str(t["seed"]),
                 "twin_top1": 100 * t["test"]["top1"],
                 "jax_top1": run and 100 * run["test"]["top1"],
                 "jax_running_bn": without.get("top1") and 100 * without["top1"],
                 "twin_minutes": t["pyskl_side"]["train_time_s"] / 60,
                 "hardware": f"{t.get('cpu') or 'CPU'}, {t['pyskl_side']['threads']} thread(s), "
                             f"torch {t['pyskl_side']['torch']}",
                 "command": t["command"]})
  for backbone in sorted({r["backbone"] for r in rows}):
    both = [r for r in rows if r["backbone"] == backbone and r["jax_top1"] is not None]
    if len(both) > 1:
      mean = lambda key, rs=both: (None if any(r[key] is None for r in rs)
                                   else sum(r[key] for r in rs) / len(rs))
      rows.append({"backbone": backbone, "seed": f"mean of {len(both)}",
                   **{k: mean(k) for k in ("twin_top1", "jax_top1", "jax_running_bn",
                                           "twin_minutes")},
                   "hardware": "", "command": ""})
  return rows


def twin_markdown(rows: list[dict]) -> str:
  lines = ["| backbone | seed | pyskl's model (torch) top-1 | stgcn-jax top-1 | stgcn-jax, running "
           "BN stats | pyskl - jax | pyskl train time | hardware (pyskl side) | command |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    gap = None if r["jax_top1"] is None else r["twin_top1"] - r["jax_top1"]
    lines.append(
        f"| {r['backbone']} | {r['seed']} | {r['twin_top1']:.1f} | {_fmt(r['jax_top1'], '.1f')} | "
        f"{_fmt(r['jax_running_bn'], '.1f')} | {_fmt(gap, '+.1f')} | "
        f"{r['twin_minutes']:.0f} min | {r['hardware']} | "
        + (f"`{r['command']}` |" if r["command"] else " |"))
  return "\n".join(lines) + "\n"


def plot(records: list[dict], path: str) -> None:
  """Test top-1 against nonzero parameters (log scale): a line per backbone through its dense and
  generator runs (seed 0, default penalty), other runs and the ensembles as marked points."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=(7.0, 4.5))
  ax = fig.subplots()
  for i, backbone in enumerate(sorted({r["backbone"] for r in records})):
    color = f"C{i}"
    mine = [r for r in records if r["backbone"] == backbone]
    line = sorted((r for r in mine if r["kind"] == "run" and r["seed"] == 0 and (
        r["mode"] == "dense" or default_generator(r))), key=lambda r: r["nonzero_params"])
    ax.plot([r["nonzero_params"] for r in line], [100 * r["test"]["top1"] for r in line],
            "o-", color=color, label=f"{backbone}: dense and generator")
    for r in line:
      text = "dense" if r["mode"] == "dense" else f"{r['sparsity']:g}"
      ax.annotate(text, (r["nonzero_params"], 100 * r["test"]["top1"]),
                  textcoords="offset points", xytext=(4, -10), fontsize=7, color=color)
    marks = {"ensemble": ("*", "multi-level ensemble"), "seed_ensemble": ("D", "dense seeds")}
    for r in mine:
      if r in line:
        continue
      marker, text = marks.get(r["kind"], ("x", label(r)))
      ax.plot(r["nonzero_params"], 100 * r["test"]["top1"], marker, color=color, ms=9,
              linestyle="none", label=f"{backbone}: {text}")
  ax.set(xscale="log", xlabel="nonzero parameters (all members of an ensemble)",
         ylabel="test top-1 (%)", title="NW-UCLA cross-view, " + ", ".join(
             sorted({r.get("protocol") or "?" for r in records})))
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  fig.tight_layout()
  with atomic.atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=120, format="png")


def splice(readme: str, name: str, text: str) -> None:
  """Replaces the text between ``<!-- report:NAME begin -->`` and ``... end -->`` in ``readme``."""
  begin, end = f"<!-- report:{name} begin -->", f"<!-- report:{name} end -->"
  with open(readme) as f:
    content = f.read()
  if content.count(begin) != 1 or content.count(end) != 1 or content.index(begin) > content.index(
      end):
    raise ReportError(f"{readme}: expected one {begin!r} line followed by one {end!r} line")
  head, rest = content.split(begin)
  _, tail = rest.split(end)
  with atomic.atomic_open(readme) as f:
    f.write(f"{head}{begin}\n{text}{end}{tail}")


def main(argv=None) -> int:
  fv = cli.parse(define_flags, argv, doc=__doc__)
  if fv.collect:
    for path in collect(fv.collect, fv.results):
      print(f"wrote {path}")
  records = load_records(fv.results)
  twins = [r for r in records if r["kind"] == TWIN]
  if twins:
    if fv.plot or len(twins) != len(records):
      raise ReportError(f"{fv.results}: a folder of pyskl twins makes a table only (no --plot, "
                        "no other records beside them)")
    text = twin_markdown(twin_rows(twins, load_records(fv.compare)))
  else:
    text = markdown(table_rows(records))
  print(text)
  if fv.table:
    with atomic.atomic_open(fv.table) as f:
      f.write(text)
  if fv.plot:
    plot(records, fv.plot)
    print(f"wrote {fv.plot}")
  if fv.readme:
    splice(fv.readme, os.path.basename(os.path.normpath(fv.results)), text)
    print(f"updated {fv.readme}")
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
