"""The typed run config: ``RunConfig`` with ``data``, ``model``, ``optim``, ``sparsity`` and
``loop`` parts, resolved once from the flat command-line config.

``experiments/configs/default.py`` is a flat ``ml_collections.ConfigDict`` (so that every field is a
``--config.FIELD=VALUE`` flag, as it always was); ``RunConfig.from_flat`` sorts its fields into the
parts, applies the run policy below, checks every value and builds the backbone's typed options.
``to_flat`` gives the flat record back for ``config.json``, which ``sweep``, ``analyze`` and
``fuse`` read.

The run policy, applied here and nowhere else:
* sparsity 0 in mode 'generator' is a dense run (mode 'dense'); mode 'dense' has sparsity 0;
* a dense warm-up longer than the run, unless set explicitly, becomes 60 % of it (the paper's
  60-of-100 epochs), and an LR warm-up as long as the run becomes 10 % of it.

What the jitted steps close over is ``TrainConfig`` (``optim`` and ``sparsity``, with the steps per
epoch known); ``resolve(mapping, **overrides)`` builds one directly from flat fields, for tests and
notebooks.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping
from typing import Any

from stgcn_jax import models
from stgcn_jax.sparsity.config import SparsityConfig, check_sparsity_config
from stgcn_jax.training.variants import run_variants


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """SGD with Nesterov momentum and a cosine schedule (docs/METHOD.md section 7).

  learning_rate: for a batch of ``base_batch_size``, scaled linearly to ``batch_size``.
  num_epochs, steps_per_epoch: the schedule's length (``steps_per_epoch`` 0 in a ``RunConfig``: the
    training iterator's).
  lr_by_epoch: the cosine constant within an epoch (the reference sparse recipe), not per step.
  lr_warmup_epochs: a linear LR warm-up from 0 over this many epochs, then the cosine decay to 0.
  weight_decay, momentum, nesterov: SGD (decay added to the gradient before momentum).
  grad_clip_norm: clip the gradient (after decay, before momentum) to this global norm (0: off).
    A channel whose kept weights are all pruned has a variance that falls towards 0 while the
    penalty empties its masked-out weights, and BatchNorm's gradient grows as 1/sqrt(var + eps)
    on the way: clipping keeps those spikes from throwing the masked-out weights out again.
  """
  learning_rate: float = 0.1
  base_batch_size: int = 128
  batch_size: int = 128
  # The schedule.
  num_epochs: int = 100
  steps_per_epoch: int = 1
  lr_by_epoch: bool = False
  lr_warmup_epochs: float = 0.0
  # SGD.
  grad_clip_norm: float = 0.0
  weight_decay: float = 5e-4
  momentum: float = 0.9
  nesterov: bool = True

  @property
  def total_steps(self) -> int:
    return int(self.num_epochs) * self.steps_per_epoch

  @property
  def peak_learning_rate(self) -> float:
    return self.learning_rate * self.batch_size / self.base_batch_size

  def check(self, allow_unknown_steps: bool = False) -> None:
    if not 0 <= self.lr_warmup_epochs < self.num_epochs:
      raise ValueError(f"config.lr_warmup_epochs must be in [0, num_epochs={self.num_epochs}), "
                       f"got {self.lr_warmup_epochs!r}")
    for name in ("steps_per_epoch", "batch_size", "base_batch_size", "num_epochs"):
      lowest = 0 if name == "steps_per_epoch" and allow_unknown_steps else 1
      if int(getattr(self, name)) < lowest:
        raise ValueError(f"config.{name} must be >= {lowest}, got {getattr(self, name)!r}")
    if self.grad_clip_norm < 0:
      raise ValueError(f"config.grad_clip_norm must be >= 0 (0 = no clipping), got "
                       f"{self.grad_clip_norm!r}")
    if self.lr_by_epoch and self.lr_warmup_epochs > 0:
      raise ValueError("config.lr_by_epoch=True and config.lr_warmup_epochs > 0 cannot be combined")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """What the train steps, the optimizer and the state creation close over (frozen, hashable)."""
  optim: OptimConfig = OptimConfig()
  sparsity: SparsityConfig = SparsityConfig()

  @property
  def steps_per_epoch(self) -> int:
    return self.optim.steps_per_epoch

  @property
  def total_steps(self) -> int:
    return self.optim.total_steps

  @property
  def warmup_steps(self) -> int:
    """Steps of the dense warm-up: 0 unless a generator mode warms up."""
    if self.sparsity.mode in ("dense", "lth"):
      return 0
    return int(self.sparsity.warmup_epochs) * self.optim.steps_per_epoch

  def phase_at(self, step: int) -> str:
    """'warmup' for ``step < warmup_steps``, else 'finetune'."""
    return "warmup" if int(step) < self.warmup_steps else "finetune"


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The dataset, its splits and the pipelines (``stgcn_jax.data``).

  data_dir: "" means $STGCN_JAX_DATA_DIR or ~/.stgcn_jax/data. val_split: a split of the dataset;
  "" means its own ``val`` split if it has one, else ``val_fraction`` of train held out (by
  performer, else by class). train_repeat: one epoch is this many passes over the training data.
  eval_batch_size: 0 means the training batch size.
  """
  dataset: str = "synthetic"
  data_dir: str = ""
  train_split: str = "train"
  test_split: str = "test"
  val_split: str = ""
  val_fraction: float = 0.1
  modality: str = "j"
  clip_len: int = 100
  num_clips_test: int = 10
  num_person: int = 2
  normalize: str = "auto"
  align_spine: bool = False
  rotate: float = 0.2
  train_repeat: int = 1
  eval_batch_size: int = 0

  def check(self) -> None:
    if self.train_repeat < 1:
      raise ValueError(f"config.train_repeat must be >= 1, got {self.train_repeat}")
    if not 0 <= self.val_fraction < 1:
      raise ValueError(f"config.val_fraction must be in [0, 1), got {self.val_fraction!r}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The backbone, its typed options (``models.resolve_options``: the block list, graph fields and
  ``gcn`` / ``tcn`` dataclasses) and the pretrained weights (a model checkpoint dir, mode 'lth')."""
  backbone: str = "ctrgcn"
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  pretrained: str = ""


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """Logging, validation (every ``eval_every_epochs``, 0 = none), exact BN statistics
  (``precise_bn_batches`` train batches, 0 = running averages) and checkpoints."""
  log_every_steps: int = 50
  progress_bar: bool = True
  tensorboard: bool = False
  # Model selection and BN statistics.
  eval_every_epochs: int = 5
  precise_bn_batches: int = 50
  # Checkpoints; ``distributed``: join the processes of the cluster JAX detects (SLURM, Open MPI,
  # Kubernetes, TPU; elsewhere experiments.run --coordinator_address; stgcn_jax.distributed).
  checkpoint_every_epochs: int = 1
  keep_checkpoints: int = 2
  distributed: bool = False


_PARTS = {"data": DataConfig, "optim": OptimConfig, "sparsity": SparsityConfig,
          "loop": LoopConfig}
# Flat fields that are not a part's field of the same name.
_MODEL_FIELDS = ("backbone", "model", "model_options", "pretrained")
_TOP_FIELDS = ("seed", "variant")


def _owner() -> dict[str, str]:
  owner = {}
  for part, cls in _PARTS.items():
    owner.update({f.name: part for f in dataclasses.fields(cls)})
  return owner


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """One run: see the module docstring."""
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  optim: OptimConfig = OptimConfig()
  sparsity: SparsityConfig = SparsityConfig()
  loop: LoopConfig = LoopConfig()
  seed: int = 0
  variant: str = ""

  @classmethod
  def from_flat(cls, flat: Mapping[str, Any], explicit: Collection[str] = ()) -> RunConfig:
    """The run config of a flat ConfigDict / dict (missing fields take their defaults), with the
    run policy applied; ``explicit`` names the fields the user set (they are kept as set)."""
    flat = dict(flat.to_dict() if hasattr(flat, "to_dict") else flat)
    owner = _owner()
    unknown = sorted(k for k in flat if k not in owner and k not in _MODEL_FIELDS + _TOP_FIELDS)
    if unknown:
      raise ValueError(f"unknown config field(s) {unknown}")
    _apply_policy(flat, explicit)
    parts = {part: {} for part in _PARTS}
    for key, value in flat.items():
      if key in owner:
        parts[owner[key]][key] = value
    built = {part: _PARTS[part](**_typed(values)) for part, values in parts.items()}
    model = ModelConfig(backbone=flat.get("backbone", ModelConfig.backbone),
                        options=model_options(flat, built["data"].num_person),
                        pretrained=flat.get("pretrained", ""))
    run = cls(model=model, seed=int(flat.get("seed", 0)), variant=str(flat.get("variant", "")),
              **built)
    run.check()
    return run

  def check(self) -> None:
    self.data.check()
    self.optim.check(allow_unknown_steps=True)
    check_sparsity_config(self.sparsity, self.optim.num_epochs)
    run_variants(self.sparsity, self.seed)     # a spec that does not parse: its bad token

  def train_config(self, steps_per_epoch: int) -> TrainConfig:
    """The steps' config, with the run's steps per epoch (``optim.steps_per_epoch`` if set)."""
    optim = dataclasses.replace(self.optim,
                                steps_per_epoch=self.optim.steps_per_epoch or steps_per_epoch)
    optim.check()
    return TrainConfig(optim=optim, sparsity=self.sparsity)

  def to_flat(self) -> dict[str, Any]:
    """The flat record (``config.json``): every field by its command-line name."""
    flat: dict[str, Any] = {"variant": self.variant, "seed": self.seed}
    for part in _PARTS:
      flat.update(dataclasses.asdict(getattr(self, part)))
    flat.update(backbone=self.model.backbone, model=models.options_json(self.model.options),
                model_options="", pretrained=self.model.pretrained)
    return flat


def _typed(values: dict[str, Any]) -> dict[str, Any]:
  """Sequences from configs / JSON as the tuples a frozen config holds."""
  if "ensemble_sparsities" in values:
    values["ensemble_sparsities"] = tuple(float(s) for s in values["ensemble_sparsities"])
  return values


def _apply_policy(flat: dict[str, Any], explicit: Collection[str]) -> None:
  if flat.get("mode") == "dense":
    flat["sparsity"] = 0.0
  if flat.get("sparsity", SparsityConfig.sparsity) == 0 and flat.get("mode",
                                                                       "generator") == "generator":
    flat["mode"] = "dense"
  epochs = flat.get("num_epochs", OptimConfig.num_epochs)
  if epochs < flat.get("warmup_epochs", SparsityConfig.warmup_epochs) and (
      "warmup_epochs" not in explicit):
    flat["warmup_epochs"] = int(round(0.6 * epochs))
  if flat.get("lr_warmup_epochs", 0.0) >= epochs:
    flat["lr_warmup_epochs"] = 0.1 * epochs


def model_options(flat: Mapping[str, Any], num_person: int | None = None) -> dict[str, Any]:
  """The backbone's typed options from a flat config (or an old ``config.json``): ``model`` (the
  block list, or every option), then ``model_options`` (pyskl's flat spellings as a JSON object),
  then ``num_person`` from the data unless set."""
  options = dict(flat.get("model") or {})
  extra = flat.get("model_options") or ""
  if extra:
    try:
      parsed = json.loads(extra) if isinstance(extra, str) else dict(extra)
    except json.JSONDecodeError as err:
      raise ValueError(f"config.model_options must be a JSON object, got {extra!r} ({err})"
                       ) from None
    if not isinstance(parsed, dict):
      raise ValueError(f"config.model_options must be a JSON object, got {extra!r}")
    options.update(parsed)
  if num_person is None:
    num_person = flat.get("num_person", DataConfig.num_person)
  options.setdefault("num_person", num_person)
  return models.resolve_options(flat.get("backbone", ModelConfig.backbone), options)


def resolve(config: Any = None, **overrides) -> TrainConfig:
  """A ``TrainConfig`` from flat fields: a ConfigDict / dict (extra fields are ignored) or a
  ``TrainConfig``, plus ``overrides``. No run policy is applied (``RunConfig.train_config`` is
  the run's)."""
  if isinstance(config, TrainConfig):
    values = {**dataclasses.asdict(config.optim), **dataclasses.asdict(config.sparsity)}
  else:
    values = dict(config.to_dict() if hasattr(config, "to_dict") else (config or {}))
  values.update(overrides)
  fields = {"optim": {f.name for f in dataclasses.fields(OptimConfig)},
            "sparsity": {f.name for f in dataclasses.fields(SparsityConfig)}}
  parts = {part: _typed({k: v for k, v in values.items() if k in names})
           for part, names in fields.items()}
  cfg = TrainConfig(optim=OptimConfig(**parts["optim"]),
                    sparsity=SparsityConfig(**parts["sparsity"]))
  cfg.optim.check()
  check_sparsity_config(cfg.sparsity, cfg.optim.num_epochs)
  return cfg
