"""Sparse ST-GCN: masks, the group-lasso penalty, masked optimizers, train steps, LTH, ensembles.

See ``docs/METHOD.md`` for the method; ``config.py`` lists the config fields.
"""

from stgcn_jax.sparsity.config import MODES, SparseConfig, default_config, resolve
from stgcn_jax.sparsity.ensemble import (clip_average_softmax, create_ensemble_state, fuse_scores,
                                         make_ensemble_eval_step, make_ensemble_train_step,
                                         member_seed, member_state, parameter_budget, stack_states,
                                         start_finetune_ensemble)
from stgcn_jax.sparsity.lottery import init_scores, masks_from_scores, ste_params, topk_masks
from stgcn_jax.sparsity.masks import (METHODS, PrunableSpec, apply_masks, block_of,
                                      check_sparsity, erk_densities, load_masks, make_masks,
                                      num_pruned, ones_like_masks, path_str, prunable_paths,
                                      save_masks, validate_masks)
from stgcn_jax.sparsity.optim import (make_optimizer, make_schedule, mask_optimizer_state,
                                      masked_updates)
from stgcn_jax.sparsity.penalty import (group_lasso, group_norms, penalty_weight,
                                        proximal_group_lasso)
from stgcn_jax.sparsity.report import format_report, sparsity_report
from stgcn_jax.sparsity.steps import (PHASES, build_optimizer, create_train_state, make_eval_step,
                                      make_train_step, phase_at, prunable_spec, start_finetune)
