"""Scores, accuracies and the parameter budget: one implementation for training's reports, the
joint ensembles and post-hoc fusion (``stgcn_jax.fusion``).

Scores are clip-averaged softmax probabilities ``(N, classes)`` (``clip_average_softmax`` of the
logits); ``fuse_scores`` sums members' scores; top-k ties go to the lower class index (a stable
sort, as ``argmax``). ``parameter_budget`` counts an ensemble's nonzero parameters against one
dense model's from its members' ``results.json`` counts.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stgcn_jax.errors import UserError

__all__ = ["FusionError", "accuracy", "mean_class_accuracy", "accuracy_report",
           "clip_average_softmax", "fuse_scores", "parameter_budget"]

_BUDGET_KEYS = ("prunable_nonzero", "prunable_params", "nonzero_params", "total_params")


class FusionError(UserError):
  """Runs that cannot be fused or counted; the message is one line naming the workdirs."""


def accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
  """Top-k accuracy; ties go to the lower class index (as ``argmax``)."""
  topk = np.argsort(-np.asarray(scores), axis=-1, kind="stable")[:, :k]
  return float(np.mean(np.any(topk == np.asarray(labels)[:, None], axis=1)))


def mean_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
  """Mean per-class recall over the classes present in ``labels``."""
  labels = np.asarray(labels)
  hit = np.argmax(scores, axis=-1) == labels
  return float(np.mean([hit[labels == c].mean() for c in np.unique(labels)]))


def accuracy_report(scores: np.ndarray, labels: np.ndarray) -> dict:
  """top1, top5 (top-min(5, C)), mean class accuracy, counts and the confusion matrix."""
  num_classes = scores.shape[-1]
  labels = np.asarray(labels)
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, np.argmax(scores, axis=-1)), 1)
  return {"top1": accuracy(scores, labels, 1),
          "top5": accuracy(scores, labels, min(5, num_classes)),
          "mean_class_accuracy": mean_class_accuracy(scores, labels),
          "num_samples": int(len(labels)), "num_classes": int(num_classes),
          "confusion_matrix": confusion.tolist()}


def clip_average_softmax(logits: jax.Array, clip_axis: int | None = -2) -> jax.Array:
  """Softmax over classes, then the mean over the clip axis (``None``: no clip axis)."""
  probs = jax.nn.softmax(logits, axis=-1)
  return probs if clip_axis is None else probs.mean(axis=clip_axis)


def fuse_scores(scores, weights: Sequence[float] | None = None) -> jax.Array:
  """Weighted sum (default: plain sum) of member score arrays ``(members, N, classes)`` (a stacked
  array or a sequence of clip-averaged probability arrays from separately trained models)."""
  scores = jnp.stack(list(scores)) if not hasattr(scores, "ndim") else jnp.asarray(scores)
  if weights is None:
    return scores.sum(axis=0)
  w = jnp.asarray(weights, scores.dtype)
  if w.shape != scores.shape[:1]:
    raise FusionError(f"fuse_scores: {w.shape[0] if w.ndim else 'scalar'} weights for "
                       f"{scores.shape[0]} members; expected one weight per member")
  return jnp.tensordot(w, scores, axes=1)


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
