"""Bad input to prediction: raw files and ``--stream`` lines get the converters' rules.

Repairs are never silent (a warning names the file and the number of joints); a stream frame with
a bad joint is repaired, not dropped; a value beyond the format's range is missing like a NaN; a
line that is not a frame is one warning and the stream goes on; a pyskl pickle that would expand
(shared references) is refused before it is materialised; Kinetics' upper-case ``.JSON`` and
negative scores follow the converter. Ends with a seeded fuzz test of stream lines.
"""

import io
import json
import pickle
import time

import numpy as np
import pytest

from conftest import shared_path
from experiments import predict as predict_cli
from stgcn_jax import checkpoint, data, graph
from stgcn_jax.inference import frames, raw_input, sources, stream

from test_bad_input_model import OPTIONS, _random_variables

PIPELINE = dict(clip_len=16, num_clips=1, modality="j", normalize="auto", align_spine=False,
                num_person=2)
NTU_FILE = "S001C001P001R001A011.skeleton"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("models")
  for name, layout, classes in (("ntu", "nturgb+d", 6), ("coco", "coco", 5),
                                ("kinetics", "openpose", 5)):
    spec = checkpoint.model_spec_json("stgcn", classes, layout, 3, dict(OPTIONS, num_person=2),
                                      pipeline=PIPELINE)
    variables = _random_variables(checkpoint.build_model(spec), seed=len(name))
    checkpoint.save_model(str(root / name), spec, variables)
  return root


# --------------------------------------------------------------------- files
def test_repaired_joints_are_a_warning_naming_the_file_and_count(models_dir, tmp_path, capsys):
  lines = shared_path("data", "ntu_rgbd_raw_samples", NTU_FILE).read_text().splitlines()
  joint_lines = [i for i, line in enumerate(lines) if len(line.split()) == 12]
  bad_values = ["nan", "inf", "-inf", "1e5", "3e38"]
  for k, i in enumerate(joint_lines[::2]):                # 1,025 of the 2,050 joints
    lines[i] = " ".join([bad_values[k % 5]] + lines[i].split()[1:])
  src = tmp_path / NTU_FILE
  src.write_text("\n".join(lines) + "\n")
  assert predict_cli.main([f"--model={models_dir / 'ntu'}", f"--src={src}", "--top_k=2"]) == 0
  warnings = [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning:")]
  assert len(warnings) == 1 and warnings[0].startswith(f"warning: {src}: 1025 joint(s) with ")
  samples, _ = raw_input.read_samples(str(src), layout=sources.load_predictor(
      str(models_dir / "ntu")).layout)
  assert samples[0].warnings == [warnings[0][len("warning: "):]]
  assert np.isfinite(samples[0].record["keypoint"]).all()
  assert np.abs(samples[0].record["keypoint"]).max() <= 100


def _bomb(path, persons=2, frames=30_000, annotations=3_000):
  """A ~125 kB pickle whose shared lists expand to 9.2e9 numbers (2 x 30,000 x 17 x 3 each)."""
  person = [[[0.1, 0.2, 0.3]] * 17] * frames
  anns = [{"frame_dir": f"s{i}", "label": 0, "keypoint": [person] * persons}
          for i in range(annotations)]
  path.write_bytes(pickle.dumps({"annotations": anns}, protocol=4))


def test_a_pickle_of_shared_references_is_refused_before_it_expands(models_dir, tmp_path,
                                                                     capsys):
  from data_prep import pyskl  # pylint: disable=import-outside-toplevel
  path = tmp_path / "bomb.pkl"
  _bomb(path)
  start = time.perf_counter()
  status = predict_cli.main([f"--model={models_dir / 'coco'}", f"--src={path}"])
  err = capsys.readouterr().err
  assert status == 2 and err.count("\n") == 1 and err.startswith(f"error: {path}: annotation 0 ")
  assert "would hold 3,060,001 keypoint numbers" in err and "pickle bomb" in err
  with pytest.raises(data.DataError, match="pickle bomb"):
    pyskl.collect(str(path), graph.get_layout("coco"), "auto", None, data.ConversionReport())
  assert time.perf_counter() - start < 20


def test_a_real_pickle_is_within_the_bound(models_dir):
  hrnet = shared_path("data", "pyskl_format_samples", "custom_hrnet2d_16cls", "ntu60_hrnet.pkl")
  samples, bad = raw_input.read_samples(str(hrnet), layout=sources.load_predictor(
      str(models_dir / "coco")).layout, pyskl_layout="coco")
  assert len(samples) == 486 and not bad


def _kinetics_video(tmp_path, name):
  src = shared_path("data", "kinetics_skeleton_samples", "kinetics_val", "__U_scuxNlQ.json")
  video = json.loads(src.read_text())
  video["data"][2]["skeleton"][0]["score"][4] = -0.5          # frame_index 3, joint 4
  path = tmp_path / name
  path.write_text(json.dumps(video))
  return path, video


def test_kinetics_upper_case_json_and_negative_scores_agree_with_the_converter(
    models_dir, tmp_path):
  from data_prep import kinetics  # pylint: disable=import-outside-toplevel
  folder = tmp_path / "src" / "kinetics_val"
  folder.mkdir(parents=True)
  path, video = _kinetics_video(folder, "VIDEO.JSON")
  (tmp_path / "src" / "kinetics_val_label.json").write_text(json.dumps(
      {"VIDEO": {"has_skeleton": True, "label": video["label"],
                 "label_index": video["label_index"]}}))
  report = data.ConversionReport()
  splits, _ = kinetics.collect(str(tmp_path / "src"), report, None)
  assert [r["frame_dir"] for r in splits["val"]] == ["VIDEO"]          # .JSON is read
  assert report.reasons["repaired/negative_score"] == 1
  samples, bad = raw_input.read_samples(str(folder), layout=sources.load_predictor(
      str(models_dir / "kinetics")).layout)
  assert not bad and [s.name for s in samples] == ["VIDEO"]
  np.testing.assert_array_equal(samples[0].record["keypoint"],
                                splits["val"][0]["keypoint"].astype(np.float32))
  assert samples[0].record["keypoint"].min() >= 0                    # the joint became 0
  message = f"{path}: 1 joint(s) with a negative score set to 0, missing (first: person 0, " \
            "frame 2, joint 4: score -0.5)"
  assert samples[0].warnings == [message]


# --------------------------------------------------------------------- stream
def _frame_lines(n, v=25, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(v, 3)).round(4).tolist() for _ in range(n)]


def _stream(predictor, lines, **kwargs):
  out, err = io.StringIO(), io.StringIO()
  n = stream.stream(predictor, lines, out, err, window=16, hop=4, k=3, **kwargs)
  return n, [json.loads(l) for l in out.getvalue().splitlines()], err.getvalue().splitlines()


def test_stream_repairs_frames_with_a_nan_joint_instead_of_dropping_them(models_dir):
  predictor = sources.load_predictor(str(models_dir / "ntu"))
  good = _frame_lines(40)
  with_nan = json.loads(json.dumps(good))
  for f in with_nan:
    f[3][0] = float("nan")
  zeroed = json.loads(json.dumps(good))
  for f in zeroed:
    f[3] = [0.0, 0.0, 0.0]
  n, rows, warnings = _stream(predictor, [json.dumps(f) for f in with_nan])
  assert n == 7 and len(rows) == 7
  assert warnings[0].startswith("warning: stdin line 1: repaired: 1 joint(s) with a value that is "
                                "NaN, infinite or beyond +-100 set to 0 (first: person 0, joint 3: "
                                "[    nan ")
  assert len(warnings) == 11 and "repaired on 40 lines in all" in warnings[-1]
  _, expected, _ = _stream(predictor, [json.dumps(f) for f in zeroed])
  assert [r["probs"] for r in rows] == [r["probs"] for r in expected]


def test_stream_value_beyond_the_range_is_missing_like_nan(models_dir):
  predictor = sources.load_predictor(str(models_dir / "ntu"))
  good = _frame_lines(20, seed=1)
  huge, zeroed = json.loads(json.dumps(good)), json.loads(json.dumps(good))
  for a, b in zip(huge, zeroed):
    a[7] = [3e38, 1.0, 2.0]                               # finite, within float32
    b[7] = [0.0, 0.0, 0.0]
  _, rows, warnings = _stream(predictor, [json.dumps(f) for f in huge])
  _, expected, _ = _stream(predictor, [json.dumps(f) for f in zeroed])
  assert rows and [r["classes"] for r in rows] == [r["classes"] for r in expected]
  assert [r["probs"] for r in rows] == [r["probs"] for r in expected]
  assert "joint 7: [3.e+38 1.e+00 2.e+00]" in warnings[0]


def test_stream_line_of_nested_brackets_is_skipped_and_the_stream_goes_on(models_dir):
  predictor = sources.load_predictor(str(models_dir / "ntu"))
  lines = [json.dumps(f) for f in _frame_lines(20, seed=2)]
  lines.insert(3, "[" * 100_000 + "]" * 100_000)
  lines.insert(5, '{"a": ' * 100_000)
  n, rows, warnings = _stream(predictor, lines)
  assert n == 2 and [r["frame"] for r in rows] == [15, 19]
  assert warnings == [
      "warning: stdin line 4: skipped: JSON nested too deeply; expected persons x joints x values",
      "warning: stdin line 6: skipped: JSON nested too deeply; expected persons x joints x values"]


@pytest.mark.parametrize("line,joints,message", [
    ('[[["1", 2, 3]]]', 1, 'person 0, joint 0, value 0: "1" is not a number'),
    ("[[[1, 2, true]]]", 1, "person 0, joint 0, value 2: true is not a number"),
    ("[[[1, 2, null]], [[1, 2, 3]]]", 1, "person 0, joint 0, value 2: null is not a number"),
    ("[[1, 2, 3]]", 25, "person 0: expected 25 joints of 3 numbers, got 1 joints"),
    ("[[[1, 2]]]", 1, "person 0, joint 0: expected 3 numbers, got [1, 2]"),
    ("{}", 25, "expected a list of persons (each 25 joints x 3 numbers), got {}"),
    ("[[1, 2, 3", 25, "not valid JSON"),
])
def test_parse_frame_names_what_is_wrong(line, joints, message):
  with pytest.raises(ValueError) as err:
    frames.parse_frame(line, joints, 3)
  assert message in str(err.value)


def test_parse_frame_repairs_by_the_coordinate_rule():
  joint = lambda x: [x, 0.5, 0.5]
  line = json.dumps([[joint(0.1)] * 16 + [joint(2e2), joint(-1e39), [1, 2, -0.5]]])
  frame, message = frames.parse_frame(line, 19, 3, max_abs=100.0, has_score=True)
  assert frame.shape == (1, 19, 3) and (frame[0, 16:] == 0).all() and (frame[0, :16] != 0).all()
  assert message.startswith("2 joint(s) with a value that is NaN, infinite or beyond +-100 and 1 "
                            "joint(s) with a negative score set to 0")
  big_int = "[[[" + "9" * 400 + ", 1, 1]]]"
  frame, message = frames.parse_frame(big_int, 1, 3)
  assert (frame == 0).all() and "1 joint(s)" in message
  assert frames.coordinate_bound("nturgb+d", ("x", "y", "z")) == 100
  assert frames.coordinate_bound("coco", ("x", "y", "score"), (1080, 1920)) == 19200
  assert frames.coordinate_bound("openpose", ("x", "y", "score"), (1, 1)) == 100
  assert frames.coordinate_bound("coco", ("x", "y", "score")) == 1e6


@pytest.mark.parametrize("flags,message", [
    (["--stream", "--window=1000000000"], "--window and --hop must be in 1..100000"),
    (["--stream", "--hop=-3"], "--window and --hop must be in 1..100000"),
    (["--src=x.json", "--num_clips=1000000000"], "--num_clips must be in 0..1000"),
])
def test_sizes_on_the_command_line_are_bounded(models_dir, capsys, flags, message):
  assert predict_cli.main([f"--model={models_dir / 'ntu'}", *flags]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


# --------------------------------------------------------------------- fuzz
_BAD_ITEMS = [None, "x", "1.5", True, False, [], {}, [1], [[1, 2, 3]], 1e400, -1e39, 3e38, 2 ** 80,
              -(2 ** 1100), float("nan"), 0, -0.5, 1e-320]


def _mutate_line(rng, frame) -> str:
  """One random mutation of a frame (persons x V x C): structure, values or the text."""
  what = rng.integers(5)
  if what == 0:                                   # a value replaced
    p = rng.integers(len(frame))
    v = rng.integers(len(frame[p]))
    frame[p][v][rng.integers(3)] = _BAD_ITEMS[rng.integers(len(_BAD_ITEMS))]
  elif what == 1:                                 # a joint or person replaced, dropped or added
    p = rng.integers(len(frame))
    target = frame if rng.random() < 0.3 else frame[p]
    k = rng.integers(len(target))
    op = rng.integers(3)
    if op == 0:
      target[k] = _BAD_ITEMS[rng.integers(len(_BAD_ITEMS))]
    elif op == 1:
      del target[k]
    else:
      target.append(target[k])
  elif what == 2:                                 # one person unwrapped, or the frame wrapped
    frame = frame[0] if rng.random() < 0.5 else [frame] * int(rng.integers(1, 3))
  text = json.dumps(frame)
  if what >= 3:                                   # the text itself
    data = bytearray(text.encode())
    for _ in range(rng.integers(1, 5)):
      at = int(rng.integers(len(data)))
      if rng.random() < 0.5:
        data[at:at] = bytes(rng.choice(list(b"[]{},.-e0123456789 \"nN"), int(rng.integers(1, 6))))
      else:
        del data[at:at + int(rng.integers(1, 8))]
    text = data.decode("utf-8", "replace")
  if rng.random() < 0.03:
    text = "[" * int(rng.integers(1, 200_000)) + text
  return text


def test_fuzz_stream_lines_give_frames_or_one_warning(models_dir):
  rng = np.random.default_rng(20240624)
  base = _frame_lines(4, seed=3)
  start = time.perf_counter()
  lines, outcomes = [], {"ok": 0, "error": 0}
  for n in range(3000):
    frame = [json.loads(json.dumps(f)) for f in base[:1 + n % 2]]
    line = _mutate_line(rng, frame)
    lines.append(line)
    try:
      parsed, _ = frames.parse_frame(line, 25, 3, max_abs=100.0)
    except ValueError as err:
      assert "\n" not in str(err)
      outcomes["error"] += 1
      continue
    assert parsed.ndim == 3 and parsed.shape[1:] == (25, 3)
    assert np.isfinite(parsed).all() and np.abs(parsed).max(initial=0) <= 100
    outcomes["ok"] += 1
  assert outcomes["ok"] > 300 and outcomes["error"] > 1000, outcomes
  predictor = sources.load_predictor(str(models_dir / "ntu"))
  n, rows, warnings = _stream(predictor, lines[:400], warmup=False)
  assert n == len(rows) and all(w.startswith("warning: ") for w in warnings)
  assert time.perf_counter() - start < 30
