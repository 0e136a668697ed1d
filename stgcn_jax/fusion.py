"""Score-level fusion of finished runs: multi-level sparsity ensembles and multi-stream fusion.

Pure numpy over the workdirs that ``experiments.run`` writes (docs/METHOD.md sections 5 and 6):
``scores.npz`` holds the clip-averaged softmax scores of the test split with ``labels``, ``index``
(the record index, the key that aligns runs) and ``names``; a joint ensemble also holds
``member_scores`` (K, N, C) and ``member_sparsities`` (K,). ``results.json`` holds the parameter
counts that the parameter budget is made of.

>>> runs = align([load_run(d) for d in workdirs])       # sorted by index, checked to match
>>> fused = fuse([r.scores for r in runs], weights=[2, 2, 1, 1])
>>> accuracy(fused, runs[0].labels, k=1), mean_class_accuracy(fused, runs[0].labels)
>>> parameter_budget([r.results for r in runs])["prunable_budget"]   # 0.66 for {.6, .8, .95, .99}
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from stgcn_jax.run_files import (FusionError, Run, disk_sizes, load_run, model_dir,
                                 read_json)
from stgcn_jax.training.evaluate import accuracy, mean_class_accuracy

__all__ = ["FusionError", "Run", "STREAM_WEIGHTS", "accuracy", "align", "check_datasets",
           "disk_sizes", "evaluate", "fuse", "load_run", "mean_class_accuracy", "members",
           "model_dir", "parameter_budget", "read_json"]

# pyskl's convention for four-stream fusion (joint, bone, joint motion, bone motion).
STREAM_WEIGHTS = {"j": 2.0, "b": 2.0, "jm": 1.0, "bm": 1.0}

_BUDGET_KEYS = ("prunable_nonzero", "prunable_params", "nonzero_params", "total_params")


def members(run: Run) -> list[Run]:
  """The members of a joint ensemble as single runs (``[run]`` for a single model)."""
  if run.member_scores is None:
    return [run]
  k = run.member_scores.shape[0]
  sparsities = (run.member_sparsities if run.member_sparsities is not None
                else run.config.get("ensemble_sparsities", [None] * k))
  infos = run.results.get("members") or [{}] * k
  out = []
  for i in range(k):
    s = sparsities[i] if i < len(sparsities) else None
    label = f"s={float(s):g}" if s is not None else f"member{i}"
    config = dict(run.config, mode="ensemble_member", sparsity=float(s or 0.0))
    out.append(dataclasses.replace(run, name=f"{run.name}[{label}]", config=config,
                                   results=dict(infos[i]) if i < len(infos) else {},
                                   scores=run.member_scores[i], member_scores=None,
                                   member_sparsities=None))
  return out


def align(runs: Sequence[Run]) -> list[Run]:
  """Sorts every run by ``index`` and checks that all share samples, labels and classes."""
  if not runs:
    raise FusionError("nothing to fuse: no runs given")
  check_datasets(runs)
  ordered = []
  for run in runs:
    order = np.argsort(run.index, kind="stable")
    take = lambda a, axis=0: None if a is None else np.take(a, order, axis=axis)  # noqa: E731
    ordered.append(dataclasses.replace(
        run, scores=run.scores[order], labels=run.labels[order], index=run.index[order],
        names=take(run.names), member_scores=take(run.member_scores, 1)))
  ref = ordered[0]
  for run in ordered[1:]:
    pair = f"{ref.name} and {run.name}"
    if run.num_classes != ref.num_classes:
      raise FusionError(f"cannot fuse {pair}: {ref.num_classes} vs {run.num_classes} classes")
    if not np.array_equal(run.index, ref.index):
      only_ref = np.setdiff1d(ref.index, run.index)
      only_run = np.setdiff1d(run.index, ref.index)
      first = only_ref[:1].tolist() or only_run[:1].tolist()
      raise FusionError(f"cannot fuse {pair}: different test samples ({len(ref.index)} vs "
                        f"{len(run.index)}; {len(only_ref)} only in the first, {len(only_run)} "
                        f"only in the second, e.g. index {first[0]})")
    bad = np.flatnonzero(run.labels != ref.labels)
    if bad.size:
      i = bad[0]
      raise FusionError(f"cannot fuse {pair}: labels differ on {bad.size} samples (e.g. index "
                        f"{ref.index[i]}: {ref.labels[i]} vs {run.labels[i]})")
    if ref.names is not None and run.names is not None:
      bad = np.flatnonzero(np.asarray(run.names).astype(str) != np.asarray(ref.names).astype(str))
      if bad.size:
        i = bad[0]
        raise FusionError(f"cannot fuse {pair}: sample names differ on {bad.size} samples (e.g. "
                          f"index {ref.index[i]}: {ref.names[i]!s} vs {run.names[i]!s})")
  return ordered


def _store(run: Run) -> str:
  store = run.data_store
  samples = store.get("num_samples")
  return (f"{run.name}: dataset {store.get('dataset')!r} at {store.get('path')}, "
          f"{samples if samples is not None else '?'} samples, fingerprint "
          f"{store['fingerprint'][:12]}")


def check_datasets(runs: Sequence[Run]) -> None:
  """Refuses runs evaluated on different datasets, as told by the dataset fingerprints that
  ``experiments.run`` records (``data_store`` in results.json); a run without one (written before
  they were recorded) is checked by its samples, labels and names only (``align``)."""
  known = [r for r in runs if r.data_store is not None]
  for run in known[1:]:
    if run.data_store["fingerprint"] != known[0].data_store["fingerprint"]:
      raise FusionError(f"cannot fuse {known[0].name} and {run.name}: evaluated on different "
                        f"datasets ({_store(known[0])}; {_store(run)})")


def fuse(scores_list: Sequence[np.ndarray], weights: Sequence[float] | None = None, *,
         normalize: bool = False) -> np.ndarray:
  """The weighted sum of aligned (N, C) score arrays (equal weights by default).

  ``normalize=True`` divides by the sum of the weights, so fused softmax scores stay
  probabilities (same ranking, hence the same accuracies).
  """
  if not len(scores_list):
    raise FusionError("nothing to fuse: no scores given")
  weights = np.ones(len(scores_list)) if weights is None else np.asarray(weights, np.float64)
  if weights.shape != (len(scores_list),):
    raise FusionError(f"{weights.size} weights given for {len(scores_list)} runs")
  if not np.all(np.isfinite(weights)) or np.any(weights < 0) or not np.any(weights > 0):
    raise FusionError(f"weights must be finite, >= 0 and not all 0, got {weights.tolist()}")
  stacked = np.stack([np.asarray(s, np.float64) for s in scores_list])
  fused = np.tensordot(weights, stacked, axes=1)
  return fused / weights.sum() if normalize else fused


def evaluate(scores: np.ndarray, labels: np.ndarray) -> dict:
  """top1, top5 (top-min(5, C)) and mean class accuracy, as fractions."""
  return dict(top1=accuracy(scores, labels, 1),
              top5=accuracy(scores, labels, min(5, scores.shape[1])),
              mean_class_accuracy=mean_class_accuracy(scores, labels))


def _budget_entries(results: dict, name: str) -> list[dict]:
  """One entry per model: its nonzero counts and one dense model's counts."""
  infos = results.get("members")
  if not infos:
    missing = [k for k in _BUDGET_KEYS if k not in results]
    if missing:
      raise FusionError(f"{name}: results.json lacks {', '.join(missing)} (needed for the "
                        "parameter budget)")
    return [dict(name=name, sparsity=results.get("prunable_sparsity"),
                 prunable_nonzero=results["prunable_nonzero"],
                 nonzero_params=results["nonzero_params"],
                 dense_prunable=results["prunable_params"], dense_total=results["total_params"])]
  entries = []
  for i, m in enumerate(infos):  # each member carries its own counts (training.results.add_counts)
    entry = dict(name=f"{name}[member{i}]", sparsity=m.get("sparsity", m.get("prunable_sparsity")),
                 prunable_nonzero=m.get("prunable_nonzero"), nonzero_params=m.get("nonzero_params"),
                 dense_prunable=m.get("prunable_params"), dense_total=m.get("total_params"))
    missing = [k for k, v in entry.items() if v is None and k != "sparsity"]
    if missing:
      raise FusionError(f"{name}: results.json members[{i}] lacks {', '.join(missing)} (needed "
                        "for the parameter budget)")
    entries.append(entry)
  return entries


def parameter_budget(results_list: Sequence[dict], names: Sequence[str] | None = None) -> dict:
  """The parameter budget of an ensemble from its members' ``results.json`` dicts.

  ``prunable_budget`` = nonzero prunable weights summed over members / one dense model's prunable
  weights (the paper's number: 0.4 + 0.2 + 0.05 + 0.01 = 0.66); ``total_budget`` = all nonzero
  parameters of all members (unmasked layers, BN, graphs and heads included) / one dense model's
  parameters. A joint-ensemble results dict contributes each of its ``members``.
  """
  names = list(names) if names is not None else [f"run{i}" for i in range(len(results_list))]
  entries = [e for res, name in zip(results_list, names) for e in _budget_entries(res, name)]
  if not entries:
    raise FusionError("parameter budget: no runs given")
  for e in entries:
    for key in ("prunable_nonzero", "nonzero_params", "dense_prunable", "dense_total"):
      value, least = e[key], 1 if key.startswith("dense") else 0
      if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
              and least <= value < 2**63):
        field = {"dense_prunable": "prunable_params", "dense_total": "total_params"}.get(key, key)
        raise FusionError(f"{e['name']}: results.json has {field}={value!r}; "
                          f"expected a count >= {least} (needed for the parameter budget)")
  for key in ("dense_prunable", "dense_total"):
    sizes = {e[key] for e in entries}
    if len(sizes) > 1:
      raise FusionError(f"parameter budget: the runs differ in their dense size ({key} "
                        f"{sorted(sizes)}); a multi-level ensemble needs one backbone")
  dense_p, dense_t = entries[0]["dense_prunable"], entries[0]["dense_total"]
  sum_p = sum(e["prunable_nonzero"] for e in entries)
  sum_t = sum(e["nonzero_params"] for e in entries)
  return dict(prunable_budget=sum_p / dense_p, total_budget=sum_t / dense_t,
              prunable_nonzero=sum_p, nonzero_params=sum_t, dense_prunable_params=dense_p,
              dense_total_params=dense_t,
              members=[dict(name=e["name"], sparsity=e["sparsity"],
                            prunable_nonzero=e["prunable_nonzero"],
                            nonzero_params=e["nonzero_params"],
                            prunable_fraction=e["prunable_nonzero"] / dense_p,
                            total_fraction=e["nonzero_params"] / dense_t) for e in entries])
