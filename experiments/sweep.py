"""A grid of ``experiments.run`` runs (backbones x sparsities), in parallel, with a results table.

  python -m experiments.sweep --config=experiments/configs/default.py:nw_ucla \\
      --backbones=stgcn,aagcn,ctrgcn,dgstgcn --sparsities=0,0.6,0.8,0.95,0.99 \\
      --root=runs/nw_ucla --parallel=4 [-- --data_dir=DIR --epochs=100 ...]

Each cell is one ``python -m experiments.run`` process (sparsity 0 runs ``--mode=dense``, the
others the generator) with the workdir ``ROOT/BACKBONE_sSPARSITY``; flags after ``--`` go to every
run. Finished cells (``results.json`` present) are skipped and unfinished ones resume from their
checkpoints, so a sweep that was stopped is continued by running the same command again. With
``--parallel`` > 1 on a GPU each process gets an equal share of its memory
(``XLA_PYTHON_CLIENT_MEM_FRACTION``, unless you set it).

At the end, for every backbone with all of 0.6/0.8/0.95/0.99 done, the post-hoc multi-level
ensemble is fused (``experiments.fuse``, into ``ROOT/BACKBONE_ensemble``), and ``ROOT/table.md``
gets one row per run and ensemble: top-1/top-5/mean class accuracy, realised sparsity, wall time,
hardware and the command of the row. ``--table_only`` rebuilds the table from finished runs.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

from absl import app, flags

ENSEMBLE_LEVELS = (0.6, 0.8, 0.95, 0.99)

_CONFIG = flags.DEFINE_string("config", "experiments/configs/default.py:nw_ucla",
                              "The --config of every run (file[:variant]).")
_BACKBONES = flags.DEFINE_list("backbones", ["stgcn", "aagcn", "ctrgcn", "dgstgcn"],
                               "Backbones of the grid.")
_SPARSITIES = flags.DEFINE_list("sparsities", ["0", "0.6", "0.8", "0.95", "0.99"],
                                "Sparsities of the grid (0 = a dense run).")
_ROOT = flags.DEFINE_string("root", "runs/sweep", "Directory of the runs' workdirs and table.md.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at a time.")
_TABLE_ONLY = flags.DEFINE_bool("table_only", False, "Only fuse and write the table.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands and exit.")


class SweepError(ValueError):
  """A sweep that cannot start (bad grid)."""


def cell_name(backbone: str, sparsity: float) -> str:
  return f"{backbone}_s{sparsity:g}"


def run_command(config: str, backbone: str, sparsity: float, workdir: str,
                extra: list[str]) -> list[str]:
  """The ``experiments.run`` command line of one cell."""
  cmd = [sys.executable, "-m", "experiments.run", f"--config={config}", f"--backbone={backbone}",
         f"--sparsity={sparsity:g}", f"--workdir={workdir}"]
  if sparsity == 0:
    cmd.append("--mode=dense")
  return cmd + list(extra)


def _grid(backbones, sparsities) -> list[tuple[str, float]]:
  from stgcn_jax.models import BACKBONES  # pylint: disable=import-outside-toplevel
  unknown = [b for b in backbones if b not in BACKBONES]
  if unknown:
    raise SweepError(f"--backbones: unknown {', '.join(unknown)}; expected some of "
                     f"{', '.join(BACKBONES)}")
  try:
    values = [float(s) for s in sparsities]
  except ValueError:
    raise SweepError(f"--sparsities={','.join(sparsities)}: expected numbers in [0, 1)") from None
  bad = [s for s in values if not 0 <= s < 1]
  if bad:
    raise SweepError(f"--sparsities: {bad} outside [0, 1)")
  return [(b, s) for b in backbones for s in values]


def _child_env(parallel: int) -> dict:
  env = dict(os.environ)
  if parallel > 1 and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in env:
    # Each process also holds a CUDA context (~0.5 GB) outside its fraction: 0.9 / 20 ran out.
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{min(0.75, 0.7 / parallel):.3f}"
  return env


def _times_path(workdir: str) -> str:
  return os.path.join(workdir, "sweep_times.json")


def _add_time(workdir: str, seconds: float, rc: int) -> None:
  """Accumulates the wall time of every launch of a cell (a resumed run has several)."""
  path = _times_path(workdir)
  times = []
  if os.path.exists(path):
    with open(path) as f:
      times = json.load(f)
  times.append({"wall_s": seconds, "returncode": rc})
  with open(path, "w") as f:
    json.dump(times, f)


def run_grid(cells, config: str, root: str, extra: list[str], parallel: int) -> dict:
  """Runs the unfinished cells, ``parallel`` at a time; returns {name: returncode}."""
  todo = []
  for backbone, sparsity in cells:
    workdir = os.path.join(root, cell_name(backbone, sparsity))
    if os.path.exists(os.path.join(workdir, "results.json")):
      print(f"done already: {workdir}")
      continue
    todo.append((cell_name(backbone, sparsity), workdir,
                 run_command(config, backbone, sparsity, workdir, extra)))
  env = _child_env(parallel)
  running, codes = {}, {}
  try:
    _loop(todo, running, codes, env, parallel)
  finally:  # interrupted (Ctrl-C, timeout -s INT): stop the runs; they resume from checkpoints
    for name, (proc, log, workdir, t0) in running.items():
      proc.terminate()
    for name, (proc, log, workdir, t0) in running.items():
      rc = proc.wait()
      log.close()
      _add_time(workdir, time.time() - t0, rc)
      print(f"stopped: {name} after {time.time() - t0:.0f} s (resumes from its last checkpoint)")
  return codes


def _loop(todo, running, codes, env, parallel) -> None:
  while todo or running:
    while todo and len(running) < parallel:
      name, workdir, cmd = todo.pop(0)
      os.makedirs(workdir, exist_ok=True)
      log = open(os.path.join(workdir, "log.txt"), "a")
      print(f"start {name}: {shlex.join(cmd[1:])}", flush=True)
      proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
      running[name] = (proc, log, workdir, time.time())
    time.sleep(1.0)
    for name, (proc, log, workdir, t0) in list(running.items()):
      rc = proc.poll()
      if rc is None:
        continue
      log.close()
      _add_time(workdir, time.time() - t0, rc)
      codes[name] = rc
      del running[name]
      status = "done" if rc == 0 else f"FAILED (exit {rc}; see {workdir}/log.txt)"
      print(f"{status}: {name} after {time.time() - t0:.0f} s; {len(todo)} waiting, "
            f"{len(running)} running", flush=True)


def _read(path: str):
  with open(path) as f:
    return json.load(f)


def _wall(workdir: str) -> float | None:
  """Seconds of the launches that trained: the finished one and those stopped to be resumed
  (SIGINT/SIGTERM), not those that crashed (their work was lost to the last checkpoint)."""
  path = _times_path(workdir)
  if not os.path.exists(path):
    return None
  return sum(t["wall_s"] for t in _read(path) if t["returncode"] in (0, -2, -15))


def _hardware(results: dict) -> str:
  hw = results.get("hardware")
  if not hw:
    return "?"
  kind = (hw["device_kind"] if hw["platform"] != "cpu"
          else f"CPU ({hw.get('cpu_count') or '?'} cores)")
  return f"{hw['device_count']}x {kind}" if hw["device_count"] > 1 else kind


def _pct(x) -> str:
  return "" if x is None else f"{100 * x:.1f}"


def write_table(cells, config: str, root: str, extra: list[str]) -> str:
  """Fuses the multi-level ensembles and writes ``ROOT/table.md``; returns its text."""
  from experiments import fuse  # pylint: disable=import-outside-toplevel
  rows = []
  for backbone in dict.fromkeys(b for b, _ in cells):
    done = {}
    for b, sparsity in cells:
      workdir = os.path.join(root, cell_name(b, sparsity))
      if b != backbone or not os.path.exists(os.path.join(workdir, "results.json")):
        continue
      res = _read(os.path.join(workdir, "results.json"))
      done[sparsity] = workdir
      wall = _wall(workdir)
      rows.append(dict(
          row=f"{backbone} {'dense' if sparsity == 0 else f's={sparsity:g}'}",
          top1=res["top1"], top5=res["top5"], mca=res["mean_class_accuracy"],
          realised=res.get("prunable_sparsity"), budget=None,
          time="" if wall is None else f"{wall / 60:.1f} min", hardware=_hardware(res),
          command=shlex.join(["python"] + run_command(config, backbone, sparsity, workdir,
                                                      extra)[1:])))
    levels = [s for s in ENSEMBLE_LEVELS if s in done]
    if len(levels) == len(ENSEMBLE_LEVELS):
      workdirs = [done[s] for s in levels]
      out = os.path.join(root, f"{backbone}_ensemble")
      report = fuse.run_fusion(workdirs=workdirs, out=out)
      budget = report["parameter_budget"] or {}
      rows.append(dict(
          row=f"{backbone} ensemble {'+'.join(f'{s:g}' for s in levels)}",
          top1=report["fused"]["top1"], top5=report["fused"]["top5"],
          mca=report["fused"]["mean_class_accuracy"], realised=None,
          budget=(f"{budget['prunable_budget']:.2f} ({budget['total_budget']:.2f} of all params)"
                  if budget else "?"),
          time="(the members')", hardware="",
          command=f"python -m experiments.fuse --workdirs={','.join(workdirs)} --out={out}"))
  lines = ["| run | top-1 | top-5 | mean class | realised sparsity | budget | wall time | hardware "
           "| command |", "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    realised = "" if r["realised"] is None else f"{r['realised']:.4f}"
    lines.append(f"| {r['row']} | {_pct(r['top1'])} | {_pct(r['top5'])} | {_pct(r['mca'])} | "
                 f"{realised} | {r['budget'] or ''} | {r['time']} | {r['hardware']} | "
                 f"`{r['command']}` |")
  text = "\n".join(lines) + "\n"
  with open(os.path.join(root, "table.md"), "w") as f:
    f.write(text)
  return text


def main(argv):
  extra = argv[1:]  # everything after "--" (absl leaves unparsed positionals here)
  try:
    cells = _grid(_BACKBONES.value, _SPARSITIES.value)
  except SweepError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
  root = _ROOT.value
  if _DRY_RUN.value:
    for backbone, sparsity in cells:
      workdir = os.path.join(root, cell_name(backbone, sparsity))
      print(shlex.join(run_command(_CONFIG.value, backbone, sparsity, workdir, extra)))
    return
  os.makedirs(root, exist_ok=True)
  failed = []
  if not _TABLE_ONLY.value:
    codes = run_grid(cells, _CONFIG.value, root, extra, max(1, _PARALLEL.value))
    failed = [name for name, rc in codes.items() if rc != 0]
  print(write_table(cells, _CONFIG.value, root, extra))
  print(f"wrote {os.path.join(root, 'table.md')}")
  if failed:
    print(f"error: {len(failed)} run(s) failed: {', '.join(failed)} (their log.txt says why); "
          "run the same command again to resume them", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
