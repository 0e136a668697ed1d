"""The terminal summary of an ``experiments.bench`` result dict (``format_table``)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_table"]

DOC_MARK = "d"   # a ratio against docs/BACKBONES.md section 10's figures, not measured in the run


def _fmt(v, spec=".2f", none="-"):
  return none if v is None else format(v, spec)


def _pair(a, b, spec=".1f") -> str:
  return f"{_fmt(a, spec)}/{_fmt(b, spec)}"


def _sys_share(usage: dict | None) -> float | None:
  """System time as a percentage of a train step's CPU time (page faults live there)."""
  usage = usage or {}
  cpu = usage.get("user_s", 0) + usage.get("sys_s", 0)
  return 100 * usage["sys_s"] / cpu if cpu else None


def _ratio(r: dict, kind: str) -> str:
  """The measured ratio; else the one against the documented figures, marked; else '-'."""
  if r.get(f"{kind}_ratio_measured") is not None:
    return _fmt(r[f"{kind}_ratio_measured"])
  if r.get(f"{kind}_ratio_to_pyskl") is not None:
    return _fmt(r[f"{kind}_ratio_to_pyskl"]) + DOC_MARK
  return "-"


def _header(result: dict[str, Any]) -> list[str]:
  m = result["machine"]
  cpus = m.get("cpus")
  lines = [f"machine: {m['cpu_model']}, {m['nproc']} cpus, {m.get('allocator')}, backend "
           f"{m['backend']} ({m['device']}), conv grad {m['conv_impl']}; threads "
           f"{len(cpus) if cpus else '-'} (cpus {cpus}); load avg at start {m['load_avg_start']}, "
           f"other processes used {_fmt(m.get('other_cpu_share'), '.0%')} of the CPU during the "
           "run",
           f"dense f32 matmul ({m['matmul_n']}^2): {m['matmul_gflops']:.0f} GFLOP/s"]
  side = result.get("pyskl") or {}
  if side.get("skipped"):
    lines.append(f"pyskl: columns skipped: {side['skipped']}")
  elif side:
    lines.append(f"pyskl: measured in this run, torch {side['torch']}, {side['src']}, "
                 f"{side['python']}")
  return lines


def _side_by_side(rows: list[dict]) -> list[str]:
  head = (f"{'backbone':<8} {'train/s':>8} {'pyskl':>7} {'ratio':>6} {'infer/s':>8} {'pyskl':>7} "
          f"{'ratio':>6} {'setup s jax/pyskl':>18} {'peak MB jax/pyskl':>18} "
          f"{'sys % jax/pyskl':>15} {'params jax/pyskl':>21}")
  lines = [head, "-" * len(head)]
  for r in rows:
    p = r.get("pyskl") or {}
    setup = r["train_compile_s"] + r["infer_compile_s"]
    p_setup = (p["train_first_step_s"] + p["infer_first_step_s"]
               if "train_first_step_s" in p else None)
    mem = r.get("peak_memory_bytes")
    p_mem = p.get("peak_rss_bytes")
    sys_share = _sys_share(r.get("train_cpu_per_step"))
    p_sys_share = _sys_share(p.get("train_cpu_per_step"))
    params = f"{r['num_params']:,}/{_fmt(p.get('num_params'), ',d')}"
    lines.append(
        f"{r['backbone']:<8} {r['train_samples_per_s']:8.2f} "
        f"{_fmt(p.get('train_samples_per_s')):>7} {_ratio(r, 'train'):>6} "
        f"{r['infer_samples_per_s']:8.2f} {_fmt(p.get('infer_samples_per_s')):>7} "
        f"{_ratio(r, 'infer'):>6} {_pair(setup, p_setup):>18} "
        f"{_pair(mem and mem / 2**20, p_mem and p_mem / 2**20, '.0f'):>18} "
        f"{_pair(sys_share, p_sys_share, '.0f'):>15} "
        f"{params:>21}")
  return lines


def _xla_detail(rows: list[dict]) -> list[str]:
  head = (f"{'backbone':<8} {'train GF/s':>10} {'%peak':>6} {'infer GF/s':>10} {'temp MB':>8} "
          f"{'faults/step':>11}")
  lines = [head, "-" * len(head)]
  for r in rows:
    temp = (r["train_xla_memory"] or {}).get("temp")
    frac = r["train_fraction_of_matmul_peak"]
    lines.append(
        f"{r['backbone']:<8} {_fmt(r['train_gflops'], '.1f'):>10} "
        f"{_fmt(frac and 100 * frac, '.0f'):>6} {_fmt(r['infer_gflops'], '.1f'):>10} "
        f"{_fmt(temp and temp / 2**20, '.0f'):>8} "
        f"{_fmt(r.get('train_cpu_per_step', {}).get('minor_faults'), ',.0f'):>11}")
  return lines


def _notes(rows: list[dict]) -> list[str]:
  lines = ["train/s, infer/s: samples/s (median step); ratio: jax / pyskl; setup: jax compile "
           "(train + infer), pyskl first train + infer step;",
           "peak MB: jax process RSS so far, pyskl its own process; sys %: system share of a "
           "train step's CPU time"]
  spans = [r for r in rows if len(r.get("rounds", ())) > 1 and r.get("train_ratio_range")]
  if spans:
    lines.append(f"over {len(spans[0]['rounds'])} rounds (pyskl, then ours), the median ratio; "
                 "each round's train / infer ratio within: " + ", ".join(
                     f"{r['backbone']} {r['train_ratio_range'][0]:.2f}-"
                     f"{r['train_ratio_range'][1]:.2f} / {r['infer_ratio_range'][0]:.2f}-"
                     f"{r['infer_ratio_range'][1]:.2f}" for r in spans))
  if any(_ratio(r, k).endswith(DOC_MARK) for r in rows for k in ("train", "infer")):
    lines.append(f"{DOC_MARK}: against docs/BACKBONES.md section 10's pyskl figures (idle, 2 "
                 "threads, this shape), not measured in this run")
  return lines


def format_table(result: dict[str, Any]) -> str:
  """The human-readable summary of a result dict."""
  rows = result["backbones"]
  lines = [*_header(result), "", *_side_by_side(rows), *_notes(rows), "", *_xla_detail(rows)]
  for e in result.get("ensemble", []):
    lines.append(f"\nensemble ({e['backbone']}, {e['members']} members, {e['batching']}): "
                 f"{e['step_s']:.2f} s/step vs 4 x one step "
                 f"{_fmt(e.get('members_x_single_step_s'))} s: "
                 f"{_fmt(e.get('speedup_vs_sequential'))}x")
  p = result.get("pipeline")
  if p:
    lines.append(f"\ninput pipeline ({p['dataset']}): {p['samples_per_s']:.0f} samples/s; train "
                 "steps consume " + ", ".join(f"{k} {v:.2f}" for k, v in
                                              p["train_consumption_samples_per_s"].items()))
  for w in result["warnings"]:
    lines.append(f"WARNING: {w}")
  return "\n".join(lines)
