"""The typed run config: ``RunConfig`` with ``data``, ``model``, ``optim``, ``sparsity`` and
``loop`` parts, typed once from the nested command-line config.

``experiments/configs/default.py`` is a nested ``ml_collections.ConfigDict`` of the same parts
(every field a ``--config.PART.FIELD=VALUE`` flag, e.g. ``--config.optim.learning_rate=0.4``);
``RunConfig.from_config`` types it, applies the run policy below, checks every value and builds
the backbone's typed options; ``to_dict`` gives it back for ``config.json``, which ``sweep``,
``analyze``, ``fuse`` and ``report`` read through ``migrate_record`` (the one migration of the
flat config of earlier versions: old workdirs, and the old ``--config.FIELD`` spellings that
``experiments.run`` still accepts).

The run policy, applied here and nowhere else:
* sparsity 0 in mode 'generator' is a dense run (mode 'dense'); mode 'dense' has sparsity 0;
* a dense warm-up longer than the run, unless set explicitly, becomes 60 % of it (the paper's
  60-of-100 epochs), and an LR warm-up as long as the run becomes 10 % of it.

What the jitted steps, the optimizer and the state creation take is ``TrainConfig`` (``optim``
and ``sparsity``, with the steps per epoch known): ``RunConfig.train_config`` in a run,
``resolve(**fields)`` in tests and notebooks.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping
from typing import Any

from stgcn_jax import models
from stgcn_jax.errors import UserError
from stgcn_jax.sparsity.config import SparsityConfig, check_sparsity_config
from stgcn_jax.training.variants import run_variants


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """SGD with Nesterov momentum and a cosine schedule (docs/METHOD.md section 7).

  learning_rate: for a batch of ``base_batch_size``, scaled linearly to ``batch_size``.
  num_epochs, steps_per_epoch: the schedule's length (``steps_per_epoch`` 0: the training
    iterator's, set by ``RunConfig.train_config``).
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
  steps_per_epoch: int = 0
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
      raise UserError(f"config.optim.lr_warmup_epochs must be in [0, num_epochs="
                       f"{self.num_epochs}), "
                       f"got {self.lr_warmup_epochs!r}")
    for name in ("steps_per_epoch", "batch_size", "base_batch_size", "num_epochs"):
      lowest = 0 if name == "steps_per_epoch" and allow_unknown_steps else 1
      if int(getattr(self, name)) < lowest:
        raise UserError(f"config.optim.{name} must be >= {lowest}, got "
                         f"{getattr(self, name)!r}")
    if self.grad_clip_norm < 0:
      raise UserError(f"config.optim.grad_clip_norm must be >= 0 (0 = no clipping), got "
                       f"{self.grad_clip_norm!r}")
    if self.lr_by_epoch and self.lr_warmup_epochs > 0:
      raise UserError("config.optim.lr_by_epoch=True and config.optim.lr_warmup_epochs > 0 "
                       "cannot be combined")


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

  def masked(self, phase: str) -> bool:
    """Whether the model ``phase`` trains is ``params * masks`` (the one rule, for the train
    step's forward and updates, evaluation, precise BN and the switch records): in 'finetune'
    of every mode with masks (generator, joint members, lottery ticket), never in a generator's
    dense 'warmup', and not in mode 'dense' (its masks keep everything: nothing to multiply)."""
    return phase == "finetune" and self.sparsity.mode != "dense"


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
      raise UserError(f"config.data.train_repeat must be >= 1, got {self.train_repeat}")
    if not 0 <= self.val_fraction < 1:
      raise UserError(f"config.data.val_fraction must be in [0, 1), got {self.val_fraction!r}")


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
# The model part's own fields; its other fields are the backbone's options (the block list, ...).
_MODEL_FIELDS = ("backbone", "options", "pretrained")
_TOP_FIELDS = ("seed", "variant")
# What a run records in config.json beside its config (not config fields).
RUN_FACTS = ("seeds", "validation", "data_store")


def _legacy_names() -> dict[str, str]:
  """Each field's flat name (the config before it was nested) -> its nested path."""
  names = {f.name: f"{part}.{f.name}" for part, cls in _PARTS.items()
           for f in dataclasses.fields(cls)}
  names.update(sparsity="sparsity.level", backbone="model.backbone",
               pretrained="model.pretrained", model_options="model.options")
  del names["level"]
  return names


LEGACY_NAMES = _legacy_names()


def migrate_record(record: Mapping[str, Any]) -> dict[str, Any]:
  """The nested config of ``record``: a nested config / ``config.json`` as it is, or one in the
  flat spelling of earlier versions (``config.json`` of old workdirs, ``resolve``'s fields), whose
  fields move to their parts (``LEGACY_NAMES``; ``model`` and ``model_options`` into ``model``).
  Fields it does not know stay at the top, for ``from_config`` to name."""
  record = json.loads(json.dumps(record.to_dict() if hasattr(record, "to_dict") else record,
                                 default=list))
  if any(isinstance(record.get(part), dict) for part in _PARTS):
    return record
  nested: dict[str, Any] = {part: {} for part in (*_PARTS, "model")}
  model = record.pop("model", None)
  if isinstance(model, dict):
    nested["model"].update(model)
  elif model is not None:
    record["model"] = model
  for key, value in record.items():
    part, _, field = LEGACY_NAMES.get(key, "").partition(".")
    if part:
      nested[part][field] = value
    else:
      nested[key] = value
  return nested


def config_field(record: Mapping[str, Any], path: str, default: Any = None) -> Any:
  """The field at the dotted ``path`` (``"sparsity.level"``) of a nested config / ``config.json``
  (``migrate_record``), else ``default``."""
  value: Any = record
  for part in path.split("."):
    if not isinstance(value, Mapping) or part not in value:
      return default
    value = value[part]
  return value


def _unknown(nested: Mapping[str, Any]) -> list[str]:
  known = set(_PARTS) | {"model"} | set(_TOP_FIELDS) | set(RUN_FACTS)
  out = [k for k in nested if k not in known]
  for part, cls in _PARTS.items():
    fields = {f.name for f in dataclasses.fields(cls)}
    out += [f"{part}.{k}" for k in nested.get(part, {}) if k not in fields]
  return sorted(out)


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
  def from_config(cls, config: Mapping[str, Any], explicit: Collection[str] = ()) -> RunConfig:
    """The run config of a nested ConfigDict / dict / ``config.json`` (an older flat one is
    migrated: ``migrate_record``; missing fields take their defaults), with the run policy
    applied; ``explicit`` names the fields the user set (``"sparsity.warmup_epochs"``), which
    the policy keeps as set."""
    nested = migrate_record(config)
    unknown = _unknown(nested)
    if unknown:
      raise UserError(f"unknown config field(s) {unknown}")
    _apply_policy(nested, explicit)
    built = {part: cls_(**_typed(nested.get(part, {}))) for part, cls_ in _PARTS.items()}
    model = dict(nested.get("model", {}))
    run = cls(model=ModelConfig(backbone=model.get("backbone", ModelConfig.backbone),
                                options=model_options(model, built["data"].num_person),
                                pretrained=model.get("pretrained", "")),
              seed=int(nested.get("seed", 0)), variant=str(nested.get("variant", "")), **built)
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

  def to_dict(self) -> dict[str, Any]:
    """The nested config as JSON values (``config.json``); the model part holds the backbone's
    resolved options beside ``backbone`` and ``pretrained``."""
    out: dict[str, Any] = {"variant": self.variant, "seed": self.seed}
    for part in ("data", "model", "optim", "sparsity", "loop"):
      if part == "model":
        out[part] = {"backbone": self.model.backbone, "pretrained": self.model.pretrained,
                     **models.options_json(self.model.options)}
      else:
        out[part] = dataclasses.asdict(getattr(self, part))
    return json.loads(json.dumps(out))


def _typed(values: dict[str, Any]) -> dict[str, Any]:
  """Sequences from configs / JSON as the tuples a frozen config holds."""
  values = dict(values)
  if "ensemble_sparsities" in values:
    values["ensemble_sparsities"] = tuple(float(s) for s in values["ensemble_sparsities"])
  return values


def _apply_policy(nested: dict[str, Any], explicit: Collection[str]) -> None:
  sp, optim = nested.setdefault("sparsity", {}), nested.setdefault("optim", {})
  if sp.get("mode") == "dense":
    sp["level"] = 0.0
  if sp.get("level", SparsityConfig.level) == 0 and sp.get("mode", "generator") == "generator":
    sp["mode"] = "dense"
  epochs = optim.get("num_epochs", OptimConfig.num_epochs)
  if epochs < sp.get("warmup_epochs", SparsityConfig.warmup_epochs) and (
      "sparsity.warmup_epochs" not in explicit):
    sp["warmup_epochs"] = int(round(0.6 * epochs))
  if optim.get("lr_warmup_epochs", 0.0) >= epochs:
    optim["lr_warmup_epochs"] = 0.1 * epochs


def model_options(model: Mapping[str, Any], num_person: int | None = None) -> dict[str, Any]:
  """The backbone's typed options from a config's model part: its option fields (the block list,
  or every option), then ``options`` (pyskl's flat spellings as a JSON object), then
  ``num_person`` (the data's) unless set."""
  options = {k: v for k, v in model.items() if k not in _MODEL_FIELDS}
  extra = model.get("options") or ""
  if extra:
    try:
      parsed = json.loads(extra) if isinstance(extra, str) else dict(extra)
    except json.JSONDecodeError as err:
      raise UserError(f"config.model.options must be a JSON object, got {extra!r} ({err})"
                       ) from None
    if not isinstance(parsed, dict):
      raise UserError(f"config.model.options must be a JSON object, got {extra!r}")
    options.update(parsed)
  options.setdefault("num_person", DataConfig.num_person if num_person is None else num_person)
  return models.resolve_options(model.get("backbone", ModelConfig.backbone), options)


def resolve(config: Any = None, **overrides) -> TrainConfig:
  """A ``TrainConfig`` for tests and notebooks: the optim and sparsity fields of ``config`` (a
  ``TrainConfig``, a nested config, or fields by their flat names: ``sparsity=0.8``,
  ``num_epochs=10``; ``LEGACY_NAMES``) with ``overrides`` (flat names) over them; one step per
  epoch unless ``steps_per_epoch`` says otherwise. No run policy is applied
  (``RunConfig.train_config`` is the run's)."""
  if isinstance(config, TrainConfig):
    nested = {"optim": dataclasses.asdict(config.optim),
              "sparsity": dataclasses.asdict(config.sparsity)}
  else:
    nested = migrate_record(config or {})
  for key, value in migrate_record(overrides).items():
    if isinstance(value, dict):
      nested.setdefault(key, {}).update(value)
  parts = {part: _typed(nested.get(part, {})) for part in ("optim", "sparsity")}
  parts["optim"].setdefault("steps_per_epoch", 1)
  cfg = TrainConfig(optim=OptimConfig(**parts["optim"]),
                    sparsity=SparsityConfig(**parts["sparsity"]))
  cfg.optim.check()
  check_sparsity_config(cfg.sparsity, cfg.optim.num_epochs)
  return cfg


def as_train_config(config: Any) -> TrainConfig:
  """``config`` itself: what the train steps, the optimizer and the state are built from."""
  if not isinstance(config, TrainConfig):
    raise TypeError(f"expected a training.config.TrainConfig (RunConfig.train_config, or "
                    f"training.resolve for tests), got {type(config).__name__}")
  return config
