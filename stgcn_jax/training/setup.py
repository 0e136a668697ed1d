"""What a run is built from: the dataset, pipelines, model, pretrained weights, seeds and the
validation split."""

from __future__ import annotations

import json
import os
from typing import Any

from stgcn_jax import checkpoint, data, models
from stgcn_jax.training import ensemble as ens
from stgcn_jax.training.workdir import RunError

__all__ = ["dataset", "pipeline", "model_options", "build_model", "pretrained_variables",
           "run_seeds", "train_val_sources"]


def dataset(config) -> tuple[str, data.DatasetInfo]:
  data_dir = os.path.abspath(os.path.expanduser(config.data_dir or data.default_data_dir()))
  if config.dataset == "synthetic":
    data.ensure_synthetic(data_dir)
  elif not data.exists(config.dataset, data_dir):
    raise RunError(f"dataset {config.dataset!r} not found under {data_dir}: convert it first "
                   "(see data_prep/README.md, e.g. python -m data_prep.nw_ucla --src ... --out "
                   f"{data_dir}) or pass --data_dir")
  return data_dir, data.info(config.dataset, data_dir)


def pipeline(config, info, train: bool, num_clips: int | None = None) -> data.Pipeline:
  if num_clips is None:
    num_clips = 1 if train else config.num_clips_test
  return data.Pipeline(data.PipelineConfig(
      clip_len=config.clip_len, num_clips=num_clips,
      test_mode=not train, modality=config.modality, normalize=config.normalize,
      align_spine=config.align_spine, rotate=config.rotate if train else 0.0,
      num_person=config.num_person), info)


def model_options(config) -> dict[str, Any]:
  """Backbone options: ``config.model`` (shared block list), ``config.model_options`` (JSON)."""
  options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config.model).items()}
  if config.model_options:
    try:
      extra = json.loads(config.model_options)
    except json.JSONDecodeError as err:
      raise RunError(f"config.model_options must be a JSON object, got {config.model_options!r} "
                     f"({err})") from None
    if not isinstance(extra, dict):
      raise RunError(f"config.model_options must be a JSON object, got {config.model_options!r}")
    options.update(extra)
  options.setdefault("num_person", config.num_person)
  return options


def build_model(config, info):
  in_channels = info.num_channels * len(config.modality.split(","))
  return models.get_model(config.backbone, info.num_classes, layout=info.layout,
                          in_channels=in_channels, **model_options(config))


def pretrained_variables(config, model):
  if not config.pretrained:
    if config.mode == "lth":
      print("note: mode=lth without --pretrained: scores are learned over random weights")
    return None
  loaded, variables = checkpoint.load_model(config.pretrained)
  mine, theirs = model.backbone, loaded.backbone
  if (type(mine) is not type(theirs) or loaded.num_classes != model.num_classes
      or mine.layout != theirs.layout):
    raise RunError(
        f"--pretrained {config.pretrained}: a {type(theirs).__name__} with {loaded.num_classes} "
        f"classes on layout {theirs.layout.name!r}, but this run builds a {type(mine).__name__} "
        f"with {model.num_classes} classes on layout {mine.layout.name!r}")
  return variables


def run_seeds(config) -> dict:
  """The run's seeds, derived from ``config.seed`` and the sparsity (``ens.member_seed``), so that
  runs of different sparsity (sweep cells, ensemble members) are independent: ``init`` (weights,
  dropout), ``data`` (order, augmentation) and ``mask`` (the mask draw; the run seed itself when
  ``config.nested_masks``). A joint ensemble has one ``init``/``mask`` pair per member and the run
  seed as its shared data seed."""
  seed = int(config.seed)

  def one(s: float) -> dict:
    member = ens.member_seed(seed, s)
    return {"sparsity": float(s), "init": member, "data": member,
            "mask": seed if config.nested_masks else member}

  if config.mode == "ensemble":
    return {"run": seed, "data": seed, "nested_masks": bool(config.nested_masks),
            "members": [one(s) for s in config.ensemble_sparsities]}
  return {"run": seed, "nested_masks": bool(config.nested_masks),
          **one(0.0 if config.mode == "dense" else config.sparsity)}


def train_val_sources(config, info, data_dir):
  """(train source, validation source or None, a note on how val was made)."""
  train_src = data.load(config.dataset, data_dir, config.train_split)
  if config.val_split:
    return train_src, data.load(config.dataset, data_dir, config.val_split), config.val_split
  if "val" in info.default_splits and info.default_splits["val"] != info.resolve_split(
      config.test_split):
    return train_src, data.load(config.dataset, data_dir, "val"), "the dataset's val split"
  if not config.val_fraction:
    return train_src, None, "none"
  train_idx, val_idx, how = data.holdout(train_src, config.val_fraction, config.seed)
  if len(val_idx) == 0:
    raise RunError(f"--config.val_fraction={config.val_fraction} holds out no sample of the "
                   f"{len(train_src)} training samples; raise it or set it to 0")
  note = (f"{len(val_idx)} of {len(train_src)} training samples held out "
          f"({'whole performers' if how == 'performer' else 'stratified by class'})")
  return (data.Subset(train_src, train_idx, "train-val"),
          data.Subset(train_src, val_idx, "val"), note)
