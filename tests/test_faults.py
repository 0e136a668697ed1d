"""Faults a user's files and machine produce: hostile pickles, a failed --overwrite, damaged stores
and checkpoints, a workdir of another run. Nothing is lost, nothing runs code, one clear line."""

import collections
import glob
import json
import os
import pickle
import re
import shutil

import numpy as np
import pytest

from stgcn_jax import data
from stgcn_jax.data import records, safe_pickle

from conftest import REPO, run_experiment



class _Evil:
  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (os.system, (f"touch {self.path}",))


# ----------------------------------------------------------------------------- restricted pickles
def test_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path):
  marker = tmp_path / "pwned"
  evil = tmp_path / "evil.pkl"
  evil.write_bytes(pickle.dumps([{"file_name": "a01_s01_e00_v03"}, _Evil(marker)]))
  with pytest.raises(data.DataError, match=r"evil\.pkl: cannot unpickle .*global (posix|os)\.system "
                                           r"is not allowed"):
    safe_pickle.load(str(evil))
  assert not marker.exists()


def test_restricted_pickle_reads_builtins_and_numpy(tmp_path):
  path = tmp_path / "ok.pkl"
  obj = {"split": {"train": ["a"]}, "annotations": [{"keypoint": np.ones((1, 2, 3, 2), np.float16),
                                                      "label": np.int64(3), "shape": (1, 2)}]}
  path.write_bytes(pickle.dumps(obj))
  back = safe_pickle.load(str(path))
  np.testing.assert_array_equal(back["annotations"][0]["keypoint"], obj["annotations"][0]["keypoint"])
  assert back["annotations"][0]["label"] == 3 and back["split"] == {"train": ["a"]}


@pytest.mark.parametrize("content, message", [
    (b"\x80\x04\x95", "truncated"), (b"not a pickle at all", "cannot unpickle")])
def test_broken_pickle_is_one_data_error_naming_the_file(tmp_path, content, message):
  path = tmp_path / "broken.pkl"
  path.write_bytes(content)
  with pytest.raises(data.DataError, match=f"broken.pkl: .*{message}"):
    safe_pickle.load(str(path))
  with pytest.raises(data.DataError, match="is not a regular file"):
    safe_pickle.load(str(tmp_path))


def test_no_module_unpickles_with_plain_pickle():
  offenders = []
  for path in glob.glob(str(REPO / "**" / "*.py"), recursive=True):
    if "/.venv/" in path or "/tests/" in path:
      continue
    text = open(path, encoding="utf-8").read()
    unsafe = (re.search(r"\bpickle\.(load|loads|Unpickler)\b|from pickle import|allow_pickle=True"
                        r"|weights_only=False", text))
    if unsafe and not path.endswith(os.path.join("stgcn_jax", "data", "safe_pickle.py")):
      offenders.append(f"{path}: {unsafe.group(0)}")
  assert not offenders, f"plain unpickling outside safe_pickle.py: {offenders}"


# ----------------------------------------------------------------------------- coordinate rules
def test_values_beyond_float32_or_the_format_range_become_missing_joints():
  kp = np.ones((1, 3, 4, 3))
  kp[0, 1, 2, 0] = 1e39                      # inf once stored as float32
  kp[0, 2, 3, 1] = 3e8                       # 300,000 km: not a body in front of a camera
  fixed, message = records.repair_non_finite(kp, "clip", max_abs=100.0)
  assert fixed[0, 1, 2].tolist() == [0, 0, 0] and fixed[0, 2, 3].tolist() == [0, 0, 0]
  assert (fixed != 0).sum() == 36 - 6 and np.isfinite(fixed.astype(np.float32)).all()
  assert message.startswith("clip: 2 joint(s) with |value| > 100 coordinates set to 0")
  _, message = records.repair_non_finite(kp, "clip")
  assert "beyond float32" in message and message.startswith("clip: 1 joint(s)")


def test_check_record_refuses_all_zero_and_non_real_keypoints():
  good = {"keypoint": np.ones((1, 2, 3, 3), np.float32), "label": 0, "frame_dir": "a",
          "total_frames": 2}
  kwargs = dict(num_joints=3, channels=3, num_classes=2, where="sample 'a'")
  records.check_record(good, **kwargs)
  with pytest.raises(data.DataError, match="sample 'a': all-zero sequence"):
    records.check_record({**good, "keypoint": np.zeros((1, 2, 3, 3))}, **kwargs)
  for bad in (np.ones((1, 2, 3, 3), complex), np.full((1, 2, 3, 3), "1"),
              np.ones((1, 2, 3, 3)).astype(object)):
    with pytest.raises(data.DataError, match="must hold real numbers, got dtype"):
      records.check_record({**good, "keypoint": bad}, **kwargs)


# ----------------------------------------------------------------------------- the store
def _write(out, name, labels, fail_at=None):
  def split():
    for i, label in enumerate(labels):
      if i == fail_at:
        raise data.DataError(f"sample {i}: broken on purpose")
      yield {"keypoint": np.full((1, 4, 3, 3), i + 1, np.float32), "label": label,
             "frame_dir": f"s{i}", "total_frames": 4}
  return data.write_dataset(name, str(out), {"train": split, "test": split},
                            layout={"name": "tri", "num_joints": 3, "center": 0,
                                    "edges": [[1, 0], [2, 1]]},
                            class_names=["a", "b"], channels=["x", "y", "z"], num_persons=1,
                            overwrite=True)


def test_failed_overwrite_leaves_the_old_dataset_whole(tmp_path):
  path = _write(tmp_path, "toy", [0, 1, 0])
  with pytest.raises(data.DataError, match="broken on purpose"):
    _write(tmp_path, "toy", [1, 1, 1, 1, 1], fail_at=3)
  src = data.load("toy", str(tmp_path), "train")
  assert {src[i]["frame_dir"]: src[i]["label"] for i in range(len(src))} == {"s0": 0, "s1": 1,
                                                                              "s2": 0}
  assert sorted(os.listdir(tmp_path)) == ["toy"]     # no temporary folder left behind
  assert _write(tmp_path, "toy", [1, 1]) == path      # a good overwrite replaces it
  assert len(data.load("toy", str(tmp_path), "train")) == 2


def test_out_that_is_a_file_is_one_clear_error(tmp_path):
  out = tmp_path / "store"
  out.write_text("I am a file")
  with pytest.raises(data.DataError, match="is a file, expected a directory"):
    _write(out, "toy", [0, 1])
  with pytest.raises(data.DataError, match="is a file, expected a directory"):
    _write(out / "deeper", "toy", [0, 1])
  assert out.read_text() == "I am a file"


def test_truncated_array_record_is_a_data_error_naming_the_split(tmp_path):
  _write(tmp_path, "toy", [0, 1, 0, 1] * 50)
  (path,) = glob.glob(str(tmp_path / "toy" / "1.0.0" / "toy-train.array_record*"))
  blob = open(path, "rb").read()
  open(path, "wb").write(blob[:len(blob) // 2])
  with pytest.raises(data.DataError, match="dataset 'toy', split 'train' .*truncated or corrupted"
                                           ".*--overwrite"):
    src = data.load("toy", str(tmp_path), "train")
    [src[i] for i in range(len(src))]


# ----------------------------------------------------------------------------- workdirs
def _copy(finished_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run[0], workdir)
  return workdir


def _truncate(path):
  blob = open(path, "rb").read()
  open(path, "wb").write(blob[:len(blob) // 2])


def test_workdir_of_another_backbone_is_refused_untouched(finished_run, tmp_path):
  workdir = _copy(finished_run, tmp_path)
  before = {p: open(p, "rb").read() for p in glob.glob(str(workdir / "*.json*"))}
  result = run_experiment(workdir, finished_run[1], "--backbone=stgcn")
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "holds another run (model.backbone='ctrgcn' there, 'stgcn' here)" in lines[0]
  assert {p: open(p, "rb").read() for p in glob.glob(str(workdir / "*.json*"))} == before


def test_workdir_that_is_a_file_is_one_clear_line(finished_run, tmp_path):
  path = tmp_path / "file"
  path.write_text("x")
  result = run_experiment(path, finished_run[1])
  assert result.returncode == 2 and result.stderr.strip().splitlines() == [
      f"error: --workdir {path} is a file; expected a directory (new, or an earlier run's to resume)"]


def test_truncated_checkpoint_falls_back_to_the_previous_one(finished_run, tmp_path):
  workdir = _copy(finished_run, tmp_path)
  # A crash in the middle of writing the arrays: every data file of the step-15 state cut short.
  chunks = glob.glob(str(workdir / "checkpoints" / "15" / "state" / "**" / "d" / "*"),
                     recursive=True)
  assert chunks
  for chunk in chunks:
    _truncate(chunk)
  result = run_experiment(workdir, finished_run[1])
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 2
  assert f"warning: checkpoint {workdir}/checkpoints/15 cannot be restored" in result.stderr
  assert "resumed from" in result.stdout and "at step 10" in result.stdout
  assert os.listdir(workdir / "damaged_checkpoints")[0].startswith("15-")
  # The replayed steps are logged once: no duplicate rows in metrics.jsonl.
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  counts = collections.Counter((r["step"], r["split"]) for r in rows)
  assert max(counts.values()) == 1, counts
  assert {("switch" in s) for _, s in counts} and (15, "test") in counts


def test_no_restorable_checkpoint_names_the_damaged_metadata_file(finished_run, tmp_path):
  workdir = _copy(finished_run, tmp_path)
  _truncate(workdir / "checkpoints" / "15" / "state" / "_METADATA")
  _truncate(workdir / "checkpoints" / "10" / "state" / "_METADATA")
  result = run_experiment(workdir, finished_run[1])
  assert result.returncode == 2
  assert (f"error: no checkpoint in {workdir}/checkpoints restores (step 15: {workdir}/checkpoints/"
          f"15/state/_METADATA is truncated or not valid JSON; step 10:") in result.stderr
  assert "Traceback" not in result.stderr
  assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "15"]   # nothing moved or deleted
