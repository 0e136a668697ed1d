"""Scores of a model on a data source: the batched, padded evaluation pass of training.

The accuracies are computed by ``stgcn_jax.scores``, which fusion uses as well.
"""

from __future__ import annotations

import jax
import numpy as np

from stgcn_jax import data
from stgcn_jax.scores import accuracy, clip_average_softmax
from stgcn_jax.training.workdir import RunError

__all__ = ["evaluate_source", "scores_of", "member_top1", "eval_batch_size"]


def evaluate_source(runner, state, source, pipeline, batch_size: int, seed: int,
              phase: str = "finetune") -> dict:
  """Clip-averaged softmax scores of every sample of ``source`` exactly once, with the model that
  ``phase`` trains (dense in the warm-up)."""
  it = data.BatchIterator(source, pipeline, batch_size, train=False, seed=seed, num_epochs=1)
  n, scores, labels = len(source), None, np.zeros(len(source), np.int64)
  seen = np.zeros(n, bool)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  for batch in it:
    logits = runner.evals[phase](state, runner.global_batch(batch, ("x",))["x"])
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


def scores_of(runner, state, source, pipe, config, phase: str = "finetune", member=None
              ) -> tuple[np.ndarray, np.ndarray]:
  """(clip-averaged softmax scores, summed over ensemble members or of member ``member``;
  labels) of ``source``."""
  out = evaluate_source(runner, state, source, pipe, eval_batch_size(config), config.seed, phase)
  scores = out["scores"]
  if scores.ndim == 3:
    scores = scores.sum(0) if member is None else scores[member]
  return scores, out["labels"]


def member_top1(runner, state, source, pipe, config, phase: str = "finetune"
                ) -> tuple[float, list[float] | None]:
  """(top-1 of the summed scores, each stacked member's own top-1 or ``None`` for one model)."""
  out = evaluate_source(runner, state, source, pipe, eval_batch_size(config), config.seed, phase)
  scores, labels = out["scores"], out["labels"]
  if scores.ndim == 2:
    return accuracy(scores, labels), None
  return accuracy(scores.sum(0), labels), [accuracy(m, labels) for m in scores]
