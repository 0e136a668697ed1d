"""The pyskl columns of ``experiments.bench``: pyskl's own model timed in the same run.

Two things are needed, each from a flag or the environment: a python that has torch
(``--torch_python`` / ``$STGCN_JAX_TORCH_PYTHON``; default: this python, if torch imports here)
and a pyskl source checkout (``--pyskl_src`` / ``$STGCN_JAX_PYSKL_SRC``). With both, the bench
starts ``experiments/bench_pyskl.py`` under that python once per backbone and round, just before
its own timing of that backbone (a fresh process each, so its peak RSS is that backbone's alone),
with the bench's shape, steps and CPUs, and reads its JSON back. pyskl runs under the allocator of
the shell that started the bench: the tcmalloc preload that ``stgcn_jax.runtime`` adds for XLA is
taken out of its environment (each row records its allocator; the ``sys %`` column shows what page
faults cost either side). Without torch or pyskl the table says, in one line, that the pyskl
columns are skipped and why. A path that is given but does not work is a usage error, found
before anything is measured.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments import bench_pyskl
from stgcn_jax import cli
from stgcn_jax import runtime

__all__ = ["Side", "resolve", "command", "measure", "prepare", "combine", "merge",
           "TORCH_PYTHON_ENV", "PYSKL_SRC_ENV"]

TORCH_PYTHON_ENV = "STGCN_JAX_TORCH_PYTHON"
PYSKL_SRC_ENV = "STGCN_JAX_PYSKL_SRC"
SCRIPT = Path(__file__).with_name("bench_pyskl.py")
TIMEOUT_S = 3600          # one backbone's pyskl run; a full-size one on one busy core takes minutes


@dataclasses.dataclass(frozen=True)
class Side:
  """Where the pyskl side runs: the python with torch, the pyskl checkout, torch's version."""
  python: str
  src: str
  torch: str


def _torch_version(python: str) -> str:
  """torch's version under ``python``; a python that does not run, or has no torch, is a usage
  error."""
  try:
    proc = subprocess.run([python, "-c", "import numpy, torch; print(torch.__version__)"],
                          capture_output=True, text=True, timeout=300, check=False)
  except (OSError, subprocess.TimeoutExpired) as err:
    raise cli.UsageError(f"--torch_python={python} does not run: {err}") from None
  if proc.returncode != 0:
    lines = proc.stderr.strip().splitlines()
    raise cli.UsageError(f"--torch_python={python} cannot import torch and numpy: "
                         f"{lines[-1] if lines else f'exit status {proc.returncode}'}")
  return proc.stdout.strip()


def resolve(torch_python: str | None, pyskl_src: str | None) -> Side | str:
  """The pyskl side from the flags (else the environment), or the reason it is skipped."""
  torch_python = torch_python or os.environ.get(TORCH_PYTHON_ENV)
  pyskl_src = pyskl_src or os.environ.get(PYSKL_SRC_ENV)
  if pyskl_src and not (Path(pyskl_src) / "pyskl" / "models" / "gcns" / "stgcn.py").is_file():
    raise cli.UsageError(f"--pyskl_src={pyskl_src}: no pyskl/models/gcns/stgcn.py under it "
                         "(expected a pyskl source checkout)")
  if not torch_python and importlib.util.find_spec("torch") is not None:
    torch_python = sys.executable
  version = _torch_version(torch_python) if torch_python else None
  missing = []
  if not torch_python:
    missing.append(f"no torch (torch does not import here; give --torch_python or "
                   f"${TORCH_PYTHON_ENV})")
  if not pyskl_src:
    missing.append(f"no pyskl source (give --pyskl_src or ${PYSKL_SRC_ENV})")
  if missing:
    return "; ".join(missing)
  return Side(python=torch_python, src=str(Path(pyskl_src).resolve()), torch=version)


def layout_spec(layout: str) -> str | None:
  """``layout``'s joints as ``bench_pyskl --layout_spec`` takes them, for a layout pyskl lacks."""
  if layout in bench_pyskl.PYSKL_LAYOUTS:
    return None
  from stgcn_jax import graph  # pylint: disable=import-outside-toplevel
  found = graph.get_layout(layout)
  return json.dumps({"name": layout, "num_node": found.num_joints,
                     "inward": [list(e) for e in found.inward], "center": found.center})


def command(side: Side, name: str, args, threads: int, out: str) -> list[str]:
  """The command line of one backbone's pyskl run at the bench's shape."""
  cmd = [side.python, str(SCRIPT), f"--pyskl_src={side.src}", f"--backbone={name}",
         f"--batch={args.batch}", f"--persons={args.persons}", f"--frames={args.frames}",
         f"--layout={args.layout}", f"--classes={args.classes}", f"--steps={args.steps}",
         f"--threads={threads}", f"--out={out}"]
  spec = layout_spec(args.layout)
  if spec:
    cmd.append(f"--layout_spec={spec}")
  if args.tiny:
    cmd.append("--tiny")
  return cmd


def child_env() -> dict[str, str]:
  """This environment less the tcmalloc preload that ``runtime.reexec_with_tcmalloc`` added."""
  env = dict(os.environ)
  added = env.pop("STGCN_JAX_ALLOCATOR_SET", None) and runtime.tcmalloc_path()
  if added:
    env["LD_PRELOAD"] = " ".join(p for p in env.get("LD_PRELOAD", "").split() if p != added)
    if not env["LD_PRELOAD"]:
      del env["LD_PRELOAD"]
  return env


def measure(side: Side, name: str, args, threads: int) -> dict[str, Any]:
  """``bench_pyskl``'s figures for backbone ``name``, or ``{"error": one line}``."""
  with tempfile.TemporaryDirectory(prefix="stgcn_bench_pyskl_") as tmp:
    out = Path(tmp) / "pyskl.json"
    cmd = command(side, name, args, threads, str(out))
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
                            env=child_env())
    except subprocess.TimeoutExpired:
      return {"error": f"timed out after {TIMEOUT_S} s"}
    if proc.returncode != 0 or not out.is_file():
      lines = proc.stderr.strip().splitlines()
      return {"error": f"exit status {proc.returncode}: "
                       f"{lines[-1] if lines else 'no message on stderr'}"}
    return json.loads(out.read_text())


def prepare(args, backend: str) -> tuple[dict[str, Any], Callable[[str], dict[str, Any]] | None]:
  """The result's ``pyskl`` entry (where it runs, or why it is skipped) and a function that
  measures one backbone's pyskl figures once (None when skipped), on the CPUs of ``args.cpus``;
  JAX on ``backend``. ``experiments.bench`` calls it before each round of its own timing."""
  side = resolve(args.torch_python, args.pyskl_src)
  if isinstance(side, str):
    return {"skipped": side}, None
  if backend != "cpu":
    return {"skipped": f"JAX runs on {backend}, bench_pyskl times pyskl on the CPU only"}, None

  def one_round(name: str) -> dict[str, Any]:
    print(f"[bench] pyskl {name} ...", file=sys.stderr, flush=True)
    return measure(side, name, args, len(args.cpus))

  return {"skipped": None, **dataclasses.asdict(side), "threads": len(args.cpus)}, one_round


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
  """pyskl's figures over the rounds: the first round's row, its rates and step times the medians
  over the rounds, each round's rates under ``rounds``; the first failed round if any failed."""
  if not rounds:
    return None
  failed = [r for r in rounds if "error" in r]
  if failed:
    return failed[0]
  row = dict(rounds[0])
  for kind in ("train", "infer"):
    row[f"{kind}_step_s"] = statistics.median(r[f"{kind}_step_s"] for r in rounds)
    row[f"{kind}_samples_per_s"] = statistics.median(r[f"{kind}_samples_per_s"] for r in rounds)
  row["rounds"] = [{k: r[k] for k in ("train_samples_per_s", "infer_samples_per_s")}
                   for r in rounds]
  return row


def merge(row: dict[str, Any], pyskl_rounds: list[dict[str, Any]], warnings: list[str]) -> None:
  """Adds pyskl's figures (``combine``) and the measured ratios to the bench's ``row`` (None where
  pyskl was not measured): the median of the rounds' ratios, each round's ours over its pyskl,
  and their range; a failed pyskl run or a parameter count that differs becomes a warning."""
  pyskl = combine(pyskl_rounds)
  row["pyskl"] = pyskl
  ok = pyskl is not None and "error" not in pyskl
  for kind in ("train", "infer"):
    ratios = ([row["shape"][0] / r[f"{kind}_step_s"] / p[f"{kind}_samples_per_s"]
               for r, p in zip(row["rounds"], pyskl_rounds)] if ok else [])
    row[f"{kind}_ratio_measured"] = statistics.median(ratios) if ratios else None
    row[f"{kind}_ratio_range"] = [min(ratios), max(ratios)] if ratios else None
  row["num_params_pyskl"] = (pyskl or {}).get("num_params")
  if pyskl and "error" in pyskl:
    warnings.append(f"pyskl {row['backbone']} was not measured: {pyskl['error']}")
  elif pyskl and row["num_params_pyskl"] != row["num_params"]:
    warnings.append(f"{row['backbone']}: {row['num_params']:,} parameters here, "
                    f"{row['num_params_pyskl']:,} in pyskl: not the same model")
