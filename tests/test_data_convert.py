"""Every real sample in ../shared/data converts, round-trips through the store, and matches the raw
files' hand-read values, labels and splits."""

import json
import pickle

import numpy as np
import pytest

import conftest

from stgcn_jax import data
from stgcn_jax.data.formats import ntu as ntu_format

SHARED = conftest.SHARED / "data"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(),
                                reason=f"reference data not found at {SHARED} (../shared/data)")
NW_UCLA = SHARED / "nw_ucla"
NTU = SHARED / "ntu_rgbd_raw_samples"
KINETICS = SHARED / "kinetics_skeleton_samples"
HRNET = SHARED / "pyskl_format_samples" / "custom_hrnet2d_16cls" / "ntu60_hrnet.pkl"
K400_META = SHARED / "pyskl_format_samples" / "mmaction2_k400_meta" / "sample.pkl"


def _by_name(source):
  return {source[i]["frame_dir"]: source[i] for i in range(len(source))}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
  return str(tmp_path_factory.mktemp("converted"))


@pytest.fixture(scope="module")
def nw_ucla(store):
  from data_prep import nw_ucla
  nw_ucla.convert(str(NW_UCLA), store)
  return store


def test_nw_ucla_splits_classes_and_layout(nw_ucla):
  info = data.info("nw_ucla", nw_ucla)
  assert info.splits == {"train": 1020, "test": 464}
  assert info.num_classes == 10 and info.class_names[0] == "pick up with one hand"
  assert info.layout.name == "nw-ucla" and info.num_joints == 20 and info.num_persons == 1
  assert info.metadata["conversion"] == {"kept": 1484, "repaired": 0, "rejected": 0, "reasons": {}}


def test_nw_ucla_test_split_is_ctrgcn_view3_list(nw_ucla):
  test = data.load("nw_ucla", nw_ucla, split="test")
  with open(NW_UCLA / "val_label.pkl", "rb") as f:
    expected = {d["file_name"]: d for d in pickle.load(f)}
  names = [test[i]["frame_dir"] for i in range(len(test))]
  assert set(names) == set(expected)
  counts = np.bincount([test[i]["label"] for i in range(len(test))], minlength=10)
  np.testing.assert_array_equal(counts, [48, 50, 45, 49, 47, 47, 43, 43, 47, 45])


def test_nw_ucla_train_label_counts(nw_ucla):
  train = data.load("nw_ucla", nw_ucla, split="train")
  counts = np.bincount([train[i]["label"] for i in range(len(train))], minlength=10)
  np.testing.assert_array_equal(counts, [102, 102, 96, 124, 101, 102, 99, 99, 98, 97])


def test_nw_ucla_values_match_the_raw_json(nw_ucla):
  record = _by_name(data.load("nw_ucla", nw_ucla, split="train"))["a01_s01_e00_v01"]
  np.testing.assert_allclose(record["keypoint"][0, 0, 0], [-0.619699, 0.328046, 3.18186], rtol=1e-6)
  with open(NW_UCLA / "all_sqe" / "a01_s01_e00_v01.json") as f:
    raw = json.load(f)
  assert record["keypoint"].shape == (1, len(raw["skeletons"]), 20, 3)
  np.testing.assert_allclose(record["keypoint"][0], raw["skeletons"], rtol=1e-6)
  assert record["label"] == raw["label"] - 1 == 0
  single = _by_name(data.load("nw_ucla", nw_ucla, split="test"))["a02_s09_e04_v03"]
  assert single["keypoint"].shape == (1, 1, 20, 3) and single["total_frames"] == 1


def test_nw_ucla_batches_for_training(nw_ucla):
  it = data.make_iterator("nw_ucla", nw_ucla, "train", 4, train=True, shard=(0, 1),
                          config=data.PipelineConfig(clip_len=52, num_person=1, rotate=0.1))
  batch = next(it)
  assert batch["x"].shape == (4, 1, 52, 20, 3) and np.isfinite(batch["x"]).all()


@pytest.fixture(scope="module")
def ntu(store):
  from data_prep import ntu
  ntu.convert([str(NTU)], store, "ntu60")
  return store


def test_ntu_xsub_and_xview_splits(ntu):
  xsub = {s: set(_by_name(data.load("ntu60_xsub", ntu, split=s))) for s in ("train", "test")}
  assert xsub["train"] == {"S001C001P001R001A011", "S001C003P008R002A058", "S003C001P015R001A034"}
  assert xsub["test"] == {"S002C001P003R001A003", "S004C002P003R001A017"}
  xview = {s: set(_by_name(data.load("ntu60_xview", ntu, split=s))) for s in ("train", "test")}
  assert xview["train"] == {"S001C003P008R002A058", "S004C002P003R001A017"}
  info = data.info("ntu60_xsub", ntu)
  assert info.num_classes == 60 and info.class_names[10] == "reading"


def test_ntu_values_labels_and_frame_counts(ntu):
  records = {**_by_name(data.load("ntu60_xview", ntu, split="train")),
             **_by_name(data.load("ntu60_xview", ntu, split="test"))}
  expected_frames = {"S001C001P001R001A011": 82, "S001C003P008R002A058": 70,
                     "S002C001P003R001A003": 100, "S003C001P015R001A034": 71,
                     "S004C002P003R001A017": 124}
  for name, frames in expected_frames.items():
    assert records[name]["total_frames"] == frames
    assert records[name]["label"] == int(name[-3:]) - 1
  one = records["S001C001P001R001A011"]["keypoint"]
  assert one.shape == (1, 82, 25, 3)
  np.testing.assert_allclose(one[0, 0, 0], [0.2058097, 0.1920515, 3.810989], rtol=1e-6)
  two = records["S001C003P008R002A058"]["keypoint"]
  assert two.shape == (2, 70, 25, 3)
  firsts = sorted(tuple(np.round(two[m, 0, 0], 5)) for m in range(2))
  assert firsts == sorted([(0.72018, 0.16474, 3.5619), (-0.3872, -0.05403, 2.9611)])


def test_ntu_lf_copy_parses_like_the_crlf_original(tmp_path):
  from data_prep import ntu
  raw = (NTU / "S001C001P001R001A011.skeleton").read_bytes()
  assert b"\r\n" in raw
  lf = tmp_path / "S001C001P001R001A011.skeleton"
  lf.write_bytes(raw.replace(b"\r\n", b"\n"))
  a, b = ntu_format.read_skeleton(str(NTU / lf.name)), ntu_format.read_skeleton(str(lf))
  assert a[0] == b[0] == 82 and list(a[1]) == list(b[1]) == [72057594037931648]
  np.testing.assert_array_equal(a[1][72057594037931648], b[1][72057594037931648])


@pytest.fixture(scope="module")
def kinetics(store):
  from data_prep import kinetics
  kinetics.convert(str(KINETICS), store)
  return store


def test_kinetics_labels_and_shapes(kinetics):
  info = data.info("kinetics_skeleton", kinetics)
  assert info.num_classes == 400 and info.class_names[0] == "abseiling"
  assert info.layout.name == "openpose" and info.channels == ("x", "y", "score")
  records = _by_name(data.load("kinetics_skeleton", kinetics, split="test"))
  assert len(records) == 7
  with open(KINETICS / "kinetics_val_label.json") as f:
    index = json.load(f)
  for name, record in records.items():
    assert record["label"] == index[name]["label_index"]
    assert record["keypoint"].shape[1:] == (record["total_frames"], 18, 3)
    assert record["keypoint"].shape[0] <= 2


def test_kinetics_values_match_the_raw_json(kinetics):
  record = _by_name(data.load("kinetics_skeleton", kinetics, split="test"))["__U_scuxNlQ"]
  assert record["total_frames"] == 299 and record["label"] == 58
  # Frame 1 has one person: pose (x0, y0, x1, y1) = .593 .424 .632 .546, scores .275 .676.
  np.testing.assert_allclose(record["keypoint"][0, 0, :2], [[0.593, 0.424, 0.275],
                                                             [0.632, 0.546, 0.676]], rtol=1e-6)
  assert np.all(record["keypoint"][1, 0] == 0)


def test_kinetics_keeps_the_two_best_scored_people_per_frame(kinetics):
  record = _by_name(data.load("kinetics_skeleton", kinetics, split="test"))["__PYrzYbzKE"]
  with open(KINETICS / "kinetics_val" / "__PYrzYbzKE.json") as f:
    frame = json.load(f)["data"][0]
  sums = sorted((sum(p["score"]) for p in frame["skeleton"][:5]), reverse=True)[:2]
  t = frame["frame_index"] - 1
  np.testing.assert_allclose(record["keypoint"][:, t, :, 2].sum(-1), sums, rtol=1e-5)


@pytest.fixture(scope="module")
def hrnet(store):
  from data_prep import pyskl
  pyskl.convert(str(HRNET), store, "hrnet16", "coco")
  return store


def test_pyskl_2d_splits_labels_and_score_channel(hrnet):
  with open(HRNET, "rb") as f:
    raw = pickle.load(f)
  info = data.info("hrnet16", hrnet)
  assert info.splits == {"xsub_train": 388, "xsub_test": 98}
  assert info.default_splits == {"train": "xsub_train", "test": "xsub_test"}
  assert info.num_classes == 16 and info.channels == ("x", "y", "score")
  test = _by_name(data.load("hrnet16", hrnet, split="test"))
  assert set(test) == set(raw["split"]["xsub_test"])
  ann = next(a for a in raw["annotations"] if a["frame_dir"] == raw["split"]["xsub_test"][0])
  record = test[ann["frame_dir"]]
  assert record["label"] == ann["label"] - 1
  np.testing.assert_array_equal(record["keypoint"][..., :2], ann["keypoint"].astype(np.float32))
  np.testing.assert_array_equal(record["keypoint"][..., 2], ann["keypoint_score"].astype(np.float32))
  np.testing.assert_array_equal(record["img_shape"], ann["img_shape"])


def test_pyskl_2d_pipeline_normalises_to_unit_range(hrnet):
  it = data.make_iterator("hrnet16", hrnet, "test", 8, train=False, shard=(0, 1),
                          config=data.PipelineConfig(clip_len=20, num_clips=2, test_mode=True))
  x = next(it)["x"]
  assert x.shape == (8, 2, 2, 20, 17, 3)
  assert np.abs(x[..., :2]).max() < 1.5


def test_pyskl_k400_metadata_pickle_is_refused_clearly(store):
  from data_prep import pyskl
  with pytest.raises(data.DataError, match="no annotation has a 'keypoint'.*kpfiles"):
    pyskl.convert(str(K400_META), store, "k400meta", "coco")
  assert not data.exists("k400meta", store)
