"""Backbone structure: parameter counts, exact parameter paths, shapes, jit, options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stgcn_jax import graph, models

from conftest import BACKBONE_NAMES


def abstract_variables(model):
  return models.abstract_variables(model)


def count(model):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(abstract_variables(model)["params"]))


def paths(tree):
  return {"/".join(p.key for p in path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)}


# docs/BACKBONES.md section 7, measured on pyskl.
@pytest.mark.parametrize("name,layout,classes,expected", [
    ("stgcn", "nturgb+d", 60, 3_098_832), ("aagcn", "nturgb+d", 60, 3_781_668),
    ("ctrgcn", "nturgb+d", 60, 1_446_672), ("dgstgcn", "nturgb+d", 60, 1_701_172),
    ("stgcn", "nturgb+d", 120, 3_114_252), ("aagcn", "nturgb+d", 120, 3_797_088),
    ("ctrgcn", "nturgb+d", 120, 1_462_092), ("dgstgcn", "nturgb+d", 120, 1_716_592),
    ("stgcn", "coco", 60, 3_088_704), ("aagcn", "coco", 60, 3_760_228),
    ("ctrgcn", "coco", 60, 1_436_496), ("dgstgcn", "coco", 60, 1_674_244),
    ("stgcn", "coco", 120, 3_104_124), ("aagcn", "coco", 120, 3_775_648),
    ("ctrgcn", "coco", 120, 1_451_916), ("dgstgcn", "coco", 120, 1_689_664),
    ("stgcn", "openpose", 60, 3_089_760), ("aagcn", "openpose", 60, 3_761_290),
    ("ctrgcn", "openpose", 60, 1_437_558), ("dgstgcn", "openpose", 60, 1_677_050),
    ("stgcn", "openpose", 120, 3_105_180), ("aagcn", "openpose", 120, 3_776_710),
    ("ctrgcn", "openpose", 120, 1_452_978), ("dgstgcn", "openpose", 120, 1_692_470),
])
def test_parameter_counts_match_pyskl(name, layout, classes, expected):
  assert count(models.get_model(name, classes, layout=layout)) == expected


@pytest.mark.parametrize("options,expected", [
    (dict(gcn_attention=False), 3_469_520),           # the 3.47M AA-GCN the paper quotes
    (dict(gcn_adaptive=False), 3_434_876),
])
def test_aagcn_variant_counts(options, expected):
  assert count(models.get_model("aagcn", 60, **options)) == expected


def test_stgcn_plus_plus_count():
  model = models.get_model("stgcn", 60, graph_mode="spatial", gcn_adaptive="init",
                           gcn_with_res=True, tcn_type="mstcn")
  assert count(model) == 1_403_144


# ---- exact parameter paths -------------------------------------------------------------------
BN = ("scale", "bias")
CONV = ("kernel", "bias")


def _leaves(prefix, module, names):
  return {f"{prefix}/{module}/{n}" for n in names}


def _mb_tcn(prefix):
  """pyskl's 6-branch mstcn / dgmstcn under ``prefix``."""
  out = set()
  for j in range(5):
    out |= _leaves(prefix, f"branch{j}_pw", CONV) | _leaves(prefix, f"branch{j}_pw_bn", BN)
  for j in range(4):
    out |= _leaves(prefix, f"branch{j}_tconv", CONV)
  out |= _leaves(prefix, "branch5_conv", CONV) | _leaves(prefix, "transform_bn", BN)
  out |= _leaves(prefix, "transform_conv", CONV) | _leaves(prefix, "bn", BN)
  return out


def _block_common(i, b):
  out = set()
  if i in (4, 7):
    out |= _leaves(b, "residual/conv", CONV) | _leaves(b, "residual/bn", BN)
  return out


def expected_paths(name):
  out = {"backbone/data_bn/scale", "backbone/data_bn/bias",
         "cls_head/fc_cls/kernel", "cls_head/fc_cls/bias"}
  for i in range(10):
    b = f"backbone/block{i}"
    out |= _block_common(i, b)
    down = i in (0, 4, 7)
    if name == "stgcn":
      out |= {f"{b}/gcn/PA"} | _leaves(b, "gcn/conv", CONV) | _leaves(b, "gcn/bn", BN)
      out |= _leaves(b, "tcn/conv", CONV) | _leaves(b, "tcn/bn", BN)
    elif name == "aagcn":
      out |= {f"{b}/gcn/A", f"{b}/gcn/alpha"} | _leaves(b, "gcn/bn", BN)
      for j in range(3):
        for conv in ("conv_a", "conv_b", "conv_d"):
          out |= _leaves(b, f"gcn/{conv}_{j}", CONV)
      for att in ("conv_sa", "conv_ta", "fc1c", "fc2c"):
        out |= _leaves(b, f"gcn/{att}", CONV)
      out |= _leaves(b, "tcn/conv", CONV) | _leaves(b, "tcn/bn", BN)
    elif name == "ctrgcn":
      out |= {f"{b}/gcn/A", f"{b}/gcn/alpha"} | _leaves(b, "gcn/bn", BN)
      for j in range(3):
        for conv in ("conv1", "conv2", "conv3", "conv4"):
          out |= _leaves(b, f"gcn/convs_{j}/{conv}", CONV)
      for j in range(2):
        out |= _leaves(b, f"tcn/branch{j}_pw", CONV) | _leaves(b, f"tcn/branch{j}_pw_bn", BN)
        out |= _leaves(b, f"tcn/branch{j}_tconv", CONV) | _leaves(b, f"tcn/branch{j}_tconv_bn", BN)
      out |= _leaves(b, "tcn/branch2_pw", CONV) | _leaves(b, "tcn/branch2_pw_bn", BN)
      out |= _leaves(b, "tcn/branch2_pool_bn", BN)
      out |= _leaves(b, "tcn/branch3_pw", CONV) | _leaves(b, "tcn/branch3_pw_bn", BN)
    elif name == "dgstgcn":
      out |= {f"{b}/gcn/A", f"{b}/gcn/alpha", f"{b}/gcn/beta", f"{b}/tcn/add_coeff"}
      for conv in ("pre", "post", "conv1", "conv2"):
        out |= _leaves(b, f"gcn/{conv}", CONV)
      out |= _leaves(b, "gcn/pre_bn", BN) | _leaves(b, "gcn/bn", BN) | _mb_tcn(f"{b}/tcn")
    if down and name != "stgcn":
      out |= _leaves(b, "gcn/down/conv", CONV) | _leaves(b, "gcn/down/bn", BN)
  return out


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_exact_parameter_paths(name):
  variables = abstract_variables(models.get_model(name, 60))
  assert paths(variables["params"]) == expected_paths(name)
  bn_paths = {p.rsplit("/", 1)[0] for p in paths(variables["params"]) if p.endswith("/scale")}
  assert paths(variables["batch_stats"]) == {f"{p}/{s}" for p in bn_paths for s in ("mean", "var")}


# ---- shapes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BACKBONE_NAMES)
@pytest.mark.parametrize("t,m", [(16, 1), (16, 2), (64, 1), (64, 2), (100, 1), (100, 2)])
def test_output_shapes(name, t, m):
  model = models.get_model(name, 60, num_person=m)
  x = jnp.zeros((3, m, t, 25, 3))
  variables = abstract_variables(model)
  logits, feat = jax.eval_shape(
      lambda v: model.apply(v, x, train=False, return_features=True), variables)
  t_out = -(-(-(-t // 2)) // 2)  # two stride-2 stages: ceil(ceil(t/2)/2)
  assert logits.shape == (3, 60)
  assert feat.shape == (3, m, t_out, 25, 256)


def test_multi_clip_input_keeps_clip_axis():
  model = models.get_model("stgcn", 7, base_channels=8, num_stages=2)
  x = jnp.zeros((2, 10, 2, 16, 25, 3))
  variables = abstract_variables(model)
  assert jax.eval_shape(lambda v: model.apply(v, x), variables).shape == (2, 10, 7)


# ---- numerics on small configurations ------------------------------------------------------------
SMALL = dict(base_channels=8, num_stages=4, inflate_stages=(3,), down_stages=(3,))


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_jit_and_eager_agree(name):
  model = models.get_model(name, 5, **SMALL)
  x = jax.random.normal(jax.random.key(1), (2, 2, 16, 25, 3))
  variables = model.init(jax.random.key(0), x)
  eager = model.apply(variables, x, train=False)
  jitted = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  np.testing.assert_allclose(eager, jitted, atol=1e-5, rtol=1e-5)
  out, state = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, x)
  assert np.all(np.isfinite(out))
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state["batch_stats"],
                         variables["batch_stats"])
  assert all(jax.tree.leaves(changed))  # every BN updated its running statistics


@pytest.mark.parametrize("name", BACKBONE_NAMES)
@pytest.mark.parametrize("layout", ["coco", "openpose", "nw-ucla"])
def test_other_layouts_and_class_counts_run(name, layout):
  v = graph.get_layout(layout).num_joints
  model = models.get_model(name, 11, layout=layout, **SMALL)
  x = jax.random.normal(jax.random.key(1), (2, 2, 16, v, 3))
  variables = model.init(jax.random.key(0), x)
  logits = model.apply(variables, x)
  assert logits.shape == (2, 11) and np.all(np.isfinite(logits))


def test_custom_layout_object_runs():
  layout = graph.Layout.from_edges(5, [(0, 1), (1, 2), (3, 2), (4, 3)], center=2, name="toy")
  model = models.get_model("ctrgcn", 3, layout=layout, in_channels=2, **SMALL)
  x = jnp.ones((1, 2, 16, 5, 2))
  assert model.apply(model.init(jax.random.key(0), x), x).shape == (1, 3)


def test_dropout_needs_rng_only_in_training():
  model = models.get_model("stgcn", 4, tcn_dropout=0.5, head_dropout=0.5, **SMALL)
  x = jax.random.normal(jax.random.key(1), (2, 2, 16, 25, 3))
  variables = model.init(jax.random.key(0), x)
  a = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)})[0]
  b = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)})[0]
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))


# ---- initialisation as pyskl does it ---------------------------------------------------------------
def test_initialisation_schemes():
  # lazy_init: the same parameters as init (same key), without running the forward eagerly.
  # The first 6 of the 10 blocks (block 5 is the first full 128-channel one): the same per-block
  # initialisation as the full models, at half their compile time.
  x, six = jax.ShapeDtypeStruct((1, 2, 16, 25, 3), jnp.float32), dict(num_stages=6)
  ctr = models.get_model("ctrgcn", 60, **six).lazy_init(jax.random.key(0), x)["params"]
  assert np.all(ctr["backbone"]["block3"]["gcn"]["bn"]["scale"] == 1e-6)
  assert np.all(ctr["backbone"]["block3"]["gcn"]["alpha"] == 0)
  k = ctr["backbone"]["block5"]["gcn"]["convs_0"]["conv3"]["kernel"]      # fan_out = 128
  assert abs(float(jnp.std(k)) - np.sqrt(2 / 128)) < 0.01
  assert np.all(ctr["backbone"]["block5"]["gcn"]["convs_0"]["conv3"]["bias"] == 0)
  head = ctr["cls_head"]["fc_cls"]
  assert abs(float(jnp.std(head["kernel"])) - 0.01) < 0.002 and np.all(head["bias"] == 0)
  st = models.get_model("stgcn", 60, **six).lazy_init(jax.random.key(0), x)["params"]
  k = st["backbone"]["block5"]["tcn"]["conv"]["kernel"]                  # U(+-1/sqrt(128*9))
  assert float(jnp.max(jnp.abs(k))) <= 1 / np.sqrt(128 * 9) + 1e-7
  assert np.all(st["backbone"]["block5"]["gcn"]["PA"] == 1)
  aa = models.get_model("aagcn", 60, **six).lazy_init(jax.random.key(0), x)["params"]
  aa = aa["backbone"]["block5"]["gcn"]
  assert np.all(aa["conv_ta"]["kernel"] == 0) and np.all(aa["fc2c"]["kernel"] == 0)
  assert abs(float(jnp.std(aa["conv_d_0"]["kernel"])) - np.sqrt(2 / (128 * 128 * 3))) < 0.001
  dg = models.get_model("dgstgcn", 60, **six).lazy_init(jax.random.key(0), x)["params"]["backbone"]
  assert "block5" in dg and "block6" not in dg
  np.testing.assert_array_equal(dg["block0"]["gcn"]["A"], dg["block5"]["gcn"]["A"])
  assert dg["block0"]["gcn"]["A"].shape == (8, 25, 25)


# ---- user errors ---------------------------------------------------------------------------------------
def test_bad_options_are_clear():
  with pytest.raises(ValueError, match="unknown backbone 'resnet'"):
    models.get_model("resnet", 60)
  with pytest.raises(ValueError, match="unknown option.*'attenshun'"):
    models.get_model("aagcn", 60, attenshun=False)
  model = models.get_model("stgcn", 60)
  with pytest.raises(ValueError, match="needs M=2 persons"):
    jax.eval_shape(lambda k: models.get_model("ctrgcn", 60).init(k, jnp.zeros((1, 1, 16, 25, 3))),
                   jax.random.key(0))
  with pytest.raises(ValueError, match="V=17 joints"):
    jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 2, 16, 17, 3))), jax.random.key(0))


def test_temporal_conv_implementations_compute_the_same_function():
  # The backbone field selects how (k x 1) convs are differentiated; values and gradients agree.
  options = dict(base_channels=8, num_stages=3, inflate_stages=(3,), down_stages=(3,))
  x = jax.random.normal(jax.random.key(1), (2, 2, 12, 25, 3))
  grads = {}
  for impl in ("custom_vjp", "xla"):
    model = models.get_model("ctrgcn", 5, temporal_conv=impl, **options)
    variables = model.init(jax.random.key(0), x)
    loss = lambda p: jnp.sum(model.apply({**variables, "params": p}, x) ** 2)
    grads[impl] = (loss(variables["params"]), jax.grad(loss)(variables["params"]))
  np.testing.assert_allclose(grads["xla"][0], grads["custom_vjp"][0], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               grads["xla"][1], grads["custom_vjp"][1])   # fails on different tree structures
  with pytest.raises(ValueError, match="temporal conv impl must be one of"):
    bad = models.get_model("ctrgcn", 5, temporal_conv="cudnn", **options)
    bad.init(jax.random.key(0), x)


@pytest.mark.parametrize("per_sample", [False, True])
def test_graph_matmul_and_gram_are_the_einsums(per_sample):
  # Values and both gradients of the frame-batched matmuls equal the einsums they replace.
  from stgcn_jax.models import layers
  kx, ka, ky = jax.random.split(jax.random.key(3), 3)
  x, y = jax.random.normal(kx, (3, 5, 7, 4)), jax.random.normal(ky, (3, 5, 6, 4))
  a = jax.random.normal(ka, (3, 7, 6) if per_sample else (7, 6))
  spec = "btuc,buw->btwc" if per_sample else "btuc,uw->btwc"
  for ours, ref, args in ((layers.graph_matmul, lambda x, a: jnp.einsum(spec, x, a), (x, a)),
                          (layers.graph_gram, lambda x, y: jnp.einsum("btvc,btwc->bvw", x, y),
                           (x, y))):
    loss = lambda f: lambda *z: jnp.sum(jnp.sin(f(*z)))
    np.testing.assert_allclose(ours(*args), ref(*args), rtol=1e-5, atol=1e-5)
    for g1, g2 in zip(jax.grad(loss(ours), (0, 1))(*args), jax.grad(loss(ref), (0, 1))(*args)):
      np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("joints,frames", [(3, 2), (9, 5), (20, 13)])
def test_refined_graph_conv_is_the_einsum(joints, frames):
  # Values and both gradients of the fused loops (one partial chunk, chunks with a remainder, a
  # loop over several chunks) equal the einsum of CTR-GCN's refined graphs, summed over subsets.
  from stgcn_jax.models import layers
  keys = jax.random.split(jax.random.key(5), 6)
  xs = tuple(jax.random.normal(keys[i], (2, frames, joints, 4)) for i in range(3))
  gs = tuple(jax.random.normal(keys[3 + i], (2, joints, joints + 1, 4)) for i in range(3))
  ref = lambda xs, gs: sum(jnp.einsum("btuc,buvc->btvc", x, g) for x, g in zip(xs, gs))
  loss = lambda f: lambda *z: jnp.sum(jnp.sin(f(*z)))
  np.testing.assert_allclose(layers.refined_graph_conv(xs, gs), ref(xs, gs), rtol=1e-5, atol=1e-5)
  ours = jax.grad(loss(layers.refined_graph_conv), (0, 1))(xs, gs)
  theirs = jax.grad(loss(ref), (0, 1))(xs, gs)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), ours, theirs)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("frames", [1, 6, 13])
def test_max_pool_time_gives_the_gradient_to_the_first_maximum(stride, frames):
  # MaxPool2d((3, 1), (stride, 1), (1, 0)) as PyTorch computes it, ties included (ReLU outputs
  # tie at zero; a constant channel ties everywhere): each window's gradient goes to its first
  # maximum, checked against a loop over the windows.
  from stgcn_jax.models import layers
  x = jax.random.normal(jax.random.key(frames), (2, frames, 3, 4))
  x = jnp.where(x < -0.3, 0.0, x).at[0, :, 0, 0].set(1.0)
  y = layers.max_pool_time(x, stride)
  xn = np.asarray(x)
  np.testing.assert_array_equal(y, np.stack([
      xn[:, max(stride * t - 1, 0):stride * t + 2].max(axis=1) for t in range(y.shape[1])], 1))
  g = np.asarray(jax.random.normal(jax.random.key(7), y.shape))
  dx = jax.vjp(lambda z: layers.max_pool_time(z, stride), x)[1](jnp.asarray(g))[0]
  expected = np.zeros(x.shape, np.float32)
  for t in range(y.shape[1]):
    window = [f for f in (stride * t - 1, stride * t, stride * t + 1) if 0 <= f < frames]
    first = np.take(window, np.argmax(xn[:, window], axis=1))        # argmax: the first maximum
    for b, v, c in np.ndindex(2, 3, 4):
      expected[b, first[b, v, c], v, c] += g[b, t, v, c]
  np.testing.assert_allclose(dx, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("conv_pos", ["pre", "post"])
def test_stgcn_unit_is_pyskls_graph_product(conv_pos):
  # unit_gcn's K-major channel split: pre-conv einsum("btvkc,kvw->btwc"), post einsum("btvc,kvw->btwkc").
  from stgcn_jax.models import layers, stgcn
  a = np.asarray(graph.adjacency("nturgb+d", "stgcn_spatial"))
  unit = stgcn.UnitGCN(6, a, stgcn.GCNOptions(adaptive=None, conv_pos=conv_pos))
  x = jax.random.normal(jax.random.key(4), (2, 5, 25, 4))
  variables = unit.init(jax.random.key(0), x, train=False)
  ours = unit.apply(variables, x, train=False)
  conv, bn = variables["params"]["conv"], dict(variables["params"]["bn"], **variables["batch_stats"]["bn"])
  conv_apply = lambda z: layers.Conv(conv["kernel"].shape[-1]).apply({"params": conv}, z)
  if conv_pos == "pre":
    z = conv_apply(x)
    y = jnp.einsum("btvkc,kvw->btwc", z.reshape(z.shape[:-1] + (a.shape[0], 6)), a)
  else:
    z = jnp.einsum("btvc,kvw->btwkc", x, a)
    y = conv_apply(z.reshape(z.shape[:-2] + (-1,)))
  bn = {k: v.reshape(1, 1, 1, -1) for k, v in bn.items()}
  y = (y - bn["mean"]) / jnp.sqrt(bn["var"] + 1e-5) * bn["scale"] + bn["bias"]
  np.testing.assert_allclose(ours, jax.nn.relu(y), rtol=1e-5, atol=1e-5)
