"""The training entry point end to end, in subprocesses (as a user runs it)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from stgcn_jax import checkpoint, data

from conftest import REPO, assert_pruned_to_zero, assert_trees_equal

CONFIG = f"--config={REPO / 'experiments' / 'configs' / 'default.py'}:test"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("data")
  data.build_synthetic(str(path), num_train=48, num_test=20, num_classes=4, min_frames=20,
                       max_frames=30, seed=1)
  return str(path)


def run(workdir, data_dir, *flags, env=None, check=True, wait=True):
  cmd = [sys.executable, "-m", "experiments.run", CONFIG, f"--workdir={workdir}",
         f"--data_dir={data_dir}", "--config.loop.progress_bar=False", *flags]
  full_env = {**os.environ, **(env or {})}
  if not wait:
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  result = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True)
  if check:
    assert result.returncode == 0, result.stderr[-3000:]
  return result


def final_params(workdir):
  _, variables = checkpoint.load_model(os.path.join(workdir, "model"))
  return jax.tree.map(np.asarray, variables)


def test_two_phase_run_keeps_pruned_weights_exactly_zero(tmp_path, data_dir):
  workdir = tmp_path / "run"
  run(workdir, data_dir, "--sparsity=0.8", "--epochs=3", "--warmup_epochs=1",
      "--config.loop.eval_every_epochs=1")
  results = json.loads((workdir / "results.json").read_text())
  # Validation on held-out training clips selects the best fine-tuned model, tested at the end.
  assert "held out" in results["validation"]
  best = results["best_by_val"]
  assert best["epoch"] >= 2
  assert best["top1"] * 20 == pytest.approx(round(best["top1"] * 20))   # a share of 20 test clips
  assert results["num_samples"] == 20 and len(results["confusion_matrix"]) == 4
  assert abs(results["prunable_sparsity"] - 0.8) < 0.01
  # The latest training checkpoint: masked-out weights are exactly 0 after fine-tuning.
  from stgcn_jax import sparsity
  import orbax.checkpoint as ocp
  mngr = ocp.CheckpointManager(str(workdir / "checkpoints"))
  restored = mngr.restore(mngr.latest_step())
  params, masks = restored["state"]["params"], restored["state"]["masks"]
  assert_pruned_to_zero(params, masks, 0.8)
  report = sparsity.sparsity_report(params, masks)
  assert report["nonzero_params"] == results["nonzero_params"]
  assert report["prunable_sparsity"] == pytest.approx(results["prunable_sparsity"])
  log = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  phases = [r["phase"] for r in log if r["split"] in ("sparsity", "switch")]
  assert phases == ["warmup", "finetune"]
  scores = np.load(workdir / "scores.npz")
  np.testing.assert_allclose(scores["scores"].sum(-1), 1.0, rtol=1e-5)
  # The switch is logged: masked-out norms per block, a fixed batch before and after the prune.
  switch = [r for r in log if r["split"] == "switch"]
  assert len(switch) == 1 and set(switch[0]["masked_norm"]) == {"block0", "block1"}
  # The best model is the fine-tuned one with the highest validation top-1.
  val = [r["top1"] for r in log if r["split"] == "val" and r["step"] >= switch[0]["step"]]
  assert best["val_top1"] == max(val)
  assert {"loss", "accuracy"} <= set(switch[0]["before"]) and switch[0]["step"] > 0
  assert set(results["without_precise_bn"]) >= {"top1", "top5"}
  assert results["seeds"]["run"] == 0 and results["seeds"]["init"] != 0


def test_eval_mode_matches_batch_statistics_on_training_clips(tmp_path, data_dir):
  """The saved model in eval mode (population BN statistics) scores the training clips as the
  same weights do with batch statistics: the collapse of a sparse model in eval mode is gone."""
  workdir = tmp_path / "run"
  run(workdir, data_dir, "--sparsity=0.9", "--epochs=10", "--warmup_epochs=5",
      "--learning_rate=0.8")
  model, variables = checkpoint.load_model(str(workdir / "model"))
  c = json.loads((workdir / "config.json").read_text())["data"]
  info = data.info("synthetic", data_dir)
  pipe = data.Pipeline(data.PipelineConfig(
      clip_len=c["clip_len"], num_clips=1, test_mode=False, modality=c["modality"],
      normalize=c["normalize"], align_spine=c["align_spine"], rotate=0.0,
      num_person=c["num_person"]), info)
  source = data.load("synthetic", data_dir, "train")
  it = data.BatchIterator(source, pipe, 16, train=True, seed=5, num_epochs=1, prefetch=False)
  hits_eval, hits_train, n = 0, 0, 0
  for batch in it:
    eval_logits = model.apply(variables, batch["x"], train=False)
    train_logits, _ = model.apply(variables, batch["x"], train=True, mutable=["batch_stats"])
    hits_eval += int(np.sum(np.argmax(eval_logits, -1) == batch["label"]))
    hits_train += int(np.sum(np.argmax(train_logits, -1) == batch["label"]))
    n += len(batch["label"])
  assert max(hits_eval, hits_train) / n > 0.35      # it learned something (chance: 0.25)
  assert abs(hits_eval - hits_train) / n <= 0.05


def test_resume_after_sigterm_and_kill_is_bit_identical(tmp_path, data_dir):
  flags = ("--sparsity=0.6", "--epochs=4", "--warmup_epochs=2", "--config.optim.steps_per_epoch=3")
  reference = tmp_path / "reference"
  run(reference, data_dir, *flags)
  deadline = time.time() + 300

  # SIGTERM (a scheduler's preemption) once the loop catches it, i.e. while the first step
  # compiles: the run saves at the step in flight (step 1, mid-epoch), says so in one line and
  # exits 143.
  stopped = tmp_path / "stopped"
  ckpts = stopped / "checkpoints"
  proc = run(stopped, data_dir, *flags, wait=False)
  while time.time() < deadline and proc.poll() is None and not catches_sigterm(proc.pid):
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 143 and "Traceback" not in err, err[-3000:]
  line = err.strip().splitlines()[-1]
  found = re.fullmatch(r"stopped: SIGTERM at step (\d+) of 12 \(epoch [\d.]+\); the train state is "
                       r"saved in .*/checkpoints: run the same command to resume", line)
  assert found, line
  step = int(found.group(1))
  saved = lambda: {int(p.name) for p in ckpts.iterdir() if p.name.isdigit()}
  assert step in saved()

  # The same command resumes from there; killed (SIGKILL: nothing saved on the way out) once it
  # has written a later checkpoint, and started again, it resumes from that one.
  proc = run(stopped, data_dir, *flags, wait=False)
  while time.time() < deadline and proc.poll() is None and max(saved()) <= step:
    time.sleep(0.05)
  assert proc.poll() is None, "the resumed run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  out, _ = proc.communicate(timeout=300)
  assert f"at step {step}" in out
  # A save interrupted half-way leaves a temporary directory; resuming must ignore it.
  (ckpts / "99.orbax-checkpoint-tmp-1").mkdir(parents=True, exist_ok=True)
  result = run(stopped, data_dir, *flags)
  later = re.search(r"resumed from .* at step (\d+)", result.stdout)
  assert later and int(later.group(1)) > step, result.stdout[-2000:]
  assert_trees_equal(final_params(reference), final_params(stopped), bits=True)


def catches_sigterm(pid: int) -> bool:
  """Whether process ``pid`` has a handler for SIGTERM (Linux: the SigCgt mask in /proc)."""
  try:
    status = Path(f"/proc/{pid}/status").read_text()
  except OSError:
    return False
  mask = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M).group(1), 16)
  return bool(mask >> (signal.SIGTERM - 1) & 1)


def test_joint_ensemble_run_reports_every_member(tmp_path, data_dir):
  workdir = tmp_path / "ens"
  # lax.map compiles one member, not four (the batchings give the same step:
  # test_sparsity_ensemble.py); this test is about what the run reports and saves.
  run(workdir, data_dir, "--mode=ensemble", "--config.sparsity.ensemble_batching=map", "--epochs=2",
      "--warmup_epochs=1")
  results = json.loads((workdir / "results.json").read_text())
  levels = [m["sparsity"] for m in results["members"]]
  assert levels == [0.6, 0.8, 0.95, 0.99]
  for member in results["members"]:
    assert abs(member["prunable_sparsity"] - member["sparsity"]) < 0.01
  assert results["prunable_nonzero"] == sum(m["prunable_nonzero"] for m in results["members"])
  scores = np.load(workdir / "scores.npz")
  assert scores["member_scores"].shape == (4, 20, 4)
  np.testing.assert_allclose(scores["scores"], scores["member_scores"].sum(0), rtol=1e-6)
  fused_top1 = np.mean(scores["scores"].argmax(-1) == scores["labels"])
  assert results["top1"] == pytest.approx(fused_top1)
  # Each member is saved as a model checkpoint with the statistics it was tested with: predicting
  # the test split from a saved member gives the run's own scores for it (the vmapped call over
  # all members is tested in test_predict.py).
  from stgcn_jax.inference import sources  # pylint: disable=import-outside-toplevel
  assert sorted(os.listdir(workdir / "members")) == ["s0.6", "s0.8", "s0.95", "s0.99"]
  predictor = sources.load_predictor(str(workdir / "members" / "s0.95"))
  test = data.load("synthetic", data_dir, "test")
  out = predictor.predict([test[i] for i in range(len(test))], test.info.channels)
  np.testing.assert_allclose(out.member_scores[0], scores["member_scores"][2], atol=2e-5)


def test_four_devices_match_one(tmp_path, data_dir):
  flags = ("--sparsity=0.6", "--epochs=2", "--warmup_epochs=1", "--config.optim.steps_per_epoch=2")
  one, four = tmp_path / "one", tmp_path / "four"
  run(one, data_dir, *flags)
  run(four, data_dir, *flags, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  p1, p4 = final_params(one), final_params(four)
  assert jax.tree.structure(p1) == jax.tree.structure(p4)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=2e-4)
  r1 = json.loads((one / "results.json").read_text())
  r4 = json.loads((four / "results.json").read_text())
  assert (r1["hardware"]["device_count"], r4["hardware"]["device_count"]) == (1, 4)
  assert r1["num_samples"] == r4["num_samples"] == 20


@pytest.mark.parametrize("flags,message", [
    (("--backbone=resnet",), "unknown backbone 'resnet'"),
    (("--sparsity=1.0",), "sparsity"),
    (("--sparsity=-0.1",), "sparsity"),
    (("--dataset=ntu60_xsub",), "dataset 'ntu60_xsub' not found"),
])
def test_user_mistakes_end_with_one_clear_line(tmp_path, data_dir, flags, message):
  result = run(tmp_path / "w", data_dir, *flags, check=False)
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  assert message in result.stderr.strip().splitlines()[-1]


def test_pretrained_checkpoint_of_another_backbone_is_refused(tmp_path, data_dir):
  source = tmp_path / "dense"
  run(source, data_dir, "--mode=dense", "--epochs=1", "--config.optim.steps_per_epoch=1")
  result = run(tmp_path / "lth", data_dir, "--mode=lth", "--backbone=stgcn",
               f"--pretrained={source / 'model'}", check=False)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "but this run builds a STGCN" in result.stderr
