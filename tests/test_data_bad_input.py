"""Corrupted copies (in tmp_path) of the real files: every bad input is repaired by its documented
rule or rejected with the file and line / sample in the message, and counted in the report."""

import json
import os
import pickle
import shutil

import numpy as np
import pytest

import conftest

from stgcn_jax import data
from stgcn_jax.data.formats import pyskl as pyskl_format

SHARED = conftest.SHARED / "data"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(),
                                reason=f"reference data not found at {SHARED} (../shared/data)")
NTU_FILE = SHARED / "ntu_rgbd_raw_samples" / "S001C001P001R001A011.skeleton"
NW_UCLA_FILE = SHARED / "nw_ucla" / "all_sqe" / "a01_s01_e00_v01.json"
KINETICS = SHARED / "kinetics_skeleton_samples"
HRNET = SHARED / "pyskl_format_samples" / "custom_hrnet2d_16cls" / "ntu60_hrnet.pkl"


def _messages(report):
  return "\n".join(report.messages)


# ----------------------------------------------------------------------------- NTU
def test_ntu_bad_files_are_rejected_or_repaired(tmp_path):
  from data_prep import ntu
  raw = NTU_FILE.read_bytes()
  lines = raw.split(b"\r\n")
  src, extra = tmp_path / "src", tmp_path / "extra"
  src.mkdir()
  extra.mkdir()
  (src / "S001C001P001R001A011.skeleton").write_bytes(raw)
  (src / "S002C001P003R001A003.skeleton").write_bytes(raw)
  (src / "S005C001P001R001A001.skeleton").write_bytes(raw[:3000])                 # truncated
  (src / "S005C001P001R001A002.skeleton").write_bytes(b"\r\n".join(lines[:3] + [b"24"] + lines[4:]))
  nan_line = b"nan " + b" ".join(lines[4].split()[1:])
  (src / "S005C001P001R001A003.skeleton").write_bytes(
      b"\r\n".join(lines[:4] + [nan_line] + lines[5:]))
  (src / "S005C001P001R001A004.skeleton").write_bytes(b"0\r\n")                   # zero-length
  bad_value = b"0.1 abc " + b" ".join(lines[5].split()[2:])
  (src / "S005C001P001R001A005.skeleton").write_bytes(
      b"\r\n".join(lines[:5] + [bad_value] + lines[6:]))
  (src / "notntu.skeleton").write_bytes(raw)
  (src / "S001C002P005R002A008.skeleton").write_bytes(raw)                        # official missing
  (extra / "S001C001P001R001A011.skeleton").write_bytes(raw)                      # duplicate name
  report = data.ConversionReport()
  ntu.convert([str(src), str(extra)], str(tmp_path / "out"), "ntu60", ["xsub"], report=report)
  text = _messages(report)
  assert f"{src}/S005C001P001R001A001.skeleton:" in text and "unexpected end of file" in text
  assert f"S005C001P001R001A002.skeleton:4: frame 0, body 0 has 24 joints, expected 25" in text
  assert "S005C001P001R001A003.skeleton: 1 joint(s) with NaN/inf coordinates set to 0" in text
  assert "S005C001P001R001A004.skeleton: zero-length sequence" in text
  assert "S005C001P001R001A005.skeleton:6: frame 0, body 0, joint 1: non-numeric value 'abc'" in text
  assert "notntu: not an NTU sample name" in text
  assert "S001C002P005R002A008.skeleton: in the official missing-skeleton list" in text
  assert f"{extra}/S001C001P001R001A011.skeleton: duplicate sample name" in text
  assert (report.kept, report.repaired, report.rejected) == (3, 1, 7)
  train = data.load("ntu60_xsub", str(tmp_path / "out"), split="train")
  record = {train[i]["frame_dir"]: train[i] for i in range(len(train))}["S005C001P001R001A003"]
  assert np.all(record["keypoint"][0, 0, 0] == 0) and np.all(record["keypoint"][0, 0, 1] != 0)


def test_ntu_custom_missing_list(tmp_path):
  from data_prep import ntu
  src = tmp_path / "src"
  src.mkdir()
  for name in ("S001C001P001R001A011", "S002C001P003R001A003", "S002C001P003R001A004"):
    shutil.copy(NTU_FILE, src / f"{name}.skeleton")
  (tmp_path / "missing.txt").write_text("S002C001P003R001A004\n")
  report = data.ConversionReport()
  ntu.convert([str(src)], str(tmp_path / "out"), "ntu60", ["xsub"],
              missing_file=str(tmp_path / "missing.txt"), report=report)
  assert report.reasons["rejected/missing_skeleton_list"] == 1 and report.kept == 2


# ----------------------------------------------------------------------------- NW-UCLA
def test_nw_ucla_bad_files_are_rejected_or_repaired(tmp_path):
  from data_prep import nw_ucla
  good = json.loads(NW_UCLA_FILE.read_text())
  seq = tmp_path / "src" / "all_sqe"
  seq.mkdir(parents=True)

  def write(name, **changes):
    obj = dict(good, file_name=name, **changes)
    (seq / f"{name}.json").write_text(json.dumps(obj, indent=1))

  write("a01_s01_e00_v01")
  write("a01_s01_e00_v03")
  (seq / "a01_s01_e01_v01.json").write_text(NW_UCLA_FILE.read_text()[:500])
  short_frame = [f[:] for f in good["skeletons"]]
  short_frame[2] = short_frame[2][:19]
  write("a01_s01_e02_v01", skeletons=short_frame)
  nan = [[j[:] for j in f] for f in good["skeletons"]]
  nan[0][0][0] = float("nan")
  write("a01_s01_e03_v01", skeletons=nan)
  write("a01_s01_e04_v01", skeletons=[])
  write("a01_s01_e05_v01", label=11)
  (seq / "a01_s01_e00_v01.JSON").write_text(json.dumps(dict(good, file_name="a01_s01_e00_v01")))
  report = data.ConversionReport()
  nw_ucla.convert(str(tmp_path / "src"), str(tmp_path / "out"), report=report)
  text = _messages(report)
  assert f"{seq}/a01_s01_e01_v01.json:1: malformed JSON" in text
  assert "a01_s01_e02_v01.json: frame 2 has 19 joints, expected 20" in text
  assert "a01_s01_e03_v01.json: 1 joint(s) with NaN/inf coordinates set to 0" in text
  assert "a01_s01_e04_v01.json: zero-length sequence" in text
  assert "a01_s01_e05_v01.json: unknown label 11" in text
  assert (f"a01_s01_e00_v01.json: duplicate sample name 'a01_s01_e00_v01' (first seen in "
          f"{seq}/a01_s01_e00_v01.JSON)") in text
  assert (report.kept, report.repaired, report.rejected) == (3, 1, 5)
  assert data.info("nw_ucla", str(tmp_path / "out")).splits == {"train": 2, "test": 1}


@pytest.mark.parametrize("module,extra", [("nw_ucla", []), ("ntu", []), ("kinetics", []),
                                          ("pyskl", ["--name", "x", "--layout", "coco"])])
def test_missing_source_gives_one_line_not_a_traceback(tmp_path, capsys, module, extra):
  import importlib
  from data_prep import common
  main = importlib.import_module(f"data_prep.{module}").main
  rc = common.run_cli(main, ["--src", str(tmp_path / "nope"), "--out", str(tmp_path)] + extra)
  err = capsys.readouterr().err.strip()
  assert rc == 2 and len(err.splitlines()) == 1
  assert err.startswith("error: ") and err.endswith(f"'{tmp_path / 'nope'}' does not exist")


def test_existing_dataset_is_not_overwritten_silently(tmp_path):
  data.build_synthetic(str(tmp_path), num_train=4, num_test=2, num_classes=2)
  with pytest.raises(data.DataError, match="already exists; pass overwrite=True"):
    data.build_synthetic(str(tmp_path), num_train=4, num_test=2, num_classes=2)


# ----------------------------------------------------------------------------- Kinetics
def test_kinetics_bad_files_are_rejected_or_repaired(tmp_path):
  from data_prep import kinetics
  val = tmp_path / "src" / "kinetics_val"
  val.mkdir(parents=True)
  vid = "__U_scuxNlQ"
  good = json.loads((KINETICS / "kinetics_val" / f"{vid}.json").read_text())
  entry = json.loads((KINETICS / "kinetics_val_label.json").read_text())[vid]
  index = {}

  def write(name, obj=None, text=None, **entry_changes):
    (val / f"{name}.json").write_text(text if text is not None else json.dumps(obj))
    index[name] = dict(entry, **entry_changes)

  write("good", good)
  write("truncated", text=json.dumps(good, indent=2)[:700])
  bad_pose = json.loads(json.dumps(good))
  bad_pose["data"][3]["skeleton"][0]["pose"] = bad_pose["data"][3]["skeleton"][0]["pose"][:34]
  write("badpose", bad_pose)
  nan = json.loads(json.dumps(good))
  nan["data"][0]["skeleton"][0]["pose"][0] = float("nan")
  write("nan", nan)
  write("empty", dict(good, data=[{"frame_index": 1, "skeleton": []}]))
  write("noskel", good, has_skeleton=False)
  write("mismatch", good, label_index=3)
  (val / "unindexed.json").write_text(json.dumps(good))
  (tmp_path / "src" / "kinetics_val_label.json").write_text(json.dumps(index))
  report = data.ConversionReport()
  kinetics.convert(str(tmp_path / "src"), str(tmp_path / "out"), report=report)
  text = _messages(report)
  assert f"{val}/truncated.json:" in text and "malformed JSON" in text
  assert "badpose.json: frame_index 4, person 0: pose has 34 values" in text
  assert "nan.json: 1 joint(s) with NaN/inf coordinates set to 0" in text
  assert "empty.json: zero-length sequence" in text
  assert "noskel.json: has_skeleton is false" in text
  assert "mismatch.json: label_index 58 disagrees with the label index's 3" in text
  assert "unindexed.json: unknown label" in text
  assert (report.kept, report.repaired, report.rejected) == (2, 1, 6)


# ----------------------------------------------------------------------------- pyskl
def _hrnet_pickle(tmp_path, mutate):
  with open(HRNET, "rb") as f:
    raw = pickle.load(f)
  anns = raw["annotations"][:6]
  mutate(anns)
  names = [a["frame_dir"] for a in anns]
  path = tmp_path / "anno.pkl"
  with open(path, "wb") as f:
    pickle.dump({"split": {"train": names[:4], "test": names[4:] + ["ghost"]},
                 "annotations": anns}, f)
  return path, names


def test_pyskl_bad_annotations_are_rejected_or_repaired(tmp_path):
  from data_prep import pyskl

  def mutate(anns):
    anns[0]["keypoint"] = anns[0]["keypoint"].astype(np.float32)
    anns[0]["keypoint"][0, 0, 0, 0] = np.inf
    anns[1]["keypoint"] = anns[1]["keypoint"][:, :, :16]
    anns[2]["keypoint"] = anns[2]["keypoint"][:, :0]
    anns[3]["label"] = 99
    del anns[4]["keypoint"]
    anns.append(dict(anns[5]))
  path, names = _hrnet_pickle(tmp_path, mutate)
  report = data.ConversionReport()
  pyskl.convert(str(path), str(tmp_path / "out"), "bad", "coco", label_base="1", num_classes=16,
                report=report)
  text = _messages(report)
  assert f"{path}: annotation 0 ('{names[0]}'): 1 joint(s) with NaN/inf" in text
  assert f"annotation 1 ('{names[1]}'): keypoint has 16 joints, layout 'coco' has 17" in text
  assert f"annotation 2 ('{names[2]}'): zero-length sequence" in text
  assert f"annotation 3 ('{names[3]}'): unknown label 99" in text
  assert f"annotation 4 ('{names[4]}'): no 'keypoint' field" in text
  assert f"annotation 6: duplicate frame_dir '{names[5]}'" in text
  assert "split 'test' lists 'ghost', which has no usable annotation" in text
  assert f"split 'test' lists '{names[5]}' twice; kept once" in text
  assert (report.kept, report.repaired, report.rejected) == (2, 1, 7)


def test_pyskl_truncated_pickle_is_one_clear_error(tmp_path):
  from data_prep import pyskl
  cut = tmp_path / "cut.pkl"
  cut.write_bytes(HRNET.read_bytes()[:100_000])
  with pytest.raises(data.DataError, match=f"{cut}: cannot unpickle .*truncated"):
    pyskl.convert(str(cut), str(tmp_path / "out"), "cut", "coco")


def test_pyskl_refuses_pickles_with_code(tmp_path):
  from data_prep import pyskl
  evil = tmp_path / "evil.pkl"
  evil.write_bytes(pickle.dumps({"annotations": [os.getcwd]}))
  with pytest.raises(data.DataError, match="global posix.getcwd is not allowed"):
    pyskl_format.read_pickle(str(evil))


def test_pyskl_wrong_layout_joint_count_rejects_everything(tmp_path):
  from data_prep import pyskl
  with pytest.raises(data.DataError, match="no usable annotation"):
    pyskl.convert(str(HRNET), str(tmp_path / "out"), "wrong", "nturgb+d")


def test_pyskl_layout_json_for_custom_skeletons(tmp_path):
  from data_prep import pyskl
  from stgcn_jax import graph
  layout = tmp_path / "my_coco.json"
  layout.write_text(json.dumps(graph.LAYOUTS["coco"].to_json() | {"name": "my_coco"}))
  path, _ = _hrnet_pickle(tmp_path, lambda anns: None)
  report = data.ConversionReport()
  pyskl.convert(str(path), str(tmp_path / "out"), "custom", str(layout), label_base="1",
                num_classes=16, report=report)
  info = data.info("custom", str(tmp_path / "out"))
  assert info.layout.name == "my_coco" and info.num_joints == 17
  assert report.reasons["rejected/split_entry"] == 1
