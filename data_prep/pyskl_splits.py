"""The splits of a pyskl annotation pickle: the records each split lists, without leakage from a
training split into an evaluation split, and the split that serves each role (train / test)."""

from __future__ import annotations

import re

from stgcn_jax.data.formats.pyskl import short
from stgcn_jax.data import ConversionReport, DataError


def _split_role(name: str) -> str | None:
  low = name.lower()
  is_train, is_eval = "train" in low, "test" in low or "val" in low
  return "train" if is_train and not is_eval else "eval" if is_eval and not is_train else None


def _benchmark(name: str) -> str:
  return re.sub(r"train|test|val", "", name.lower()).strip("_")


def _leak_pairs(split_names) -> list[tuple[str, str]]:
  """(training split, evaluation split) pairs that must not share a sample."""
  pairs = {(a, b) for a in split_names for b in split_names
           if _split_role(a) == "train" and _split_role(b) == "eval"
           and _benchmark(a) == _benchmark(b)}
  roles = default_roles(split_names)
  if roles.get("train") and roles.get("test") and roles["train"] != roles["test"]:
    pairs.add((roles["train"], roles["test"]))
  return sorted(pairs)


def split_records(split_names: dict, by_name: dict, rejected: set, path: str,
                  report: ConversionReport) -> dict:
  """Split -> records as the pickle lists them, without leakage into evaluation splits; empty
  splits are left out."""
  splits = {split: _listed(split, names, by_name, rejected, path, report)
            for split, names in split_names.items()}
  for train, test in _leak_pairs(split_names):
    splits[test] = _without_leaks(splits[train], splits[test], train, test, path, report)
  return {s: r for s, r in splits.items() if r}


def _listed(split: str, names, by_name: dict, rejected: set, path: str,
            report: ConversionReport) -> list[dict]:
  """The records split ``split`` lists by frame_dir; a bad or repeated entry is counted."""
  records, listed = [], set()
  for j, name in enumerate(names):
    if not isinstance(name, str):
      report.reject("split_entry", f"{path}: split {split!r} entry {j} is {short(name)}, "
                                   "expected a frame_dir string")
      continue
    if name in listed:
      report.reject("duplicate", f"{path}: split {split!r} lists {name!r} twice; kept once")
      continue
    listed.add(name)
    if name in by_name:
      records.append(by_name[name])
    elif name not in rejected:          # a rejected annotation is already counted
      report.reject("split_entry", f"{path}: split {split!r} lists {name!r}, which has no "
                                   "usable annotation")
  return records


def _without_leaks(train_records: list[dict], test_records: list[dict], train: str, test: str,
                   path: str, report: ConversionReport) -> list[dict]:
  """``test_records`` without the samples training split ``train`` holds too (each counted);
  DataError when that would leave nothing."""
  in_train = {r["frame_dir"] for r in train_records}
  leaked = [r for r in test_records if r["frame_dir"] in in_train]
  if leaked and len(leaked) == len(test_records):
    raise DataError(f"{path}: every sample of evaluation split {test!r} ({len(leaked)}) is also "
                    f"in training split {train!r} (first: annotation {leaked[0]['index']} "
                    f"{leaked[0]['frame_dir']!r}); the splits must be disjoint")
  for r in leaked:
    report.reject("leak", f"{path}: annotation {r['index']} ({r['frame_dir']!r}) is in training "
                          f"split {train!r} and evaluation split {test!r}; kept in {train!r} "
                          "only")
  return [r for r in test_records if r["frame_dir"] not in in_train]


def default_roles(split_names) -> dict:
  """Role (``train``, ``test``) -> the first split whose name contains "train" (resp. "test", else
  "val"); a single split serves both roles."""
  roles = {}
  for role, keys in (("train", ("train",)), ("test", ("test", "val"))):
    for key in keys:
      hits = [s for s in sorted(split_names) if key in s]
      if hits and role not in roles:
        roles[role] = hits[0]
  if len(split_names) == 1:
    only = next(iter(split_names))
    roles.setdefault("train", only)
    roles.setdefault("test", only)
  return roles
