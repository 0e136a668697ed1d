"""Scores and accuracy: one implementation for training's reports and for fusion.

Scores are clip-averaged softmax probabilities ``(N, classes)``; top-k ties go to the lower class
index (a stable sort, as ``argmax``).
"""

from __future__ import annotations

import jax
import numpy as np

from stgcn_jax import data
from stgcn_jax.training.ensemble import clip_average_softmax
from stgcn_jax.training.workdir import RunError

__all__ = ["accuracy", "mean_class_accuracy", "accuracy_report", "evaluate_source", "scores_of",
           "eval_batch_size"]


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


def evaluate_source(trainer, state, source, pipeline, batch_size: int, seed: int,
              phase: str = "finetune") -> dict:
  """Clip-averaged softmax scores of every sample of ``source`` exactly once, with the model that
  ``phase`` trains (dense in the warm-up)."""
  it = data.BatchIterator(source, pipeline, batch_size, train=False, seed=seed, num_epochs=1)
  n, scores, labels = len(source), None, np.zeros(len(source), np.int64)
  seen = np.zeros(n, bool)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  for batch in it:
    logits = trainer.evals[phase](state, trainer.global_batch(batch, ("x",))["x"])
    probs = clip_average_softmax(logits)                            # (..., B, classes)
    probs = np.asarray(multihost_utils.process_allgather(probs, tiled=True))
    index = np.asarray(multihost_utils.process_allgather(batch["index"], tiled=True))
    mask = np.asarray(multihost_utils.process_allgather(batch["mask"], tiled=True))
    label = np.asarray(multihost_utils.process_allgather(batch["label"], tiled=True))
    if scores is None:
      scores = np.zeros(probs.shape[:-2] + (n, probs.shape[-1]), np.float32)
    scores[..., index[mask], :] = probs[..., mask, :]
    labels[index[mask]] = label[mask]
    seen[index[mask]] = True
  it.close()
  if not seen.all():
    raise RunError(f"evaluation saw {seen.sum()} of {n} samples")  # an iterator bug, never a user's
  return {"scores": scores, "labels": labels}


def eval_batch_size(config) -> int:
  """A ``RunConfig``'s per-process evaluation batch."""
  return (config.data.eval_batch_size or config.optim.batch_size) // jax.process_count()


def scores_of(trainer, state, source, pipe, config, phase: str = "finetune"
            ) -> tuple[np.ndarray, np.ndarray]:
  """(clip-averaged softmax scores, summed over ensemble members; labels) of ``source``."""
  out = evaluate_source(trainer, state, source, pipe, eval_batch_size(config), config.seed, phase)
  scores = out["scores"] if out["scores"].ndim == 2 else out["scores"].sum(0)
  return scores, out["labels"]
