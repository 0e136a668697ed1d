"""pyskl annotation fuzz: seeded field and byte mutations of a real pickle give records or one
DataError naming the file, never a traceback or garbage in silence."""

import copy
import pickle

import numpy as np

from stgcn_jax import data
from stgcn_jax.data.formats import pyskl as pyskl_format
from test_bad_input_pyskl import (COCO, _collect, _dataset, _one_per_class, _write,  # noqa: F401
                                  pytestmark, raw)


def _check_result(result, num_classes):
  splits, kind, classes = result
  assert kind in ("2d", "2d+score", "3d") and 1 <= classes
  if num_classes is not None:
    assert classes == num_classes
  channels = {"2d": 2, "2d+score": 3, "3d": 3}[kind]
  for split, records in splits.items():
    assert records, split
    for r in records:
      data.check_record(r, num_joints=17, channels=channels, num_classes=classes,
                        where=f"{split}/{r['frame_dir']}")
      assert r["keypoint"].dtype == np.float32 and np.isfinite(r["keypoint"]).all()
      assert r["keypoint"].any() and 0 <= r["label"] < classes


_BAD_VALUES = [None, "x", b"\x00", -1, 0, 2 ** 70, -(2 ** 63), 1e300, float("nan"), float("inf"),
               True, [], {}, [1, 2], (1.5, 2.5), np.float32(3), np.array([1.0]),
               np.array("s"), np.zeros((0, 17, 2)), np.ones((2, 2, 17, 2), np.int8)]


def _mutate_field(rng, obj):
  """One random field-level mutation of the annotation dict ``obj`` (in place)."""
  anns = obj["annotations"]
  ann = anns[rng.integers(len(anns))]
  what = rng.integers(9)
  if what == 0:                                     # replace or drop any field
    key = list(ann)[rng.integers(len(ann))]
    if rng.random() < 0.3:
      del ann[key]
    else:
      ann[key] = _BAD_VALUES[rng.integers(len(_BAD_VALUES))]
  elif what == 1:                                   # keypoint dtype
    dtype = [np.float16, np.float64, np.int32, np.uint8, np.complex64, object, str, bool,
             np.int64][rng.integers(9)]
    ann["keypoint"] = np.asarray(ann["keypoint"]).astype(dtype)
  elif what == 2:                                   # keypoint shape
    kp = np.asarray(ann["keypoint"])
    ann["keypoint"] = [kp.transpose(1, 0, 2, 3), kp[None], kp[..., :1], kp[:, :, :5], kp[0],
                       kp[:, :0], np.concatenate([kp] * 12), kp.reshape(-1)][rng.integers(8)]
  elif what == 3:                                   # keypoint values
    kp = np.array(ann["keypoint"], np.float64)
    idx = tuple(rng.integers(s) for s in kp.shape)
    kp[idx] = [np.nan, np.inf, -1e30, 1e7, 0.0, -5.0][rng.integers(6)]
    if rng.random() < 0.2:
      kp[:] = 0
    ann["keypoint"] = kp
  elif what == 4:                                   # label
    ann["label"] = [-1, 0, 17, 99, 2 ** 40, 1.0, "3", None, np.int64(4)][rng.integers(9)]
  elif what == 5:                                   # frame_dir
    ann["frame_dir"] = [anns[0]["frame_dir"], "", 5, None, "\udc80", "a" * 300][rng.integers(6)]
  elif what == 6:                                   # split
    split = obj["split"]
    if isinstance(split, dict) and split:
      key = list(split)[rng.integers(len(split))]
      split[key] = [[], "abc", None, [1, 2], split[key] * 2, {"a": 1},
                    [anns[0]["frame_dir"]]][rng.integers(7)]
    if rng.random() < 0.2:
      obj["split"] = [{}, None, "train", {"all": []}, {1: []}][rng.integers(5)]
  elif what == 7:                                   # keypoint_score
    score = ann.get("keypoint_score")
    score = score if isinstance(score, np.ndarray) and score.ndim == 3 else np.ones((1, 4, 17))
    ann["keypoint_score"] = [score[..., :3], score.astype(object), np.full_like(score, np.nan),
                             score.tolist(), None][rng.integers(5)]
  else:                                             # img_shape / total_frames
    key = ["img_shape", "total_frames"][rng.integers(2)]
    ann[key] = _BAD_VALUES[rng.integers(len(_BAD_VALUES))]


def test_fuzz_field_and_byte_mutations_give_records_or_data_errors(tmp_path, raw):
  from data_prep import pyskl
  base = _dataset(_one_per_class(raw, 6))
  rng = np.random.default_rng(20240611)
  outcomes = {"ok": 0, "error": 0}
  for n in range(250):
    obj = copy.deepcopy(base)
    for _ in range(rng.integers(1, 4)):
      _mutate_field(rng, obj)
    path = _write(tmp_path, obj, "field.pkl")
    num_classes = [None, 6, 16][n % 3]
    try:
      result, _ = _collect(path, num_classes=num_classes)
    except data.DataError as err:
      assert str(path) in str(err) or "label base" in str(err), err
      outcomes["error"] += 1
      continue
    _check_result(result, num_classes)
    outcomes["ok"] += 1
  assert outcomes["ok"] > 50 and outcomes["error"] > 50, outcomes
  outcomes = {"ok": 0, "error": 0}
  raw_bytes = pickle.dumps(base, protocol=4)
  for n in range(250):
    mutant = bytearray(raw_bytes)
    for _ in range(rng.integers(1, 6)):
      op, at = rng.integers(4), int(rng.integers(len(mutant)))
      if op == 0:
        mutant[at] ^= 1 << int(rng.integers(8))
      elif op == 1:
        mutant[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
      elif op == 2:
        del mutant[at:at + int(rng.integers(1, 9))]
      else:
        mutant[at] = int(rng.integers(256))
    if rng.random() < 0.1:
      mutant = mutant[:int(rng.integers(len(mutant)))]
    path = tmp_path / "bytes.pkl"
    path.write_bytes(bytes(mutant))
    try:
      obj = pyskl_format.read_pickle(str(path))
      result = pyskl.parse(obj, str(path), COCO, "auto", 16, data.ConversionReport())
    except data.DataError:
      outcomes["error"] += 1
      continue
    _check_result(result, 16)
    outcomes["ok"] += 1
  assert outcomes["ok"] > 10 and outcomes["error"] > 100, outcomes
