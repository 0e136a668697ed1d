"""The sparsity part of the run config (``training.config.RunConfig.sparsity``).

Fields of ``SparsityConfig``:
  mode: 'generator' (fixed random mask, warm-up + fine-tune; the paper's method), 'dense' (no mask),
    'lth' (edge-popup lottery ticket: only scores train) or 'ensemble' (generator members stacked
    along a leading axis, see ``training/ensemble.py``) or 'variants' (stacked generator members
    that differ as ``variants`` lists, ``training/variants.py``).
  level: the sparsity, the fraction in [0, 1) of prunable weights set to zero
    (``--config.sparsity.level``; the shortcut ``--sparsity``).
  ensemble_sparsities: the member sparsities for mode 'ensemble' (and the candidate levels of
    ``experiments.run --sparsity=auto``).
  variants: mode 'variants': the members as a spec, e.g. 's=0.8,0.95;lambda=0,1' (the product;
    ``training.variants.parse_variants``).
  auto_tolerance: mode 'variants': keep the sparsest member whose validation top-1 is within this
    many points of the best member's (``--sparsity=auto[:TOLERANCE]``); negative: no choice.
  ensemble_batching: how one jitted ensemble step runs its members: 'auto' (default: 'unroll' on
    a CPU, where it is 2.7x faster than 'vmap' (experiments/BENCHMARKS.md), 'vmap' elsewhere),
    'vmap' (docs/METHOD.md
    section 5: batched, so every conv becomes a grouped conv), 'map' (``jax.lax.map``: an XLA loop
    over the members) or 'unroll' (the members traced one after another: longer compiles, one
    member's kernels each).
  mask_method: 'uniform' | 'erk' | 'global' | 'per_block' | 'predefined'.
  mask_path: the .npz file / orbax directory for 'predefined'.
  mask_cover_channels: 'uniform' / 'erk' masks keep at least one weight of every output channel
    (same counts per tensor; ``draw.cover_output_channels``): no constant channel for BatchNorm.
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
"""

from __future__ import annotations

import dataclasses

from stgcn_jax.errors import UserError
from stgcn_jax.sparsity.masks import PrunableSpec

MODES = ("generator", "dense", "lth", "ensemble", "variants")
STACKED_MODES = ("ensemble", "variants")            # members stacked on a leading axis
GENERATOR_MODES = ("generator",) + STACKED_MODES    # a fixed mask, warm-up + fine-tune
ENSEMBLE_BATCHING = ("auto", "vmap", "map", "unroll")
PENALTY_UPDATES = ("gradient", "proximal")
SCORE_SCOPES = ("per_tensor", "global", "per_block")


@dataclasses.dataclass(frozen=True)
class SparsityConfig:
  """See the module docstring for the fields."""
  mode: str = "generator"
  level: float = 0.95
  ensemble_sparsities: tuple[float, ...] = (0.6, 0.8, 0.95, 0.99)
  ensemble_batching: str = "auto"
  variants: str = ""
  auto_tolerance: float = -1.0
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

  @property
  def uses_scores(self) -> bool:
    return self.mode == "lth" or (self.mode in GENERATOR_MODES and self.learn_scores)


def _one_of(name: str, value, allowed) -> None:
  if value not in allowed:
    raise UserError(f"config.sparsity.{name} must be one of {tuple(allowed)}, got {value!r}")


def check_sparsity_config(cfg: SparsityConfig, num_epochs: int) -> None:
  """Raises a ``ValueError`` naming the first bad field."""
  from stgcn_jax.sparsity.masks import METHODS, check_sparsity
  from stgcn_jax.sparsity.penalty import LAMBDA_SCHEDULES
  _one_of("mode", cfg.mode, MODES)
  check_sparsity(cfg.level, "config.sparsity.level")
  for i, s in enumerate(cfg.ensemble_sparsities):
    check_sparsity(s, f"config.sparsity.ensemble_sparsities[{i}]")
  _one_of("ensemble_batching", cfg.ensemble_batching, ENSEMBLE_BATCHING)
  _one_of("mask_method", cfg.mask_method, METHODS)
  _one_of("lambda_schedule", cfg.lambda_schedule, LAMBDA_SCHEDULES)
  _one_of("penalty_update", cfg.penalty_update, PENALTY_UPDATES)
  _one_of("score_scope", cfg.score_scope, SCORE_SCOPES)
  if cfg.auto_tolerance >= 0 and cfg.mode != "variants":
    raise UserError(f"config.sparsity.auto_tolerance={cfg.auto_tolerance!r} chooses among the "
                     f"members of mode 'variants' (--sparsity=auto), not of mode {cfg.mode!r}")
  if cfg.mode in GENERATOR_MODES and not 0 <= cfg.warmup_epochs <= num_epochs:
    raise UserError(f"config.sparsity.warmup_epochs must be in [0, num_epochs={num_epochs}], "
                     f"got {cfg.warmup_epochs!r}")
  if cfg.penalty_lambda < 0:
    raise UserError(f"config.sparsity.penalty_lambda must be >= 0, got {cfg.penalty_lambda!r}")


def prunable_spec(config: SparsityConfig) -> PrunableSpec:
  """The prunable predicate a ``SparsityConfig`` selects."""
  return PrunableSpec(include_head=config.mask_head, include_attention=config.mask_attention)
