"""A grid of ``experiments.run`` runs (backbones x sparsities), in parallel, with a results table.

  python -m experiments.sweep --config=experiments/configs/default.py:nw_ucla \\
      --backbones=stgcn,aagcn,ctrgcn,dgstgcn --sparsities=0,0.6,0.8,0.95,0.99 \\
      --root=runs/nw_ucla --parallel=4 [-- --data_dir=DIR --epochs=100 ...]

Each cell is one ``python -m experiments.run`` process (sparsity 0 is a dense run, the others the
generator: the run config's policy, ``stgcn_jax.training.config``) with the workdir
``ROOT/BACKBONE_sSPARSITY``; flags after ``--`` go to every run. Finished cells (``results.json``
present) are skipped and unfinished ones resume from their checkpoints, so a sweep that was stopped is continued by running the same command again. With
``--parallel`` > 1 on a GPU each process gets an equal share of its memory
(``XLA_PYTHON_CLIENT_MEM_FRACTION``, unless you set it).

Dense seed-ensemble control (``--dense_seeds=N``, default 4 = the size of the multi-level
ensemble; 0 or 1 turns it off): an ensemble of N dense models also gains from seed diversity alone,
so for every backbone whose grid has sparsity 0 the sweep also trains N - 1 more dense runs with
``--seed=K``, K = BASE+1 .. BASE+N-1, where BASE is the runs' seed (the last ``--seed=`` after
``--``, else ``--config.seed=``, else 0). The BASE run is the ordinary dense cell
``ROOT/BACKBONE_s0``; the others are ``ROOT/BACKBONE_s0_seedK``, whose command is the dense cell's
with ``--seed=K`` appended (after the flags from ``--``, so it wins). They are scheduled, skipped,
resumed and listed by ``--dry_run`` like every other cell (after the grid's cells).

At the end, for every backbone with all of 0.6/0.8/0.95/0.99 done, the post-hoc multi-level
ensemble is fused (``experiments.fuse``, into ``ROOT/BACKBONE_ensemble``), and, with all N dense
seed runs done, so is the dense seed ensemble (the same code path, equal weights, into
``ROOT/BACKBONE_dense_seed_ensemble``). ``ROOT/table.md`` gets one row per run and ensemble: the
run seed (``seeds["run"]`` of ``results.json`` if present, else the command's ``--seed``, else 0;
an ensemble lists its members'), top-1/top-5/mean class accuracy, realised sparsity, the
parameter budget of an ensemble, wall time, hardware and the command of the row. The rows
"BACKBONE dense (seed K)" follow the dense row and "BACKBONE dense seed ensemble (N seeds)"
follows the multi-level ensemble row: the multi-level ensemble's gain over it is what sparsity
levels add beyond seed diversity; mind the budgets (about N dense models against 0.66 of one).
``--table_only`` rebuilds the table from finished runs.

Bad input (docs/BAD_INPUT.md): a backbone or sparsity given twice (it would plan one workdir
twice) and a ``--root`` that is a file are refused; every cell's ``results.json`` and
``sweep_times.json`` are read before any run is launched, and a damaged one (or a finished cell
without ``scores.npz``, found by the table) is one ``error:`` line naming the file, exit status 2.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from typing import NamedTuple

from absl import flags

from experiments.sweep_files import (SweepError, add_time, check_cells, check_root, read_results,
                                     wall_seconds)
from stgcn_jax import atomic, cli, runtime
from stgcn_jax.scores import FusionError

ENSEMBLE_LEVELS = (0.6, 0.8, 0.95, 0.99)

def define_flags(fv: flags.FlagValues) -> None:
  """The sweep's flags (``stgcn_jax.cli``); every argument after ``--`` goes to every run."""
  flags.DEFINE_string("config", "experiments/configs/default.py:nw_ucla",
                      "The --config of every run (file[:variant]).", flag_values=fv)
  flags.DEFINE_list("backbones", ["stgcn", "aagcn", "ctrgcn", "dgstgcn"],
                    "Backbones of the grid.", flag_values=fv)
  flags.DEFINE_list("sparsities", ["0", "0.6", "0.8", "0.95", "0.99"],
                    "Sparsities of the grid (0 = a dense run).", flag_values=fv)
  flags.DEFINE_string("root", "runs/sweep", "Directory of the runs' workdirs and table.md.",
                      flag_values=fv)
  flags.DEFINE_integer("parallel", 1, "Runs at a time.", flag_values=fv)
  flags.DEFINE_bool("table_only", False, "Only fuse and write the table.", flag_values=fv)
  flags.DEFINE_bool("dry_run", False, "Print the commands and exit.", flag_values=fv)
  flags.DEFINE_integer(
      "dense_seeds", len(ENSEMBLE_LEVELS), "Size of the dense seed-ensemble control: for "
      "backbones with sparsity 0 in the grid, also train dense runs with --seed=BASE+1..BASE+N-1 "
      "and fuse them with the dense cell (0 or 1 = no control).", flag_values=fv)


class Cell(NamedTuple):
  """One run of the sweep: a grid cell (``seed`` None: the seed of the flags after ``--``) or an
  extra dense run of the seed-ensemble control (``sparsity`` 0, ``seed`` its ``--seed``)."""
  backbone: str
  sparsity: float
  seed: int | None = None

  @property
  def name(self) -> str:
    return cell_name(self.backbone, self.sparsity, self.seed)


def cell_name(backbone: str, sparsity: float, seed: int | None = None) -> str:
  name = f"{backbone}_s{sparsity:g}"
  return name if seed is None else f"{name}_seed{seed}"


def run_command(config: str, backbone: str, sparsity: float, workdir: str,
                extra: list[str], seed: int | None = None) -> list[str]:
  """The ``experiments.run`` command line of one cell (``--seed=SEED`` last, so that it wins)."""
  cmd = [sys.executable, "-m", "experiments.run", f"--config={config}", f"--backbone={backbone}",
         f"--sparsity={sparsity:g}", f"--workdir={workdir}"]
  return cmd + list(extra) + ([] if seed is None else [f"--seed={seed}"])


def _cell_command(config: str, root: str, cell: Cell, extra: list[str]) -> list[str]:
  return run_command(config, cell.backbone, cell.sparsity, os.path.join(root, cell.name), extra,
                     cell.seed)


def command_seed(args: list[str]) -> int:
  """The seed that ``experiments.run`` gets from these flags: the last ``--seed``, else the last
  ``--config.seed`` (the shortcut wins over the field in run.py), else 0 (the config's default)."""
  found = {}
  for i, arg in enumerate(args):
    for name in ("seed", "config.seed"):
      for prefix in (f"--{name}", f"-{name}"):
        if arg.startswith(prefix + "="):
          found[name] = (arg, arg[len(prefix) + 1:])
        elif arg == prefix and i + 1 < len(args):
          found[name] = (f"{arg} {args[i + 1]}", args[i + 1])
  arg, value = found.get("seed") or found.get("config.seed") or ("", "0")
  try:
    return int(value)
  except ValueError:
    raise SweepError(f"{arg} (after --): expected an integer seed") from None


def dense_seed_cells(cells: list[Cell], dense_seeds: int, base_seed: int) -> list[Cell]:
  """The extra dense runs of the seed-ensemble control: --seed=BASE+1..BASE+N-1 for every backbone
  whose grid has a dense cell (that cell is the BASE member)."""
  if dense_seeds < 0:
    raise SweepError(f"--dense_seeds={dense_seeds}: expected 0 or more (the size of the dense "
                     "seed ensemble; 0 or 1 = no control)")
  backbones = dict.fromkeys(c.backbone for c in cells if c.sparsity == 0 and c.seed is None)
  return [Cell(b, 0.0, base_seed + k) for b in backbones for k in range(1, dense_seeds)]


def _grid(backbones, sparsities) -> list[Cell]:
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
  _refuse_duplicates("--backbones", list(backbones), list(backbones))
  _refuse_duplicates("--sparsities", [f"{s:g}" for s in values], list(sparsities))
  return [Cell(b, s) for b in backbones for s in values]


def _refuse_duplicates(flag: str, keys: list[str], given: list[str]) -> None:
  """One cell per value: a value given twice would plan (and train) one workdir twice."""
  for key in dict.fromkeys(keys):
    same = [g for k, g in zip(keys, given) if k == key]
    if len(same) > 1:
      raise SweepError(f"{flag}={','.join(given)}: {key} is given {len(same)} times "
                       f"({', '.join(same)}); give each value once")


def _child_env(parallel: int) -> dict:
  env = runtime.allocator_env()   # tcmalloc where the machine has it (stgcn_jax.runtime)
  if parallel > 1 and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in env:
    # Each process also holds a CUDA context (~0.5 GB) outside its fraction: 0.9 / 20 ran out.
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{min(0.75, 0.7 / parallel):.3f}"
  return env


def run_grid(cells, config: str, root: str, extra: list[str], parallel: int) -> dict:
  """Runs the unfinished cells, ``parallel`` at a time; returns {name: returncode}."""
  todo = []
  for cell in cells:
    workdir = os.path.join(root, cell.name)
    if os.path.exists(os.path.join(workdir, "results.json")):
      print(f"done already: {workdir}")
      continue
    todo.append((cell.name, workdir, _cell_command(config, root, cell, extra)))
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
      add_time(workdir, time.time() - t0, rc)
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
      add_time(workdir, time.time() - t0, rc)
      codes[name] = rc
      del running[name]
      status = "done" if rc == 0 else f"FAILED (exit {rc}; see {workdir}/log.txt)"
      print(f"{status}: {name} after {time.time() - t0:.0f} s; {len(todo)} waiting, "
            f"{len(running)} running", flush=True)


def _hardware(results: dict) -> str:
  hw = results.get("hardware")
  if not hw:
    return "?"
  kind = (hw["device_kind"] if hw["platform"] != "cpu"
          else f"CPU ({hw.get('cpu_count') or '?'} cores)")
  return f"{hw['device_count']}x {kind}" if hw["device_count"] > 1 else kind


def _pct(x) -> str:
  return "" if x is None else f"{100 * x:.1f}"


def _run_seed(results: dict, command: list[str]) -> int:
  """``seeds["run"]`` of results.json (written by newer runs), else the command's seed."""
  seeds = results.get("seeds")
  run = seeds.get("run") if isinstance(seeds, dict) else None
  if isinstance(run, int) and not isinstance(run, bool):
    return run
  return command_seed(command)


def _budget(report: dict) -> str:
  budget = report["parameter_budget"] or {}
  if not budget:
    return "?"
  return f"{budget['prunable_budget']:.2f} ({budget['total_budget']:.2f} of all params)"


def _size(sizes: dict | None) -> str:
  """The compressed sparse export's size (experiments.export) of a model or an ensemble."""
  return "" if sizes is None else f"{sizes['sparse_bytes'] / 1024:,.0f} KiB"


def _ensemble_row(label: str, members: list[str], seeds: dict, out: str, note: str = "") -> dict:
  from experiments import fuse  # pylint: disable=import-outside-toplevel
  try:
    report = fuse.run_fusion(workdirs=members, out=out)
  except FusionError as err:
    raise SweepError(f"{label}: {err}") from None
  return dict(row=label, seed=",".join(str(seeds[w]) for w in members),
              top1=report["fused"]["top1"], top5=report["fused"]["top5"],
              mca=report["fused"]["mean_class_accuracy"], realised=None,
              budget=_budget(report) + note, size=_size(report.get("disk_sizes")),
              time="(the members')", hardware="",
              command=f"python -m experiments.fuse --workdirs={','.join(members)} --out={out}")


def _cell_row(cell: Cell, res: dict, workdir: str, seed: int, command: list[str]) -> dict:
  """The table's row of one finished run (its results.json ``res``)."""
  from stgcn_jax import run_files  # pylint: disable=import-outside-toplevel
  try:
    size = _size(run_files.disk_sizes([run_files.load_run(workdir)]))
  except FusionError as err:
    again = ("" if str(err).startswith(os.path.join(workdir, "config.json")) else
             f"; to evaluate the cell again from its checkpoints, move {workdir}/results.json "
             "away and run the sweep again")
    raise SweepError(f"cell {cell.name}: {err}{again}") from None
  wall = wall_seconds(workdir)
  label = ("dense" if cell.seed is None else f"dense (seed {cell.seed})"
           ) if cell.sparsity == 0 else f"s={cell.sparsity:g}"
  return dict(row=f"{cell.backbone} {label}", seed=str(seed), top1=res["top1"], top5=res["top5"],
              mca=res["mean_class_accuracy"], realised=res.get("prunable_sparsity"),
              budget=None, size=size, time="" if wall is None else f"{wall / 60:.1f} min",
              hardware=_hardware(res), command=shlex.join(["python"] + command[1:]))


def _backbone_rows(backbone: str, cells: list[Cell], config: str, root: str,
                   extra: list[str]) -> list[dict]:
  """One backbone's rows: its finished runs, then its ensembles whose members all finished."""
  grid = [c for c in cells if c.backbone == backbone and c.seed is None]
  extra_seeds = [c for c in cells if c.backbone == backbone and c.seed is not None]
  order = []  # display order: the extra dense seed runs right after the dense cell
  for cell in grid:
    order.append(cell)
    if cell.sparsity == 0 and not any(c.sparsity == 0 for c in order[:-1]):
      order.extend(extra_seeds)
  rows, done, seeds = [], {}, {}
  for cell in order:
    workdir = os.path.join(root, cell.name)
    if not os.path.exists(os.path.join(workdir, "results.json")):
      continue
    res = read_results(os.path.join(workdir, "results.json"))
    done[cell] = workdir
    command = _cell_command(config, root, cell, extra)
    seeds[workdir] = _run_seed(res, command)
    rows.append(_cell_row(cell, res, workdir, seeds[workdir], command))
  levels = {c.sparsity: w for c, w in done.items() if c.seed is None}
  if all(s in levels for s in ENSEMBLE_LEVELS):
    label = f"{backbone} ensemble {'+'.join(f'{s:g}' for s in ENSEMBLE_LEVELS)}"
    rows.append(_ensemble_row(label, [levels[s] for s in ENSEMBLE_LEVELS], seeds,
                              os.path.join(root, f"{backbone}_ensemble")))
  if extra_seeds:
    dense = [next(c for c in grid if c.sparsity == 0)] + extra_seeds
    members = [done[c] for c in dense if c in done]
    n = len(dense)
    if len(members) == n:
      rows.append(_ensemble_row(f"{backbone} dense seed ensemble ({n} seeds)", members, seeds,
                                os.path.join(root, f"{backbone}_dense_seed_ensemble"),
                                note=f": {n} dense models"))
    else:
      print(f"{backbone} dense seed ensemble: {len(members)} of {n} runs finished, not fused")
  return rows


def write_table(cells: list[Cell], config: str, root: str, extra: list[str]) -> str:
  """Fuses the multi-level and dense seed ensembles and writes ``ROOT/table.md``; returns its text.

  ``cells`` are the grid's cells and the extra dense seed runs (``dense_seed_cells``).
  """
  rows = [row for backbone in dict.fromkeys(c.backbone for c in cells)
          for row in _backbone_rows(backbone, cells, config, root, extra)]
  lines = ["| run | seed | top-1 | top-5 | mean class | realised sparsity | budget | size on disk "
           "| wall time | hardware | command |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    realised = "" if r["realised"] is None else f"{r['realised']:.4f}"
    lines.append(f"| {r['row']} | {r['seed']} | {_pct(r['top1'])} | {_pct(r['top5'])} | "
                 f"{_pct(r['mca'])} | {realised} | {r['budget'] or ''} | {r['size']} | {r['time']} | "
                 f"{r['hardware']} | `{r['command']}` |")
  text = "\n".join(lines) + "\n"
  with atomic.atomic_open(os.path.join(root, "table.md")) as f:
    f.write(text)
  return text


def main(argv=None) -> int:
  fv, extra = cli.parse(define_flags, argv, doc=__doc__, passthrough=True)
  runtime.configure_xla()
  cells = _grid(fv.backbones, fv.sparsities)
  cells += dense_seed_cells(cells, fv.dense_seeds, command_seed(extra))
  root = fv.root
  check_root(root)
  if fv.dry_run:
    for cell in cells:
      print(shlex.join(_cell_command(fv.config, root, cell, extra)))
    return 0
  check_cells(root, [c.name for c in cells])   # before anything is launched
  os.makedirs(root, exist_ok=True)
  failed = []
  if not fv.table_only:
    codes = run_grid(cells, fv.config, root, extra, max(1, fv.parallel))
    failed = [name for name, rc in codes.items() if rc != 0]
  print(write_table(cells, fv.config, root, extra))
  print(f"wrote {os.path.join(root, 'table.md')}")
  if failed:
    print(f"error: {len(failed)} run(s) failed: {', '.join(failed)} (their log.txt says why); "
          "run the same command again to resume them", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
