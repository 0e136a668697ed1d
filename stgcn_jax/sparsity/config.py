"""The configuration fields the sparsity code reads, with their defaults.

``default_config()`` returns a ``ml_collections.ConfigDict`` with every field below; the training
config (``experiments/configs/default.py``) may hold them at top level. ``resolve(config)`` turns
any ConfigDict / dict / object with these attributes (missing ones take the defaults) into the
frozen, hashable ``SparseConfig`` that the step builders close over.

Fields:
  mode: 'generator' (fixed random mask, warm-up + fine-tune; the paper's method), 'dense' (no mask),
    'lth' (edge-popup lottery ticket: only scores train) or 'ensemble' (generator members stacked
    along a leading axis, see ``training/ensemble.py``).
  sparsity: fraction in [0, 1) of prunable weights set to zero.
  ensemble_sparsities: the member sparsities for mode 'ensemble'.
  ensemble_batching: how one jitted ensemble step runs its members: 'vmap' (docs/METHOD.md
    section 5: batched, so every conv becomes a grouped conv), 'map' (``jax.lax.map``: an XLA loop
    over the members) or 'unroll' (the members traced one after another: longer compiles, one
    member's kernels each).
  mask_method: 'uniform' | 'erk' | 'global' | 'per_block' | 'predefined'.
  mask_path: the .npz file / orbax directory for 'predefined'.
  mask_cover_channels: 'uniform' / 'erk' masks keep at least one weight of every output channel
    (same counts per tensor; ``masks.cover_output_channels``): no constant channel for BatchNorm.
  mask_head, mask_attention: also prune the classifier head / the AA-GCN attention layers.
  warmup_epochs: dense warm-up epochs (0 = no warm-up: sparse from step 0).
  penalty_lambda: the group-lasso weight (0 = no penalty).
  lambda_schedule: 'constant' or 'ramp' (``penalty_lambda * min(1, epoch / warmup_epochs)``); the
    epoch is ``step // steps_per_epoch``.
  penalty_update: how the warm-up applies the group lasso: 'gradient' (its subgradient is added to
    the loss's, docs/METHOD.md section 3) or 'proximal' (after each optimizer step, block
    soft-thresholding of each block's masked-out weights by ``lr * lambda / (1 - momentum)``, which
    reaches exact zeros in finitely many steps; the loss is then CE only).
  nested_masks: ensemble members / sweep cells of different sparsity draw their masks from the same
    key (so kept(0.99) is inside kept(0.95) ... for 'uniform' with mask_cover_channels=False, which
    moves kept weights); default False: independent draws.
  learn_scores: generator mode only: reproduce the reference code (scores trained with the weights
    by a straight-through estimator and thresholded every step; dense threshold during warm-up).
  score_scope: threshold scope of learned scores ('per_tensor', 'global', 'per_block') for 'lth' and
    learn_scores.
  learning_rate: lr for a batch of ``base_batch_size`` (scaled linearly to ``batch_size``).
  base_batch_size, batch_size, num_epochs, steps_per_epoch: the schedule's length.
  lr_by_epoch: cosine constant within an epoch (the reference sparse recipe) instead of per step.
  lr_warmup_epochs: linear LR warm-up from 0 over this many epochs, then the cosine decay to 0 over
    the remaining epochs (0: cosine from step 0).
  weight_decay, momentum, nesterov: SGD (decay added to the gradient before momentum).
  grad_clip_norm: clip the gradient (after decay, before momentum) to this global norm (0: off).
    A channel whose kept weights are all pruned has a variance that falls towards 0 while the
    penalty empties its masked-out weights, and BatchNorm's gradient grows as 1/sqrt(var + eps)
    on the way: clipping keeps those spikes from throwing the masked-out weights out again.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from stgcn_jax.sparsity.masks import PrunableSpec

MODES = ("generator", "dense", "lth", "ensemble")
ENSEMBLE_BATCHING = ("vmap", "map", "unroll")
PENALTY_UPDATES = ("gradient", "proximal")
SCORE_SCOPES = ("per_tensor", "global", "per_block")


@dataclasses.dataclass(frozen=True)
class SparseConfig:
  """See the module docstring for the fields."""
  mode: str = "generator"
  sparsity: float = 0.8
  ensemble_sparsities: tuple[float, ...] = (0.6, 0.8, 0.95, 0.99)
  ensemble_batching: str = "vmap"
  mask_method: str = "uniform"
  mask_path: str = ""
  mask_cover_channels: bool = True
  mask_head: bool = False
  mask_attention: bool = False
  warmup_epochs: int = 60
  penalty_lambda: float = 1.0
  lambda_schedule: str = "constant"
  penalty_update: str = "gradient"
  nested_masks: bool = False
  learn_scores: bool = False
  score_scope: str = "per_tensor"
  learning_rate: float = 0.1
  base_batch_size: int = 128
  batch_size: int = 128
  num_epochs: int = 100
  steps_per_epoch: int = 1
  lr_by_epoch: bool = False
  lr_warmup_epochs: float = 0.0
  grad_clip_norm: float = 0.0
  weight_decay: float = 5e-4
  momentum: float = 0.9
  nesterov: bool = True

  @property
  def warmup_steps(self) -> int:
    return 0 if self.mode in ("dense", "lth") else int(self.warmup_epochs) * self.steps_per_epoch

  @property
  def total_steps(self) -> int:
    return int(self.num_epochs) * self.steps_per_epoch

  @property
  def uses_scores(self) -> bool:
    return self.mode == "lth" or (self.mode in ("generator", "ensemble") and self.learn_scores)


def default_config() -> ml_collections.ConfigDict:
  """A ConfigDict with every field and its default."""
  d = dataclasses.asdict(SparseConfig())
  d["ensemble_sparsities"] = tuple(d["ensemble_sparsities"])
  return ml_collections.ConfigDict(d)


def resolve(config=None, **overrides) -> SparseConfig:
  """A ``SparseConfig`` from a ConfigDict / dict / object (extra fields are ignored)."""
  if isinstance(config, SparseConfig):
    values = dataclasses.asdict(config)
  else:
    values = {}
    for f in dataclasses.fields(SparseConfig):
      if config is None:
        continue
      if isinstance(config, dict) or hasattr(config, "keys"):
        if f.name in config:
          values[f.name] = config[f.name]
      elif hasattr(config, f.name):
        values[f.name] = getattr(config, f.name)
  values.update(overrides)
  if "ensemble_sparsities" in values:
    values["ensemble_sparsities"] = tuple(float(s) for s in values["ensemble_sparsities"])
  cfg = SparseConfig(**values)
  _check(cfg)
  return cfg


def _check(cfg: SparseConfig) -> None:
  from stgcn_jax.sparsity.masks import METHODS, check_sparsity
  from stgcn_jax.sparsity.penalty import LAMBDA_SCHEDULES
  if cfg.mode not in MODES:
    raise ValueError(f"config.mode must be one of {MODES}, got {cfg.mode!r}")
  check_sparsity(cfg.sparsity, "config.sparsity")
  for i, s in enumerate(cfg.ensemble_sparsities):
    check_sparsity(s, f"config.ensemble_sparsities[{i}]")
  if cfg.ensemble_batching not in ENSEMBLE_BATCHING:
    raise ValueError(f"config.ensemble_batching must be one of {ENSEMBLE_BATCHING}, "
                     f"got {cfg.ensemble_batching!r}")
  if cfg.mask_method not in METHODS:
    raise ValueError(f"config.mask_method must be one of {METHODS}, got {cfg.mask_method!r}")
  if cfg.lambda_schedule not in LAMBDA_SCHEDULES:
    raise ValueError(f"config.lambda_schedule must be one of {LAMBDA_SCHEDULES}, "
                     f"got {cfg.lambda_schedule!r}")
  if cfg.penalty_update not in PENALTY_UPDATES:
    raise ValueError(f"config.penalty_update must be one of {PENALTY_UPDATES}, "
                     f"got {cfg.penalty_update!r}")
  if not 0 <= cfg.lr_warmup_epochs < cfg.num_epochs:
    raise ValueError(f"config.lr_warmup_epochs must be in [0, num_epochs={cfg.num_epochs}), "
                     f"got {cfg.lr_warmup_epochs!r}")
  if cfg.score_scope not in SCORE_SCOPES:
    raise ValueError(f"config.score_scope must be one of {SCORE_SCOPES}, got {cfg.score_scope!r}")
  for name in ("steps_per_epoch", "batch_size", "base_batch_size", "num_epochs"):
    if int(getattr(cfg, name)) < 1:
      raise ValueError(f"config.{name} must be >= 1, got {getattr(cfg, name)!r}")
  if cfg.mode in ("generator", "ensemble") and not 0 <= cfg.warmup_epochs <= cfg.num_epochs:
    raise ValueError(f"config.warmup_epochs must be in [0, num_epochs={cfg.num_epochs}], "
                     f"got {cfg.warmup_epochs!r}")
  if cfg.grad_clip_norm < 0:
    raise ValueError(f"config.grad_clip_norm must be >= 0 (0 = no clipping), got "
                     f"{cfg.grad_clip_norm!r}")
  if cfg.penalty_lambda < 0:
    raise ValueError(f"config.penalty_lambda must be >= 0, got {cfg.penalty_lambda!r}")


def prunable_spec(config: SparseConfig) -> PrunableSpec:
  """The prunable predicate the config selects."""
  return PrunableSpec(include_head=config.mask_head, include_attention=config.mask_attention)
