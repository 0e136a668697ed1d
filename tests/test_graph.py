import json

import numpy as np
import pytest

from stgcn_jax import graph


@pytest.mark.parametrize("layout,stgcn_nnz,spatial_nnz", [
    ("nturgb+d", (25, 40, 8), (25, 24, 24)),
    ("coco", (17, 22, 10), (17, 16, 16)),
    ("openpose", (18, 25, 9), (18, 17, 17)),
    ("nw-ucla", (20, 31, 7), (20, 19, 19)),
])
def test_subset_sizes(layout, stgcn_nnz, spatial_nnz):
  assert tuple(int((a != 0).sum()) for a in graph.adjacency(layout, "stgcn_spatial")) == stgcn_nnz
  assert tuple(int((a != 0).sum()) for a in graph.adjacency(layout, "spatial")) == spatial_nnz


def test_stgcn_spatial_inf_quirk_subset2_pairs():
  """Only pairs with a joint within one hop of the centre can land in subset 2 (pyskl's +inf quirk)."""
  a = graph.adjacency("nturgb+d", "stgcn_spatial")
  senders, receivers = np.nonzero(a[2])
  assert sorted(zip(senders.tolist(), receivers.tolist())) == [
      (1, 0), (2, 3), (4, 5), (8, 9), (20, 1), (20, 2), (20, 4), (20, 8)]


def test_graphs_equal_pyskl_buffers(pyskl_fixture):
  np.testing.assert_array_equal(pyskl_fixture("stgcn")["sd"]["backbone.gcn.0.gcn.A"],
                                graph.adjacency("nturgb+d", "stgcn_spatial"))
  np.testing.assert_array_equal(pyskl_fixture("ctrgcn")["sd"]["backbone.A"],
                                graph.adjacency("nturgb+d", "spatial"))


def test_spatial_columns_average_senders():
  a = graph.adjacency("coco", "spatial")
  np.testing.assert_array_equal(a[0], np.eye(17))
  col = a[1].sum(0)
  assert np.allclose(col[col > 0], 1.0) and col[0] == 0  # the centre has no parent


def test_random_mode_is_seeded_with_requested_statistics():
  a = graph.adjacency("nturgb+d", "random", num_filter=8, seed=3)
  assert a.shape == (8, 25, 25) and a.dtype == np.float32
  np.testing.assert_array_equal(a, graph.adjacency("nturgb+d", "random", num_filter=8, seed=3))
  assert abs(a.mean() - 0.04) < 0.005 and abs(a.std() - 0.02) < 0.005


def test_parents_of_ntu():
  parents = graph.get_layout("nturgb+d").parents
  assert parents[20] == 20 and parents[0] == 1 and parents[21] == 7


def test_custom_layout_from_json(tmp_path):
  path = tmp_path / "chain.json"
  path.write_text(json.dumps({"num_joints": 4, "edges": [[0, 1], [1, 2], [3, 2]], "center": 2}))
  layout = graph.get_layout(str(path))
  assert layout.num_joints == 4 and layout.name == "chain"
  assert graph.adjacency(layout, "spatial").shape == (3, 4, 4)


@pytest.mark.parametrize("edges,center,message", [
    ([(0, 1), (1, 5)], 1, "outside"),
    ([(0, 1), (2, 2)], 1, "self loop"),
    ([(0, 1), (1, 0)], 1, "listed twice"),
    ([(0, 1)], 1, "not connected"),
    ([(0, 1), (2, 1)], 7, "center joint 7"),
])
def test_bad_layouts_are_refused(edges, center, message):
  with pytest.raises(graph.LayoutError, match=message):
    graph.Layout.from_edges(3, edges, center)


def test_unknown_layout_and_mode():
  with pytest.raises(graph.LayoutError, match="unknown layout 'ntu'"):
    graph.get_layout("ntu")
  with pytest.raises(graph.LayoutError, match="unknown graph mode"):
    graph.adjacency("coco", "spectral")
  with pytest.raises(graph.LayoutError, match="does not exist"):
    graph.get_layout("/nonexistent/layout.json")
