"""Bad pyskl annotation pickles (corrupted copies of a real file, written to tmp_path): one clear
error line or a named, counted rejection / repair; never a traceback, never garbage in silence.
The seeded fuzz of the format: tests/test_fuzz_pyskl.py."""

import copy
import os
import pickle

import numpy as np
import pytest

import conftest

from stgcn_jax import data, graph

SHARED = conftest.SHARED / "data"
HRNET = SHARED / "pyskl_format_samples" / "custom_hrnet2d_16cls" / "ntu60_hrnet.pkl"
pytestmark = pytest.mark.skipif(not HRNET.is_file(),
                                reason=f"reference data not found at {HRNET} (../shared/data)")
COCO = graph.get_layout("coco")


@pytest.fixture(scope="module")
def raw():
  with open(HRNET, "rb") as f:
    return pickle.load(f)


def _one_per_class(raw, count=16):
  """The first annotation of labels 1..count (1-based labels, as in the file)."""
  first = {}
  for ann in raw["annotations"]:
    first.setdefault(ann["label"], ann)
  return [copy.deepcopy(first[k]) for k in range(1, count + 1)]


def _write(tmp_path, obj, name="anno.pkl"):
  path = tmp_path / name
  with open(path, "wb") as f:
    pickle.dump(obj, f)
  return path


def _dataset(anns, train=None, test=None):
  names = [a["frame_dir"] for a in anns]
  train = names[:-3] if train is None else train
  test = names[-3:] if test is None else test
  return {"split": {"train": train, "test": test}, "annotations": anns}


def _collect(path, num_classes=None, label_base="auto", report=None):
  from data_prep import pyskl
  report = report if report is not None else data.ConversionReport()
  return pyskl.collect(str(path), COCO, label_base, num_classes, report), report


def _cli(capsys, argv):
  """Runs the command line; (exit status, stderr)."""
  from data_prep import common, pyskl
  status = common.run_cli(pyskl.main, argv)
  return status, capsys.readouterr().err


def _messages(report):
  return "\n".join(report.messages)


# --------------------------------------------------------------------- 1. no split information
def test_bare_list_converts_to_one_train_split_serving_both_roles(tmp_path, raw, capsys):
  anns = _one_per_class(raw)
  path = _write(tmp_path, anns)
  status, err = _cli(capsys, ["--src", str(path), "--out", str(tmp_path / "out"), "--name",
                              "bare", "--layout", "coco"])
  assert status == 0, err
  info = data.info("bare", str(tmp_path / "out"))
  assert info.splits == {"train": 16} and info.num_classes == 16
  assert info.default_splits == {"train": "train", "test": "train"}


def test_dict_without_split_is_one_train_split_and_split_all_is_refused(tmp_path, raw, capsys):
  anns = _one_per_class(raw)
  (splits, kind, classes), report = _collect(_write(tmp_path, {"annotations": anns}))
  assert list(splits) == ["train"] and len(splits["train"]) == 16 and classes == 16
  assert kind == "2d+score" and report.kept == 16
  out = capsys.readouterr().out
  assert "no split information; all 16 annotations form the split 'train'" in out
  path = _write(tmp_path, {"split": {"all": [a["frame_dir"] for a in anns]}, "annotations": anns})
  with pytest.raises(data.DataError, match=f"{path}: split name 'all' must be .*reserved by tfds"):
    _collect(path)


# --------------------------------------------------------------------- 2. tracebacks
def test_img_shape_none_is_unknown_and_a_string_is_rejected_by_name(tmp_path, raw):
  anns = _one_per_class(raw)
  anns[0]["img_shape"] = None
  anns[1]["img_shape"] = "1080x1920"
  anns[2]["img_shape"] = (float("nan"), 1920)
  anns[3]["img_shape"] = (2 ** 40, 1920)
  anns += [copy.deepcopy(a) for a in _one_per_class(raw, 4)]
  for k, ann in enumerate(anns[16:]):
    ann["frame_dir"] = f"extra{k}"
  path = _write(tmp_path, _dataset(anns))
  (splits, _, _), report = _collect(path, num_classes=16)
  text = _messages(report)
  by_name = {r["frame_dir"]: r for r in splits["train"]}
  assert by_name[anns[0]["frame_dir"]]["img_shape"] == (0, 0)
  for i in (1, 2, 3):
    assert f"{path}: annotation {i} ('{anns[i]['frame_dir']}'): img_shape must be (height, " \
           "width)" in text
  assert report.reasons["rejected/invalid"] == 3 and report.kept == 17


def test_keypoints_as_nested_lists_are_read_and_ragged_ones_rejected(tmp_path, raw):
  anns = _one_per_class(raw)
  anns[0]["keypoint"] = anns[0]["keypoint"].tolist()
  anns[0]["keypoint_score"] = anns[0]["keypoint_score"].tolist()
  anns[1]["keypoint"] = [anns[1]["keypoint"][0].tolist(), anns[1]["keypoint"][0, :3].tolist()]
  path = _write(tmp_path, _dataset(anns))
  (splits, _, _), report = _collect(path, num_classes=16)
  kept = {r["frame_dir"]: r for rs in splits.values() for r in rs}
  np.testing.assert_array_equal(kept[anns[0]["frame_dir"]]["keypoint"][..., :2],
                                np.asarray(anns[0]["keypoint"], np.float32))
  assert (f"{path}: annotation 1 ('{anns[1]['frame_dir']}'): keypoint given as nested lists is "
          "not a regular array") in _messages(report)
  assert report.kept == 15 and report.rejected == 1


@pytest.mark.parametrize("split, message", [
    ({}, "'split' is empty"),
    ({"train": "abc"}, "split 'train' must be a list of frame_dir strings, got str 'abc'"),
    ({"train": ["x"], "test": {"a": 1}}, "split 'test' must be a list of frame_dir strings"),
    ([["train", ["x"]]], "'split' must be a dict of split name"),
    ({"tr-ain": ["x"]}, "split name 'tr-ain' must be ASCII letters"),
])
def test_bad_split_is_one_error_line(tmp_path, raw, capsys, split, message):
  anns = _one_per_class(raw, 2)
  path = _write(tmp_path, {"split": split, "annotations": anns})
  status, err = _cli(capsys, ["--src", str(path), "--out", str(tmp_path / "out"), "--name", "x",
                              "--layout", "coco"])
  assert status == 2 and err.count("\n") == 1 and err.startswith(f"error: {path}: ")
  assert message in err
  assert not (tmp_path / "out" / "x").exists()


def test_unreadable_pickle_is_one_error_line(tmp_path, raw, capsys, monkeypatch):
  path = _write(tmp_path, _dataset(_one_per_class(raw)))
  path.chmod(0)
  if os.geteuid() == 0:                 # root reads a chmod 000 file: make the open fail instead
    def refuse(*args, **kwargs):
      raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(data.safe_pickle, "open", refuse, raising=False)
  status, err = _cli(capsys, ["--src", str(path), "--out", str(tmp_path / "o"), "--name", "x",
                              "--layout", "coco"])
  assert status == 2 and err.count("\n") == 1
  assert f"error: {path}: cannot read (Permission denied)" in err


@pytest.mark.parametrize("content, message", [
    (b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'}\xff\xfe", "is not UTF-8 text (byte 0"),
    (b"walk\x00\x01\x02\nrun\n", "line 1: class name 'walk\\x00\\x01\\x02' holds control"),
    (b"walk\nrun\nwalk\n", "line 3: class name 'walk' repeats line 1"),
    (b"\n \n", "holds no class name"),
])
def test_bad_class_name_file_is_one_error_line(tmp_path, raw, capsys, content, message):
  path = _write(tmp_path, _dataset(_one_per_class(raw)))
  names = tmp_path / "names.txt"
  names.write_bytes(content)
  status, err = _cli(capsys, ["--src", str(path), "--out", str(tmp_path / "o"), "--name", "x",
                              "--layout", "coco", "--class-names", str(names)])
  assert status == 2 and err.startswith(f"error: {names}: ") and err.count("\n") == 1
  assert message in err


@pytest.mark.parametrize("value", ["0", "-3", "1000000000"])
def test_num_classes_out_of_range_is_one_error_line(tmp_path, raw, capsys, value):
  path = _write(tmp_path, _dataset(_one_per_class(raw)))
  status, err = _cli(capsys, ["--src", str(path), "--out", str(tmp_path / "o"), "--name", "x",
                              "--layout", "coco", "--num-classes", value])
  assert status == 2 and f"--num-classes must be an integer in 1..100000, got {value}" in err
  assert "-1" not in err.replace(value, "")


# --------------------------------------------------------------------- 3. phantom classes
def test_outlier_label_without_num_classes_is_one_error_naming_it(tmp_path, raw):
  anns = _one_per_class(raw)
  anns[5]["label"] = 99
  anns.append(copy.deepcopy(_one_per_class(raw, 6)[5]))    # label 6 keeps a sample
  anns[-1]["frame_dir"] = "six"
  path = _write(tmp_path, _dataset(anns))
  with pytest.raises(data.DataError) as err:
    _collect(path)
  text = str(err.value)
  assert f"{path}: without --num-classes / --class-names the classes are 1..99" in text
  assert "82 of them have no sample: 17..98" in text
  assert f"99 (annotation 5 '{anns[5]['frame_dir']}')" in text
  # with the class count given, the outlier is rejected by name and the rest is kept
  (splits, _, classes), report = _collect(path, num_classes=16)
  assert classes == 16 and report.kept == 16 and report.rejected == 1
  assert (f"{path}: annotation 5 ('{anns[5]['frame_dir']}'): unknown label 99; expected 1..16"
          in _messages(report))


def test_dense_labels_without_num_classes_give_the_class_count(tmp_path, raw):
  (_, _, classes), report = _collect(_write(tmp_path, _dataset(_one_per_class(raw))))
  assert classes == 16 and report.kept == 16 and report.rejected == 0


# --------------------------------------------------------------------- 4. leakage
def test_sample_in_train_and_test_is_kept_in_train_only(tmp_path, raw):
  anns = _one_per_class(raw)
  names = [a["frame_dir"] for a in anns]
  path = _write(tmp_path, _dataset(anns, train=names[:13], test=names[12:]))
  (splits, _, _), report = _collect(path)
  assert [r["frame_dir"] for r in splits["test"]] == names[13:]
  assert names[12] in [r["frame_dir"] for r in splits["train"]]
  assert (f"{path}: annotation 12 ('{names[12]}') is in training split 'train' and evaluation "
          "split 'test'; kept in 'train' only") in _messages(report)
  assert report.reasons["rejected/leak"] == 1 and report.kept == 16
  # the same rule for a benchmark's pair of splits; other benchmarks may share samples
  path = _write(tmp_path, {"split": {"xsub_train": names[:13], "xsub_val": names[12:],
                                     "xview_train": names[3:], "xview_val": names[:3]},
                           "annotations": anns})
  (splits, _, _), report = _collect(path)
  assert len(splits["xsub_val"]) == 3 and len(splits["xview_train"]) == 13
  assert report.reasons["rejected/leak"] == 1
  path = _write(tmp_path, _dataset(anns, train=names, test=names[:2]))
  with pytest.raises(data.DataError, match="every sample of evaluation split 'test' .* is also in "
                                           "training split 'train'"):
    _collect(path)


# --------------------------------------------------------------------- 6. (T, M, V, C)
def test_time_major_keypoints_are_rejected_with_the_transpose(tmp_path, raw):
  anns = _one_per_class(raw)
  for ann in anns[:2]:
    ann["keypoint"] = ann["keypoint"].transpose(1, 0, 2, 3)
    ann["keypoint_score"] = ann["keypoint_score"].transpose(1, 0, 2)
  anns[1]["total_frames"] = "unknown"
  path = _write(tmp_path, _dataset(anns))
  _, report = _collect(path, num_classes=16)
  text = _messages(report)
  t0 = anns[0]["keypoint"].shape[0]
  assert (f"{path}: annotation 0 ('{anns[0]['frame_dir']}'): keypoint shape ({t0}, 1, 17, 2) "
          f"reads as {t0} persons in 1 frame(s) while total_frames is {t0}; the array looks "
          "stored as (T, M, V, C). pyskl's keypoint is (M, T, V, C)") in text
  assert f"annotation 1 ('{anns[1]['frame_dir']}'): keypoint shape" in text
  assert "keypoint.transpose(1, 0, 2, 3)" in text
  assert report.reasons["rejected/invalid"] == 2 and report.kept == 14


# --------------------------------------------------------------------- 7. dtypes
@pytest.mark.parametrize("field, make, dtype", [
    ("keypoint", lambda kp: kp.astype(object), "object"),
    ("keypoint", lambda kp: kp.astype(str), "<U"),
    ("keypoint", lambda kp: kp.astype(np.complex64), "complex64"),
    ("keypoint", lambda kp: kp > 0, "bool"),
    ("keypoint_score", lambda s: s.astype("S4"), "|S4"),
])
def test_non_real_dtypes_are_rejected_naming_the_field(tmp_path, raw, field, make, dtype):
  anns = _one_per_class(raw)
  anns[4][field] = make(anns[4][field])
  path = _write(tmp_path, _dataset(anns))
  _, report = _collect(path, num_classes=16)
  assert (f"{path}: annotation 4 ('{anns[4]['frame_dir']}'): {field} must hold real numbers "
          f"(float or int), got dtype {dtype}") in _messages(report)
  assert report.rejected == 1 and report.kept == 15


# --------------------------------------------------------------------- 8. mixed kinds
def test_mixed_2d_and_3d_annotations_are_one_error_naming_both(tmp_path, raw, capsys):
  anns = _one_per_class(raw)
  for ann in anns[1:]:
    ann["keypoint"] = np.concatenate([ann["keypoint"], ann["keypoint"][..., :1]], -1)
    del ann["keypoint_score"]
  path = _write(tmp_path, _dataset(anns))
  status, err = _cli(capsys, ["--src", str(path), "--out", str(tmp_path / "o"), "--name", "mix",
                              "--layout", "coco"])
  assert status == 2 and err.count("\n") == 1
  assert f"error: {path}: the annotations mix kinds of keypoints: 15 hold 3D keypoints" in err
  assert f"(first: annotation 1 '{anns[1]['frame_dir']}', annotation 2 " in err
  assert (f"1 holds 2D keypoints with keypoint_score (first: annotation 0 "
          f"'{anns[0]['frame_dir']}')") in err
  assert not (tmp_path / "o" / "mix").exists()


# --------------------------------------------------------------------- 9. coordinates
def test_coordinate_bounds_and_all_zero_sequences(tmp_path, raw):
  anns = _one_per_class(raw)
  anns[0]["keypoint"] = anns[0]["keypoint"].astype(np.float64)
  anns[0]["keypoint"][0, 0, 3] = (1e7, 5.0)               # 1e7 px in a 1080 x 1762 image
  anns[0]["total_frames"] = 999                            # a second repair of the same sample
  anns[1]["keypoint"] = anns[1]["keypoint"].astype(np.float64)
  anns[1]["keypoint"][0, 1, 2, 1] = 1e300                  # beyond float32
  anns[2]["keypoint"] = np.zeros_like(anns[2]["keypoint"])
  anns[2]["keypoint_score"] = np.zeros_like(anns[2]["keypoint_score"])
  anns[3]["keypoint"] = np.full_like(anns[3]["keypoint"], np.nan)
  anns[4]["img_shape"] = None                              # unknown units: 1e6 bound
  anns[4]["keypoint"] = anns[4]["keypoint"].astype(np.float32)
  anns[4]["keypoint"][0, 0, 0, 0] = 5e5
  path = _write(tmp_path, _dataset(anns))
  (splits, _, _), report = _collect(path, num_classes=16)
  text = _messages(report)
  w = max(anns[0]["img_shape"])
  assert (f"{path}: annotation 0 ('{anns[0]['frame_dir']}'): 1 joint(s) with |value| > "
          f"{10 * w:g} coordinates set to 0 (first: person 0, frame 0, joint 3") in text
  assert f"annotation 1 ('{anns[1]['frame_dir']}'): 1 joint(s) with |value| > 17620" in text
  assert (f"{path}: annotation 2 ('{anns[2]['frame_dir']}'): all-zero sequence (no joint "
          "detected in any frame)") in text
  assert (f"annotation 3 ('{anns[3]['frame_dir']}'): all-zero sequence (no joint detected in any "
          "frame) after the repair") in text
  assert f"coordinates set to 0 (first: person 0, frame 0, joint 3: [1.0000e+07" in text
  t0 = anns[0]["keypoint"].shape[1]
  assert f"; total_frames 999 != keypoint T {t0}; set to T" in text
  assert report.reasons["rejected/all_zero"] == 2 and report.reasons["repaired/bad_coordinate"] == 1
  assert report.reasons["repaired/bad_coordinate+total_frames"] == 1      # one sample, one count
  assert (report.kept, report.repaired, report.rejected) == (14, 2, 2)
  kept = {r["frame_dir"]: r for rs in splits.values() for r in rs}
  assert not kept[anns[0]["frame_dir"]]["keypoint"][0, 0, 3].any()
  assert kept[anns[4]["frame_dir"]]["keypoint"][0, 0, 0, 0] == 5e5
  assert all(r["keypoint"].dtype == np.float32 and np.isfinite(r["keypoint"]).all()
             for r in kept.values())


def test_every_annotation_message_names_file_index_and_frame_dir(tmp_path, raw):
  anns = _one_per_class(raw)
  names = [a["frame_dir"] for a in anns]
  anns.append(copy.deepcopy(anns[0]))
  path = _write(tmp_path, _dataset(anns, train=names[:12], test=names[13:] + [7]))
  _, report = _collect(path, num_classes=16)
  text = _messages(report)
  assert f"{path}: annotation 12 ('{names[12]}') is in no split; not written" in text
  assert (f"{path}: annotation 16: duplicate frame_dir '{names[0]}'; the first one (annotation 0) "
          "is kept") in text
  assert f"{path}: split 'test' entry 3 is 7, expected a frame_dir string" in text
  assert report.kept == 15 and report.rejected == 3
