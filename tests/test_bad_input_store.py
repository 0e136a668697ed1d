"""A converter's ``--overwrite`` that a kill interrupts, and an NTU conversion of several
benchmarks that cannot write all of them (docs/BAD_INPUT.md, "Fusion, sweeps, workdirs and
datasets"): the next converter or reader finishes or rolls back the swap, and nothing is written
unless every benchmark can be."""

import glob
import os
import shutil

import numpy as np
import pytest

import conftest

from data_prep import ntu
from stgcn_jax import data
from stgcn_jax.data import builders

NTU = conftest.SHARED / "data" / "ntu_rgbd_raw_samples"
# Cameras 3 and 2 only: xsub has a train and a test sample, xview no test sample (camera 1).
NO_CAMERA_1 = ("S001C003P008R002A058.skeleton", "S004C002P003R001A017.skeleton")


class Killed(BaseException):
  """A kill -9 at a chosen point: nothing after it runs (``finally`` blocks aside)."""


def _write(out, labels):
  def split():
    for i, label in enumerate(labels):
      yield {"keypoint": np.full((1, 4, 3, 3), i + 1, np.float32), "label": label,
             "frame_dir": f"s{i}", "total_frames": 4}
  return data.write_dataset("toy", str(out), {"train": split, "test": split},
                            layout={"name": "tri", "num_joints": 3, "center": 0,
                                    "edges": [[1, 0], [2, 1]]},
                            class_names=["a", "b"], channels=["x", "y", "z"], num_persons=1,
                            overwrite=True)


def _labels(out) -> list[int]:
  """The labels of the train split in the order they were written (sample s0, s1, ...)."""
  src = data.load("toy", str(out), "train")
  by_name = {src[i]["frame_dir"]: src[i]["label"] for i in range(len(src))}
  return [by_name[f"s{i}"] for i in range(len(by_name))]


def _kill_at(monkeypatch, target: str) -> None:
  """Kills the next conversion when it renames the new dataset onto ``target``."""
  real = os.replace

  def replace(src, dst):
    if os.fspath(dst) == target and os.path.basename(os.fspath(src)) == ".1.0.0.incoming":
      raise Killed()
    real(src, dst)
  monkeypatch.setattr(builders.os, "replace", replace)


def test_kill_between_the_renames_is_finished_by_the_next_reader(tmp_path, monkeypatch):
  target = _write(tmp_path, [0, 0, 0])
  _kill_at(monkeypatch, target)
  with pytest.raises(Killed):
    _write(tmp_path, [1, 1])
  monkeypatch.undo()
  assert not os.path.exists(target)                  # the state a kill leaves
  assert _labels(tmp_path) == [1, 1]                 # the reader finished the replacement
  assert data.exists("toy", str(tmp_path))
  assert glob.glob(f"{tmp_path}/toy/.1.0.0.replaced")  # a reader leaves the old one to a converter
  _write(tmp_path, [0, 1])
  assert _labels(tmp_path) == [0, 1] and sorted(os.listdir(tmp_path / "toy")) == ["1.0.0"]


def test_kill_between_the_renames_is_finished_by_the_next_converter(tmp_path, monkeypatch):
  target = _write(tmp_path, [0, 0, 0])
  _kill_at(monkeypatch, target)
  with pytest.raises(Killed):
    _write(tmp_path, [1, 1])
  monkeypatch.undo()
  note = builders.recover_swap(target)
  assert note == f"{target}: finished a replacement of the dataset that was interrupted"
  assert _labels(tmp_path) == [1, 1] and sorted(os.listdir(tmp_path / "toy")) == ["1.0.0"]


def test_old_replaced_folder_of_an_earlier_version_is_restored(tmp_path):
  target = _write(tmp_path, [0, 1, 0])
  old = tmp_path / "toy" / ".1.0.0.replaced-k3j9x"   # what the former swap left on a kill
  old.mkdir()
  os.replace(target, old / "data")
  assert _labels(tmp_path) == [0, 1, 0]              # the reader rolled it back
  _write(tmp_path, [1])
  assert sorted(os.listdir(tmp_path / "toy")) == ["1.0.0"]


def test_kill_before_the_old_dataset_moves_keeps_it(tmp_path, monkeypatch):
  target = _write(tmp_path, [0, 0, 0])
  real = os.replace

  def replace(src, dst):
    if os.fspath(src) == target:
      raise Killed()
    real(src, dst)
  monkeypatch.setattr(builders.os, "replace", replace)
  with pytest.raises(Killed):
    _write(tmp_path, [1, 1])
  monkeypatch.undo()
  assert _labels(tmp_path) == [0, 0, 0]
  assert builders.recover_swap(target) is None
  assert sorted(os.listdir(tmp_path / "toy")) == ["1.0.0"]


# ----------------------------------------------------------------------------- NTU benchmarks
@pytest.fixture
def ntu_src(tmp_path):
  if not NTU.is_dir():
    pytest.skip(f"reference data not found at {NTU} (../shared/data)")
  src = tmp_path / "src"
  src.mkdir()
  for name in NO_CAMERA_1:
    shutil.copy(NTU / name, src / name)
  return src


def _names(out, name) -> dict:
  return {s: sorted(data.load(name, str(out), s)[i]["frame_dir"]
                    for i in range(len(data.load(name, str(out), s)))) for s in ("train", "test")}


def test_empty_split_of_one_benchmark_writes_no_benchmark(tmp_path, ntu_src):
  out = tmp_path / "out"
  ntu.convert([str(NTU)], str(out), "ntu60")                  # both benchmarks, every sample
  before = {b: _names(out, f"ntu60_{b}") for b in ("xsub", "xview")}
  with pytest.raises(data.DataError, match=r"ntu60_xview: split 'test' would have no samples \(of "
                                           r"the 2 converted, 2 train, 0 test\); nothing was "
                                           "written"):
    ntu.convert([str(ntu_src)], str(out), "ntu60", overwrite=True)
  assert {b: _names(out, f"ntu60_{b}") for b in ("xsub", "xview")} == before


def test_existing_second_benchmark_without_overwrite_writes_none(tmp_path, ntu_src):
  out = tmp_path / "out"
  for name in ("S001C001P001R001A011.skeleton", "S002C001P003R001A003.skeleton"):
    shutil.copy(NTU / name, ntu_src / name)                   # camera 1: xview has a test split
  ntu.convert([str(ntu_src)], str(out), "ntu60", ["xview"])
  with pytest.raises(data.DataError, match=r"ntu60_xview/1.0.0 already exists; pass --overwrite"):
    ntu.convert([str(ntu_src)], str(out), "ntu60", ["xsub", "xview"])
  assert not os.path.exists(out / "ntu60_xsub")
