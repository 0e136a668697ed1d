"""A finished run's files as fusion, sweeps and reports read them: ``scores.npz``, ``config.json``,
``results.json`` and the saved model (``model/``, ``members/s<sparsity>/``).

Every file that is missing, damaged or holds something other than what ``experiments.run`` writes
is one :class:`FusionError` naming the file, the field and what was expected; nothing is dropped or
repaired in silence (``FusionError`` is defined in ``stgcn_jax.scores``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import struct
import tempfile
import zipfile
import zlib
from typing import Sequence

import numpy as np

from stgcn_jax.scores import FusionError

__all__ = ["FusionError", "Run", "read_json", "load_run", "model_dir", "disk_sizes",
           "is_number"]

# What a damaged .npz raises while it is opened or one of its arrays is read.
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error,
               struct.error)


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
  member_names: np.ndarray | None = None        # (K,) str: joint variants' member names
  data_store: dict | None = None  # the dataset it was evaluated on (results.json "data_store")

  @property
  def num_classes(self) -> int:
    return self.scores.shape[1]

  @property
  def sparsity(self) -> float:
    """The configured sparsity (0 for dense), else the realised one from results.json."""
    value = setting(self.config, "sparsity.level", self.results.get("prunable_sparsity", 0.0))
    return float(value or 0.0)

  def setting(self, path: str, default=None):
    """The config field at ``path`` (``"data.modality"``), ``default`` where it is absent."""
    return setting(self.config, path, default)


def setting(config: dict, path: str, default=None):
  """The field at the dotted ``path`` of a nested config (``read_config``), else ``default``."""
  # pylint: disable-next=import-outside-toplevel
  from stgcn_jax.training.config import config_field
  return config_field(config, path, default)


def read_config(path: str) -> dict:
  """``config.json`` as the nested config (one of an earlier version migrated:
  ``training.config.migrate_record``), its fields that fusion reads checked; FusionError with the
  file name where it is missing or malformed."""
  # pylint: disable-next=import-outside-toplevel
  from stgcn_jax.training.config import migrate_record
  config = migrate_record(read_json(path))
  part = config.get("sparsity", {})
  if not isinstance(part, dict):
    raise FusionError(f"{path}: 'sparsity' is {part!r}; expected the config's sparsity part")
  _check_fields(path, part, ("level",))
  return config


def read_json(path: str) -> dict:
  """A JSON object from ``path``; FusionError with the file name if missing or malformed."""
  if not os.path.lexists(path):
    raise FusionError(f"{path}: not found (expected a finished experiments.run workdir)")
  if not os.path.isfile(path):
    raise FusionError(f"{path}: not a regular file (expected the JSON file experiments.run "
                      "writes)")
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise FusionError(f"{path}: cannot read it ({e.strerror or e})") from None
  try:
    value = json.loads(raw.decode("utf-8"))
  except UnicodeDecodeError as e:
    raise FusionError(f"{path}: not UTF-8 text (byte {e.start}); expected JSON") from None
  except json.JSONDecodeError as e:
    raise FusionError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
  except (ValueError, RecursionError) as e:  # a number too long to convert, nesting too deep
    raise FusionError(f"{path}: not valid JSON ({type(e).__name__})") from None
  if not isinstance(value, dict):
    raise FusionError(f"{path}: expected a JSON object, got {type(value).__name__}")
  return value


def is_number(value) -> bool:
  """A JSON number that is finite as a float (not a bool, not NaN/Inf, not 1e400 as an int)."""
  if not isinstance(value, (int, float)) or isinstance(value, bool):
    return False
  try:
    return math.isfinite(float(value))
  except OverflowError:
    return False


def _check_fields(path: str, obj: dict, numbers: Sequence[str]) -> None:
  """The fields of config.json / results.json that fusion reads, checked for their type."""
  for key in numbers:
    if obj.get(key) is not None and not is_number(obj[key]):
      raise FusionError(f"{path}: {key!r} is {obj[key]!r}; expected a finite number")
  levels = obj.get("ensemble_sparsities")
  if levels is not None and not (isinstance(levels, list) and all(map(is_number, levels))):
    raise FusionError(f"{path}: 'ensemble_sparsities' is {levels!r}; expected a list of numbers")
  members = obj.get("members")
  if members is not None and not (isinstance(members, list)
                                  and all(isinstance(m, dict) for m in members)):
    raise FusionError(f"{path}: 'members' is not a list of objects (one per ensemble member)")
  store = obj.get("data_store")
  if store is not None and not (isinstance(store, dict)
                                and isinstance(store.get("fingerprint"), str)):
    raise FusionError(f"{path}: 'data_store' is {store!r}; expected an object with the "
                      "dataset's 'fingerprint' (written by experiments.run)")


def _read_npz(path: str) -> dict:
  if not os.path.lexists(path):
    raise FusionError(f"{path}: not found (the run has not finished its evaluation)")
  try:
    with np.load(path, allow_pickle=False) as f:
      if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError("a single array, not an .npz archive")
      return {k: f[k] for k in f.files}
  except _NPZ_ERRORS as e:
    detail = (str(e).splitlines() or [type(e).__name__])[0][:200]
    raise FusionError(f"{path}: cannot read it ({detail}); expected the scores.npz that "
                      "experiments.run writes") from None


def _numeric(path: str, key: str, a: np.ndarray, kind: str = "fi") -> np.ndarray:
  if a.dtype.kind not in kind:
    what = "numbers" if "f" in kind else "integers"
    raise FusionError(f"{path}: array {key!r} has dtype {a.dtype}; expected {what}")
  return a


def _check_arrays(path: str, data: dict) -> dict:
  """scores (N, C) finite, labels (N,) in [0, C), index (N,) unique, names (N,), and for a joint
  ensemble member_scores (K, N, C) with member_sparsities (K,)."""
  for key in ("scores", "labels", "index"):
    if key not in data:
      raise FusionError(f"{path}: no array {key!r} (expected scores, labels, index, names)")
  scores = _numeric(path, "scores", data["scores"]).astype(np.float64)
  labels = _numeric(path, "labels", data["labels"], "iu")
  index = _numeric(path, "index", data["index"], "iu")
  n = scores.shape[0] if scores.ndim == 2 else -1
  if scores.ndim != 2 or labels.shape != (n,) or index.shape != (n,) or 0 in scores.shape:
    raise FusionError(f"{path}: expected scores (N, C), labels (N,), index (N,) with N, C >= 1; "
                      f"got {scores.shape}, {labels.shape}, {index.shape}")
  if not np.all(np.isfinite(scores)):
    raise FusionError(f"{path}: scores contain NaN or Inf")
  bad = np.flatnonzero((labels < 0) | (labels >= scores.shape[1]))
  if bad.size:
    raise FusionError(f"{path}: label {labels[bad[0]]} of sample {bad[0]} is outside [0, "
                      f"{scores.shape[1]}) (the scores' classes)")
  if len(np.unique(index)) != n:
    raise FusionError(f"{path}: index has duplicate entries (each test sample must appear once)")
  names = data.get("names")
  if names is not None and names.shape != (n,):
    raise FusionError(f"{path}: names has shape {names.shape}; expected ({n},)")
  out = dict(scores=scores, labels=labels.astype(np.int64), index=index.astype(np.int64),
             names=names, member_scores=None, member_sparsities=None, member_names=None)
  member_scores = data.get("member_scores")
  if member_scores is not None:
    member_scores = _numeric(path, "member_scores", member_scores).astype(np.float64)
    if member_scores.ndim != 3 or member_scores.shape[1:] != scores.shape or not len(member_scores):
      raise FusionError(f"{path}: member_scores {member_scores.shape} does not match scores "
                        f"{scores.shape} (expected (K, N, C))")
    if not np.all(np.isfinite(member_scores)):
      raise FusionError(f"{path}: member_scores contain NaN or Inf")
    levels = data.get("member_sparsities")
    if levels is not None and (levels.shape != member_scores.shape[:1] or levels.dtype.kind
                               not in "fiu" or not np.all(np.isfinite(levels))):
      raise FusionError(f"{path}: member_sparsities {levels.shape} {levels.dtype}; expected "
                        f"{len(member_scores)} finite numbers, one per member")
    member_names = data.get("member_names")
    if member_names is not None and (member_names.shape != member_scores.shape[:1]
                                     or member_names.dtype.kind not in "US"):
      raise FusionError(f"{path}: member_names {member_names.shape} {member_names.dtype}; "
                        f"expected {len(member_scores)} names, one per member")
    out.update(member_scores=member_scores, member_sparsities=levels, member_names=member_names)
  return out


def load_run(workdir: str) -> Run:
  """Loads ``scores.npz`` (required) and ``config.json``/``results.json`` (empty if absent)."""
  workdir = os.fspath(workdir)
  if not os.path.isdir(workdir):
    raise FusionError(f"{workdir}: no such workdir")
  path = os.path.join(workdir, "scores.npz")
  arrays = _check_arrays(path, _read_npz(path))
  file = os.path.join(workdir, "config.json")
  config = read_config(file) if os.path.lexists(file) else {}
  file = os.path.join(workdir, "results.json")
  results = read_json(file) if os.path.lexists(file) else {}
  _check_fields(file, results, ("sparsity", "prunable_sparsity"))
  return Run(name=workdir, config=config, results=results, **arrays,
             data_store=results.get("data_store") or config.get("data_store"))


def model_dir(run: Run) -> str | None:
  """Where training saved the run's final model: ``<workdir>/model``, or for a member of a joint
  ensemble or joint variants (``workdir[s=0.8]``, ``workdir[s0.8_lambda0]``: ``fusion.members``)
  ``<workdir>/members/<member name>``; ``None`` when absent. A model swap that a kill
  interrupted (``checkpoint.save_model``) is finished or rolled back first."""
  from stgcn_jax import checkpoint  # pylint: disable=import-outside-toplevel
  match = re.fullmatch(r"(.*)\[([^\[\]]+)\]", run.name)
  if match is None:
    path = os.path.join(run.name, "model")
  else:
    level = re.fullmatch(r"s=([0-9.]+)", match.group(2))
    member = f"s{float(level.group(1)):g}" if level else match.group(2)
    path = os.path.join(match.group(1), "members", member)
  try:
    checkpoint.recover_model_swap(path, cleanup=False)
  except checkpoint.CheckpointError as err:
    raise FusionError(str(err)) from None
  return path if os.path.lexists(path) else None


def _model_size(run: Run, path: str, sparse: str) -> dict:
  """One saved model's bytes: its checkpoint folder and its compressed sparse export."""
  from stgcn_jax import checkpoint  # pylint: disable=import-outside-toplevel
  from stgcn_jax.export import deploy  # pylint: disable=import-outside-toplevel
  from stgcn_jax.export.sparse import save_sparse  # pylint: disable=import-outside-toplevel
  try:
    model, variables = checkpoint.load_model(path)
    del model
    with open(os.path.join(path, "model.json"), "rb") as f:
      spec = json.loads(f.read().decode("utf-8"))
    save_sparse(sparse, spec, variables)
  except Exception as err:  # pylint: disable=broad-except  (orbax raises bare Exception)
    while err.__cause__ is not None:
      err = err.__cause__
    detail = (str(err).splitlines() or [type(err).__name__])[0][:200]
    raise FusionError(f"{path}: the saved model of {run.name} cannot be read ({detail}); run "
                      "experiments.run again with its --workdir to write it again, or move the "
                      "folder away") from None
  return {"name": run.name, "checkpoint_bytes": deploy.size_on_disk(path),
          "sparse_bytes": deploy.size_on_disk(sparse)}


def disk_sizes(runs: Sequence[Run]) -> dict | None:
  """Bytes on disk of each run's model: its orbax checkpoint and its compressed sparse export
  (``experiments.export``: kept weights + a packed bit mask), with the ensemble's totals; ``None``
  when a run has no saved model. A saved model that cannot be read is a FusionError."""
  dirs = [model_dir(r) for r in runs]
  if any(d is None for d in dirs):
    return None
  with tempfile.TemporaryDirectory(prefix="stgcn_sizes_") as tmp:
    members = [_model_size(run, path, os.path.join(tmp, f"{i}.npz"))
               for i, (run, path) in enumerate(zip(runs, dirs))]
  return {"members": members,
          "checkpoint_bytes": sum(m["checkpoint_bytes"] for m in members),
          "sparse_bytes": sum(m["sparse_bytes"] for m in members)}
