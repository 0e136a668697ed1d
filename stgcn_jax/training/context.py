"""What one run of ``loop.train_and_evaluate`` holds besides its train state: ``RunContext``.

The loop builds it once (``loop._start``) and passes it whole to the parts of a run that need
more than the state: the switch (``switch.switch``), exact BatchNorm statistics
(``switch.precise_bn_state``), the final test (``results.final_evaluation``) and the
best-by-validation test (``results.best_by_validation``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:   # annotations only: the modules that use a context import nothing from here
  from stgcn_jax import data
  from stgcn_jax.training.config import RunConfig, TrainConfig
  from stgcn_jax.training.runner import Runner
  from stgcn_jax.training.workdir import MetricsLogger


@dataclasses.dataclass(frozen=True)
class RunData:
  """The run's dataset: its info, the ``train`` / ``val`` (None without validation) / ``test``
  sources and their pipelines, the training iterator, how the validation split was made, and the
  seed of the fixed stream of training batches that precise BN and the switch's record use."""
  info: data.DatasetInfo
  sources: dict
  pipes: dict
  train_it: data.BatchIterator
  val_note: str
  bn_seed: int


@dataclasses.dataclass(frozen=True)
class RunContext:
  """One run: its configs (``cfg``: what the steps close over, with the steps per epoch), the
  ``Runner`` that holds the jitted steps, its data, workdir and seeds, the checkpoint managers
  (``best_checkpoints``: None without validation), the metrics logger and its start time."""
  config: RunConfig
  cfg: TrainConfig
  runner: Runner
  data: RunData
  workdir: str
  seeds: dict
  checkpoints: Any
  best_checkpoints: Any
  logger: MetricsLogger
  t_start: float
