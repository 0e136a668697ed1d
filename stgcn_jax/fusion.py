"""Score-level fusion of finished runs: multi-level sparsity ensembles and multi-stream fusion.

Pure numpy over the workdirs that ``experiments.run`` writes (docs/METHOD.md sections 5 and 6):
``scores.npz`` holds the clip-averaged softmax scores of the test split with ``labels``, ``index``
(the record index, the key that aligns runs) and ``names``; a joint ensemble (or joint variants)
also holds ``member_scores`` (K, N, C), ``member_sparsities`` (K,) and ``member_names`` (K,).
``results.json`` holds the parameter counts that the parameter budget is made of. The files are read by ``stgcn_jax.run_files``; the
accuracies and the budget are ``stgcn_jax.scores``'s.

>>> runs = align([run_files.load_run(d) for d in workdirs])   # sorted by index, checked to match
>>> fused = fuse([r.scores for r in runs], weights=[2, 2, 1, 1])
>>> evaluate(fused, runs[0].labels)                            # top1, top5, mean class accuracy
>>> scores.parameter_budget([r.results for r in runs])["prunable_budget"]   # 0.66: .6 .8 .95 .99
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from stgcn_jax.run_files import Run
from stgcn_jax.scores import FusionError, accuracy, mean_class_accuracy

__all__ = ["STREAM_WEIGHTS", "align", "check_datasets", "evaluate", "fuse", "members"]

# pyskl's convention for four-stream fusion (joint, bone, joint motion, bone motion).
STREAM_WEIGHTS = {"j": 2.0, "b": 2.0, "jm": 1.0, "bm": 1.0}



def members(run: Run) -> list[Run]:
  """The members of a joint ensemble or joint variants as single runs (``[run]`` for a single
  model), named ``workdir[s=0.8]`` by their sparsity, or by their member name where they differ
  in more than that (``workdir[s0.8_lambda0]``: ``training.variants.member_names``)."""
  if run.member_scores is None:
    return [run]
  k = run.member_scores.shape[0]
  sparsities = (run.member_sparsities if run.member_sparsities is not None
                else run.setting("sparsity.ensemble_sparsities", [None] * k))
  infos = run.results.get("members") or [{}] * k
  out = []
  names = run.member_names if run.member_names is not None else [None] * k
  for i in range(k):
    s = sparsities[i] if i < len(sparsities) else None
    label = f"s={float(s):g}" if s is not None else f"member{i}"
    if names[i] is not None and s is not None and str(names[i]) != f"s{float(s):g}":
      label = str(names[i])     # joint variants: members that differ in more than sparsity
    config = dict(run.config, sparsity={**run.setting("sparsity", {}), "mode": "ensemble_member",
                                        "level": float(s or 0.0)})
    out.append(dataclasses.replace(run, name=f"{run.name}[{label}]", config=config,
                                   results=dict(infos[i]) if i < len(infos) else {},
                                   scores=run.member_scores[i], member_scores=None,
                                   member_sparsities=None, member_names=None))
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
