"""Batches from a random-access source: per-epoch shuffling, per-process sharding, resumable.

Train batches (``train=True``)::

  {"x": float32 (B, M, T, V, C), "label": int32 (B,), "index": int64 (B,)}

Eval / test batches (``train=False``)::

  {"x": float32 (B, num_clips, M, T, V, C), "label": int32 (B,), "mask": bool (B,),
   "index": int64 (B,)}

``index`` is the sample's position in the source (-1 for padding). Training shuffles every epoch
with a permutation drawn from ``(seed, epoch)``, cuts it into global batches of ``B * n`` (``n``
processes of ``B``) and drops the incomplete last one; process ``p`` takes rows ``[p * B, (p + 1) * B)``
of every global batch, so that the global batches of ``n`` processes are those of one process with
batch ``B * n``. Clip augmentation draws from ``RandomState([seed, epoch, index])``, so a batch is a
pure function of its position and resuming reproduces it exactly. Evaluation walks the source in
order, pads the sample count to a multiple of ``B * n`` with masked zero clips and gives each
process its block of every global batch in the same way: every sample is seen exactly once over all
processes.

The position is ``get_state()`` -> ``{"epoch": e, "batch": b, "seed": s, "size": N,
"global_batch": B * n}`` (JSON-able), the same on every process; ``set_state`` restores it on each
(also on another number of processes with the same global batch).
"""

from __future__ import annotations

import concurrent.futures
import math

import numpy as np

from stgcn_jax.errors import UserError

__all__ = ["BatchIterator"]


def _default_shard() -> tuple[int, int]:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index(), jax.process_count()


class BatchIterator:
  """Iterates batches of ``pipeline(source[i], rng)``; see the module docstring for the contract.

  Args:
    source: ``len(source)`` and ``source[i]`` -> record (``stgcn_jax.data.load``).
    pipeline: record, rng -> ``(num_clips, M, T, V, C)`` (``stgcn_jax.data.Pipeline``).
    batch_size: per-process batch size B.
    train: training batches (shuffled, endless unless ``num_epochs``) or eval batches (one ordered,
      padded pass unless ``num_epochs``).
    seed: shuffling and augmentation seed.
    num_epochs: stop after this many epochs (None: train endless, eval 1).
    shard: ``(process_index, process_count)``; default from ``jax``.
    prefetch: build the next batch in a background thread while the caller works.
    num_threads: threads that transform the clips of one batch in parallel (0: in the calling /
      prefetch thread). numpy releases the GIL in the heavy steps, so this helps on many cores.
    repeat: training only: one epoch is ``repeat`` passes over the source, each in its own random
      order and with its own augmentation (the repeat factor of small datasets, as mmaction2's
      ``RepeatDataset``).
  """

  def __init__(self, source, pipeline, batch_size: int, *, train: bool, seed: int = 0,
               num_epochs: int | None = None, shard: tuple[int, int] | None = None,
               prefetch: bool = True, num_threads: int = 0, repeat: int = 1):
    if batch_size < 1:
      raise UserError(f"batch_size must be >= 1, got {batch_size}")
    if int(repeat) < 1 or (int(repeat) > 1 and not train):
      raise UserError(f"repeat must be >= 1 (and 1 for evaluation), got {repeat}")
    self.repeat = int(repeat)
    self.source, self.pipeline, self.batch_size = source, pipeline, int(batch_size)
    self.train, self.seed = bool(train), int(seed)
    self.num_epochs = num_epochs if num_epochs is not None else (None if train else 1)
    self.shard = tuple(int(s) for s in (shard if shard is not None else _default_shard()))
    if not 0 <= self.shard[0] < self.shard[1]:
      raise UserError(f"shard must be (index, count) with 0 <= index < count, got {self.shard}")
    self.size = len(source)
    if self.train and self.steps_per_epoch == 0:
      raise UserError(f"{self.size} samples over {self.shard[1]} process(es) cannot fill one "
                      f"training batch of {self.batch_size}")
    self._epoch, self._batch = 0, 0
    self._executor = concurrent.futures.ThreadPoolExecutor(1) if prefetch else None
    self._pending = None    # (epoch, batch, future)
    self._pool = concurrent.futures.ThreadPoolExecutor(num_threads) if num_threads > 0 else None

  # ------------------------------------------------------------------ positions
  @property
  def steps_per_epoch(self) -> int:
    """Batches per epoch on this process."""
    b, n = self.batch_size, self.shard[1]
    if self.train:
      return (self.size * self.repeat // n) // b
    return math.ceil(self.size / (b * n)) if self.size else 0

  def _epoch_indices(self, epoch: int) -> np.ndarray:
    """This process's source positions for ``epoch`` (-1 marks eval padding): its block of
    ``batch_size`` rows of every global batch of ``batch_size * n``."""
    p, n = self.shard
    if self.train:  # virtual positions v: sample v % size of pass v // size of the epoch
      order = np.concatenate(
          [np.random.default_rng([self.seed, epoch] + ([r] if r else [])).permutation(self.size)
           + r * self.size for r in range(self.repeat)])
    else:
      order = np.full(self.steps_per_epoch * self.batch_size * n, -1, np.int64)
      order[: self.size] = np.arange(self.size)
    used = order[: self.steps_per_epoch * self.batch_size * n]
    return used.reshape(-1, n, self.batch_size)[:, p].reshape(-1)

  def _make_batch(self, epoch: int, batch: int) -> dict:
    idx = self._epoch_indices(epoch)[batch * self.batch_size:(batch + 1) * self.batch_size]
    real = idx[idx >= 0]            # virtual positions (= source positions unless repeat > 1)
    src = real % max(self.size, 1)
    records = (self.source.__getitems__(src) if hasattr(self.source, "__getitems__")
               else [self.source[int(i)] for i in src])
    def one(i, record):
      return self.pipeline(record, np.random.RandomState([self.seed & 0xFFFFFFFF, epoch, int(i)]))
    clips = list(self._pool.map(one, real, records) if self._pool is not None
                 else map(one, real, records))
    labels = [record["label"] for record in records]
    if hasattr(self.pipeline, "output_shape"):
      shape = self.pipeline.output_shape()
    else:    # a plain callable: take the shape from a real clip (sample 0 if all are padding)
      shape = clips[0].shape if clips else self.pipeline(self.source[0],
                                                         np.random.RandomState(0)).shape
    x = np.zeros((len(idx),) + tuple(shape), np.float32)
    label = np.zeros(len(idx), np.int32)
    mask = idx >= 0
    if len(clips):
      x[mask] = np.stack(clips)
      label[mask] = labels
    if self.train:
      if x.shape[1] != 1:
        raise ValueError(f"training clips must have num_clips == 1, got shape {x.shape}")
      return {"x": x[:, 0], "label": label, "index": idx % max(self.size, 1)}
    return {"x": x, "label": label, "mask": mask, "index": idx}

  # ------------------------------------------------------------------ iteration
  def _next_position(self, epoch: int, batch: int) -> tuple[int, int]:
    batch += 1
    if batch >= self.steps_per_epoch:
      return epoch + 1, 0
    return epoch, batch

  def _finished(self, epoch: int) -> bool:
    return (self.num_epochs is not None and epoch >= self.num_epochs) or self.steps_per_epoch == 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    epoch, batch = self._epoch, self._batch
    if self._finished(epoch):
      raise StopIteration
    if self._pending is not None and self._pending[:2] == (epoch, batch):
      out = self._pending[2].result()
    else:
      out = self._make_batch(epoch, batch)
    self._pending = None
    self._epoch, self._batch = self._next_position(epoch, batch)
    if self._executor is not None and not self._finished(self._epoch):
      pos = (self._epoch, self._batch)
      self._pending = pos + (self._executor.submit(self._make_batch, *pos),)
    return out

  def __len__(self) -> int:
    if self.num_epochs is None:
      raise TypeError("an endless training iterator has no length")
    return self.steps_per_epoch * self.num_epochs

  def get_state(self) -> dict:
    """The position of the next batch, as a small JSON-able dict (the same on every process)."""
    state = {"epoch": self._epoch, "batch": self._batch, "seed": self.seed, "size": self.size,
             "global_batch": self.batch_size * self.shard[1]}
    if self.repeat > 1:
      state["repeat"] = self.repeat
    return state

  def set_state(self, state: dict) -> None:
    """Resumes at a position from :meth:`get_state` (same source, seed and global batch; any
    process of the run). A position of an older version names its process as ``shard``: it must
    come from as many processes."""
    state = dict(state)
    state.setdefault("repeat", 1)
    mine = {"seed": self.seed, "size": self.size, "repeat": self.repeat,
            "global_batch": self.batch_size * self.shard[1]}
    if "shard" in state:
      state["processes"], mine["processes"] = list(np.atleast_1d(state["shard"]))[-1], self.shard[1]
    for key, value in mine.items():
      if key in state and list(np.atleast_1d(state[key])) != [value]:
        raise ValueError(f"iterator state {key}={state[key]!r} does not match this iterator's "
                         f"{key}={value!r}")
    batch = int(state["batch"])
    if not 0 <= batch < max(self.steps_per_epoch, 1):
      raise ValueError(f"iterator state batch={batch} is outside [0, {self.steps_per_epoch})")
    self._epoch, self._batch = int(state["epoch"]), batch
    self._pending = None

  def close(self) -> None:
    if self._executor is not None:
      self._executor.shutdown(wait=False, cancel_futures=True)
      self._executor = None
    if self._pool is not None:
      self._pool.shutdown(wait=False, cancel_futures=True)
      self._pool = None
    self._pending = None

  def __del__(self):
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      pass
