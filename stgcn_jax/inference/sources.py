"""The model sources of a prediction: ``load_predictor`` and what it accepts.

A source is a model checkpoint (``model.json`` + ``variables/``), a training workdir (its
``model/``, and its ``config.json`` for the test pipeline) or a joint-ensemble workdir
(``mode=ensemble``: its ``members/s<sparsity>/`` model checkpoints; for a workdir written before
those were saved, the stacked state of the newest checkpoint in ``checkpoints/`` that restores, as
training's ``restore_newest_intact`` finds it, params multiplied by the masks). Several sources
make a post-hoc ensemble; its members that share the architecture, the test pipeline and the
variable shapes are stacked into one ``predictor.Group`` (one vmapped call).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

from stgcn_jax import checkpoint, graph, models
from stgcn_jax import data as data_lib
from stgcn_jax.data.records import DataError
from stgcn_jax.inference.predictor import Group, Predictor, pipeline_config
from stgcn_jax.inference.raw_input import PredictError

__all__ = ["PYSKL_TEST_PIPELINE", "load_predictor"]

# pyskl's test pipeline for its GCN configs (j modality, 10 clips of 100 frames).
PYSKL_TEST_PIPELINE = {"clip_len": 100, "num_clips": 10, "modality": "j", "normalize": "auto",
                       "align_spine": True}


class _Member(NamedTuple):
  """One source's model (or a joint ensemble's stacked members), before grouping."""
  model: models.Recognizer
  variables: Any                # one model's, or stacked over ``count`` members (leading axis)
  count: int
  pipeline: dict                # the recorded test pipeline (canonical once loaded)
  class_names: list[str] | None
  spec: dict                    # the architecture: model.json's backbone, classes, layout, ...
  source: str


def _read_json(path: str, what: str) -> dict:
  try:
    with open(path) as f:
      value = json.load(f)
  except OSError as err:
    raise PredictError(f"{path}: cannot read {what} ({err.strerror or err})") from None
  except ValueError as err:
    raise PredictError(f"{path}: {what} is not valid JSON ({err})") from None
  if not isinstance(value, dict):
    raise PredictError(f"{path}: {what} must be a JSON object, got {type(value).__name__}")
  return value


def _data_part(config: dict) -> dict:
  """The data part of a nested ``config.json`` (``_load_source`` migrates it), every field
  present."""
  from stgcn_jax.training.config import DataConfig  # pylint: disable=import-outside-toplevel
  return {**dataclasses.asdict(DataConfig()), **config.get("data", {})}


def _dataset_info(config: dict, data_dir: str | None):
  data = _data_part(config)
  name = data["dataset"]
  root = data_dir or data["data_dir"] or data_lib.default_data_dir()
  root = os.path.abspath(os.path.expanduser(root))
  if not name or not data_lib.exists(name, root):
    return None, f"dataset {name!r} is not under {root}"
  try:
    return data_lib.info(name, root), None
  except (DataError, KeyError, OSError, ValueError) as err:
    return None, f"dataset {name!r} under {root} is unreadable ({err})"


def _pipeline_from_config(config: dict, info) -> dict:
  data = _data_part(config)
  pipe = {"clip_len": int(data["clip_len"]), "num_clips": int(data["num_clips_test"]),
          "modality": data["modality"], "normalize": data["normalize"],
          "align_spine": bool(data["align_spine"]), "num_person": int(data["num_person"])}
  if info is not None:
    pipe["channels"] = list(info.channels)
  return pipe


def _from_model_dir(path: str, config: dict | None, data_dir: str | None, notes: list[str]
                    ) -> list[_Member]:
  try:
    model, variables = checkpoint.load_model(path)
  except (checkpoint.CheckpointError, graph.LayoutError) as err:
    raise PredictError(str(err)) from None
  except (ValueError, TypeError, KeyError) as err:
    raise PredictError(f"{path}: model.json does not build a model ({err})") from None
  spec = _read_json(os.path.join(path, "model.json"), "model.json")
  names, pipe = spec.get("class_names"), spec.get("pipeline")
  info = None
  if config is not None and (names is None or pipe is None):
    info, _ = _dataset_info(config, data_dir)
  if pipe is None and config is not None:
    pipe = _pipeline_from_config(config, info)
  if pipe is None:
    pipe = dict(PYSKL_TEST_PIPELINE, num_person=int(model.backbone.num_person))
    notes.append(f"note: {path} records no test pipeline (a converted pyskl model?): using "
                 f"pyskl's test defaults ({pipe['num_clips']} clips of {pipe['clip_len']} "
                 f"frames, modality j, spine alignment)")
  if names is None and info is not None:
    names = list(info.class_names)
  spec_core = {k: spec[k] for k in ("backbone", "num_classes", "layout", "in_channels", "options")
               if k in spec}
  return [_Member(model, variables, 1, pipe, names, spec_core, path)]


def _newest_state(workdir: str) -> tuple[dict, str]:
  """The raw (target-free) state of the newest checkpoint of ``workdir/checkpoints`` that
  restores, and its path, through training's own ``restore_newest_intact``."""
  from stgcn_jax.training import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  ckpt_dir = os.path.join(workdir, "checkpoints")
  missing = PredictError(f"{workdir}: a joint-ensemble workdir without a checkpoint in "
                         f"{ckpt_dir}; train it first")
  if not os.path.isdir(ckpt_dir) or not any(n.isdigit() for n in os.listdir(ckpt_dir)):
    raise missing
  mngr = workdir_lib.checkpoint_manager(ckpt_dir, None)   # keeps every step: it never saves
  try:
    restored = workdir_lib.restore_newest_intact(mngr, None, workdir, move_damaged=False)
  except workdir_lib.RunError as err:
    raise PredictError(f"{workdir}: {err}") from None
  finally:
    mngr.close()
  if restored is None:
    raise missing
  items, step = restored
  return items.state, os.path.join(ckpt_dir, str(step), "state")


def _from_joint_ensemble(workdir: str, config: dict, data_dir: str | None, notes: list[str]
                         ) -> list[_Member]:
  from stgcn_jax import sparsity  # pylint: disable=import-outside-toplevel
  from stgcn_jax.training.config import model_options  # pylint: disable=import-outside-toplevel
  info, why = _dataset_info(config, data_dir)
  if info is None:
    raise PredictError(f"{workdir}: a joint-ensemble workdir keeps no model.json; its layout and "
                       f"classes come from its dataset, but {why} (pass --data_dir)")
  state, path = _newest_state(workdir)
  if not all(k in state for k in ("params", "batch_stats", "masks")):
    raise PredictError(f"{path}: not a training state (keys {sorted(state)})")
  try:
    options = models.options_json(model_options(config.get("model", {})))
  except ValueError as err:
    raise PredictError(f"{workdir}/config.json: {err}") from None
  backbone = config.get("model", {}).get("backbone", "ctrgcn")
  in_channels = info.num_channels * len(str(_data_part(config)["modality"]).split(","))
  model = models.get_model(backbone, info.num_classes, layout=info.layout,
                           in_channels=in_channels, **dict(options))
  params = sparsity.apply_masks(state["params"], state["masks"])
  as_float32 = lambda a: np.asarray(a, np.float32) if np.asarray(a).dtype.kind == "f" else a
  variables = jax.tree.map(as_float32, {"params": params, "batch_stats": state["batch_stats"]})
  count = int(jax.tree.leaves(variables["params"])[0].shape[0])
  if config.get("loop", {}).get("precise_bn_batches"):
    notes.append(f"note: {path} holds the members' running-average BatchNorm statistics; the "
                 "precise-BN statistics of the workdir's results.json are not saved for a joint "
                 "ensemble, so scores differ slightly from scores.npz")
  spec_core = checkpoint.model_spec_json(backbone, info.num_classes, info.layout,
                                         in_channels, options)
  return [_Member(model, variables, count, _pipeline_from_config(config, info),
                  list(info.class_names), spec_core, workdir)]


def _load_source(src: str, data_dir: str | None, notes: list[str]) -> list[_Member]:
  path = os.path.abspath(os.path.expanduser(src))
  if not os.path.exists(path):
    raise PredictError(f"--model {src}: no such file or directory")
  if os.path.isfile(os.path.join(path, "model.json")):
    return _from_model_dir(path, None, data_dir, notes)
  config_path = os.path.join(path, "config.json")
  from stgcn_jax.training.config import migrate_record  # pylint: disable=import-outside-toplevel
  config = (migrate_record(_read_json(config_path, "config.json"))   # either spelling, nested
            if os.path.isfile(config_path) else None)
  if os.path.isfile(os.path.join(path, "model", "model.json")):
    return _from_model_dir(os.path.join(path, "model"), config, data_dir, notes)
  members = os.path.join(path, "members")
  member_dirs = sorted(os.path.join(members, n) for n in os.listdir(members)
                       if os.path.isfile(os.path.join(members, n, "model.json"))) \
      if os.path.isdir(members) else []
  if member_dirs:  # a joint ensemble's members as training saved them (precise-BN statistics)
    return [m for d in member_dirs for m in _from_model_dir(d, config, data_dir, notes)]
  if config is not None and config.get("sparsity", {}).get("mode") == "ensemble":
    return _from_joint_ensemble(path, config, data_dir, notes)
  raise PredictError(f"--model {src}: neither a model checkpoint (model.json), a training workdir "
                     "(model/) nor a joint-ensemble workdir (config.json with mode=ensemble and "
                     "checkpoints/)")


def _canonical_pipeline(pipe: dict, source: str) -> dict:
  """Every ``PipelineConfig`` field (test mode) and ``channels``: equal dicts, equal inputs."""
  try:
    config = pipeline_config(pipe)
  except (TypeError, ValueError) as err:
    raise PredictError(f"{source}: the recorded test pipeline {pipe} is not usable ({err})") \
        from None
  out = dataclasses.asdict(config)
  if pipe.get("channels"):
    out["channels"] = [str(c) for c in pipe["channels"]]
  return out


def _shapes(tree) -> str:
  return str(jax.tree.map(lambda a: (tuple(np.shape(a)), str(np.asarray(a).dtype)), tree))


def _check_agreement(members: Sequence[_Member]) -> None:
  """PredictError unless every member has the first one's classes and layout."""
  first = members[0]
  for m in members[1:]:
    for what, a, b in (("classes", first.model.num_classes, m.model.num_classes),
                       ("layout", first.model.backbone.layout.name, m.model.backbone.layout.name)):
      if a != b:
        raise PredictError(f"ensemble members disagree on {what}: {first.source} has {a}, "
                           f"{m.source} has {b}")
    if first.model.backbone.layout != m.model.backbone.layout:
      raise PredictError(f"ensemble members disagree on the layout's graph: {first.source} vs "
                         f"{m.source}")


def _stack_groups(members: Sequence[_Member]) -> list[Group]:
  """Members with the same architecture, pipeline and variable shapes stacked: one vmap call."""
  buckets: dict[str, list[_Member]] = collections.OrderedDict()
  for m in members:
    key = json.dumps([m.spec, m.pipeline], sort_keys=True, default=str)
    key += _shapes(m.variables if m.count == 1 else jax.tree.map(lambda a: a[0], m.variables))
    buckets.setdefault(key, []).append(m)
  groups = []
  for bucket in buckets.values():
    if len(bucket) == 1:
      m = bucket[0]
      groups.append(Group(m.model, m.variables, m.count, m.pipeline, [m.source]))
      continue
    parts = [m.variables if m.count > 1 else jax.tree.map(lambda a: np.asarray(a)[None],
                                                          m.variables) for m in bucket]
    stacked = jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *parts)
    groups.append(Group(bucket[0].model, stacked, sum(m.count for m in bucket),
                        bucket[0].pipeline, [m.source for m in bucket]))
  return groups


def load_predictor(model: str | Sequence[str], *, data_dir: str | None = None) -> Predictor:
  """A ``Predictor`` for one model source or several (a post-hoc ensemble).

  Raises:
    PredictError: a source that is not a model, members that disagree on classes or layout.
  """
  sources = [s.strip() for s in (model.split(",") if isinstance(model, str) else model)]
  sources = [s for s in sources if s]
  if not sources:
    raise PredictError("--model is empty; give a model checkpoint or a training workdir")
  notes: list[str] = []
  members = [m._replace(pipeline=_canonical_pipeline(m.pipeline, m.source))
             for s in sources for m in _load_source(s, data_dir, notes)]
  _check_agreement(members)
  groups = _stack_groups(members)
  first = members[0].model
  names = next((m.class_names for m in members if m.class_names is not None), None)
  if names is None or len(names) != first.num_classes:
    names = [f"class {k}" for k in range(first.num_classes)]
  channels = [tuple(g.pipeline["channels"]) for g in groups if g.pipeline.get("channels")]
  return Predictor(groups=groups, layout=first.backbone.layout, num_classes=first.num_classes,
                   class_names=list(names), channels=channels[0] if channels else None,
                   notes=notes, sources=sources)
