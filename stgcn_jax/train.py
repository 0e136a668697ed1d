"""The training entry point's former home: ``stgcn_jax.training.loop`` is where the loop lives."""

from stgcn_jax.training.config import model_options
from stgcn_jax.training.loop import RunError, run_seeds, train_and_evaluate

__all__ = ["RunError", "model_options", "run_seeds", "train_and_evaluate"]
