"""Deployment exports: the compressed sparse .npz and the portable StableHLO artifact."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from stgcn_jax import checkpoint
from stgcn_jax.export import deploy, sparse
from stgcn_jax import sparsity as sp

from conftest import assert_trees_equal

REPO = Path(__file__).resolve().parents[1]
OPTIONS = dict(base_channels=8, num_stages=2, inflate_stages=(), down_stages=())
SPEC = checkpoint.model_spec_json("stgcn", 4, "nw-ucla", 3, OPTIONS)


@pytest.fixture(scope="module")
def tiny():
  model = checkpoint.build_model(SPEC)
  x = jax.random.normal(jax.random.key(1), (3, 2, 16, 20, 3))
  variables = model.init(jax.random.key(0), x)
  # Non-trivial BatchNorm statistics, so that a lost or swapped statistic changes the logits.
  variables["batch_stats"] = jax.tree.map(
      lambda a: a + jax.random.uniform(jax.random.key(3), a.shape, minval=0.1, maxval=0.5),
      variables["batch_stats"])
  return model, variables, x


def _prune_randomly(params, fraction, seed):
  """Zero a random ``fraction`` of every prunable kernel (not the project's mask rule on purpose)."""
  rng = np.random.default_rng(seed)
  spec = sp.PrunableSpec()

  def prune(path, leaf):
    leaf = np.array(leaf)
    if spec(sp.path_str(path)):
      flat = leaf.reshape(-1)
      flat[rng.permutation(flat.size)[:sp.num_pruned(flat.size, fraction)]] = 0.0
    return leaf
  return jax.tree_util.tree_map_with_path(prune, params)


@pytest.mark.parametrize("sparsity", [0.8, 0.95])
def test_sparse_roundtrip_is_bit_exact_and_small(tiny, tmp_path, sparsity):
  model, variables, x = tiny
  params = _prune_randomly(variables["params"], sparsity, seed=int(sparsity * 100))
  # Masks applied as w * 0 leave -0.0 for negative w: it is pruned, and comes back as +0.0.
  kernel = params["backbone"]["block0"]["gcn"]["conv"]["kernel"]
  kernel.reshape(-1)[np.flatnonzero(kernel)[:3]] = -0.0
  # A dense leaf keeps its bits, -0.0 included.
  bias = params["backbone"]["block0"]["gcn"]["conv"]["bias"]
  bias[:2] = -0.0
  variables = {"params": params, "batch_stats": variables["batch_stats"]}
  path = str(tmp_path / "m.npz")
  summary = sparse.save_sparse(path, SPEC, variables)
  assert summary["bytes"] == deploy.size_on_disk(path)
  model2, variables2 = sparse.load_sparse(path)
  assert model2 == model
  assert summary["kept_weights"] == sum(
      np.count_nonzero(leaf) for p, leaf in jax.tree_util.tree_leaves_with_path(params)
      if sp.PrunableSpec()(sp.path_str(p)))
  # Bit for bit what was saved, except that a zero of a sparse (prunable) leaf is +0.0.
  plus_zero = lambda p, a: a + 0.0 if sp.PrunableSpec()(sp.path_str(p)) else a  # -0.0 + 0.0 = +0.0
  want = {"params": jax.tree_util.tree_map_with_path(plus_zero, params),
          "batch_stats": variables["batch_stats"]}
  assert np.signbit(want["params"]["backbone"]["block0"]["gcn"]["conv"]["bias"][:2]).all()
  assert_trees_equal(jax.device_get(variables2), jax.device_get(want), bits=True)
  logits = model2.apply(variables2, x, train=False)
  assert_trees_equal(logits, model.apply(want, x, train=False), bits=True)
  np.testing.assert_array_equal(logits, model.apply(variables, x, train=False))  # equal values
  # Size: kept values + 1 bit a prunable weight + every other value dense + 64 KiB.
  prunable_n = prunable_bytes = other_bytes = 0
  spec = sp.PrunableSpec()
  for coll in ("params", "batch_stats"):
    for p, leaf in jax.tree_util.tree_leaves_with_path(variables[coll]):
      if coll == "params" and spec(sp.path_str(p)):
        prunable_n += leaf.size
        prunable_bytes += leaf.nbytes
      else:
        other_bytes += leaf.nbytes
  assert summary["sparse_weights"] == prunable_n
  bound = (1 - sparsity) * prunable_bytes + prunable_n / 8 + other_bytes + 64 * 1024
  assert summary["bytes"] <= bound
  assert summary["bytes"] <= deploy.sparse_size_bound(variables)
  with np.load(path, allow_pickle=False) as f:  # no object arrays anywhere
    assert all(f[k].dtype != object for k in f.files)


def test_stablehlo_cli_and_a_jax_only_consumer(tiny, tmp_path):
  model, variables, x = tiny
  workdir = tmp_path / "run"
  checkpoint.save_model(str(workdir / "model"), SPEC, variables)
  out = tmp_path / "m.shlo"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  done = subprocess.run(
      [sys.executable, "-m", "experiments.export", f"--model={workdir}", f"--out={out}",
       "--format=stablehlo", "--frames=16"], cwd=REPO, env=env, capture_output=True, text=True,
      timeout=120)
  assert done.returncode == 0, done.stderr
  assert "wrote" in done.stdout
  contract = json.loads(Path(str(out) + ".json").read_text())
  assert contract["input"]["shape"] == ["B", 2, 16, 20, 3]
  assert contract["input"]["joint_order"][:3] == ["hip_center", "spine", "shoulder_center"]
  assert contract["output"]["shape"] == ["B", 4]
  assert not contract["preprocessing"]["recorded_in_checkpoint"]
  assert set(contract["platforms"]) == {"cpu", "cuda"}

  np.save(tmp_path / "x.npy", np.asarray(x))
  code = textwrap.dedent(f"""
      import sys
      import jax, numpy as np
      exp = jax.export.deserialize(bytearray(open({str(out)!r}, "rb").read()))
      x = np.load({str(tmp_path / 'x.npy')!r})
      np.save({str(tmp_path / 'y.npy')!r}, np.asarray(exp.call(x)))
      np.save({str(tmp_path / 'y1.npy')!r}, np.asarray(exp.call(x[:1])))
      print("stgcn_jax" in sys.modules, any(m.startswith("stgcn_jax") for m in sys.modules))
      """)
  done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  assert done.stdout.split() == ["False", "False"]
  want = np.asarray(model.apply(variables, x, train=False))
  np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.load(tmp_path / "y1.npy"), want[:1], rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_one_line_errors(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(sparse.ExportError, match="no model.json"):
    deploy.resolve_model_dir(str(empty))
  (empty / "checkpoints").mkdir()
  with pytest.raises(sparse.ExportError, match="ensemble"):
    deploy.resolve_model_dir(str(empty))
  with pytest.raises(sparse.ExportError, match="no such file"):
    deploy.resolve_model_dir(str(tmp_path / "missing"))
  junk = tmp_path / "junk.npz"
  junk.write_bytes(b"not a zip file")
  with pytest.raises(sparse.ExportError, match="not a sparse model export"):
    sparse.load_sparse(str(junk))
  other = tmp_path / "other.npz"
  np.savez(other, a=np.zeros(3))
  with pytest.raises(sparse.ExportError, match="not a sparse model export"):
    sparse.load_sparse(str(other))


def test_zero_channels_and_size_on_disk(tmp_path):
  params = {"backbone": {"block0": {"tcn": {"conv": {"kernel": np.zeros((3, 1, 4, 5))}}}}}
  params["backbone"]["block0"]["tcn"]["conv"]["kernel"][..., :2] = 1.0
  assert deploy.zero_channel_fraction(params) == (3, 5)
  (tmp_path / "d").mkdir()
  (tmp_path / "d" / "a").write_bytes(b"12345")
  (tmp_path / "d" / "b").write_bytes(b"123")
  assert deploy.size_on_disk(str(tmp_path / "d")) == 8


def test_bench_deploy_table(tmp_path):
  from experiments import bench, bench_deploy  # pylint: disable=import-outside-toplevel
  out = tmp_path / "deploy.json"
  result = bench.main(["--deploy", "--tiny", "--backbones=stgcn", "--deploy_sparsities=0,0.95",
                       "--deploy_steps=1", "--frames=8", f"--json={out}"])
  rows = json.loads(out.read_text())["deploy"]
  assert [r["sparsity"] for r in rows] == [0.0, 0.95]
  dense, sparse = rows
  assert dense["num_params"] == sparse["num_params"]
  assert dense["nonzero_params"] > sparse["nonzero_params"]
  assert sparse["kept_prunable"] == round(0.05 * sparse["prunable_weights"])
  assert sparse["sparse_export_bytes"] < dense["sparse_export_bytes"]
  for r in rows:
    assert r["dense_checkpoint_bytes"] > 0 and len(r["latency_ms_all"]) == 1   # --deploy_steps=1
    assert r["latency_ms_p50"] == pytest.approx(r["latency_ms_all"][0])
  assert "stgcn" in bench_deploy.format_deploy_table(result)
