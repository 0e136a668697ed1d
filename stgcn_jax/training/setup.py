"""What a run is built from: the dataset, pipelines, model, pretrained weights, seeds and the
validation split."""

from __future__ import annotations

import os

from stgcn_jax import checkpoint, data, distributed, models
from stgcn_jax.training import ensemble as ens
from stgcn_jax.training import variants
from stgcn_jax.training.config import RunConfig
from stgcn_jax.training.workdir import RunError

__all__ = ["dataset", "pipeline", "build_model", "pretrained_variables", "run_seeds",
           "train_val_sources"]


def dataset(config: RunConfig) -> tuple[str, data.DatasetInfo]:
  cfg = config.data
  data_dir = os.path.abspath(os.path.expanduser(cfg.data_dir or data.default_data_dir()))
  if cfg.dataset == "synthetic":   # built on first use, by process 0 while the others wait
    if distributed.is_main():
      data.ensure_synthetic(data_dir)
    distributed.barrier("synthetic dataset")
  elif not data.exists(cfg.dataset, data_dir):
    raise RunError(f"dataset {cfg.dataset!r} not found under {data_dir}: convert it first "
                   "(see data_prep/README.md, e.g. python -m data_prep.nw_ucla --src ... --out "
                   f"{data_dir}) or pass --data_dir")
  return data_dir, data.info(cfg.dataset, data_dir)


def pipeline(config: RunConfig, info, train: bool, num_clips: int | None = None) -> data.Pipeline:
  cfg = config.data
  if num_clips is None:
    num_clips = 1 if train else cfg.num_clips_test
  return data.Pipeline(data.PipelineConfig(
      clip_len=cfg.clip_len, num_clips=num_clips,
      test_mode=not train, modality=cfg.modality, normalize=cfg.normalize,
      align_spine=cfg.align_spine, rotate=cfg.rotate if train else 0.0,
      num_person=cfg.num_person), info)


def build_model(config: RunConfig, info):
  in_channels = info.num_channels * len(config.data.modality.split(","))
  return models.get_model(config.model.backbone, info.num_classes, layout=info.layout,
                          in_channels=in_channels, **config.model.options)


def pretrained_variables(config: RunConfig, model):
  pretrained = config.model.pretrained
  if not pretrained:
    if config.sparsity.mode == "lth":
      print("note: mode=lth without --pretrained: scores are learned over random weights")
    return None
  loaded, variables = checkpoint.load_model(pretrained)
  mine, theirs = model.backbone, loaded.backbone
  if (type(mine) is not type(theirs) or loaded.num_classes != model.num_classes
      or mine.layout != theirs.layout):
    raise RunError(
        f"--pretrained {pretrained}: a {type(theirs).__name__} with {loaded.num_classes} "
        f"classes on layout {theirs.layout.name!r}, but this run builds a {type(mine).__name__} "
        f"with {model.num_classes} classes on layout {mine.layout.name!r}")
  return variables


def run_seeds(config: RunConfig) -> dict:
  """The run's seeds, derived from ``config.seed`` and the sparsity (``ens.member_seed``), so that
  runs of different sparsity (sweep cells, ensemble members) are independent: ``init`` (weights,
  dropout), ``data`` (order, augmentation) and ``mask`` (the mask draw; the run seed itself when
  ``nested_masks``). A stacked run (a joint ensemble, joint variants) has one ``init``/``mask``
  pair per member, each that of a separate run with the member's sparsity and seeds
  (``training.variants``), and the run seed as its shared data seed."""
  seed, sp = int(config.seed), config.sparsity

  def one(s: float, init_seed: int = seed, mask_seed: int = seed) -> dict:
    member = ens.member_seed(init_seed, s)
    return {"sparsity": float(s), "init": member, "data": member,
            "mask": mask_seed if sp.nested_masks else ens.member_seed(mask_seed, s)}

  members = variants.run_variants(sp, seed)
  if members is not None:
    names = variants.member_names(members)
    return {"run": seed, "data": seed, "nested_masks": bool(sp.nested_masks),
            "members": [dict(one(v.sparsity, v.init_seed, v.mask_seed), name=name)
                        for v, name in zip(members, names)]}
  return {"run": seed, "nested_masks": bool(sp.nested_masks),
          **one(0.0 if sp.mode == "dense" else sp.level)}


def train_val_sources(config: RunConfig, info, data_dir):
  """(train source, validation source or None, a note on how val was made)."""
  cfg = config.data
  train_src = data.load(cfg.dataset, data_dir, cfg.train_split)
  if cfg.val_split:
    return train_src, data.load(cfg.dataset, data_dir, cfg.val_split), cfg.val_split
  if "val" in info.default_splits and info.default_splits["val"] != info.resolve_split(
      cfg.test_split):
    return train_src, data.load(cfg.dataset, data_dir, "val"), "the dataset's val split"
  if not cfg.val_fraction:
    return train_src, None, "none"
  train_idx, val_idx, how = data.holdout(train_src, cfg.val_fraction, config.seed)
  if len(val_idx) == 0:
    raise RunError(f"--config.data.val_fraction={cfg.val_fraction} holds out no sample of the "
                   f"{len(train_src)} training samples; raise it or set it to 0")
  note = (f"{len(val_idx)} of {len(train_src)} training samples held out "
          f"({'whole performers' if how == 'performer' else 'stratified by class'})")
  return (data.Subset(train_src, train_idx, "train-val"),
          data.Subset(train_src, val_idx, "val"), note)
