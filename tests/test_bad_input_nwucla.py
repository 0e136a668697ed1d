"""Bad NW-UCLA files (corrupted copies in tmp_path of the real data in ../shared/data): each is
repaired by its documented rule or refused with one clear error naming the file and the field,
and a seeded fuzz test of the format. Bad layout JSON files: tests/test_bad_input_layout.py."""

import copy
import json
import os
import pickle
import threading

import numpy as np
import pytest

import conftest

from stgcn_jax import data
from stgcn_jax.data import safe_pickle
from stgcn_jax.data.formats import files, nw_ucla as nw_ucla_format

SHARED = conftest.SHARED / "data"
NW_UCLA = SHARED / "nw_ucla"
NW_UCLA_FILE = NW_UCLA / "all_sqe" / "a01_s01_e00_v01.json"
needs_data = pytest.mark.skipif(not NW_UCLA_FILE.is_file(),
                                reason=f"reference data not found at {NW_UCLA} (../shared/data)")


def _messages(report):
  return "\n".join(report.messages)


def _good():
  return json.loads(NW_UCLA_FILE.read_text())


def _write(folder, name, obj, ext=".json"):
  path = folder / f"{name}{ext}"
  path.write_text(json.dumps(obj))
  return path


class _Pwn:
  """Unpickling this would run a shell command that creates ``target``."""

  def __init__(self, target):
    self.target = target

  def __reduce__(self):
    return os.system, (f"touch {self.target}",)


# ----------------------------------------------------------------------------- NW-UCLA
@needs_data
def test_nw_ucla_conversion_repairs_rejects_and_counts(tmp_path, capsys):
  """1e39 (beyond float32) and 3e8 m are repaired, an all-zero clip is rejected, ``.JSON`` files
  are read, a ``file_name`` that disagrees with the file name is refused, and a hostile
  ``val_label.pkl`` runs no code."""
  from data_prep import nw_ucla
  good = _good()
  seq = tmp_path / "src" / "all_sqe"
  seq.mkdir(parents=True)

  def variant(name, ext=".json", **changes):
    _write(seq, name, dict(copy.deepcopy(good), file_name=name, **changes), ext)

  def with_value(t, v, c, value):
    frames = copy.deepcopy(good["skeletons"])
    frames[t][v][c] = value
    return frames

  variant("a01_s01_e00_v01")
  variant("a01_s01_e01_v01", skeletons=with_value(1, 4, 2, 1e39))
  variant("a01_s01_e02_v01", skeletons=with_value(0, 7, 0, -3e8))
  variant("a01_s01_e03_v01", skeletons=[[[0.0] * 3] * 20] * 5)
  variant("a01_s01_e04_v03", ext=".JSON")
  _write(seq, "a01_s01_e05_v01", dict(good, file_name="a01_s01_e05_v03"))
  (seq / "notes.txt").write_text("not a sample")
  pwned = tmp_path / "pwned"
  (tmp_path / "src" / "val_label.pkl").write_bytes(pickle.dumps([_Pwn(pwned)]))
  report = data.ConversionReport()
  nw_ucla.convert(str(tmp_path / "src"), str(tmp_path / "out"), report=report)
  text = _messages(report)
  assert f"{seq}/a01_s01_e01_v01.json: 1 joint(s) with |value| > 100 coordinates set to 0" in text
  assert "(first: person 0, frame 1, joint 4:" in text
  assert f"{seq}/a01_s01_e02_v01.json: 1 joint(s) with |value| > 100 coordinates set to 0" in text
  assert f"{seq}/a01_s01_e03_v01.json: all-zero sequence" in text
  assert (f"{seq}/a01_s01_e05_v01.json: field 'file_name' says 'a01_s01_e05_v03' but the file is "
          "named 'a01_s01_e05_v01.json'") in text
  assert (report.kept, report.repaired, report.rejected) == (4, 2, 2)
  assert report.reasons["rejected/all_zero"] == 1 and report.reasons["repaired/bad_coordinate"] == 2
  assert "rejected/all_zero: 1" in report.summary()
  err = capsys.readouterr().err
  assert not pwned.exists()
  assert f"warning: {tmp_path / 'src' / 'val_label.pkl'}: cannot read CTR-GCN's test list" in err
  assert "system is not allowed" in err
  assert "1 file(s) without a .json extension" in err and "'notes.txt'" in err
  info = data.info("nw_ucla", str(tmp_path / "out"))
  assert info.splits == {"train": 3, "test": 1}
  train = data.load("nw_ucla", str(tmp_path / "out"), split="train")
  by_name = {train[i]["frame_dir"]: train[i]["keypoint"] for i in range(len(train))}
  kp = by_name["a01_s01_e01_v01"]
  assert np.all(kp[0, 1, 4] == 0) and np.all(np.isfinite(kp)) and np.abs(kp).max() < 10
  assert np.all(by_name["a01_s01_e02_v01"][0, 0, 7] == 0)
  test = data.load("nw_ucla", str(tmp_path / "out"), split="test")
  assert [test[i]["frame_dir"] for i in range(len(test))] == ["a01_s01_e04_v03"]


@needs_data
def test_nw_ucla_upper_case_extension_is_a_sample(tmp_path):
  from data_prep import nw_ucla
  _write(tmp_path, "a01_s01_e00_v01", _good(), ".JSON")
  (tmp_path / "readme.md").write_text("x")
  samples, others = nw_ucla.list_files(str(tmp_path))
  assert samples == [str(tmp_path / "a01_s01_e00_v01.JSON")] and others == ["readme.md"]
  assert nw_ucla_format.parse_file(samples[0])["frame_dir"] == "a01_s01_e00_v01"


def test_nw_ucla_fifo_is_refused_not_waited_on(tmp_path):
  """A FIFO named like a sample is refused in one line naming it. A reader that opens it blocking
  waits for a writer forever, so the parse runs in a thread and a hang fails the test."""
  from data_prep import nw_ucla
  fifo = tmp_path / "a01_s01_e00_v01.json"
  os.mkfifo(fifo)
  raised = []

  def parse():
    try:
      nw_ucla_format.parse_file(str(fifo))
    except Exception as err:  # pylint: disable=broad-except
      raised.append(err)
  thread = threading.Thread(target=parse, daemon=True)
  thread.start()
  thread.join(timeout=10)
  if thread.is_alive():
    try:                      # be the writer the reader waits for, so the thread can end
      os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
      pass
    pytest.fail("parse_file still waits on the FIFO after 10 s")
  assert len(raised) == 1 and isinstance(raised[0], data.DataError), raised
  assert str(raised[0]) == f"{fifo}: is a FIFO (named pipe), not a regular JSON file"


@needs_data
@pytest.mark.parametrize("field_name", ["a01_s01_e00_v03", "a01_s01_e00_v01x", 7, None])
def test_nw_ucla_file_name_field_must_match_the_file(tmp_path, field_name):
  from data_prep import nw_ucla
  path = _write(tmp_path, "a01_s01_e00_v01", dict(_good(), file_name=field_name))
  with pytest.raises(data.DataError) as err:
    nw_ucla_format.parse_file(str(path))
  text = str(err.value)
  assert text.startswith(f"{path}: field 'file_name' ")
  if isinstance(field_name, str):
    assert f"says {field_name!r} but the file is named 'a01_s01_e00_v01.json'" in text
  else:
    assert "must be a string" in text


@needs_data
@pytest.mark.parametrize("value,message", [
    ("0.5", "frame 2, joint 3: expected [x, y, z] numbers, got ['0.5'"),
    (True, "frame 2, joint 3: expected [x, y, z] numbers, got [True"),
    (None, "frame 2, joint 3: expected [x, y, z] numbers, got [None"),
    ([1.0], "frame 2, joint 3: expected [x, y, z] numbers, got [[1.0]"),
])
def test_nw_ucla_non_numeric_coordinates_are_rejected(tmp_path, value, message):
  from data_prep import nw_ucla
  good = _good()
  good["skeletons"][2][3][0] = value
  path = _write(tmp_path, "a01_s01_e00_v01", good)
  with pytest.raises(data.DataError, match=r"^" + str(path).replace(".", r"\.")) as err:
    nw_ucla_format.parse_file(str(path))
  assert message in str(err.value)


@needs_data
def test_nw_ucla_huge_integer_and_nan_literals_are_repaired(tmp_path):
  from data_prep import common, nw_ucla
  text = NW_UCLA_FILE.read_text()
  first = json.dumps(_good()["skeletons"][0][0][0])
  assert first in text
  for i, literal in enumerate(["1" + "0" * 400, "NaN", "-Infinity"]):
    path = tmp_path / f"a01_s01_e0{i}_v01.json"
    path.write_text(text.replace(first, literal, 1).replace("a01_s01_e00_v01", path.stem))
    record = nw_ucla_format.parse_file(str(path))
    report = data.ConversionReport()
    kp = files.clean_keypoint(record["keypoint"], str(path), report, max_abs=nw_ucla_format.MAX_ABS)
    assert report.repaired == 1 and np.all(kp[0, 0, 0] == 0) and np.isfinite(kp).all()
  path = tmp_path / "a01_s01_e09_v01.json"
  path.write_text(text.replace(first, "1" * 5000, 1).replace("a01_s01_e00_v01", path.stem))
  with pytest.raises(data.DataError, match=f"^{path}: malformed JSON"):
    nw_ucla_format.parse_file(str(path))


@needs_data
@pytest.mark.parametrize("payload,expected", [
    (None, "cannot read CTR-GCN's test list"),                    # os.system via __reduce__
    ([os.getcwd], "cannot read CTR-GCN's test list"),
    ([1, 2, 3], "not CTR-GCN's test list"),
    ({"file_name": "a01_s01_e00_v03"}, "not CTR-GCN's test list"),
    (np.arange(3), "not CTR-GCN's test list"),
    ([{"file_name": 5}], "not CTR-GCN's test list"),
])
def test_nw_ucla_val_label_pickle_runs_no_code(tmp_path, capsys, payload, expected):
  from data_prep import nw_ucla
  pwned = tmp_path / "pwned"
  blob = pickle.dumps([_Pwn(pwned)] if payload is None else payload)
  (tmp_path / "val_label.pkl").write_bytes(blob)
  nw_ucla._check_val_label(str(tmp_path), [])    # pylint: disable=protected-access
  err = capsys.readouterr().err
  assert not pwned.exists()
  assert err.startswith(f"warning: {tmp_path / 'val_label.pkl'}: {expected}")
  assert err.rstrip().endswith("not cross-checked") and len(err.splitlines()) == 1


@needs_data
def test_nw_ucla_real_val_label_matches(tmp_path, capsys):
  from data_prep import nw_ucla
  entries = safe_pickle.load(str(NW_UCLA / "val_label.pkl"))
  test = [{"frame_dir": d["file_name"]} for d in entries]
  nw_ucla._check_val_label(str(NW_UCLA), test)      # pylint: disable=protected-access
  assert capsys.readouterr().err == ""


def _check_nw_ucla_mutant(path, nw_ucla, common, report):
  """parse_file + the coordinate rule either raise DataError or give a record that satisfies the
  store's contract; anything else fails."""
  try:
    record = nw_ucla_format.parse_file(str(path))
  except data.DataError as err:
    assert str(err).startswith(str(path)), err
    return "rejected"
  before = report.rejected
  kp = files.clean_keypoint(record["keypoint"], str(path), report, max_abs=nw_ucla_format.MAX_ABS)
  if kp is None:
    assert report.rejected == before + 1
    return "all_zero"
  assert kp.shape == (1, record["total_frames"], 20, 3)
  assert np.isfinite(kp.astype(np.float32)).all() and np.abs(kp).max() <= nw_ucla_format.MAX_ABS
  assert 0 <= record["label"] < 10 and isinstance(record["view"], int)
  data.check_record(dict(record, keypoint=kp), num_joints=20, channels=3, num_classes=10,
                    where=str(path))
  return "kept"


_BAD_VALUES = [1e39, -3e8, float("nan"), float("inf"), "1.5", None, True, [], {}, -0.0, 10 ** 400,
               1e-320, 0]


def _field_mutant(obj, rng):
  obj = copy.deepcopy(obj)
  kind = rng.integers(9)
  frames = obj["skeletons"]
  t, v, c = rng.integers(len(frames)), rng.integers(20), rng.integers(3)
  if kind == 0:
    frames[t][v][c] = _BAD_VALUES[rng.integers(len(_BAD_VALUES))]
  elif kind == 1:
    del obj[["file_name", "skeletons", "label"][rng.integers(3)]]
  elif kind == 2:
    obj["label"] = [0, 11, -1, 1.0, "1", None, True, 10 ** 30, 1][rng.integers(9)]
  elif kind == 3:
    obj["skeletons"] = [[], {}, "x", 5, [[]], None, [frames[0]] * 3][rng.integers(7)]
  elif kind == 4:
    frames[t] = frames[t][:rng.integers(20)] + frames[t][:rng.integers(3)]
  elif kind == 5:
    frames[t][v] = frames[t][v][:rng.integers(3)] + [0.1] * rng.integers(3)
  elif kind == 6:
    obj["skeletons"] = [[[0.0] * 3] * 20] * len(frames)
  elif kind == 7:
    for frame in frames:                          # every coordinate garbage: all joints repaired
      for joint in frame:
        joint[rng.integers(3)] = float("nan")
  else:
    obj = [obj, None, 3, "x"][rng.integers(4)]
  return obj


@needs_data
def test_nw_ucla_fuzz(tmp_path):
  """Seeded byte- and field-level mutants of a real file: a valid record or one DataError."""
  from data_prep import common, nw_ucla
  raw = NW_UCLA_FILE.read_bytes()
  good = json.loads(raw)
  rng = np.random.default_rng(1234)
  report = data.ConversionReport()
  path = tmp_path / "a01_s01_e00_v01.json"
  outcomes = {"rejected": 0, "all_zero": 0, "kept": 0}
  for i in range(400):
    if i % 2:
      path.write_text(json.dumps(_field_mutant(good, rng)))
    else:
      blob = bytearray(raw)
      for _ in range(rng.integers(1, 4)):
        op, at = rng.integers(4), int(rng.integers(len(blob)))
        if op == 0:
          blob[at] = int(rng.integers(256))
        elif op == 1:
          blob[at:at] = bytes(rng.choice(list(b'0123456789.-e[],"{}: \xff'), rng.integers(1, 6)))
        elif op == 2:
          del blob[at:at + int(rng.integers(1, 20))]
        else:
          del blob[at:]
      path.write_bytes(bytes(blob))
    outcomes[_check_nw_ucla_mutant(path, nw_ucla, common, report)] += 1
  assert min(outcomes.values()) > 0, outcomes
