"""Training: the config, the state, the optimizer recipe, the steps, joint ensembles and the loop.

The steps (the names this package re-exports):

* ``config.py``: ``RunConfig`` (data, model, optim, sparsity, loop parts) and ``TrainConfig``.
* ``state.py``: ``TrainState`` (params, BN statistics, optimizer state, fixed masks), its creation.
* ``optim.py``: the SGD/cosine recipe, the masked-updates transform, the warm-up/fine-tune phases.
* ``step.py``: the train and eval steps of each phase.
* ``ensemble.py``: members stacked on a leading axis and trained by one step.
* ``variants.py``: joint variants (members differing in sparsity, mask, seeds, lambda) as a spec.

The loop (import from the modules):

* ``loop.py``: ``train_and_evaluate(config, workdir)``, the loop.
* ``runner.py``: ``Runner`` / ``StackedRunner``, how the loop drives one model or a joint ensemble.
* ``context.py``: ``RunContext``, what a run holds besides its state (configs, runner, data,
  workdir, checkpoint managers, logger), passed whole to the switch and the final tests.
* ``setup.py``: what a run is built from: dataset, pipelines, model, pretrained weights, seeds, the
  validation split.
* ``switch.py``: the warm-up -> fine-tune switch and the sparsity records the loop logs.
* ``precise_bn.py``: exact BatchNorm population statistics with the final weights and masks.
* ``evaluate.py``: the batched, padded evaluation pass (``evaluate_source``, ``scores_of``).
* ``results.py``: the end of a run: the final test, ``scores.npz``, saved models, ``results.json``.
* ``workdir.py``: the workdir's checks, metrics log, checkpoints and safe resumption.
* ``preemption.py``: ``StopRequest``, SIGTERM as a request to save and stop (one process or several).
"""

from stgcn_jax.training.config import (DataConfig, LoopConfig, ModelConfig, OptimConfig, RunConfig,
                                       TrainConfig, as_train_config, migrate_record, resolve)
from stgcn_jax.training.ensemble import (create_ensemble_state, make_ensemble_eval_step,
                                         make_ensemble_train_step, member_config, member_seed,
                                         member_state, parameter_budget, stack_states,
                                         start_finetune_ensemble)
from stgcn_jax.training.optim import (build_optimizer, make_optimizer, make_schedule,
                                      mask_optimizer_state, masked_updates, phase_at)
from stgcn_jax.training.state import TrainState, abstract_state, create_train_state, start_finetune
from stgcn_jax.training.step import PHASES, make_eval_step, make_train_step
from stgcn_jax.training.variants import (Variant, VariantSpecError, choose_sparsest, member_names,
                                         parse_variants, run_variants, seed_groups)
