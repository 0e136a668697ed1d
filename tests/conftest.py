"""Shared test fixtures: where ../shared lives, and the pyskl reference fixtures."""

import json
import os
import shutil
import tempfile
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
  from stgcn_jax import runtime  # pylint: disable=import-outside-toplevel
  try:
    os.environ.update(runtime.allocator_env())
  except FileNotFoundError as err:  # a wrong $STGCN_JAX_TCMALLOC: say so, test without it
    print(f"warning: {err}")
  _share_compilation_cache(config)


def _share_compilation_cache(config):
  """One persistent XLA compilation cache for the session (unless ``$JAX_COMPILATION_CACHE_DIR``
  names one): pytest-xdist's workers and the programs the CLI tests start inherit it, so a program
  compiled once (the test config's train step, in dozens of runs) is loaded afterwards instead of
  compiled again. A cached executable is the one XLA compiled: results do not change. Every
  program is kept, not only those over JAX's default 1 s of compile time: a CLI run of the test
  config otherwise compiles some 150 small ones again, about 7 s of its 18 on one core. The
  controller makes the folder and removes it at the end; the workers find it in the environment."""
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ and not hasattr(config, "workerinput"):
    config.stgcn_jax_xla_cache = tempfile.mkdtemp(prefix="stgcn_jax_xla_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = config.stgcn_jax_xla_cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def pytest_unconfigure(config):
  if getattr(config, "stgcn_jax_xla_cache", None):
    shutil.rmtree(config.stgcn_jax_xla_cache, ignore_errors=True)


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


# ------------------------------------------------------------------ one finished run of the CLI
TEST_CONFIG = f"--config={REPO / 'experiments' / 'configs' / 'default.py'}:test"
SYNTHETIC = dict(num_train=48, num_test=20, num_classes=4, min_frames=20, max_frames=30)


def run_experiment(workdir, data_dir, *flags):
  """``experiments.run`` of the test config at 0.8 for 3 epochs (1 of warm-up), as a user runs it."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  cmd = [sys.executable, "-m", "experiments.run", TEST_CONFIG, f"--workdir={workdir}",
         f"--data_dir={data_dir}", "--config.loop.progress_bar=False", "--sparsity=0.8", "--epochs=3",
         "--warmup_epochs=1", *flags]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
  """``(workdir, data_dir)`` of a finished ``run_experiment`` on synthetic data (seed 1):
  checkpoints at steps 10 and 15. Shared by every test: copy the workdir before changing it."""
  from stgcn_jax import data  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("finished_run")
  data_dir = root / "data"
  data.build_synthetic(str(data_dir), seed=1, **SYNTHETIC)
  workdir = root / "run"
  result = run_experiment(workdir, data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, data_dir


# ------------------------------------------------------------------ tree and mask assertions
def _plain(leaf) -> np.ndarray:
  leaf = jax.device_get(leaf)
  if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  return np.asarray(leaf)


def assert_trees_equal(a, b, *, bits: bool = False) -> None:
  """``a`` and ``b`` have the same tree structure and, leaf by leaf, the same dtype, shape and
  values (PRNG keys by their key data). ``bits=True`` compares bit patterns: ``-0.0 != +0.0``."""
  assert jax.tree.structure(a) == jax.tree.structure(b), \
      f"tree structures differ:\n{jax.tree.structure(a)}\n{jax.tree.structure(b)}"
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    x, y, where = _plain(x), _plain(y), jax.tree_util.keystr(path)
    assert (x.dtype, x.shape) == (y.dtype, y.shape), \
        f"{where}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
    if bits:
      x, y = (v.view(f"u{v.dtype.itemsize}") if v.dtype.kind in "fc" else v for v in (x, y))
    np.testing.assert_array_equal(x, y, err_msg=where)


def assert_pruned_to_zero(params, masks, sparsity: float) -> None:
  """``masks`` (the structure of ``params``) prune ``sparsity`` of the prunable weights (to 1 %, so
  that an all-ones mask fails) and every weight they prune is exactly 0 in ``params``."""
  from stgcn_jax import sparsity as sp  # pylint: disable=import-outside-toplevel
  assert jax.tree.structure(params) == jax.tree.structure(masks)
  p = {sp.path_str(k): _plain(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}
  m = {sp.path_str(k): _plain(v).astype(bool)
       for k, v in jax.tree_util.tree_leaves_with_path(masks)}
  prunable = sp.prunable_paths(params)
  assert prunable, "no prunable leaves"
  pruned = sum(int((~m[k]).sum()) for k in prunable)
  total = sum(m[k].size for k in prunable)
  assert abs(pruned / total - sparsity) <= 0.01, f"masks prune {pruned}/{total}, not {sparsity}"
  for k in p:
    assert np.all(p[k][~m[k]] == 0.0), f"{k}: a pruned weight is not exactly 0"


def assert_member_equals(joint, i: int, joint_metrics, state, metrics) -> None:
  """Member ``i`` of a stacked state (and its loss) equals a model trained on its own: parameters,
  BN statistics and optimizer state within float32 reduction order, masks exactly."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  got = jax.tree.map(lambda x: x[i], joint)
  np.testing.assert_allclose(joint_metrics["loss"][i], metrics["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               (got.params, got.batch_stats, got.opt_state),
               (state.params, state.batch_stats, state.opt_state))
  assert_trees_equal(got.masks, state.masks)
