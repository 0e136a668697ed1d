"""Sparse ST-GCN mathematics: pure functions of parameter trees. The training that uses them lives
in ``stgcn_jax.training``; ``docs/METHOD.md`` describes the method.

* ``masks.py``: which parameters are prunable (``PrunableSpec``), the fixed masks that prune them.
* ``draw.py``: how the random masks are drawn (per-layer densities, the number pruned).
* ``penalty.py``: the group-lasso "information compression" penalty.
* ``lottery.py``: score-based masks (the lottery-ticket baseline, ``learn_scores``).
* ``report.py``: the realised sparsity of a mask tree.
* ``config.py``: ``SparsityConfig``, the sparsity part of the run config.
"""

from stgcn_jax.sparsity.config import MODES, SparsityConfig, check_sparsity_config, prunable_spec
from stgcn_jax.sparsity.draw import erk_densities, num_pruned
from stgcn_jax.sparsity.lottery import init_scores, masks_from_scores, ste_params, topk_masks
from stgcn_jax.sparsity.masks import (METHODS, PrunableSpec, apply_masks, block_of,
                                      check_sparsity, load_masks, make_masks, ones_like_masks,
                                      path_str, prunable_paths, save_masks, validate_masks)
from stgcn_jax.sparsity.penalty import (group_lasso, group_norms, penalty_weight,
                                        proximal_group_lasso)
from stgcn_jax.sparsity.report import format_report, sparsity_report
