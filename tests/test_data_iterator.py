"""The store round trip, the synthetic dataset, the pipeline and the batch iterator's invariants."""

import json
import math

import numpy as np
import pytest

from stgcn_jax import data


class _ListSource:
  """An in-memory source: record i has label i % 3 and a clip whose values encode i."""

  def __init__(self, n, frames=12):
    self.records = [{"keypoint": np.full((1, frames, 4, 3), i, np.float32), "label": i % 3}
                    for i in range(n)]

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    return self.records[i]


def _first_frame(record, rng):
  """A pipeline stand-in: (1, 1, T, V, C) with a random frame offset, so augmentation is visible."""
  shift = rng.randint(0, 3)
  return record["keypoint"][None, :, shift:shift + 8] + shift * 1000


_first_frame.output_shape = lambda: (1, 1, 8, 4, 3)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("store"))
  data.build_synthetic(root, num_train=60, num_test=21, num_classes=4, min_frames=20,
                       max_frames=30, two_person_prob=0.5, seed=3)
  return root


def test_synthetic_round_trips_through_the_store(store):
  info = data.info("synthetic", store)
  assert info.splits == {"train": 60, "test": 21}
  assert info.num_classes == 4 and info.layout.name == "nturgb+d"
  assert info.channels == ("x", "y", "z") and info.num_persons == 2
  expected, _ = data.generate_synthetic(num_train=60, num_test=21, num_classes=4, min_frames=20,
                                        max_frames=30, two_person_prob=0.5, seed=3)
  by_name = {r["frame_dir"]: r for r in expected["test"]}
  src = data.load("synthetic", store, split="test")
  assert len(src) == 21
  for i in range(len(src)):
    record = src[i]
    want = by_name[record["frame_dir"]]
    assert record["label"] == want["label"] and record["total_frames"] == want["total_frames"]
    np.testing.assert_array_equal(record["keypoint"], want["keypoint"])


def test_synthetic_is_deterministic_and_seed_dependent():
  a, _ = data.generate_synthetic(num_train=5, num_test=2, seed=1)
  b, _ = data.generate_synthetic(num_train=5, num_test=2, seed=1)
  c, _ = data.generate_synthetic(num_train=5, num_test=2, seed=2)
  np.testing.assert_array_equal(a["train"][4]["keypoint"], b["train"][4]["keypoint"])
  assert not np.array_equal(a["train"][0]["keypoint"][0, :5], c["train"][0]["keypoint"][0, :5])


def test_ensure_synthetic_reuses_an_existing_store(store):
  assert data.ensure_synthetic(store) == data.dataset_dir("synthetic", store)


def test_load_unknown_dataset_and_split_give_clear_errors(store):
  with pytest.raises(data.DataError, match="not found.*synthetic"):
    data.load("nope", store)
  with pytest.raises(data.DataError, match="no split 'dev'"):
    data.load("synthetic", store, split="dev")


def test_pipeline_gives_pyskl_shapes(store):
  info = data.info("synthetic", store)
  src = data.load("synthetic", store, split="test")
  test_pipe = data.Pipeline(data.PipelineConfig(clip_len=16, num_clips=10, test_mode=True,
                                                modality="j,b"), info)
  clip = test_pipe(src[0])
  assert clip.shape == (10, 2, 16, 25, 6) and clip.dtype == np.float32
  np.testing.assert_array_equal(clip, test_pipe(src[0]))


def test_train_batches_shapes_and_epoch_coverage():
  it = data.BatchIterator(_ListSource(10), _first_frame, 3, train=True, seed=0, shard=(0, 1))
  batches = [next(it) for _ in range(it.steps_per_epoch)]
  assert batches[0]["x"].shape == (3, 1, 8, 4, 3) and batches[0]["label"].dtype == np.int32
  seen = np.concatenate([b["index"] for b in batches])
  assert len(seen) == 9 and len(set(seen.tolist())) == 9
  np.testing.assert_array_equal(batches[0]["label"], batches[0]["index"] % 3)
  assert it.get_state()["epoch"] == 1


def test_shuffling_differs_per_epoch_and_repeats_per_seed():
  def order(seed, epochs=2):
    it = data.BatchIterator(_ListSource(12), _first_frame, 4, train=True, seed=seed, shard=(0, 1))
    return [np.concatenate([next(it)["index"] for _ in range(3)]) for _ in range(epochs)]
  a, b = order(0), order(0)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], a[1])
  assert not np.array_equal(a[0], order(1)[0])


def test_shards_are_disjoint_and_equal_sized():
  parts = []
  for p in range(3):
    it = data.BatchIterator(_ListSource(20), _first_frame, 2, train=True, seed=5, shard=(p, 3))
    assert it.steps_per_epoch == 3
    parts.append(np.concatenate([next(it)["index"] for _ in range(3)]))
  assert len(set(np.concatenate(parts).tolist())) == 18


@pytest.mark.parametrize("train", [True, False])
def test_processes_take_contiguous_blocks_of_the_one_process_global_batch(train):
  # n processes of batch B read, batch for batch, what one process of batch B * n reads.
  one = data.BatchIterator(_ListSource(23), _first_frame, 6, train=train, seed=4, shard=(0, 1),
                           prefetch=False, num_epochs=2)
  parts = [data.BatchIterator(_ListSource(23), _first_frame, 2, train=train, seed=4, shard=(p, 3),
                              prefetch=False, num_epochs=2) for p in range(3)]
  assert len(one) == len(parts[0])
  for whole, *blocks in zip(one, *parts):
    for key in whole:
      np.testing.assert_array_equal(whole[key], np.concatenate([b[key] for b in blocks]))


def test_every_process_resumes_from_the_position_process_zero_saved():
  its = [data.BatchIterator(_ListSource(20), _first_frame, 2, train=True, seed=5, shard=(p, 2),
                            prefetch=False) for p in range(2)]
  for _ in range(7):
    for it in its:
      next(it)
  state = json.loads(json.dumps(its[0].get_state()))
  expected = [next(it) for it in its]
  for p in range(2):
    resumed = data.BatchIterator(_ListSource(20), _first_frame, 2, train=True, seed=5,
                                 shard=(p, 2), prefetch=False)
    resumed.set_state(state)
    np.testing.assert_array_equal(next(resumed)["index"], expected[p]["index"])
  # Another global batch reads other batches: refused.
  with pytest.raises(ValueError, match="global_batch"):
    data.BatchIterator(_ListSource(20), _first_frame, 4, train=True, seed=5, shard=(0, 2),
                       prefetch=False).set_state(state)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_eval_padding_sees_every_sample_exactly_once(count):
  seen, lengths = [], []
  for p in range(count):
    batches = list(data.BatchIterator(_ListSource(10), _first_frame, 4, train=False,
                                      shard=(p, count)))
    lengths.append(len(batches))
    for b in batches:
      assert b["x"].shape == (4, 1, 1, 8, 4, 3)
      assert np.all(b["x"][~b["mask"]] == 0)
      np.testing.assert_array_equal(b["mask"], b["index"] >= 0)
      seen += b["index"][b["mask"]].tolist()
  assert sorted(seen) == list(range(10))
  # Every process runs the same number of batches (a collective step needs all of them).
  assert lengths == [math.ceil(math.ceil(10 / count) / 4)] * count


@pytest.mark.parametrize("stop,threads", [(2, 0), (5, 2), (7, 0)])
def test_resume_gives_the_identical_next_batch(stop, threads):
  it = data.BatchIterator(_ListSource(11), _first_frame, 3, train=True, seed=9, shard=(0, 1),
                          num_threads=threads)
  for _ in range(stop):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = next(it)
  resumed = data.BatchIterator(_ListSource(11), _first_frame, 3, train=True, seed=9, shard=(0, 1),
                               prefetch=False)
  resumed.set_state(state)
  got = next(resumed)
  np.testing.assert_array_equal(got["x"], expected["x"])
  np.testing.assert_array_equal(got["label"], expected["label"])


def test_set_state_refuses_a_different_seed():
  it = data.BatchIterator(_ListSource(6), _first_frame, 2, train=True, seed=1, shard=(0, 1))
  with pytest.raises(ValueError, match="seed"):
    it.set_state({"epoch": 0, "batch": 1, "seed": 2, "shard": [0, 1], "size": 6})


def test_make_iterator_over_the_store(store):
  it = data.make_iterator("synthetic", store, "test", 8, train=False,
                          config=data.PipelineConfig(clip_len=16, num_clips=2, test_mode=True),
                          shard=(0, 1))
  batches = list(it)
  assert [int(b["mask"].sum()) for b in batches] == [8, 8, 5]
  assert batches[0]["x"].shape == (8, 2, 2, 16, 25, 3)


def test_repeat_makes_one_epoch_several_passes_with_their_own_augmentation():
  it = data.BatchIterator(_ListSource(10), _first_frame, 5, train=True, seed=0, shard=(0, 1),
                          repeat=3, prefetch=False)
  assert it.steps_per_epoch == 6
  batches = [next(it) for _ in range(it.steps_per_epoch)]
  seen = np.concatenate([b["index"] for b in batches])
  assert sorted(seen.tolist()) == sorted(list(range(10)) * 3)     # every sample, 3 times
  # The three copies of one sample are not three identical clips.
  x = np.concatenate([b["x"] for b in batches])
  copies = x[seen == 4]
  assert len(copies) == 3 and len({float(c.max()) for c in copies}) > 1
  # Resuming mid-epoch needs the same repeat factor.
  state = it.get_state()
  other = data.BatchIterator(_ListSource(10), _first_frame, 5, train=True, seed=0, shard=(0, 1))
  with pytest.raises(ValueError, match="repeat"):
    other.set_state(state)


def test_holdout_by_performer_is_disjoint_and_keeps_every_class(store):
  train = data.load("synthetic", store, "train")
  train_idx, val_idx, how = data.holdout(train, 0.2, seed=0)
  assert how == "performer"
  assert len(set(train_idx) & set(val_idx)) == 0
  assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(len(train)))
  names = [train[int(i)]["frame_dir"] for i in range(len(train))]
  people = lambda idx: {data.holdout.__globals__["performer_of"](names[i]) for i in idx}
  assert not people(train_idx) & people(val_idx)
  labels = np.array([train[int(i)]["label"] for i in range(len(train))])
  assert set(labels[val_idx]) == set(labels[train_idx]) == set(labels)
  # Seeded: the same seed gives the same split, another seed another one.
  np.testing.assert_array_equal(data.holdout(train, 0.2, seed=0)[1], val_idx)
  assert not np.array_equal(data.holdout(train, 0.2, seed=1)[1], val_idx)
  # Disjoint from test: the test split's clips are other performers' (a cross-subject split).
  test = data.load("synthetic", store, "test")
  test_names = {test[i]["frame_dir"] for i in range(len(test))}
  assert not test_names & {names[i] for i in val_idx}


def test_holdout_without_performers_is_stratified_by_class():
  source = _ListSource(60)
  for i, record in enumerate(source.records):
    record["frame_dir"] = f"clip{i}"
  train_idx, val_idx, how = data.holdout(source, 0.1, seed=0)
  assert how == "class" and len(set(train_idx) & set(val_idx)) == 0
  labels = np.arange(60) % 3
  assert [int(np.sum(labels[val_idx] == c)) for c in range(3)] == [2, 2, 2]
  subset = data.Subset(source, val_idx, "val")
  assert len(subset) == 6 and subset[0] is source.records[val_idx[0]]
