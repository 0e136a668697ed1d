"""The numpy transforms vs hand-computed values and a literal transcription of pyskl's sampler."""

import numpy as np
import pytest

from stgcn_jax import graph
from stgcn_jax.data import transforms as tr


def _ntu_clip():
  """1 person, 2 frames, 25 joints: spine along +y, shoulders along x, joint 1 at (1, 2, 3)."""
  kp = np.zeros((1, 2, 25, 3), np.float32)
  center = np.array([1.0, 2.0, 3.0])
  rel = {0: (0, -1, 0), 1: (0, 0, 0), 2: (0, 0, 1), 8: (0.5, 0, 0), 4: (-0.5, 0, 0)}
  for v, r in rel.items():
    kp[0, :, v] = center + np.array(r)
  return kp


def test_pre_normalize_3d_centres_and_aligns_spine_to_z():
  out = tr.pre_normalize_3d(_ntu_clip())
  # Centering on joint 1, then the 90 degree turn about x that takes +y (spine) to +z.
  np.testing.assert_allclose(out[0, 0, 1], [0, 0, 0], atol=1e-6)
  np.testing.assert_allclose(out[0, 0, 0], [0, 0, -1], atol=1e-6)
  np.testing.assert_allclose(out[0, 0, 2], [0, -1, 0], atol=1e-6)
  np.testing.assert_allclose(out[0, 0, 8], [0.5, 0, 0], atol=1e-6)


def test_pre_normalize_3d_zero_joints_stay_zero():
  out = tr.pre_normalize_3d(_ntu_clip(), align_spine=False)
  assert np.all(out[0, :, 3] == 0)
  np.testing.assert_allclose(out[0, 0, 0], [0, -1, 0], atol=1e-6)


def test_pre_normalize_3d_drops_empty_frames_and_swaps_persons():
  kp = np.zeros((2, 4, 25, 3), np.float32)
  kp[0, 3] = 1.0                       # person 0 visible in 1 frame
  kp[1, 1:] = np.arange(75).reshape(25, 3) + 1.0   # person 1 visible in 3 frames
  out = tr.pre_normalize_3d(kp, align_spine=False)
  assert out.shape == (2, 3, 25, 3)
  # Person 1 became person 0 and was centred on its own joint 1 of its first valid frame.
  np.testing.assert_allclose(out[0, 0, 1], 0, atol=1e-6)
  np.testing.assert_allclose(out[0, 0, 0], [-3, -3, -3], atol=1e-6)


def test_pre_normalize_3d_uses_last_joint_as_centre_when_not_25_joints():
  kp = np.zeros((1, 1, 20, 3), np.float32)
  kp[0, 0] = np.arange(60).reshape(20, 3) + 1
  out = tr.pre_normalize_3d(kp, align_spine=False)
  np.testing.assert_allclose(out[0, 0, -1], 0)
  np.testing.assert_allclose(out[0, 0, 0], [-57, -57, -57])


def test_pre_normalize_2d_maps_pixels_and_masks_low_scores():
  kp = np.array([[[[150, 25, 0.9], [150, 25, 0.005]]]], np.float32)   # (1, 1, 2, 3)
  out = tr.pre_normalize_2d(kp, (100, 200))
  np.testing.assert_allclose(out[0, 0, 0], [0.5, -0.5, 0.9], rtol=1e-6)
  np.testing.assert_allclose(out[0, 0, 1], [0, 0, 0.005], rtol=1e-6)


def test_rotation_3d_is_rz_ry_rx():
  rot = tr.rotation_3d([0.0, 0.0, np.pi / 2])
  np.testing.assert_allclose(rot @ [1, 0, 0], [0, -1, 0], atol=1e-12)
  rot = tr.rotation_3d([np.pi / 2, 0.0, 0.0])
  np.testing.assert_allclose(rot @ [0, 1, 0], [0, 0, -1], atol=1e-12)


def test_random_rot_draws_three_angles_in_range_and_keeps_lengths():
  kp = np.random.default_rng(0).normal(size=(2, 5, 25, 3)).astype(np.float32)
  out = tr.random_rot(kp, 0.2, np.random.RandomState(3))
  theta = np.random.RandomState(3).uniform(-0.2, 0.2, size=3)
  np.testing.assert_allclose(out, np.einsum("ab,mtvb->mtva", tr.rotation_3d(theta), kp), atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(kp, axis=-1), rtol=1e-5)


def test_random_rot_2d_with_score_keeps_the_score():
  kp = np.random.default_rng(1).uniform(size=(1, 4, 17, 3)).astype(np.float32)
  out = tr.random_rot(kp, 0.3, np.random.RandomState(0), has_score=True)
  np.testing.assert_array_equal(out[..., 2], kp[..., 2])
  np.testing.assert_allclose(np.linalg.norm(out[..., :2], axis=-1),
                             np.linalg.norm(kp[..., :2], axis=-1), rtol=1e-5)


def test_bone_uses_pyskl_pairs_for_ntu():
  kp = np.random.default_rng(2).normal(size=(1, 3, 25, 3)).astype(np.float32)
  bone = tr.joint_to_bone(kp, tr.bone_pairs("nturgb+d"))
  np.testing.assert_allclose(bone[..., 0, :], kp[..., 0, :] - kp[..., 1, :])
  np.testing.assert_allclose(bone[..., 21, :], kp[..., 21, :] - kp[..., 22, :])
  np.testing.assert_allclose(bone[..., 22, :], kp[..., 22, :] - kp[..., 7, :])
  assert np.all(bone[..., 20, :] == 0)


def test_bone_uses_layout_parents_for_other_layouts():
  pairs = tr.bone_pairs("nw-ucla")
  assert pairs[0] == (0, 1) and pairs[2] == (2, 2) and pairs[3] == (3, 2)
  custom = graph.Layout.from_edges(3, [[0, 1], [2, 1]], center=1)
  assert tr.bone_pairs(custom) == ((0, 1), (1, 1), (2, 1))


def test_bone_and_motion_average_the_score_channel():
  kp = np.zeros((1, 2, 17, 3), np.float32)
  kp[0, :, 5] = [[4, 6, 0.8], [5, 8, 0.4]]
  kp[0, :, 0] = [[1, 1, 0.2], [1, 2, 0.6]]
  bone = tr.joint_to_bone(kp, tr.bone_pairs("coco"), has_score=True)
  np.testing.assert_allclose(bone[0, 0, 5], [3, 5, 0.5])
  motion = tr.to_motion(kp, has_score=True)
  np.testing.assert_allclose(motion[0, 0, 5], [1, 2, 0.6])
  np.testing.assert_allclose(motion[0, 1, 5], [0, 0, 0])


def test_motion_is_temporal_difference_with_last_frame_zero():
  kp = np.array([1, 3, 6], np.float32).reshape(1, 3, 1, 1) * np.ones((1, 3, 1, 3), np.float32)
  np.testing.assert_allclose(tr.to_motion(kp)[0, :, 0, 0], [2, 3, 0])
  feats = tr.gen_feat(kp, "j,jm", ((0, 0),))
  assert feats.shape == (1, 3, 1, 6)


def _pyskl_test_clips(num_frames, clip_len, num_clips, seed=255):
  """pyskl UniformSampleFrames._get_test_clips, transcribed literally (global numpy RNG)."""
  np.random.seed(seed)
  all_inds = []
  for i in range(num_clips):
    old_num_frames = num_frames
    ratio = np.random.rand() * 0 + 1
    num_frames = int(ratio * num_frames)
    off = np.random.randint(old_num_frames - num_frames + 1)
    if num_frames < clip_len:
      start_ind = i if num_frames < num_clips else i * num_frames // num_clips
      inds = np.arange(start_ind, start_ind + clip_len)
    elif clip_len <= num_frames < clip_len * 2:
      basic = np.arange(clip_len)
      inds = np.random.choice(clip_len + 1, num_frames - clip_len, replace=False)
      offset = np.zeros(clip_len + 1, dtype=np.int64)
      offset[inds] = 1
      inds = basic + np.cumsum(offset)[:-1]
    else:
      bids = np.array([j * num_frames // clip_len for j in range(clip_len + 1)])
      inds = bids[:clip_len] + np.random.randint(np.diff(bids))
    all_inds.append(inds + off)
    num_frames = old_num_frames
  return np.mod(np.concatenate(all_inds), num_frames)


@pytest.mark.parametrize("num_frames", [7, 60, 100, 150, 299])
def test_test_mode_sampling_matches_pyskl(num_frames):
  ours = tr.uniform_sample_indices(num_frames, 100, num_clips=10, test_mode=True)
  np.testing.assert_array_equal(ours, _pyskl_test_clips(num_frames, 100, 10))


def test_short_clips_wrap_around_from_clip_index():
  inds = tr.uniform_sample_indices(7, 10, num_clips=10, test_mode=True).reshape(10, 10)
  np.testing.assert_array_equal(inds[0], [0, 1, 2, 3, 4, 5, 6, 0, 1, 2])
  np.testing.assert_array_equal(inds[3], [3, 4, 5, 6, 0, 1, 2, 3, 4, 5])


def test_training_sampling_takes_one_frame_per_segment():
  inds = tr.uniform_sample_indices(250, 100, rng=np.random.RandomState(0))
  lo = np.array([i * 250 // 100 for i in range(100)])
  hi = np.array([(i + 1) * 250 // 100 for i in range(100)])
  assert np.all((inds >= lo) & (inds < hi))
  mid = tr.uniform_sample_indices(150, 100, rng=np.random.RandomState(0))
  assert set(np.diff(mid)) <= {1, 2} and mid[0] in (0, 1) and mid[-1] < 150
  other = tr.uniform_sample_indices(250, 100, rng=np.random.RandomState(1))
  assert not np.array_equal(inds, other)


def test_format_gcn_input_pads_truncates_and_splits_clips():
  kp = np.arange(1 * 20 * 2 * 3, dtype=np.float32).reshape(1, 20, 2, 3)
  out = tr.format_gcn_input(kp, num_person=2, num_clips=2)
  assert out.shape == (2, 2, 10, 2, 3)
  np.testing.assert_array_equal(out[1, 0], kp[0, 10:])
  assert np.all(out[:, 1] == 0)
  three = np.ones((3, 4, 2, 3), np.float32) * np.arange(3).reshape(3, 1, 1, 1)
  np.testing.assert_array_equal(tr.format_gcn_input(three, 2)[0, :, 0, 0, 0], [0, 1])
