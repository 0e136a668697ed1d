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
import json
import os
import re
import tempfile
import zipfile
from typing import Sequence

import numpy as np

from stgcn_jax.training.evaluate import accuracy, mean_class_accuracy

__all__ = ["FusionError", "Run", "STREAM_WEIGHTS", "accuracy", "align", "evaluate", "fuse",
           "load_run", "mean_class_accuracy", "members", "parameter_budget", "read_json"]

# pyskl's convention for four-stream fusion (joint, bone, joint motion, bone motion).
STREAM_WEIGHTS = {"j": 2.0, "b": 2.0, "jm": 1.0, "bm": 1.0}

_BUDGET_KEYS = ("prunable_nonzero", "prunable_params", "nonzero_params", "total_params")


class FusionError(ValueError):
  """Runs that cannot be fused or counted; the message is one line naming the workdirs."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One evaluated model: its scores on the test split, plus its workdir's config and results."""
  name: str                      # the workdir, or "workdir[s=0.8]" for a joint-ensemble member
  config: dict
  results: dict
  scores: np.ndarray             # (N, C) clip-averaged softmax probabilities
  labels: np.ndarray             # (N,) int
  index: np.ndarray              # (N,) int, record index in the test split
  names: np.ndarray | None = None
  member_scores: np.ndarray | None = None       # (K, N, C), joint ensembles only
  member_sparsities: np.ndarray | None = None   # (K,)

  @property
  def num_classes(self) -> int:
    return self.scores.shape[1]

  @property
  def sparsity(self) -> float:
    """The configured sparsity (0 for dense), else the realised one from results.json."""
    value = self.config.get("sparsity", self.results.get("prunable_sparsity", 0.0))
    return float(value or 0.0)


def read_json(path: str) -> dict:
  """A JSON object from ``path``; FusionError with the file name if missing or malformed."""
  try:
    with open(path) as f:
      value = json.load(f)
  except FileNotFoundError:
    raise FusionError(f"{path}: not found (expected a finished experiments.run workdir)") from None
  except json.JSONDecodeError as e:
    raise FusionError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
  if not isinstance(value, dict):
    raise FusionError(f"{path}: expected a JSON object, got {type(value).__name__}")
  return value


def load_run(workdir: str) -> Run:
  """Loads ``scores.npz`` (required) and ``config.json``/``results.json`` (empty if absent)."""
  workdir = os.fspath(workdir)
  if not os.path.isdir(workdir):
    raise FusionError(f"{workdir}: no such workdir")
  path = os.path.join(workdir, "scores.npz")
  if not os.path.exists(path):
    raise FusionError(f"{path}: not found (the run has not finished its evaluation)")
  try:
    with np.load(path, allow_pickle=False) as f:
      data = {k: f[k] for k in f.files}
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise FusionError(f"{path}: cannot read ({e})") from None
  for key in ("scores", "labels", "index"):
    if key not in data:
      raise FusionError(f"{path}: no array {key!r} (expected scores, labels, index, names)")
  scores, labels, index = (np.asarray(data["scores"], np.float64), np.asarray(data["labels"]),
                           np.asarray(data["index"]))
  n = scores.shape[0] if scores.ndim == 2 else -1
  if scores.ndim != 2 or labels.shape != (n,) or index.shape != (n,):
    raise FusionError(f"{path}: expected scores (N, C), labels (N,), index (N,); got "
                      f"{scores.shape}, {labels.shape}, {index.shape}")
  if not np.all(np.isfinite(scores)):
    raise FusionError(f"{path}: scores contain NaN or Inf")
  if len(np.unique(index)) != n:
    raise FusionError(f"{path}: index has duplicate entries (each test sample must appear once)")
  member_scores = data.get("member_scores")
  if member_scores is not None and member_scores.shape[1:] != scores.shape:
    raise FusionError(f"{path}: member_scores {member_scores.shape} does not match scores "
                      f"{scores.shape}")
  config_path, results_path = (os.path.join(workdir, f) for f in ("config.json", "results.json"))
  return Run(name=workdir,
             config=read_json(config_path) if os.path.exists(config_path) else {},
             results=read_json(results_path) if os.path.exists(results_path) else {},
             scores=scores, labels=labels.astype(np.int64), index=index.astype(np.int64),
             names=data.get("names"),
             member_scores=None if member_scores is None else member_scores.astype(np.float64),
             member_sparsities=data.get("member_sparsities"))


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


def model_dir(run: Run) -> str | None:
  """Where training saved the run's final model: ``<workdir>/model``, or
  ``<workdir>/members/s<sparsity>`` for a joint-ensemble member; ``None`` when absent."""
  match = re.fullmatch(r"(.*)\[s=([0-9.]+)\]", run.name)
  path = (os.path.join(match.group(1), "members", f"s{float(match.group(2)):g}") if match
          else os.path.join(run.name, "model"))
  return path if os.path.isfile(os.path.join(path, "model.json")) else None


def disk_sizes(runs: Sequence[Run]) -> dict | None:
  """Bytes on disk of each run's model: its orbax checkpoint and its compressed sparse export
  (``experiments.export``: kept weights + a packed bit mask), with the ensemble's totals; ``None``
  when a run has no saved model."""
  from stgcn_jax import checkpoint, export  # pylint: disable=import-outside-toplevel
  dirs = [model_dir(r) for r in runs]
  if any(d is None for d in dirs):
    return None
  members = []
  with tempfile.TemporaryDirectory(prefix="stgcn_sizes_") as tmp:
    for i, (run, path) in enumerate(zip(runs, dirs)):
      model, variables = checkpoint.load_model(path)
      del model
      with open(os.path.join(path, "model.json")) as f:
        spec = json.load(f)
      sparse = os.path.join(tmp, f"{i}.npz")
      export.save_sparse(sparse, spec, variables)
      members.append({"name": run.name, "checkpoint_bytes": export.size_on_disk(path),
                      "sparse_bytes": export.size_on_disk(sparse)})
  return {"members": members,
          "checkpoint_bytes": sum(m["checkpoint_bytes"] for m in members),
          "sparse_bytes": sum(m["sparse_bytes"] for m in members)}


def align(runs: Sequence[Run]) -> list[Run]:
  """Sorts every run by ``index`` and checks that all share samples, labels and classes."""
  if not runs:
    raise FusionError("nothing to fuse: no runs given")
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
  if np.any(weights < 0) or not np.any(weights > 0):
    raise FusionError(f"weights must be >= 0 and not all 0, got {weights.tolist()}")
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
