"""NTU converter on bad input: corrupted copies (in tmp_path) of a real .skeleton file are rejected
with file and line, or repaired by the documented rule, and counted; nothing hangs, nothing raises
anything but DataError. The reference data is read from ../shared/data, never copied into the
repo."""

import contextlib
import os
import signal
from pathlib import Path

import numpy as np
import pytest

import conftest

from data_prep import common, ntu
from stgcn_jax import data
from stgcn_jax.data.formats import files, ntu as ntu_format

SHARED = conftest.SHARED / "data"
NTU_FILE = SHARED / "ntu_rgbd_raw_samples" / "S001C001P001R001A011.skeleton"
pytestmark = pytest.mark.skipif(not NTU_FILE.is_file(),
                                reason=f"reference data not found at {NTU_FILE} (../shared/data)")
BODY_ID = 72057594037931648           # the one body of S001C001P001R001A011


@contextlib.contextmanager
def _deadline(seconds: int):
  """Fails (instead of hanging the suite) when the block runs longer than ``seconds``."""
  def alarm(signum, frame):
    raise TimeoutError(f"still running after {seconds} s (hang?)")
  old = signal.signal(signal.SIGALRM, alarm)
  signal.alarm(seconds)
  try:
    yield
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _lines() -> list[bytes]:
  return NTU_FILE.read_bytes().split(b"\r\n")


def _write(path: Path, lines: list[bytes]) -> str:
  path.write_bytes(b"\r\n".join(lines))
  return str(path)


def _set_xyz(line: bytes, xyz) -> bytes:
  return b" ".join([x.encode() for x in xyz] + line.split()[3:])


def _messages(report) -> str:
  return "\n".join(report.messages)


# ------------------------------------------------------------------ sources: files, links, case
def test_sources_that_are_not_regular_files_and_bad_coordinates(tmp_path):
  """One conversion: a dangling link, a directory and a FIFO named *.skeleton are rejected and
  counted (no traceback, no hang); .SKELETON is accepted; 3e8 m and 1e39 are repaired; an all-zero
  sequence is rejected; the other files convert."""
  raw = NTU_FILE.read_bytes()
  lines = _lines()
  src = tmp_path / "src"
  src.mkdir()
  (src / "S001C001P001R001A011.skeleton").write_bytes(raw)
  (src / "S002C001P003R001A003.SKELETON").write_bytes(raw)                 # other case: accepted
  os.symlink(tmp_path / "nowhere", src / "S001C001P001R001A012.skeleton")  # dangling link
  (src / "S001C001P001R001A013.skeleton").mkdir()                          # directory
  os.mkfifo(src / "S001C001P001R001A014.skeleton")                         # FIFO: must not hang
  far = lines[:4] + [_set_xyz(lines[4], ["3e8", "0.2", "3.8"])] + lines[5:]
  _write(src / "S001C001P001R001A015.skeleton", far)
  huge = lines[:5] + [_set_xyz(lines[5], ["0.1", "1e39", "3.7"])] + lines[6:]
  _write(src / "S001C001P001R001A016.skeleton", huge)
  zero = [_set_xyz(x, ["0", "0", "0"]) if len(x.split()) == 12 else x for x in lines]
  _write(src / "S001C001P001R001A017.skeleton", zero)
  report = data.ConversionReport()
  out = tmp_path / "out"
  with _deadline(60):
    ntu.convert([str(src)], str(out), "ntu60", ["xsub"], report=report)
  text = _messages(report)
  assert (f"{src}/S001C001P001R001A012.skeleton: dangling symbolic link (its target "
          f"'{tmp_path / 'nowhere'}' does not exist)") in text
  assert f"{src}/S001C001P001R001A013.skeleton: is a directory, not a regular" in text
  assert f"{src}/S001C001P001R001A014.skeleton: is a FIFO (named pipe), not a regular" in text
  assert (f"{src}/S001C001P001R001A015.skeleton: 1 joint(s) with |value| > 100 coordinates set "
          "to 0 (first: person 0, frame 0, joint 0") in text
  assert f"{src}/S001C001P001R001A016.skeleton: 1 joint(s) with |value| > 100" in text
  assert f"{src}/S001C001P001R001A017.skeleton: all-zero sequence" in text
  assert report.reasons["rejected/not_a_file"] == 3 and report.reasons["rejected/all_zero"] == 1
  assert (report.kept, report.repaired, report.rejected) == (4, 2, 4)
  train = data.load("ntu60_xsub", str(out), split="train")
  test = data.load("ntu60_xsub", str(out), split="test")
  records = {r["frame_dir"]: r for r in [train[i] for i in range(len(train))] +
             [test[i] for i in range(len(test))]}
  assert set(records) == {"S001C001P001R001A011", "S002C001P003R001A003", "S001C001P001R001A015",
                          "S001C001P001R001A016"}
  for name, (t, v) in {"S001C001P001R001A015": (0, 0), "S001C001P001R001A016": (0, 1)}.items():
    kp = records[name]["keypoint"]
    assert np.isfinite(kp).all() and np.abs(kp).max() <= ntu_format.MAX_ABS_METRES
    assert np.all(kp[0, t, v] == 0) and np.all(kp[0, t, v + 1] != 0)


def test_unreadable_file_is_rejected_and_the_others_convert(tmp_path, monkeypatch):
  """A read error (as for a chmod 000 file) rejects that file only; simulated, so it also runs as
  root, where chmod does not deny reading."""
  src = tmp_path / "src"
  src.mkdir()
  for name in ("S001C001P001R001A011", "S001C001P001R001A012", "S002C001P003R001A003"):
    (src / f"{name}.skeleton").write_bytes(NTU_FILE.read_bytes())
  real_open = os.open

  def deny(path, *args, **kwargs):
    if str(path).endswith("A012.skeleton"):
      raise PermissionError(13, "Permission denied", str(path))
    return real_open(path, *args, **kwargs)
  monkeypatch.setattr(ntu.os, "open", deny)
  report = data.ConversionReport()
  ntu.convert([str(src)], str(tmp_path / "out"), "ntu60", ["xsub"], report=report)
  assert (f"{src}/S001C001P001R001A012.skeleton: cannot read it (Permission denied)"
          in _messages(report))
  assert report.reasons["rejected/unreadable"] == 1 and report.kept == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_chmod_000_file_is_rejected(tmp_path):
  path = tmp_path / "S001C001P001R001A011.skeleton"
  path.write_bytes(NTU_FILE.read_bytes())
  path.chmod(0)
  try:
    with pytest.raises(files.Unreadable, match=rf"^{path}: cannot read it \(Permission denied\)$"):
      ntu_format.to_record(str(path))
  finally:
    path.chmod(0o600)


def test_fifo_is_rejected_by_the_reader_without_blocking(tmp_path):
  fifo = tmp_path / "S001C001P001R001A011.skeleton"
  os.mkfifo(fifo)
  with _deadline(10), pytest.raises(files.Unreadable, match="is a FIFO"):
    ntu_format.read_skeleton(str(fifo))


def test_oversized_file_is_rejected(tmp_path, monkeypatch):
  monkeypatch.setattr(ntu_format, "MAX_FILE_BYTES", 1000)
  path = tmp_path / "S001C001P001R001A011.skeleton"
  path.write_bytes(NTU_FILE.read_bytes())
  with pytest.raises(files.Unreadable,
                     match=r"larger than the limit of 1000 bytes for a \.skeleton file"):
    ntu_format.to_record(str(path))


def test_lower_case_file_name_is_one_sample_name(tmp_path):
  path = tmp_path / "s001c001p001r001a011.Skeleton"
  path.write_bytes(NTU_FILE.read_bytes())
  record = ntu_format.to_record(str(path))
  assert record["frame_dir"] == "S001C001P001R001A011" and record["label"] == 10


# ------------------------------------------------------------------ counts and body IDs
@pytest.mark.parametrize("line,value,message", [
    (0, b"400000000", ":1: the frame count is 400000000, which needs at least 400000000 more lines "
                      "but the file has 2297: unexpected end of file (truncated?) or a corrupted "
                      "count"),
    (0, b"-5", ":1: the frame count is -5, expected 0 or more"),
    (1, b"-3", ":2: the body count of frame 0 is -3, expected 0 or more"),
    (1, b"1000000", ":2: the body count of frame 0 is 1000000, which needs at least 27000000 more"),
    (3, b"400000000", ":4: frame 0, body 0 has 400000000 joints, expected 25"),
    (0, b"9" * 5000, ":1: the frame count '99999"),
    (0, b"1_000", ":1: expected the frame count (one integer), got '1_000'"),
    (1, b"2.5", ":2: expected the body count of frame 0 (one integer), got '2.5'"),
])
def test_counts_are_bounded_by_the_file(tmp_path, line, value, message):
  lines = _lines()
  lines[line] = value
  path = _write(tmp_path / "S001C001P001R001A011.skeleton", lines)
  with _deadline(10), pytest.raises(data.DataError) as err:
    ntu_format.read_skeleton(path)
  assert str(err.value).startswith(path + message)


def test_same_body_id_twice_in_a_frame_is_rejected(tmp_path):
  lines = _lines()
  body = lines[2:29]                         # info line, joint count, 25 joints of frame 0
  lines = lines[:1] + [b"2"] + body + body + lines[29:]
  path = _write(tmp_path / "S001C001P001R001A011.skeleton", lines)
  with pytest.raises(data.DataError) as err:
    ntu_format.to_record(path)
  assert str(err.value) == (f"{path}:30: frame 0, body 1: bodyID {BODY_ID} appears twice in the "
                            "frame (first on line 3)")


def test_two_bodies_with_distinct_ids_still_convert(tmp_path):
  lines = _lines()
  body = lines[2:29]
  other = [b"17" + body[0][len(str(BODY_ID)):]] + [
      _set_xyz(x, ["0.5", "0.5", "3"]) if len(x.split()) == 12 else x for x in body[1:]]
  lines = lines[:1] + [b"2"] + body + other + lines[29:]
  record = ntu_format.to_record(_write(tmp_path / "S001C001P001R001A011.skeleton", lines))
  assert record["keypoint"].shape == (2, 82, 25, 3)
  assert np.all(record["keypoint"][1, 0] == [0.5, 0.5, 3]) and not record["keypoint"][1, 1:].any()


def test_coordinate_outliers_do_not_decide_which_bodies_are_kept(tmp_path):
  """A glitch of 1e39 in a still body must not make it the "most energetic" one."""
  lines = _lines()
  body = lines[2:29]
  still = [b"17" + body[0][len(str(BODY_ID)):]] + [
      _set_xyz(x, ["1e39" if v == 0 else "0.1", "0.1", "0.5"]) if len(x.split()) == 12 else x
      for v, x in enumerate(body[1:], -1)]
  lines = lines[:1] + [b"2"] + body + still + lines[29:]
  record = ntu_format.to_record(_write(tmp_path / "S001C001P001R001A011.skeleton", lines),
                                max_bodies=1)
  assert record["keypoint"][0, 0, 0, 0] == pytest.approx(0.2058097)


# ------------------------------------------------------------------ --missing
def test_binary_missing_list_gives_one_error_line(tmp_path, capsys):
  src = tmp_path / "src"
  src.mkdir()
  (src / NTU_FILE.name).write_bytes(NTU_FILE.read_bytes())
  binary = tmp_path / "missing.bin"
  binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
  rc = common.run_cli(ntu.main, ["--src", str(src), "--out", str(tmp_path / "out"),
                                 "--missing", str(binary)])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and len(err.splitlines()) == 1
  assert err.startswith(f"error: missing-skeleton list '{binary}' is not UTF-8 text")
  assert err.endswith("expected UTF-8 text with one NTU sample name SsssCcccPpppRrrrAaaa per line")
  assert not (tmp_path / "out").exists()


def test_missing_list_that_is_not_a_list_of_names(tmp_path):
  path = tmp_path / "missing.txt"
  path.write_text("# my list\nS001C002P005R002A008\ns001c002p006r001a008.skeleton\nhello world\n")
  with pytest.raises(data.DataError, match=rf"^missing-skeleton list {path}:4: 'hello world' is "
                                           "not a sample name; expected UTF-8 text"):
    ntu.read_missing_list(str(path))
  path.write_text("S001C002P005R002A008\ns001c002p006r001a008.skeleton\n")
  assert ntu.read_missing_list(str(path)) == {"S001C002P005R002A008", "S001C002P006R001A008"}


# ------------------------------------------------------------------ fuzz
_FIELD_VALUES = [b"400000000", b"-3", b"-1", b"0", b"2", b"26", b"nan", b"inf", b"-inf", b"1e39",
                 b"3e8", b"-1e308", b"abc", b"", b"0x10", b"1_000", b"9" * 5000, b"\x00",
                 b"\xff\xfe", "\u0663".encode(), b"1.5", b"--1", b"+7"]


def _mutate(rng: np.random.Generator, base: bytes) -> bytes:
  kind = rng.integers(10)
  if kind == 0:                                            # flip bytes
    out = bytearray(base)
    for i in rng.integers(0, len(out), rng.integers(1, 8)):
      out[i] ^= int(rng.integers(1, 256))
    return bytes(out)
  if kind == 1:                                            # insert random bytes
    i = int(rng.integers(0, len(base)))
    return base[:i] + rng.bytes(int(rng.integers(1, 16))) + base[i:]
  if kind == 2:                                            # delete a range
    i = int(rng.integers(0, len(base)))
    return base[:i] + base[i + int(rng.integers(1, 400)):]
  if kind == 3:                                            # truncate
    return base[:int(rng.integers(0, len(base)))]
  lines = base.split(b"\r\n")
  k = int(rng.integers(0, len(lines)))
  fields = lines[k].split(b" ")
  if kind in (4, 5, 6):                                    # replace one field
    fields[int(rng.integers(0, len(fields)))] = _FIELD_VALUES[rng.integers(len(_FIELD_VALUES))]
  elif kind == 7:                                          # drop / add a field
    if rng.integers(2):
      del fields[int(rng.integers(0, len(fields)))]
    else:
      fields.append(b"1")
  elif kind == 8:                                          # delete / duplicate a line
    lines[k:k + 1] = [] if rng.integers(2) else [lines[k], lines[k]]
    return b"\r\n".join(lines)
  else:                                                    # swap two lines
    j = int(rng.integers(0, len(lines)))
    lines[k], lines[j] = lines[j], lines[k]
    return b"\r\n".join(lines)
  lines[k] = b" ".join(fields)
  return b"\r\n".join(lines)


def test_fuzz_mutants_are_records_or_data_errors(tmp_path):
  lines = _lines()
  frames = 6                                                # a short real prefix keeps it fast
  base = b"\r\n".join([str(frames).encode()] + lines[1:1 + frames * 28] + [b""])
  assert ntu_format.to_record(_write(tmp_path / "S001C001P001R001A011.skeleton",
                                     base.split(b"\r\n")))
  rng = np.random.default_rng(20240611)
  path = tmp_path / "S001C001P001R001A011.skeleton"
  outcomes = {"record": 0, "repaired": 0, "all_zero": 0, "error": 0}
  with _deadline(60):
    for _ in range(1000):
      mutant = base
      for _ in range(int(rng.integers(1, 4))):               # one to three mutations stacked
        mutant = _mutate(rng, mutant) if mutant else mutant
      path.write_bytes(mutant)
      report = data.ConversionReport()
      try:
        record = ntu_format.to_record(str(path))
      except data.DataError as err:
        assert str(err).startswith(str(path)), err
        outcomes["error"] += 1
        continue
      kp = files.clean_keypoint(record["keypoint"], str(path), report,
                                max_abs=ntu_format.MAX_ABS_METRES)
      if kp is None:
        assert report.reasons["rejected/all_zero"] == 1
        outcomes["all_zero"] += 1
        continue
      outcomes["repaired" if report.repaired else "record"] += 1
      m, t, v, c = kp.shape
      assert 1 <= m <= 2 and 1 <= t == record["total_frames"] <= mutant.count(b"\n") + 1
      assert (v, c) == (25, 3) and record["label"] == 10
      kp32 = kp.astype(np.float32)
      assert np.isfinite(kp32).all() and kp32.any()
      assert np.abs(kp32).max() <= ntu_format.MAX_ABS_METRES
      data.check_record(dict(record, keypoint=kp32), num_joints=25, channels=3, num_classes=60,
                        where=str(path))
  assert outcomes["error"] > 300 and outcomes["record"] > 50 and outcomes["repaired"] > 5
