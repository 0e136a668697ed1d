"""What users already have on disk keeps working: a workdir and a model checkpoint written before
the training-core redesign (tests/fixtures/legacy_v1, see its README) resume and load."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from stgcn_jax import checkpoint, data

from conftest import REPO

LEGACY = REPO / "tests" / "fixtures" / "legacy_v1"


def test_old_model_checkpoint_loads_and_predicts_the_same():
  model, variables = checkpoint.load_model(str(LEGACY / "model"))
  with np.load(LEGACY / "expected_logits.npz") as f:
    x, expected = f["x"], f["logits"]
  np.testing.assert_allclose(np.asarray(model.apply(variables, x, train=False)), expected,
                             rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_old_workdir_resumes_and_finishes_as_it_would_have(tmp_path):
  data_dir = tmp_path / "data"
  data.build_synthetic(str(data_dir), num_train=48, num_test=20, num_classes=4, min_frames=20,
                       max_frames=30, seed=1)
  workdir = tmp_path / "run"
  shutil.copytree(LEGACY / "workdir", workdir)
  cmd = [sys.executable, "-m", "experiments.run",
         f"--config={REPO / 'experiments' / 'configs' / 'default.py'}:test",
         f"--workdir={workdir}", f"--data_dir={data_dir}", "--config.loop.progress_bar=False",
         "--sparsity=0.8", "--epochs=3", "--warmup_epochs=1"]
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resumed from" in result.stdout and "at step 10" in result.stdout
  results = json.loads((workdir / "results.json").read_text())
  expected = json.loads((LEGACY / "expected_results.json").read_text())
  assert {k: results[k] for k in expected} == expected
