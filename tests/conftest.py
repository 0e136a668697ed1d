"""Shared test fixtures: where ../shared lives, and the pyskl reference fixtures."""

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

# Every broadcast in the library is explicit about rank (``layers.per_channel``): an implicit
# rank promotion is an error in the tests.
jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STGCN_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "pyskl"
BACKBONE_NAMES = ("stgcn", "aagcn", "ctrgcn", "dgstgcn")


def pytest_configure(config):
  """Where the machine has tcmalloc, the processes this one starts (pytest-xdist's workers, and the
  programs the CLI tests run) use it, as ``experiments.run`` does (``stgcn_jax.runtime``): XLA:CPU's
  per-step buffers then stop faulting their pages in again on every call. Numbers do not change."""
  del config
  from stgcn_jax import runtime  # pylint: disable=import-outside-toplevel
  try:
    os.environ.update(runtime.allocator_env())
  except FileNotFoundError as err:  # a wrong $STGCN_JAX_TCMALLOC: say so, test without it
    print(f"warning: {err}")


def shared_path(*parts) -> Path:
  path = SHARED.joinpath(*parts)
  if not path.exists():
    pytest.skip(f"{path} not found: the tests read reference data from ../shared beside the checkout")
  return path


@pytest.fixture(scope="session")
def pyskl_fixture():
  """Loads ``fixtures/pyskl/<name>_ntu60.npz`` as a dict with ``sd`` (state_dict) and ``meta``."""
  cache = {}

  def load(name):
    if name not in cache:
      with np.load(shared_path("fixtures", "pyskl", f"{name}_ntu60.npz")) as f:
        data = {k: f[k] for k in f.files}
      data["sd"] = {k[3:]: v for k, v in data.items() if k.startswith("sd/")}
      data["grad"] = {k[5:]: v for k, v in data.items() if k.startswith("grad/")}
      data["meta"] = json.loads(str(data["meta"]))
      cache[name] = data
    return cache[name]
  return load
