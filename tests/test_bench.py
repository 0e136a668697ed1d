"""The benchmark's code path on a tiny config, and the exactness of the fast temporal-conv gradient."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import bench
from stgcn_jax.models import layers


def test_bench_writes_expected_fields(tmp_path):
  out = tmp_path / "bench.json"
  result = bench.main(["--backbones=stgcn", "--batch=2", "--steps=1", "--tiny", "--no-pipeline",
                       f"--json={out}"])
  saved = json.loads(out.read_text())
  assert saved["machine"].keys() >= {"nproc", "cpu_model", "load_avg_start", "matmul_gflops",
                                     "other_cpu_share", "conv_impl"}
  assert saved["reference"]["train_samples_per_s"] == bench.REFERENCE["train_samples_per_s"]
  (row,) = saved["backbones"]
  # The rates are what the timed steps say (a rate from the wrong timing, or none, fails).
  for kind in ("train", "infer"):
    (step_s,) = row[f"{kind}_step_s_all"]                      # --steps=1
    assert row[f"{kind}_samples_per_s"] == pytest.approx(2 / step_s)
    assert row[f"{kind}_gflops"] == pytest.approx(row[f"{kind}_xla_gflop_per_step"] / step_s)
  assert row["train_fraction_of_matmul_peak"] == pytest.approx(
      row["train_gflops"] / saved["machine"]["matmul_gflops"])
  assert isinstance(row["peak_memory_bytes"], int) and row["peak_memory_kind"]
  assert row["shape"] == [2, 2, 16, 25, 3]
  assert row["train_loss_finite"]
  assert row["train_ratio_to_pyskl"] is None  # a tiny run is not comparable with the reference
  assert [e["batching"] for e in saved["ensemble"]] == ["vmap", "map", "unroll"]
  for ens in saved["ensemble"]:
    assert ens["members"] == 4
    assert ens["speedup_vs_sequential"] == pytest.approx(
        ens["members_x_single_step_s"] / ens["step_s"])
    assert ens["members_x_single_step_s"] == pytest.approx(4 * row["train_step_s"])
  assert saved["pipeline"] is None
  assert "stgcn" in bench.format_table(result)


def test_bench_at_the_nw_ucla_shape_one_person():
  """CTR-GCN with one person and the 20-joint NW-UCLA layout (its data BN is built for M=1), in
  three rounds: each side's step time is the median of the rounds'."""
  result = bench.main(["--backbones=ctrgcn", "--batch=2", "--steps=1", "--rounds=3", "--tiny",
                       "--no-pipeline", "--persons=1", "--layout=nw-ucla",
                       "--ensemble_backbones="])
  (row,) = result["backbones"]
  assert row["shape"] == [2, 1, 16, 20, 3] and row["train_loss_finite"]
  for kind in ("train", "infer"):
    assert len(row[f"{kind}_step_s_all"]) == len(row["rounds"]) == 3
    assert row[f"{kind}_step_s"] == sorted(row[f"{kind}_step_s_all"])[1]
  assert set(row["train_cpu_per_step"]) == {"user_s", "sys_s", "minor_faults"}
  assert result["machine"]["allocator"] in ("tcmalloc", "system malloc")


@pytest.mark.parametrize("kt,stride,dilation,frames", [
    (9, 1, 1, 12), (9, 2, 1, 12), (9, 2, 1, 11), (3, 1, 3, 10), (3, 2, 4, 9), (5, 2, 2, 8)])
def test_temporal_conv_gradient_equals_xla(kt, stride, dilation, frames):
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (3, frames, 4, 5))
  w = jax.random.normal(kw, (kt, 1, 5, 6))
  fast = lambda x, w: layers.temporal_conv(x, w, stride, dilation)
  slow = lambda x, w: layers._temporal_conv(x, w, stride, dilation)  # pylint: disable=protected-access
  y, fast_vjp = jax.vjp(fast, x, w)
  y_ref, slow_vjp = jax.vjp(slow, x, w)
  np.testing.assert_array_equal(y, y_ref)
  g = jax.random.normal(kg, y.shape)
  for got, want in zip(fast_vjp(g), slow_vjp(g)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_temporal_conv_gradient_under_vmap():
  x = jax.random.normal(jax.random.key(1), (2, 3, 10, 4, 5))
  w = jax.random.normal(jax.random.key(2), (2, 9, 1, 5, 5))

  def loss(impl):
    f = lambda x, w: jnp.sum(jnp.sin(impl(x, w, 2, 1)))
    return jax.vmap(jax.grad(f, argnums=(0, 1)))(x, w)

  fast = loss(layers.temporal_conv)
  slow = loss(layers._temporal_conv)  # pylint: disable=protected-access
  for got, want in zip(fast, slow):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_graph_bench_forms_equal_their_einsums(capsys):
  # experiments.bench_graph times each contraction's einsum against the models' form: both must
  # compute the same function (values; the gradients are tests/test_models.py's), and it runs.
  from experiments import bench_graph
  assert bench_graph.main(["--tiny", "--reps=1"]) == 0
  assert capsys.readouterr().out.count("C 4, T 6") == 4
  for name, label, ref, ours, shapes in bench_graph.cases(tiny=True):
    keys = jax.random.split(jax.random.key(0), len(shapes))
    args = [jax.random.normal(k, s) for k, s in zip(keys, shapes)]
    np.testing.assert_allclose(ours(*args), ref(*args), rtol=1e-5, atol=1e-5, err_msg=name)
