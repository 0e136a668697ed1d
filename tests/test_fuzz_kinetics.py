"""Kinetics-skeleton fuzz: seeded mutations of a real video JSON and of a label index never give
anything but a valid record or a DataError (one line naming the file)."""

import copy
import json

import numpy as np

from data_prep import kinetics
from stgcn_jax import data
from stgcn_jax.data.formats import kinetics as kinetics_format
from test_bad_input_kinetics import SMALL, _deadline, _sample, real_index  # noqa: F401 (fixture)


_NUMBERS = [10**400, -(10**30), 100_000_000, -5, 0, 1e308, -1e-300, float("nan"), float("inf"),
            1.5, 0.0]
_OTHERS = ["0.5", "", None, True, False, [], {}, [0.5] * 36, {"pose": [1]}, [[1, 2]], "frame_index"]


def _nodes(obj, out, parent=None, key=None):
  out.append((parent, key, obj))
  if isinstance(obj, dict):
    for k, v in obj.items():
      _nodes(v, out, obj, k)
  elif isinstance(obj, list):
    for k, v in enumerate(obj):
      _nodes(v, out, obj, k)
  return out


def _field_mutant(base, rng):
  """A copy of ``base`` with 1-3 fields replaced by a bad number or value, dropped or duplicated,
  or (sometimes) every pose set to 0."""
  obj = copy.deepcopy(base)
  if rng.random() < 0.05 and isinstance(obj.get("data"), list):
    for frame in obj["data"]:
      for person in frame["skeleton"]:
        person["pose"] = [0] * len(person["pose"])
  for _ in range(rng.integers(1, 4)):
    nodes = _nodes(obj, [])[1:]
    containers = [n for n in nodes if isinstance(n[2], (dict, list))]
    pool = containers if containers and rng.random() < 0.3 else nodes
    parent, key, _ = pool[rng.integers(len(pool))]
    action = rng.random()
    if action < 0.45:
      parent[key] = _NUMBERS[rng.integers(len(_NUMBERS))]
    elif action < 0.75:
      parent[key] = copy.deepcopy(_OTHERS[rng.integers(len(_OTHERS))])
    elif action < 0.88:
      del parent[key]
    elif isinstance(parent, list):
      parent.insert(int(key), copy.deepcopy(parent[key]))
    else:
      parent[f"{key}_"] = parent[key]
  return json.dumps(obj).encode()


def _byte_mutant(raw: bytes, rng) -> bytes:
  buf = bytearray(raw)
  for _ in range(rng.integers(1, 6)):
    kind, at = rng.integers(4), int(rng.integers(len(buf) + 1))
    if kind == 0 and at < len(buf):
      buf[at] ^= 1 << int(rng.integers(8))
    elif kind == 1:
      buf[at:at] = bytes(int(b) for b in rng.choice(list(b'0123456789-.e"[]{},: \xff'),
                                                    rng.integers(1, 4)))
    elif kind == 2:
      del buf[at:at + int(rng.integers(1, 40))]
    else:
      del buf[at:]
  return bytes(buf)


def _mutants(raw: bytes, rng, count: int):
  base = json.loads(raw)
  for k in range(count):
    yield _byte_mutant(raw, rng) if k % 2 else _field_mutant(base, rng)


def test_fuzz_video_json_gives_a_valid_record_or_a_data_error(tmp_path):
  raw = _sample("kinetics_val", f"{SMALL}.json").read_bytes()
  rng = np.random.default_rng(20240611)
  path, outcomes = tmp_path / "mutant.json", {"error": 0, "rejected": 0, "kept": 0}
  with _deadline(30):
    for mutant in _mutants(raw, rng, 400):
      path.write_bytes(mutant)
      report = data.ConversionReport()
      try:
        kp, label_index, label = kinetics_format.parse_video(str(path), report)
      except data.DataError as err:
        assert str(err).startswith(str(path)), err
        outcomes["error"] += 1
        continue
      assert label_index is None or type(label_index) is int
      assert label is None or isinstance(label, str)
      if kp is None:
        assert report.reasons["rejected/all_zero"] == 1
        outcomes["rejected"] += 1
        continue
      assert kp.dtype == np.float64 and kp.shape[0] in (1, 2) and kp.shape[2:] == (18, 3)
      assert 1 <= kp.shape[1] <= kinetics_format.MAX_FRAME_INDEX
      assert np.all(np.abs(kp) <= kinetics_format.MAX_ABS)
      missing = (kp[..., 0] == 0) & (kp[..., 1] == 0)
      assert not kp[..., 2][missing].any()
      record = data.check_record(
          {"keypoint": kp, "label": 0, "frame_dir": "m", "total_frames": kp.shape[1]},
          num_joints=18, channels=3, num_classes=1, where="mutant")
      assert np.isfinite(record["keypoint"]).all() and record["keypoint"].any()
      outcomes["kept"] += 1
  assert all(outcomes.values()), outcomes     # every kind of outcome is exercised


def test_fuzz_label_index_gives_well_formed_entries_or_a_data_error(tmp_path, real_index):
  names = sorted(n.stem for n in _sample("kinetics_val").glob("*.json"))
  names += list(real_index)[:25]
  raw = json.dumps({n: real_index[n] for n in names}, indent=4).encode()
  rng = np.random.default_rng(7)
  path, outcomes = tmp_path / "kinetics_val_label.json", {"error": 0, "partial": 0, "ok": 0}
  with _deadline(20):
    for mutant in _mutants(raw, rng, 300):
      path.write_bytes(mutant)
      try:
        index = kinetics.load_label_index(str(path))
      except data.DataError as err:
        assert str(err).startswith(str(path)), err
        outcomes["error"] += 1
        continue
      assert index.entries
      for vid, entry in index.entries.items():
        assert type(entry["label_index"]) is int and isinstance(entry["has_skeleton"], bool)
        assert entry["label"] is None or isinstance(entry["label"], str)
      for vid, problem in index.problems.items():
        assert problem.startswith(f"{path}: entry ") and vid not in index.entries
      try:
        assert 1 <= kinetics.count_classes([index], None) <= kinetics.MAX_CLASSES
      except data.DataError as err:
        assert str(err).startswith(f"{path}: "), err
      outcomes["partial" if index.problems else "ok"] += 1
  assert all(outcomes.values()), outcomes
