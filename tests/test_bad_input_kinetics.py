"""Kinetics-skeleton bad input: corrupted copies (in tmp_path) of the real files are rejected with
the file and frame / field named, or repaired by a documented rule, and counted. The seeded fuzz
of the format: tests/test_fuzz_kinetics.py."""

import contextlib
import copy
import json
import os
import re
import signal
import tracemalloc

import numpy as np
import pytest

from conftest import shared_path
from data_prep import common, kinetics
from stgcn_jax import data
from stgcn_jax.data.formats import kinetics as kinetics_format

VID = "__U_scuxNlQ"          # 299 frames, 1-2 persons per frame, label_index 58
SMALL = "__u6odV5hrI"        # 24 KB: the fuzz base


def _sample(*parts):
  return shared_path("data", "kinetics_skeleton_samples", *parts)


def _real_video(name: str = VID) -> dict:
  return json.loads(_sample("kinetics_val", f"{name}.json").read_text())


@pytest.fixture(scope="module")
def real_index() -> dict:
  return json.loads(_sample("kinetics_val_label.json").read_text())


def _write(path, obj=None, text=None):
  path.write_text(text if text is not None else json.dumps(obj))
  return str(path)


def _messages(report) -> str:
  return "\n".join(report.messages)


class Hang(Exception):
  """Raised by :func:`_deadline`; not an OSError, so no reader can turn it into a DataError."""


@contextlib.contextmanager
def _deadline(seconds: float):
  """Fails the test (instead of hanging) when the body runs longer than ``seconds``."""
  def expired(signum, frame):
    raise Hang(f"no result after {seconds} s")
  previous = signal.signal(signal.SIGALRM, expired)
  signal.setitimer(signal.ITIMER_REAL, seconds)
  try:
    yield
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def _src(tmp_path, videos: dict, index) -> str:
  """A --src folder: kinetics_val/<name>.json for every video, and the label index."""
  val = tmp_path / "src" / "kinetics_val"
  val.mkdir(parents=True)
  for name, obj in videos.items():
    _write(val / f"{name}.json", obj)
  label = tmp_path / "src" / "kinetics_val_label.json"
  _write(label, text=index if isinstance(index, str) else None, obj=index)
  return str(tmp_path / "src")


# ----------------------------------------------------------------------------- 1. label index
@pytest.mark.parametrize("text,message", [
    ("{}", "empty label index; expected a JSON object {youtube_id: "),
    ("[]", "expected a JSON object {youtube_id: {has_skeleton, label, label_index}}, got list"),
    ('"abc"', "expected a JSON object"),
    ('{"a": 1, "b": {"label": "x"}}', "no well-formed entry among 2 (first problem: "),
])
def test_label_index_that_is_not_the_mapping_is_one_clear_error(tmp_path, text, message):
  path = _write(tmp_path / "kinetics_val_label.json", text=text)
  with pytest.raises(data.DataError, match=re.escape(f"{path}: {message}")):
    kinetics.load_label_index(path)


def test_empty_label_index_gives_one_line_from_the_cli(tmp_path, capsys):
  src = _src(tmp_path, {VID: _real_video()}, "{}")
  rc = common.run_cli(kinetics.main, ["--src", src, "--out", str(tmp_path / "out")])
  err = capsys.readouterr().err
  assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
  assert err.startswith(f"error: {src}/kinetics_val_label.json: empty label index")


def test_malformed_label_entries_reject_only_their_videos(tmp_path, real_index):
  entry = real_index[VID]
  index_text = json.dumps({
      VID: entry, "notobj": [58, "clay pottery making"], "strindex": dict(entry, label_index="58"),
      "boolindex": dict(entry, label_index=True), "noindex": {"label": "x"},
      "intlabel": dict(entry, label=5), "strskel": dict(entry, has_skeleton="no"),
  })[:-1] + ', "twice": {"label_index": 58, "label_index": 3}, "dup": {}, "dup": {}}'
  video = _real_video()
  src = _src(tmp_path, {n: video for n in (VID, "notobj", "strindex", "intlabel", "twice", "dup")},
             index_text)
  index = kinetics.load_label_index(f"{src}/kinetics_val_label.json")
  assert list(index.entries) == [VID]
  label = f"{src}/kinetics_val_label.json"
  assert index.problems == {
      "notobj": f"{label}: entry 'notobj': expected an object "
                "{has_skeleton, label, label_index}, got [58, 'clay pottery making']",
      "strindex": f"{label}: entry 'strindex': label_index '58' is not an integer",
      "boolindex": f"{label}: entry 'boolindex': label_index True is not an integer",
      "noindex": f"{label}: entry 'noindex': has no label_index",
      "intlabel": f"{label}: entry 'intlabel': label 5 is not a string",
      "strskel": f"{label}: entry 'strskel': has_skeleton 'no' is not true or false",
      "twice": f"{label}: entry 'twice': field 'label_index' is given more than once",
      "dup": f"{label}: entry 'dup' appears more than once"}
  report = data.ConversionReport()
  splits, class_names = kinetics.collect(src, report, 400)
  assert [r["frame_dir"] for r in splits["val"]] == [VID] and len(class_names) == 400
  assert (report.kept, report.rejected) == (1, 5)
  assert report.reasons["rejected/bad_label_entry"] == 5
  assert f"{src}/kinetics_val/strindex.json: malformed label-index entry: {label}: entry " \
         "'strindex': label_index '58' is not an integer" in _messages(report)


# ----------------------------------------------------------------------------- 2. frames
def _mutated(tmp_path, mutate, name="bad"):
  video = _real_video()
  mutate(video["data"])
  return _write(tmp_path / f"{name}.json", video)


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d[0].__setitem__("skeleton", {}),
     "frame_index 1: 'skeleton' must be a list of detections, got {}"),
    (lambda d: d[0].__setitem__("skeleton", None),
     "frame_index 1: 'skeleton' must be a list of detections, got None"),
    (lambda d: d[0].pop("skeleton"), "frame_index 1: 'skeleton' must be a list of detections"),
    (lambda d: d[3]["skeleton"].__setitem__(0, list(d[3]["skeleton"][0].values())),
     "frame_index 4, person 0: expected an object {pose, score}, got [[0.591, 0.429, "),
    (lambda d: d[3]["skeleton"][0].__setitem__("score", {"0": 1.0}),
     "frame_index 4, person 0: 'score' must be a list of 18 numbers, got {'0': 1.0}"),
    (lambda d: d.__setitem__(5, [6, []]),
     "data[5]: expected a frame object {frame_index, skeleton}, got [6, []]"),
    (lambda d: d[5].__setitem__("frame_index", 100_000_000),
     "data[5]: frame_index 100000000 is not an integer in [1, 10000]"),
    (lambda d: d[5].__setitem__("frame_index", 1e8),
     "data[5]: frame_index 100000000.0 is not an integer in [1, 10000]"),
    (lambda d: d[5].__setitem__("frame_index", -3),
     "data[5]: frame_index -3 is not an integer in [1, 10000]"),
    (lambda d: d[5].__setitem__("frame_index", 6.0),
     "data[5]: frame_index 6.0 is not an integer in [1, 10000]"),
    (lambda d: d[5].__setitem__("frame_index", "6"),
     "data[5]: frame_index '6' is not an integer in [1, 10000]"),
    (lambda d: d[5].__setitem__("frame_index", True),
     "data[5]: frame_index True is not an integer in [1, 10000]"),
    (lambda d: d[5].__setitem__("frame_index", 3), "frame_index 3 appears more than once"),
], ids=["skeleton_dict", "skeleton_null", "skeleton_missing", "person_list", "score_dict",
        "frame_list", "frame_index_1e8_int", "frame_index_1e8_float", "frame_index_negative",
        "frame_index_float", "frame_index_string", "frame_index_bool", "frame_index_repeated"])
def test_bad_frames_name_file_frame_and_field(tmp_path, mutate, message):
  path = _mutated(tmp_path, mutate)
  tracemalloc.start()
  try:
    with pytest.raises(data.DataError, match=re.escape(f"{path}: {message}")):
      kinetics_format.parse_video(path)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 64 * 2**20, f"parsing a {message!r} mutant allocated {peak} bytes"


def test_a_frame_index_up_to_the_bound_is_accepted_with_a_gap(tmp_path):
  last = kinetics_format.MAX_FRAME_INDEX
  path = _mutated(tmp_path, lambda d: d[-1].__setitem__("frame_index", last))
  kp, label_index, _ = kinetics_format.parse_video(path)
  assert kp.shape[1:] == (kinetics_format.MAX_FRAME_INDEX, 18, 3) and label_index == 58


def test_a_fifo_or_folder_named_json_is_rejected_not_waited_on(tmp_path):
  os.mkfifo(tmp_path / "fifo.json")
  (tmp_path / "dir.json").mkdir()
  with _deadline(5):
    for name, kind in (("fifo", "a FIFO (named pipe)"), ("dir", "a directory")):
      with pytest.raises(data.DataError, match=re.escape(
          f"{tmp_path}/{name}.json: is {kind}, not a regular JSON file")):
        kinetics_format.parse_video(str(tmp_path / f"{name}.json"))


def test_a_fifo_among_the_videos_is_counted_not_a_file_and_the_rest_converts(tmp_path, real_index):
  src = _src(tmp_path, {VID: _real_video()},
             {VID: real_index[VID], "pipe": dict(real_index[VID])})
  os.mkfifo(f"{src}/kinetics_val/pipe.json")
  report = data.ConversionReport()
  with _deadline(5):
    splits, _ = kinetics.collect(src, report, 400)
  assert [r["frame_dir"] for r in splits["val"]] == [VID]
  assert report.reasons["rejected/not_a_file"] == 1
  assert f"{src}/kinetics_val/pipe.json: is a FIFO (named pipe)" in _messages(report)


# ----------------------------------------------------------------------------- 3. values
@pytest.mark.parametrize("field,j,value,shown", [
    ("pose", 0, "0.5", "'0.5'"), ("pose", 7, True, "True"), ("pose", 35, None, "None"),
    ("score", 2, "0.9", "'0.9'"), ("score", 17, [0.5], "[0.5]")])
def test_non_numeric_values_are_rejected_naming_the_field(tmp_path, field, j, value, shown):
  path = _mutated(tmp_path, lambda d: d[3]["skeleton"][0][field].__setitem__(j, value))
  with pytest.raises(data.DataError, match=re.escape(
      f"{path}: frame_index 4, person 0: {field}[{j}] is {shown}, expected a number")):
    kinetics_format.parse_video(path)


def test_zero_poses_with_scores_are_missing_joints(tmp_path):
  def zero_all(frames):
    for frame in frames:
      for person in frame["skeleton"]:
        person["pose"] = [0.0] * 36                  # scores stay non-zero
  path = _mutated(tmp_path, zero_all, "zero")
  assert kinetics_format.parse_video(path)[0] is None
  report = data.ConversionReport()
  kp, _, _ = kinetics_format.parse_video(path, report)
  assert kp is None and (report.rejected, report.repaired) == (1, 0)
  assert report.reasons["rejected/all_zero"] == 1
  assert report.messages == [f"rejected: {path}: all-zero sequence (no joint detected in any "
                             "frame)"]

  def zero_one(frames):
    frames[3]["skeleton"][0]["pose"][4:6] = [0, 0]  # joint 2 of frame_index 4; score stays 0.7xx
  path = _mutated(tmp_path, zero_one, "one")
  kp, _, _ = kinetics_format.parse_video(path)
  assert kp[0, 3, 2].tolist() == [0, 0, 0] and kp[0, 3, 1, 2] > 0
  report = data.ConversionReport()
  assert kinetics_format.parse_video(path, report)[0] is not None
  assert report.reasons["repaired/score_without_position"] == 1
  assert f"{path}: 1 joint(s) at x = y = 0 (not detected) with a non-zero score: score set to 0 " \
         "(first: person 0, frame 3, joint 2: " in _messages(report)


def test_the_real_clips_need_no_repair():
  report = data.ConversionReport()
  for name in (VID, SMALL, "__PYrzYbzKE"):
    kp, _, _ = kinetics_format.parse_video(
        str(_sample("kinetics_val", f"{name}.json")), report)
    assert kp is not None and kp.shape[0] == 2
  assert (report.repaired, report.rejected) == (0, 0)


@pytest.mark.parametrize("value,kind", [(5000.0, "|value| > 100"), (-101, "|value| > 100"),
                                        (10**400, "NaN/inf"), (float("inf"), "NaN/inf")])
def test_out_of_range_coordinates_are_repaired(tmp_path, value, kind):
  path = _mutated(tmp_path, lambda d: d[3]["skeleton"][0]["pose"].__setitem__(5, value))
  kp, _, _ = kinetics_format.parse_video(path)
  assert kp[0, 3, 2].tolist() == [0, 0, 0] and np.all(np.abs(kp) <= 1.5)
  report = data.ConversionReport()
  kinetics_format.parse_video(path, report)
  assert (report.kept, report.repaired, report.rejected) == (0, 1, 0)
  assert f"{path}: 1 joint(s) with {kind} coordinates set to 0 (first: person 0, frame 3, " \
         "joint 2" in _messages(report)


# ----------------------------------------------------------------------------- 4. classes
def test_number_of_classes_comes_from_the_label_map_not_a_stray_entry(tmp_path, real_index):
  video = _real_video()
  phantom = dict(video, label="phantom", label_index=999)
  broken = dict(video, label_index=999, data="no frames")
  index = dict(real_index, phantom={"has_skeleton": True, "label": "phantom", "label_index": 999},
               broken={"has_skeleton": True, "label": "phantom", "label_index": 999},
               minus={"has_skeleton": True, "label": "minus", "label_index": -1})
  src = _src(tmp_path, {VID: video, "phantom": phantom, "broken": broken, "minus": video}, index)
  report = data.ConversionReport()
  splits, class_names = kinetics.collect(src, report, None)
  assert len(class_names) == 400 and class_names[0] == "abseiling" and "phantom" not in class_names
  assert [r["frame_dir"] for r in splits["val"]] == [VID]
  text = _messages(report)
  assert f"{src}/kinetics_val/phantom.json: unknown label: label_index 999 of entry 'phantom' in " \
         "kinetics_val_label.json is outside [0, 400); pass --num-classes" in text
  assert f"{src}/kinetics_val/broken.json: unknown label: label_index 999" in text
  assert f"{src}/kinetics_val/minus.json: unknown label: label_index -1 of entry 'minus'" in text
  assert (report.kept, report.rejected) == (1, 3)

  report = data.ConversionReport()
  splits, class_names = kinetics.collect(src, report, 1000)
  assert len(class_names) == 1000 and class_names[999] == "phantom"
  assert sorted(r["frame_dir"] for r in splits["val"]) == [VID, "phantom"]
  assert "kinetics_val/broken.json: expected an object with a 'data' list" in _messages(report)
  for bad in (0, -4, 10**12):
    with pytest.raises(data.DataError, match=re.escape(
        f"--num-classes must be an integer in [1, 100000], got {bad}")):
      kinetics.collect(src, data.ConversionReport(), bad)


def test_a_partial_label_map_without_class_0_gives_largest_plus_one(tmp_path, real_index):
  index = kinetics.LabelIndex("x", {"a": {"label_index": 58}, "b": {"label_index": 3}}, {})
  assert kinetics.count_classes([index], None) == 59
  index = kinetics.LabelIndex("x", {"a": {"label_index": 0}, "b": {"label_index": 1},
                                    "c": {"label_index": 7}}, {})
  assert kinetics.count_classes([index], None) == 2
  assert kinetics.count_classes([index], 8) == 8
  index = kinetics.LabelIndex("x", {"a": {"label_index": 5}, "b": {"label_index": 10**18}}, {})
  with pytest.raises(data.DataError, match=re.escape(
      "x: largest label_index 1000000000000000000 would make more than 100000 classes")):
    kinetics.count_classes([index], None)


# ----------------------------------------------------------------------------- end to end
def test_conversion_counts_every_bad_video(tmp_path, real_index):
  good = _real_video()
  bad = {"skeldict": ("skeleton", {}), "bigframe": ("frame_index", 100_000_000)}
  videos = {VID: good}
  for name, (key, value) in bad.items():
    videos[name] = copy.deepcopy(good)
    videos[name]["data"][2][key] = value
  videos["strcoord"] = copy.deepcopy(good)
  videos["strcoord"]["data"][2]["skeleton"][0]["pose"][0] = "0.5"
  videos["zeropose"] = copy.deepcopy(good)
  for frame in videos["zeropose"]["data"]:
    for person in frame["skeleton"]:
      person["pose"] = [0] * 36
  videos["far"] = copy.deepcopy(good)
  videos["far"]["data"][2]["skeleton"][0]["pose"][0] = 1e6
  index = {name: real_index[VID] for name in videos}
  src = _src(tmp_path, videos, index)
  report = data.ConversionReport()
  kinetics.convert(src, str(tmp_path / "out"), report=report)
  text = _messages(report)
  val = f"{src}/kinetics_val"
  assert f"{val}/skeldict.json: frame_index 3: 'skeleton' must be a list of detections" in text
  assert f"{val}/bigframe.json: data[2]: frame_index 100000000 is not an integer in" in text
  assert f"{val}/strcoord.json: frame_index 3, person 0: pose[0] is '0.5', expected a number" \
         in text
  assert f"{val}/zeropose.json: all-zero sequence" in text
  assert f"{val}/far.json: 1 joint(s) with |value| > 100 coordinates set to 0" in text
  assert (report.kept, report.repaired, report.rejected) == (2, 1, 4)
  info = data.info("kinetics_skeleton", str(tmp_path / "out"))
  assert info.num_classes == 59 and info.splits == {"val": 2}
