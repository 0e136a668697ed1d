"""Bad layout JSON files (``graph.load_layout``): each is refused with one clear error naming the
file and the field; the built-in layouts round-trip; a seeded fuzz test of the format."""

import copy
import json
import math

import numpy as np
import pytest

from stgcn_jax import graph


def _layout_file(tmp_path, spec, name="my_layout.json"):
  path = tmp_path / name
  path.write_bytes(spec if isinstance(spec, bytes) else json.dumps(spec).encode())
  return path


CHAIN = {"num_joints": 4, "edges": [[0, 1], [1, 2], [3, 2]], "center": 2}


@pytest.mark.parametrize("content,message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not a layout JSON text file (byte 0x89 at "
                                                     "offset 0 is not UTF-8)"),
    (b"5", "must hold one object"),
    (b"[1, 2]", "must hold one object"),
    (b'"nturgb+d"', "must hold one object"),
    (b"", "malformed layout JSON"),
    (b"[" * 100000, "malformed layout JSON"),
    (b'{"num_joints": 1' + b"0" * 5000 + b"}", "malformed layout JSON"),
    (dict(CHAIN, num_joints="4"), "field 'num_joints' must be an integer, got str '4'"),
    (dict(CHAIN, center="2"), "field 'center' must be an integer, got str '2'"),
    (dict(CHAIN, edges="0,1"), "field 'edges' must be a list of [child, parent] pairs, got str"),
    (dict(CHAIN, edges={"0": 1}), "field 'edges' must be a list of [child, parent] pairs"),
    (dict(CHAIN, edges=[[0, 1], [1, 2], [3]]), "field 'edges[2]' must be a [child, parent] pair"),
    (dict(CHAIN, edges=[[0, 1], [1, 2], 3]), "field 'edges[2]' must be a [child, parent] pair"),
    (dict(CHAIN, edges=[[0, 1], [1, 2], [3, "2"]]), "field 'edges[2][1]' must be an integer"),
    (dict(CHAIN, name=["x"]), "field 'name' must be a string, got list"),
    ({"num_joints": 4, "edges": []}, "missing field(s) ['center']"),
])
def test_layout_json_unusable_file_is_one_layout_error(tmp_path, content, message):
  path = _layout_file(tmp_path, content)
  with pytest.raises(graph.LayoutError) as err:
    graph.get_layout(str(path))
  text = str(err.value)
  assert text.startswith(str(path)) and message in text and len(text.splitlines()) == 1
  assert len(text) < 600


@pytest.mark.parametrize("field,value", [
    ("num_joints", 4.0), ("num_joints", 4.5), ("num_joints", True), ("center", 2.0),
    ("center", False), ("edges[1][0]", 1.0), ("edges[2][1]", 2.5), ("edges[0][1]", True),
])
def test_layout_json_non_integer_numbers_are_refused(tmp_path, field, value):
  spec = copy.deepcopy(CHAIN)
  if field.startswith("edges"):
    k, i = int(field[6]), int(field[9])
    spec["edges"][k][i] = value
  else:
    spec[field] = value
  path = _layout_file(tmp_path, spec)
  with pytest.raises(graph.LayoutError) as err:
    graph.get_layout(str(path))
  assert str(err.value) == (f"{path}: layout 'my_layout': field {field!r} must be an integer, got "
                            f"{type(value).__name__} {value!r}")


@pytest.mark.parametrize("edges,center,message", [
    ([[0, 1], [1, 2], [3, 2], [0, 2]], 2, "the edges form a cycle through joints 2 - 1 - 0 - 2; "
                                          "4 edges for 4 joints, a skeleton tree has 3"),
    ([[0, 1], [1, 2], [3, 2], [3, 1]], 2, "the edges form a cycle through joints"),
    ([[0, 1], [1, 2], [0, 3]], 2, "joint 0 has two parents, 1 and 3 (edges [0, 1] and [0, 3])"),
    ([[0, 1], [2, 1], [3, 2]], 2, "the centre joint 2 has a parent (edge [2, 1])"),
    ([[1, 0], [2, 1], [2, 3]], 2, "the edges are reversed: each edge is [child, parent], pointing "
                                  "towards the centre joint 2, so write [0, 1], not [1, 0]"),
])
def test_layout_edges_must_form_a_tree_rooted_at_the_centre(tmp_path, edges, center, message):
  path = _layout_file(tmp_path, {"num_joints": 4, "edges": edges, "center": center})
  with pytest.raises(graph.LayoutError) as err:
    graph.get_layout(str(path))
  assert str(err.value).startswith(f"{path}: layout 'my_layout': ")
  assert message in str(err.value)
  with pytest.raises(graph.LayoutError, match="layout 'custom': "):
    graph.get_layout({"num_joints": 4, "edges": edges, "center": center})


@pytest.mark.parametrize("name", sorted(graph.LAYOUTS))
def test_builtin_layouts_are_trees_and_round_trip_through_json(tmp_path, name):
  layout = graph.LAYOUTS[name]
  reversed_edges = [[j, i] for i, j in layout.inward]
  with pytest.raises(graph.LayoutError, match="reversed"):
    graph.Layout.from_edges(layout.num_joints, reversed_edges, layout.center)
  path = _layout_file(tmp_path, layout.to_json(), f"{name}.json")
  again = graph.get_layout(str(path))
  assert again == layout
  parents = layout.parents
  for v in range(layout.num_joints):             # following parents reaches the centre
    for _ in range(layout.num_joints):
      v = parents[v]
    assert v == layout.center


def test_layout_error_is_one_line_from_the_cli(tmp_path, capsys):
  from data_prep import common, pyskl
  path = _layout_file(tmp_path, bytes(range(256)))
  rc = common.run_cli(pyskl.main, ["--src", str(tmp_path / "x.pkl"), "--out", str(tmp_path),
                                   "--name", "x", "--layout", str(path)])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and len(err.splitlines()) == 1
  assert err.startswith(f"error: {path}: not a layout JSON text file (byte 0x80 at offset 128")


def test_layout_huge_joint_count_is_refused_quickly(tmp_path):
  path = _layout_file(tmp_path, dict(CHAIN, num_joints=10 ** 15))
  pattern = r"joint\(s\) \[4, 5, 6, 7, 8, 9, 10, 11, 12, 13\] and 999999999999986 more are not"
  with pytest.raises(graph.LayoutError, match=pattern):
    graph.get_layout(str(path))


def _is_tree(layout):
  parents = {}
  for child, parent in layout.inward:
    assert child != layout.center and child not in parents
    parents[child] = parent
  assert len(parents) == layout.num_joints - 1
  for v in range(layout.num_joints):
    seen = set()
    while v != layout.center:
      assert v not in seen
      seen.add(v)
      v = parents[v]


def test_layout_json_fuzz(tmp_path):
  """Seeded field- and byte-level mutants of a valid layout: a tree, or one LayoutError."""
  base = graph.LAYOUTS["nturgb+d"].to_json()
  raw = json.dumps(base).encode()
  rng = np.random.default_rng(99)
  path = tmp_path / "fuzz.json"
  values = [-1, 0, 1, 24, 25, 26, 2.0, 5.5, -0.0, "3", None, True, [], {}, [1, 2], 10 ** 20,
            float("nan"), float("inf")]
  outcomes = {"ok": 0, "error": 0}
  for i in range(400):
    spec = copy.deepcopy(base)
    if i % 3 == 0:
      blob = bytearray(raw)
      for _ in range(rng.integers(1, 4)):
        at = int(rng.integers(len(blob)))
        op = rng.integers(3)
        if op == 0:
          blob[at] = int(rng.integers(256))
        elif op == 1:
          blob[at:at] = bytes(rng.choice(list(b'0123456789.-[],"{}: '), rng.integers(1, 4)))
        else:
          del blob[at:at + int(rng.integers(1, 10))]
      path.write_bytes(bytes(blob))
    else:
      for _ in range(rng.integers(1, 3)):
        kind = rng.integers(7)
        edges = spec.get("edges")
        if kind == 0:
          spec[["num_joints", "center", "name", "edges"][rng.integers(4)]] = values[
              rng.integers(len(values))]
        elif kind == 1 and isinstance(edges, list) and edges:
          k = rng.integers(len(edges))
          if isinstance(edges[k], list) and edges[k]:
            edges[k][rng.integers(len(edges[k]))] = values[rng.integers(len(values))]
        elif kind == 2 and isinstance(edges, list) and edges:
          del edges[rng.integers(len(edges))]
        elif kind == 3 and isinstance(edges, list):
          edges.append([int(rng.integers(25)), int(rng.integers(25))])
        elif kind == 4 and isinstance(edges, list) and edges:
          k = rng.integers(len(edges))
          if isinstance(edges[k], list):
            edges[k] = edges[k][::-1]
        elif kind == 5:
          spec.pop(["num_joints", "center", "edges", "name"][rng.integers(4)], None)
        elif kind == 6 and isinstance(edges, list):
          spec["edges"] = [e[::-1] if isinstance(e, list) else e for e in edges]
      path.write_text(json.dumps(spec))
    try:
      layout = graph.get_layout(str(path))
    except graph.LayoutError as err:
      assert str(err).startswith(str(path)) and "\n" not in str(err), err
      outcomes["error"] += 1
      continue
    _is_tree(layout)
    assert all(isinstance(x, int) and not isinstance(x, bool)
               for e in layout.inward for x in e)
    assert math.isfinite(graph.adjacency(layout, "spatial").sum())
    outcomes["ok"] += 1
  assert min(outcomes.values()) > 0, outcomes
