"""``stgcn_jax.inference`` and ``experiments.predict``: raw files, ensembles, streams."""

import io
import json
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stgcn_jax import checkpoint, models
from stgcn_jax.inference import predictor as predictor_lib, raw_input, sources, stream

from conftest import REPO, shared_path

OPTIONS = dict(base_channels=8, num_stages=2, inflate_stages=[], down_stages=[], num_person=2)
PIPELINE = dict(clip_len=16, num_clips=2, modality="j", normalize="auto", align_spine=False,
                num_person=2)
NTU_FILE = "S001C001P001R001A011.skeleton"


def _random_variables(model, v, seed):
  """Random weights of the model's shapes (``eval_shape``: no slow unjitted ``init``)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 2, 16, v, 3)))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = str(getattr(path[-1], "key", path[-1]))
    if name in ("var", "scale"):
      return np.ones(leaf.shape, np.float32)
    if name in ("mean", "bias"):
      return np.zeros(leaf.shape, np.float32)
    fan_in = max(1, int(np.prod(leaf.shape[:-1])))
    return (rng.standard_normal(leaf.shape) * 2 / np.sqrt(fan_in)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _save(path, layout, num_classes, seed=0, pipeline=True, class_names=None):
  model = models.get_model("stgcn", num_classes, layout=layout, **OPTIONS)
  variables = _random_variables(model, model.backbone.layout.num_joints, seed)
  spec = checkpoint.model_spec_json("stgcn", num_classes, layout, 3, OPTIONS,
                                    class_names=class_names,
                                    pipeline=PIPELINE if pipeline else None)
  checkpoint.save_model(str(path), spec, variables)
  return str(path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  root = tmp_path_factory.mktemp("models")
  ntu_names = (REPO / "data_prep" / "ntu_class_names.txt").read_text().splitlines()[:60]
  return {"ntu": _save(root / "ntu", "nturgb+d", 60, class_names=ntu_names),
          "ntu2": _save(root / "ntu2", "nturgb+d", 60, seed=1),
          "kinetics": _save(root / "kinetics", "openpose", 400),
          "nw_ucla": _save(root / "nw_ucla", "nw-ucla", 10, pipeline=False),
          "coco": _save(root / "coco", "coco", 16)}


def _predict(model, src, **kwargs):
  predictor = sources.load_predictor(model)
  samples, bad = raw_input.read_samples(str(src), layout=predictor.layout,
                                      check=predictor.check_channels, **kwargs)
  results = [predictor.predict([s.record], s.channels) for s in samples]
  return predictor, samples, bad, results


def test_ntu_file_gives_named_top_k(ckpts):
  predictor, samples, bad, (result,) = _predict(
      ckpts["ntu"], shared_path("data", "ntu_rgbd_raw_samples", NTU_FILE))
  assert not bad and len(samples) == 1
  assert samples[0].name == "S001C001P001R001A011" and samples[0].label == 10
  assert samples[0].record["keypoint"].shape[2:] == (25, 3)
  assert result.probs.shape == (1, 60) and result.num_members == 1
  assert result.probs.sum() == pytest.approx(1.0, abs=1e-5)
  best = predictor_lib.top_k(result.probs[0], predictor.class_names, 5)
  assert [b[0] for b in best] == [predictor.class_names[b[1]] for b in best]
  assert best[0][0] != "class 0" and "class" not in best[0][0]   # names from model.json
  assert [b[2] for b in best] == sorted((b[2] for b in best), reverse=True)
  assert predictor.clip_len == 16 and not predictor.notes       # the recorded pipeline


def test_kinetics_nw_ucla_and_pyskl_files(ckpts):
  _, samples, bad, results = _predict(
      ckpts["kinetics"], shared_path("data", "kinetics_skeleton_samples", "kinetics_val"))
  assert not bad and len(samples) >= 3
  assert all(r.probs.shape == (1, 400) for r in results)
  assert samples[0].channels == ("x", "y", "score")

  predictor, samples, bad, (result,) = _predict(
      ckpts["nw_ucla"], shared_path("data", "nw_ucla", "all_sqe", "a01_s01_e00_v01.json"))
  assert not bad and samples[0].name == "a01_s01_e00_v01" and result.probs.shape == (1, 10)
  assert result.probs.sum() == pytest.approx(1.0, abs=1e-5)
  # No pipeline in model.json (a converted model): pyskl's test defaults, said in one note.
  assert predictor.clip_len == 100 and len(predictor.notes) == 1
  assert predictor.class_names[3] == "class 3"

  predictor = sources.load_predictor(ckpts["coco"])
  samples, bad = raw_input.read_samples(
      str(shared_path("data", "pyskl_format_samples", "custom_hrnet2d_16cls", "ntu60_hrnet.pkl")),
      layout=predictor.layout, pyskl_layout="coco", check=predictor.check_channels)
  assert not bad and len(samples) == 486
  assert samples[0].channels == ("x", "y", "score")
  result = predictor.predict([s.record for s in samples[:40]], samples[0].channels, batch_size=16)
  assert result.probs.shape == (40, 16)
  np.testing.assert_allclose(result.probs.sum(-1), 1.0, atol=1e-5)


def test_post_hoc_ensemble_is_the_sum_of_its_members(ckpts):
  src = shared_path("data", "ntu_rgbd_raw_samples")
  a = sources.load_predictor(ckpts["ntu"])
  b = sources.load_predictor(ckpts["ntu2"])
  both = sources.load_predictor(f"{ckpts['ntu']},{ckpts['ntu2']}")
  assert both.num_members == 2 and len(both.groups) == 1 and both.groups[0].count == 2  # vmapped
  samples, bad = raw_input.read_samples(str(src), layout=both.layout)
  assert not bad and len(samples) == 5
  records = [s.record for s in samples]
  fused = both.predict(records, batch_size=4)
  expected = a.predict(records).scores + b.predict(records).scores
  np.testing.assert_allclose(fused.scores, expected, atol=2e-5)
  np.testing.assert_allclose(fused.probs.sum(-1), 1.0, atol=1e-5)
  assert fused.member_scores.shape == (2, 5, 60)


def test_layout_mismatch_is_one_clear_error(ckpts):
  predictor = sources.load_predictor(ckpts["nw_ucla"])
  with pytest.raises(raw_input.PredictError) as err:
    raw_input.read_samples(str(shared_path("data", "ntu_rgbd_raw_samples", NTU_FILE)),
                         layout=predictor.layout)
  message = str(err.value)
  assert "'nturgb+d'" in message and "'nw-ucla'" in message and "\n" not in message


def test_corrupted_file_is_one_line_and_the_rest_is_predicted(ckpts, tmp_path):
  good = shared_path("data", "ntu_rgbd_raw_samples", NTU_FILE)
  shutil.copy(good, tmp_path / NTU_FILE)
  shutil.copy(good, tmp_path / "my_recording.skeleton")     # not an NTU name: still a sample
  text = good.read_text()
  (tmp_path / "S001C001P001R002A011.skeleton").write_text(text[:len(text) // 3])
  predictor = sources.load_predictor(ckpts["ntu"])
  samples, bad = raw_input.read_samples(str(tmp_path), layout=predictor.layout)
  assert [s.name for s in samples] == ["S001C001P001R001A011", "my_recording"]
  np.testing.assert_array_equal(samples[0].record["keypoint"], samples[1].record["keypoint"])
  assert len(bad) == 1 and "S001C001P001R002A011.skeleton" in bad[0] and "\n" not in bad[0]


def test_stream_emits_every_hop(ckpts):
  predictor = sources.load_predictor(ckpts["nw_ucla"])
  frames = json.loads(shared_path("data", "nw_ucla", "all_sqe", "a01_s01_e00_v01.json").read_text())
  lines = [json.dumps(f) for f in frames["skeletons"][:30]]
  lines.insert(5, "not json")
  lines.insert(9, json.dumps([[1.0, 2.0]]))                    # wrong shape
  lines.insert(12, json.dumps([frames["skeletons"][0]] * 2))   # two persons: fine
  out, err = io.StringIO(), io.StringIO()
  n = stream.stream(predictor, lines, out, err, window=16, hop=5, k=3)
  good = 31
  assert n == (good - 16) // 5 + 1
  rows = [json.loads(line) for line in out.getvalue().splitlines()]
  assert len(rows) == n and rows[0]["frame"] == 15 and rows[1]["frame"] == 20
  assert set(rows[0]) == {"frame", "classes", "probs", "latency_ms"}
  assert len(rows[0]["classes"]) == 3
  # The top 3 of a softmax: distinct classes, descending probabilities that sum to at most 1.
  assert len(set(rows[0]["classes"])) == 3 and rows[0]["probs"] == sorted(rows[0]["probs"])[::-1]
  assert 0 < rows[0]["probs"][-1] and sum(rows[0]["probs"]) <= 1 + 1e-5
  warnings = err.getvalue().splitlines()
  assert len(warnings) == 2 and "line 6" in warnings[0] and "line 10" in warnings[1]


def test_cli_predicts_a_directory_and_writes_json(ckpts, tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  shutil.copy(shared_path("data", "nw_ucla", "all_sqe", "a01_s01_e00_v01.json"), src)
  (src / "a02_s01_e00_v01.json").write_text('{"skeletons": [[[0.1, 0.2')
  out = tmp_path / "pred.json"
  result = subprocess.run(
      [sys.executable, "-m", "experiments.predict", f"--model={ckpts['nw_ucla']}",
       f"--src={src}", "--top_k=3", f"--out={out}"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "a02_s01_e00_v01.json" in errors[0]
  assert "a01_s01_e00_v01" in result.stdout and "Traceback" not in result.stderr
  rows = json.loads(out.read_text())
  assert len(rows) == 1 and len(rows[0]["top_k"]) == 3 and rows[0]["label"] == 0
  # The atomic writer's temporary (``.pred.json.<random>.tmp.json``) is gone: no other file.
  assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.json", "src"]


def test_joint_ensemble_workdir_runs_its_members_in_one_vmapped_call(tmp_path):
  from stgcn_jax import data
  from stgcn_jax.training import workdir as workdir_lib
  data_dir = str(tmp_path / "data")
  data.build_synthetic(data_dir, num_train=4, num_test=4, num_classes=3, min_frames=20,
                       max_frames=22, seed=1)
  model = models.get_model("stgcn", 3, layout="nturgb+d", **OPTIONS)
  members = [_random_variables(model, 25, seed) for seed in (0, 1)]
  rng = np.random.default_rng(0)
  masks = [jax.tree.map(lambda a: rng.random(a.shape) < keep, m["params"])
           for m, keep in zip(members, (1.0, 0.4))]
  stack = lambda *xs: np.stack(xs)
  state = {"step": np.array([7, 7], np.int32), "masks": jax.tree.map(stack, *masks),
           "params": jax.tree.map(stack, *(m["params"] for m in members)),
           "batch_stats": jax.tree.map(stack, *(m["batch_stats"] for m in members))}
  workdir = tmp_path / "ens"
  # An old joint-ensemble workdir (no members/), its checkpoints as training writes them; the
  # newest (step 9) is damaged, so the newest that restores (step 7) is used.
  mngr = workdir_lib.checkpoint_manager(str(workdir / "checkpoints"), 3)
  for step in (7, 9):
    workdir_lib.save_checkpoint(mngr, state, step, {"iterator": {}, "step": step, "epoch": 0,
                                                    "phase": "finetune"})
  mngr.close()
  (workdir / "checkpoints" / "9" / "state" / "_METADATA").write_text("{")
  config = {"mode": "ensemble", "dataset": "synthetic", "data_dir": data_dir, "backbone": "stgcn",
            "model": {k: v for k, v in OPTIONS.items() if k != "num_person"},
            "model_options": "", "num_person": 2, "modality": "j", "clip_len": 16,
            "num_clips_test": 2, "normalize": "auto", "align_spine": False,
            "precise_bn_batches": 0}
  (workdir / "config.json").write_text(json.dumps(config))
  predictor = sources.load_predictor(str(workdir))
  assert predictor.num_members == 2 and len(predictor.groups) == 1   # one vmapped call
  assert predictor.class_names == ["motion_00", "motion_01", "motion_02"]
  records = [data.load("synthetic", data_dir, "test")[i] for i in range(4)]
  result = predictor.predict(records, batch_size=4)
  x = predictor.inputs(records, ("x", "y", "z"))[0]
  for k, member in enumerate(members):      # each member alone, its pruned weights set to 0
    params = jax.tree.map(lambda p, m: p * m, member["params"], masks[k])
    logits = model.apply({"params": params, "batch_stats": member["batch_stats"]}, x)
    expected = jax.nn.softmax(logits, -1).mean(-2)
    np.testing.assert_allclose(result.member_scores[k], expected, atol=2e-5)
  np.testing.assert_allclose(result.scores, result.member_scores.sum(0), rtol=1e-6)
