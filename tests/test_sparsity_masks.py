"""Prunable predicate, mask generators, predefined masks and the sparsity report."""

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stgcn_jax import sparsity as sp
from stgcn_jax.models import get_model

from conftest import assert_trees_equal

SPARSITIES = (0.6, 0.8, 0.95, 0.99)
BACKBONES = ("stgcn", "aagcn", "ctrgcn", "dgstgcn")
DOWN, RES = (0, 4, 7), (4, 7)


def _blocks(names, blocks=range(10)):
  return {f"backbone/block{i}/{n}/kernel" for i in blocks for n in names}


EXPECTED = {
    "stgcn": _blocks(["gcn/conv", "tcn/conv"]) | _blocks(["residual/conv"], RES),
    "aagcn": (_blocks([f"gcn/conv_{a}_{k}" for a in "abd" for k in range(3)] + ["tcn/conv"])
              | _blocks(["gcn/down/conv"], DOWN) | _blocks(["residual/conv"], RES)),
    "ctrgcn": (_blocks([f"gcn/convs_{k}/conv{j}" for k in range(3) for j in range(1, 5)]
                       + ["tcn/branch0_pw", "tcn/branch0_tconv", "tcn/branch1_pw",
                          "tcn/branch1_tconv", "tcn/branch2_pw", "tcn/branch3_pw"])
               | _blocks(["gcn/down/conv"], DOWN) | _blocks(["residual/conv"], RES)),
    "dgstgcn": (_blocks(["gcn/pre", "gcn/conv1", "gcn/conv2", "gcn/post", "tcn/branch4_pw",
                         "tcn/branch5_conv", "tcn/transform_conv"]
                        + [f"tcn/branch{j}_{k}" for j in range(4) for k in ("pw", "tconv")])
                | _blocks(["gcn/down/conv"], DOWN) | _blocks(["residual/conv"], RES)),
}
AA_ATTENTION = _blocks(["gcn/conv_sa", "gcn/conv_ta", "gcn/fc1c", "gcn/fc2c"])


@functools.lru_cache(maxsize=None)
def full_params(name):
  """Full-size parameter shapes (eval_shape: no compile, no values)."""
  model = get_model(name, 60)
  x = jax.ShapeDtypeStruct((1, 2, 16, 25, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), x)["params"]


def _flat(tree):
  return {sp.path_str(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("name", BACKBONES)
def test_prunable_leaves_per_backbone(name):
  assert set(sp.prunable_paths(full_params(name))) == EXPECTED[name]


def test_prunable_switches_head_and_attention():
  params = full_params("aagcn")
  with_attention = sp.prunable_paths(params, sp.PrunableSpec(include_attention=True))
  assert set(with_attention) == EXPECTED["aagcn"] | AA_ATTENTION
  with_head = sp.prunable_paths(params, sp.PrunableSpec(include_head=True))
  assert set(with_head) == EXPECTED["aagcn"] | {"cls_head/fc_cls/kernel"}


@pytest.mark.parametrize("name", BACKBONES)
def test_uniform_masks_exact_per_tensor(name):
  params = full_params(name)
  shapes = _flat(params)
  for s in SPARSITIES:
    masks = sp.make_masks(params, s, key=jax.random.key(0), cover_channels=False)
    assert jax.tree.structure(masks) == jax.tree.structure(params)
    for path, m in _flat(masks).items():
      assert m.shape == shapes[path].shape and m.dtype == jnp.bool_
      zeros = int(m.size - np.count_nonzero(np.asarray(m)))
      if path in EXPECTED[name]:
        assert zeros == math.floor(s * m.size + 0.5), (path, s)
        assert abs(zeros / m.size - s) <= 0.5 / m.size + 1e-12
      else:
        assert zeros == 0, path
    rep = sp.sparsity_report(params, masks)
    assert abs(rep["prunable_sparsity"] - s) <= len(EXPECTED[name]) / rep["prunable_params"]


def test_masks_deterministic_from_key():
  params = full_params("stgcn")
  a = _flat(sp.make_masks(params, 0.8, key=jax.random.key(3)))
  b = _flat(sp.make_masks(params, 0.8, key=jax.random.key(3)))
  c = _flat(sp.make_masks(params, 0.8, key=jax.random.key(4)))
  assert all(np.array_equal(a[p], b[p]) for p in a)
  assert all(not np.array_equal(a[p], c[p]) for p in EXPECTED["stgcn"])


@pytest.mark.parametrize("s", SPARSITIES)
def test_erk_same_global_count(s):
  params = full_params("ctrgcn")
  masks = _flat(sp.make_masks(params, s, key=jax.random.key(0), method="erk"))
  total = sum(masks[p].size for p in EXPECTED["ctrgcn"])
  zeros = sum(masks[p].size - int(np.count_nonzero(np.asarray(masks[p])))
              for p in EXPECTED["ctrgcn"])
  assert zeros == math.floor(s * total + 0.5)
  dens = {p: np.mean(np.asarray(masks[p])) for p in EXPECTED["ctrgcn"]}
  # ERK keeps more of the small-fan-in layers than of the big temporal convs.
  small, big = "block0/gcn/convs_0/conv1", "block9/tcn/branch0_pw"
  assert dens[f"backbone/{small}/kernel"] >= dens[f"backbone/{big}/kernel"]


def test_erk_densities_match_rigl_formula():
  shapes = {"a": (3, 3, 4, 8), "b": (1, 1, 64, 64)}
  d = sp.erk_densities(shapes, 0.9)
  sizes = {k: np.prod(v) for k, v in shapes.items()}
  kept = sum(d[k] * sizes[k] for k in shapes)
  assert kept == pytest.approx(0.1 * sum(sizes.values()))
  ratio = (sum(shapes["a"]) / sizes["a"]) / (sum(shapes["b"]) / sizes["b"])
  assert d["a"] / d["b"] == pytest.approx(ratio)


@pytest.mark.parametrize("method", ["global", "per_block"])
def test_score_threshold_methods_exact_count(method):
  params = full_params("dgstgcn")
  masks = _flat(sp.make_masks(params, 0.8, key=jax.random.key(0), method=method))
  groups = {}
  for p in EXPECTED["dgstgcn"]:
    g = groups.setdefault("all" if method == "global" else sp.block_of(p), [0, 0])
    g[0] += masks[p].size
    g[1] += masks[p].size - int(np.count_nonzero(np.asarray(masks[p])))
  for size, zeros in groups.values():
    assert zeros == math.floor(0.8 * size + 0.5)


def test_score_threshold_warns_at_high_sparsity():
  with pytest.warns(UserWarning, match="whole layers"):
    sp.make_masks(full_params("stgcn"), 0.95, key=jax.random.key(0), method="global")
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    sp.make_masks(full_params("stgcn"), 0.95, key=jax.random.key(0), method="uniform")


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "dense", None])
def test_bad_sparsity_is_a_clear_error(bad):
  with pytest.raises(ValueError, match=r"sparsity must be .*\[0, 1\)"):
    sp.make_masks(full_params("stgcn"), bad, key=jax.random.key(0))
  with pytest.raises(ValueError, match=r"config.sparsity.level must be"):
    sp.check_sparsity_config(sp.SparsityConfig(level=bad), num_epochs=1)


def test_bad_method_and_missing_key():
  with pytest.raises(ValueError, match="mask method must be one of"):
    sp.make_masks(full_params("stgcn"), 0.5, key=jax.random.key(0), method="random")
  with pytest.raises(ValueError, match="needs a PRNG key"):
    sp.make_masks(full_params("stgcn"), 0.5)


def test_predefined_npz_round_trip(tmp_path):
  params = full_params("ctrgcn")
  masks = sp.make_masks(params, 0.95, key=jax.random.key(1))
  path = str(tmp_path / "m.npz")
  sp.save_masks(path, masks)
  loaded = sp.make_masks(params, None, method="predefined", path=path)
  assert jax.tree.structure(loaded) == jax.tree.structure(params)
  assert_trees_equal(loaded, masks)


def test_predefined_wrong_structure_names_paths(tmp_path):
  masks = _flat(sp.make_masks(full_params("stgcn"), 0.5, key=jax.random.key(0)))
  # Masks of another backbone: the error names missing and unexpected paths.
  path = str(tmp_path / "other.npz")
  np.savez(path, **{p: np.asarray(m) for p, m in masks.items()})
  with pytest.raises(ValueError, match=r"missing paths \['backbone/block0/gcn/A'"):
    sp.load_masks(path, full_params("ctrgcn"))
  # A wrong shape and a wrong dtype: the error names the offending leaves.
  bad = dict(masks)
  bad["backbone/block3/tcn/conv/kernel"] = np.ones((3, 1, 64, 64), bool)
  bad["backbone/block0/gcn/conv/kernel"] = np.ones(masks["backbone/block0/gcn/conv/kernel"].shape,
                                                   np.float32)
  path = str(tmp_path / "bad.npz")
  np.savez(path, **{p: np.asarray(m) for p, m in bad.items()})
  with pytest.raises(ValueError) as e:
    sp.load_masks(path, full_params("stgcn"))
  assert ("backbone/block3/tcn/conv/kernel: shape (3, 1, 64, 64), expected (9, 1, 64, 64)"
          in str(e.value))
  assert "backbone/block0/gcn/conv/kernel: dtype float32, expected bool" in str(e.value)
  with pytest.raises(ValueError, match="does not exist"):
    sp.load_masks(str(tmp_path / "nope.npz"), full_params("stgcn"))


def test_report_counts_on_a_small_tree():
  params = {"backbone": {"block0": {"gcn": {"conv": {"kernel": jnp.ones((1, 1, 2, 5)),
                                                      "bias": jnp.ones((5,))}}},
                         "data_bn": {"scale": jnp.ones((4,))}}}
  masks = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
  masks["backbone"]["block0"]["gcn"]["conv"]["kernel"] = jnp.arange(10).reshape(1, 1, 2, 5) < 3
  rep = sp.sparsity_report(params, masks)
  assert rep["prunable_params"] == 10 and rep["prunable_nonzero"] == 3
  assert rep["prunable_sparsity"] == pytest.approx(0.7)
  assert rep["total_params"] == 19 and rep["nonzero_params"] == 12
  assert rep["total_sparsity"] == pytest.approx(7 / 19)
  assert rep["per_block"]["block0"] == dict(size=10, zeros=7, sparsity=pytest.approx(0.7))
  assert rep["per_leaf"]["backbone/block0/gcn/conv/bias"]["prunable"] is False
  assert "block0" in sp.format_report(rep, per_leaf=True)
