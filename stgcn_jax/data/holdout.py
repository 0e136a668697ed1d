"""A validation split held out from the training data, for model selection without the test split.

``holdout(source, fraction, seed)`` returns ``(train_indices, val_indices)``, disjoint, covering the
source, seeded:
  * by performer where every sample's name carries one (NTU ``...P012...``; NW-UCLA and the
    built-in dataset ``..._s03_...``) and there are at least ``min_performers``: whole performers
    are held out, chosen at random until ``fraction`` of the samples is reached, so no person is in
    both splits; each class is then checked to be in both splits;
  * otherwise stratified by class: ``round(fraction * n_c)`` random samples of each class ``c``
    (at least one of every class with two or more samples).

``Subset(source, indices)`` is a random-access view (``len``, ``[i]``, ``__getitems__``) that the
batch iterator reads like a split.
"""

from __future__ import annotations

import re

import numpy as np

from stgcn_jax.errors import UserError

__all__ = ["Subset", "holdout", "performer_of"]

_PERFORMER_RES = (re.compile(r"S\d{3}C\d{3}P(\d{3})R\d{3}A\d{3}"),   # NTU RGB+D
                  re.compile(r"(?:^|_)s(\d+)(?:_|$)"))                # NW-UCLA, built-in data


def performer_of(name: str) -> str | None:
  """The performer id in a sample name, or None."""
  for pattern in _PERFORMER_RES:
    m = pattern.search(name)
    if m:
      return m.group(1)
  return None


class Subset:
  """The samples ``indices`` of ``source``, in that order, as a source of their own."""

  def __init__(self, source, indices, split: str):
    self._source = source
    self.indices = np.asarray(indices, np.int64)
    self.info = getattr(source, "info", None)
    self.split = split

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict:
    return self._source[int(self.indices[index])]

  def __getitems__(self, indices) -> list[dict]:
    real = [int(self.indices[int(i)]) for i in indices]
    if hasattr(self._source, "__getitems__"):
      return self._source.__getitems__(real)
    return [self._source[i] for i in real]

  def __repr__(self) -> str:
    return f"Subset({self.split!r}, len={len(self)} of {self._source!r})"


def _labels_and_names(source) -> tuple[np.ndarray, list[str]]:
  labels, names = [], []
  step = 256
  for start in range(0, len(source), step):
    idx = list(range(start, min(start + step, len(source))))
    records = (source.__getitems__(idx) if hasattr(source, "__getitems__")
               else [source[i] for i in idx])
    labels += [int(r["label"]) for r in records]
    names += [str(r["frame_dir"]) for r in records]
  return np.asarray(labels, np.int64), names


def holdout(source, fraction: float, seed: int, *, min_performers: int = 5
            ) -> tuple[np.ndarray, np.ndarray, str]:
  """``(train_indices, val_indices, how)`` with ``how`` 'performer' or 'class'; see the module
  docstring."""
  if not 0 < fraction < 1:
    raise UserError(f"the validation fraction must be in (0, 1), got {fraction!r}")
  labels, names = _labels_and_names(source)
  n = len(labels)
  rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 7919])
  performers = [performer_of(name) for name in names]
  val = np.zeros(n, bool)
  how = "class"
  if all(p is not None for p in performers) and len(set(performers)) >= min_performers:
    people = np.array(performers)
    order = rng.permutation(sorted(set(performers)))
    for person in order:
      if val.sum() >= fraction * n:
        break
      val |= people == person
    if len(np.unique(labels[val])) == len(np.unique(labels)) and (~val).sum() > 0:
      how = "performer"
    else:
      val[:] = False
  if how == "class":
    for c in np.unique(labels):
      members = np.flatnonzero(labels == c)
      k = int(np.floor(fraction * len(members) + 0.5))
      if len(members) >= 2:
        k = min(max(k, 1), len(members) - 1)
      else:
        k = 0
      val[rng.permutation(members)[:k]] = True
  return np.flatnonzero(~val), np.flatnonzero(val), how
