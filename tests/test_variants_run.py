"""``experiments.run --mode=variants`` and ``--sparsity=auto``, as a user runs them: every member's
row, error bars over seeds, the choice explained, a resume after a kill, the refusals."""

import json
import shutil

import jax
import numpy as np
import pytest

from stgcn_jax import checkpoint, data

from conftest import SYNTHETIC, run_experiment

SPEC = "s=0.5|s=0.9;seed=0,1"
NAMES = ["s0.5_seed0", "s0.9_seed0", "s0.9_seed1"]
# lax.map compiles one member instead of three (the joint step's batchings are compared in
# test_variants.py); these tests are about what the run reports, resumes and refuses.
FLAGS = ("--mode=variants", f"--variants={SPEC}", "--epochs=2", "--config.data.val_fraction=0.25",
         "--config.sparsity.auto_tolerance=5", "--config.sparsity.ensemble_batching=map")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("variants_data")
  data.build_synthetic(str(path), seed=1, **SYNTHETIC)
  return path


def member_params(workdir):
  out = {}
  for name in NAMES:
    _, variables = checkpoint.load_model(str(workdir / "members" / name))
    out[name] = jax.tree.map(np.asarray, variables)
  return out


def test_variants_run_reports_members_seeds_choice_and_resumes(tmp_path, data_dir):
  workdir = tmp_path / "variants"
  result = run_experiment(workdir, data_dir, *FLAGS)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((workdir / "results.json").read_text())
  rows = results["members"]
  assert [m["name"] for m in rows] == NAMES
  assert [(m["sparsity"], m["init_seed"]) for m in rows] == [(.5, 0), (.9, 0), (.9, 1)]
  for m in rows:
    assert abs(m["prunable_sparsity"] - m["sparsity"]) < 0.01 and 0 <= m["val_top1"] <= 1
  # Error bars: the setting with two seeds.
  (group,) = results["seed_groups"]
  assert group["sparsity"] == .9 and group["seeds"] == [0, 1]
  assert group["top1_mean"] == pytest.approx(np.mean([rows[1]["top1"], rows[2]["top1"]]))
  # The choice: by validation only, and the top level is the chosen member's test.
  choice = results["auto_sparsity"]
  chosen = rows[choice["index"]]
  assert chosen["name"] == choice["chosen"] and "validation" in choice["selected_by"]
  assert chosen["val_top1"] >= max(m["val_top1"] for m in rows) - 0.05
  assert not any(m["sparsity"] > chosen["sparsity"] and
                 m["val_top1"] >= max(r["val_top1"] for r in rows) - 0.05 for m in rows)
  assert results["top1"] == chosen["top1"] and results["prunable_nonzero"] == chosen[
      "prunable_nonzero"]
  assert f"auto sparsity: {choice['chosen']}" in result.stdout and "± " in result.stdout
  # A kill after the first epoch: the newest checkpoint and what followed it are gone; the
  # run resumes from the first epoch's checkpoint and ends with the same members.
  done = member_params(workdir)
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  shutil.rmtree(workdir / "checkpoints" / str(steps[-1]))
  shutil.rmtree(workdir / "members")
  (workdir / "results.json").unlink()
  again = run_experiment(workdir, data_dir, *FLAGS)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"at step {steps[-2]}" in again.stdout
  resumed = member_params(workdir)
  for name in NAMES:
    for a, b in zip(jax.tree.leaves(done[name]), jax.tree.leaves(resumed[name])):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("flags, message", [
    (("--sparsity=auto", "--config.data.val_fraction=0"),
     "--sparsity=auto chooses by validation top-1, and this run has no validation split"),
    (("--sparsity=auto:x",), "--sparsity=auto:x: the tolerance must be a number"),
    (("--sparsity=auto", "--mode=ensemble"), "drop --mode"),
    (("--sparsity=most",), "--sparsity: expected a fraction in [0, 1) or auto[:TOLERANCE]"),
    (("--mode=variants", "--variants=s=0.8;lamda=0,1"), "unknown axis 'lamda'"),
    (("--variants=s=0.8",), "--variants lists the members of --mode=variants")])
def test_bad_variants_and_auto_are_one_error_line(tmp_path, data_dir, flags, message):
  result = run_experiment(tmp_path / "bad", data_dir, *flags)
  assert result.returncode == 2
  lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
  assert not (tmp_path / "bad" / "checkpoints").exists()
