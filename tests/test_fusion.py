"""Score fusion (stgcn_jax.fusion, python -m experiments.fuse) on hand-made workdirs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import fuse
from stgcn_jax import fusion, run_files
from stgcn_jax import scores as scores_lib

REPO = Path(__file__).resolve().parents[1]

# 3 samples, 3 classes. A alone gets 1/3, B alone 3/3, A+B 3/3, 2A+B 2/3 (sample 1 flips to 1).
A = [[.6, .3, .1], [.2, .5, .3], [.1, .2, .7]]
B = [[.1, .8, .1], [.7, .2, .1], [.1, .1, .8]]
LABELS = [1, 0, 2]


def make_run(root: Path, name: str, scores, labels, index=None, config=None, results=None,
             **arrays) -> str:
  """A finished experiments.run workdir with the given scores (index defaults to 0..N-1)."""
  workdir = root / name
  workdir.mkdir(parents=True)
  scores = np.asarray(scores, np.float32)
  index = np.arange(len(scores)) if index is None else np.asarray(index)
  np.savez(workdir / "scores.npz", scores=scores, labels=np.asarray(labels), index=index,
           names=np.array([f"S{i:03d}" for i in index]), **arrays)
  config = {"backbone": "ctrgcn", "dataset": "synthetic", "modality": "j", "mode": "generator",
            "sparsity": 0.8, "warmup_epochs": 1, "penalty_lambda": 1.0, "pretrained": "",
            "seed": 0, **(config or {})}
  (workdir / "config.json").write_text(json.dumps(config))
  (workdir / "results.json").write_text(json.dumps(results or {"top1": 0.0, "top5": 0.0,
                                                               "mean_class_accuracy": 0.0}))
  return str(workdir)


def budget_results(keep: float, dense_prunable=10_000, unmasked=2_000) -> dict:
  nonzero = int(round(keep * dense_prunable))
  return {"top1": 0.5, "top5": 0.9, "mean_class_accuracy": 0.5, "prunable_params": dense_prunable,
          "prunable_nonzero": nonzero, "total_params": dense_prunable + unmasked,
          "nonzero_params": nonzero + unmasked, "prunable_sparsity": 1 - keep}


def test_weighted_fusion_matches_hand_computation():
  fused = fusion.fuse([np.array(A), np.array(B)], [2, 1])
  np.testing.assert_allclose(fused, 2 * np.array(A) + np.array(B))
  assert scores_lib.accuracy(fused, np.array(LABELS)) == pytest.approx(2 / 3)


def test_equal_weights_by_default():
  fused = fusion.fuse([np.array(A), np.array(B)])
  assert scores_lib.accuracy(fused, np.array(LABELS)) == 1.0


def test_cli_fusion_aligns_by_index(tmp_path):
  perm = [2, 0, 1]                          # B stored in another order, with its index
  a = make_run(tmp_path, "a", A, LABELS)
  b = make_run(tmp_path, "b", np.array(B)[perm], np.array(LABELS)[perm], index=perm)
  report = fuse.run_fusion(workdirs=[a, b], weights=["2", "1"], out=str(tmp_path / "out"))
  assert report["fused"]["top1"] == pytest.approx(2 / 3)
  assert [m["top1"] for m in report["members"]] == pytest.approx([1 / 3, 1.0])
  assert json.loads((tmp_path / "out" / "fusion.json").read_text())["fused"] == report["fused"]


def test_saved_fused_scores_follow_index_order(tmp_path):
  perm = [2, 0, 1]
  a = make_run(tmp_path, "a", np.array(A)[perm], np.array(LABELS)[perm], index=perm)
  b = make_run(tmp_path, "b", B, LABELS)
  fuse.run_fusion(workdirs=[a, b], weights=[2, 1], out=str(tmp_path / "out"), save_scores=True)
  with np.load(tmp_path / "out" / "fused_scores.npz") as f:
    np.testing.assert_allclose(f["scores"], 2 * np.array(A) + np.array(B), rtol=1e-6)
    assert f["index"].tolist() == [0, 1, 2]


def _four_streams(tmp_path):
  # j and b favour class 0 strongly, jm and bm favour class 1: 2:2:1:1 -> 0, 1:1:1:1 -> 1.
  strong, motion = [[.9, .1]], [[0., 1.]]
  return [f"{m}:" + make_run(tmp_path, m, s, [0], config={"modality": m})
          for m, s in (("j", strong), ("b", strong), ("jm", motion), ("bm", motion))]


def test_stream_fusion_default_weights_are_2_2_1_1(tmp_path):
  report = fuse.run_fusion(streams=_four_streams(tmp_path))
  assert report["weights"] == [2, 2, 1, 1]
  assert report["fused"]["top1"] == 1.0


def test_stream_weights_are_configurable(tmp_path):
  report = fuse.run_fusion(streams=_four_streams(tmp_path), stream_weights=["1", "1", "1", "1"])
  assert report["fused"]["top1"] == 0.0


@pytest.mark.parametrize("change, message", [
    (dict(index=[0, 1, 5]), "different test samples"),
    (dict(labels=[1, 0, 1]), "labels differ on 1 samples"),
    (dict(scores=np.full((3, 4), .25)), "3 vs 4 classes"),
])
def test_misaligned_runs_are_refused(tmp_path, change, message):
  a = make_run(tmp_path, "a", A, LABELS)
  b = make_run(tmp_path, "b", **{"scores": B, "labels": LABELS, **change})
  with pytest.raises(scores_lib.FusionError, match=message) as err:
    fusion.align([run_files.load_run(a), run_files.load_run(b)])
  assert a in str(err.value) and b in str(err.value)


def test_cli_refuses_misaligned_runs_in_one_line(tmp_path):
  a = make_run(tmp_path, "a", A, LABELS)
  b = make_run(tmp_path, "b", B, LABELS, index=[0, 1, 7])
  proc = subprocess.run([sys.executable, "-m", "experiments.fuse", f"--workdirs={a},{b}"],
                        cwd=REPO, capture_output=True, text=True, timeout=60)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      f"error: cannot fuse {a} and {b}: different test samples (3 vs 3; 1 only in the first, "
      "1 only in the second, e.g. index 2)"]


def test_parameter_budget_of_four_levels_is_0_66():
  budget = scores_lib.parameter_budget([budget_results(k) for k in (.4, .2, .05, .01)])
  assert budget["prunable_budget"] == pytest.approx(0.66, abs=1e-12)


def test_honest_budget_counts_unmasked_parameters_of_every_member():
  budget = scores_lib.parameter_budget([budget_results(k) for k in (.4, .2, .05, .01)])
  assert budget["total_budget"] == pytest.approx((6_600 + 4 * 2_000) / 12_000)


def test_cli_reports_budget_from_results_json(tmp_path):
  dirs = [make_run(tmp_path, f"s{1 - k:g}", A, LABELS, results=budget_results(k))
          for k in (.4, .2, .05, .01)]
  report = fuse.run_fusion(workdirs=dirs)
  assert report["parameter_budget"]["prunable_budget"] == pytest.approx(0.66, abs=1e-12)


def test_budget_refuses_different_backbones():
  with pytest.raises(scores_lib.FusionError, match="differ in their dense size"):
    scores_lib.parameter_budget([budget_results(.4), budget_results(.2, dense_prunable=20_000)])


def test_joint_ensemble_budget_from_member_counts():
  # experiments.run's mode=ensemble: per-member counts, each with one dense model's sizes.
  members = [dict(budget_results(k), sparsity=1 - k) for k in (.4, .2, .05, .01)]
  budget = scores_lib.parameter_budget([{"top1": .5, "members": members}])
  assert budget["prunable_budget"] == pytest.approx(0.66, abs=1e-12)


def test_joint_ensemble_workdir_expands_into_members(tmp_path):
  member_scores = np.stack([A, B]).astype(np.float32)
  d = make_run(tmp_path, "ens", member_scores.sum(0), LABELS, member_scores=member_scores,
               member_sparsities=np.array([.6, .8], np.float32),
               config={"mode": "ensemble", "ensemble_sparsities": [.6, .8]})
  report = fuse.run_fusion(workdirs=[d], weights=[2, 1])
  assert [m["name"] for m in report["members"]] == [f"{d}[s=0.6]", f"{d}[s=0.8]"]
  assert report["fused"]["top1"] == pytest.approx(2 / 3)


def test_joint_ensemble_workdir_budget_uses_each_members_counts(tmp_path):
  # What training writes for a joint ensemble (training.results.add_counts): every member its own
  # counts, the top level one dense member's size with the nonzero counts summed.
  members = [dict(budget_results(k), sparsity=1 - k) for k in (.4, .2, .05, .01)]
  results = {"top1": .5, "prunable_params": 10_000, "total_params": 12_000, "members": members,
             "prunable_nonzero": sum(m["prunable_nonzero"] for m in members),
             "nonzero_params": sum(m["nonzero_params"] for m in members)}
  member_scores = np.stack([A, B, A, B]).astype(np.float32)
  d = make_run(tmp_path, "ens", member_scores.sum(0), LABELS, member_scores=member_scores,
               member_sparsities=np.array([.6, .8, .95, .99]), results=results,
               config={"mode": "ensemble"})
  report = fuse.run_fusion(workdirs=[d])
  assert report["parameter_budget"]["prunable_budget"] == pytest.approx(0.66, abs=1e-12)
  assert report["parameter_budget"]["total_budget"] == pytest.approx((6_600 + 4 * 2_000) / 12_000)


def test_mean_class_accuracy_weights_classes_equally():
  scores = np.eye(2)[[0, 0, 0, 0]]
  assert scores_lib.mean_class_accuracy(scores, np.array([0, 0, 0, 1])) == 0.5


def test_top5_counts_label_among_five_best():
  scores = np.array([[.3, .25, .2, .1, .09, .06]])
  assert (scores_lib.accuracy(scores, np.array([4]), 5),
          scores_lib.accuracy(scores, np.array([5]), 5)) == (1.0, 0.0)


def test_wrong_number_of_weights_is_refused(tmp_path):
  a, b = make_run(tmp_path, "a", A, LABELS), make_run(tmp_path, "b", B, LABELS)
  with pytest.raises(scores_lib.FusionError, match="--weights has 3 values for 2 members"):
    fuse.run_fusion(workdirs=[a, b], weights=["1", "1", "1"])


def test_missing_scores_named(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(scores_lib.FusionError, match=os.path.join(str(tmp_path / "empty"), "scores.npz")):
    run_files.load_run(str(tmp_path / "empty"))


def test_joint_variants_members_are_named_and_found(tmp_path):
  """Members that differ in more than sparsity (--mode=variants) keep their names, and each
  finds its own saved model (members/<name>)."""
  member_scores = np.stack([A, B, A]).astype(np.float32)
  names = np.array(["s0.8_lambda0", "s0.8_lambda1", "s0.95_lambda0"])
  d = make_run(tmp_path, "var", member_scores.sum(0), LABELS, member_scores=member_scores,
               member_sparsities=np.array([.8, .8, .95], np.float32), member_names=names,
               config={"mode": "variants"})
  for name in names:
    (Path(d) / "members" / name).mkdir(parents=True)
  runs = fusion.members(run_files.load_run(d))
  assert [r.name for r in runs] == [f"{d}[{n}]" for n in names]
  assert [run_files.model_dir(r) for r in runs] == [os.path.join(d, "members", n) for n in names]
  # A multi-level ensemble's members keep their sparsity label and directory.
  ens = make_run(tmp_path, "ens", member_scores[:2].sum(0), LABELS,
                 member_scores=member_scores[:2], member_sparsities=np.array([.6, .8]),
                 member_names=np.array(["s0.6", "s0.8"]), config={"mode": "ensemble"})
  (Path(ens) / "members" / "s0.6").mkdir(parents=True)
  first = fusion.members(run_files.load_run(ens))[0]
  assert first.name == f"{ens}[s=0.6]"
  assert run_files.model_dir(first) == os.path.join(ens, "members", "s0.6")
