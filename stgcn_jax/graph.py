"""Skeleton layouts and their adjacency stacks (numpy only).

Conventions (shared with pyskl, see ``docs/BACKBONES.md`` section 2):

* Joints are 0-based. An ``inward`` edge ``(i, j)`` points from joint ``i`` one step towards the centre
  joint ``j`` (``j`` is ``i``'s parent).
* An adjacency stack has shape ``(K, V, V)`` and is indexed ``[subset, sender v, receiver w]``; a graph
  convolution computes ``out[..., w] = sum_v x[..., v] * A[k, v, w]``.
* ``normalize_digraph`` divides every column (receiver) by its sum, so a receiver averages its senders.

Modes: ``spatial`` (identity / inward / outward; AA-GCN, CTR-GCN), ``stgcn_spatial`` (root / closer /
further with the original ST-GCN hop-distance quirk; ST-GCN) and ``random`` (DG-STGCN's learnable
random graphs, N(init_off, init_std^2)).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

from stgcn_jax.errors import UserError

__all__ = ["Layout", "LayoutError", "LAYOUTS", "get_layout", "adjacency", "hop_distance",
           "normalize_digraph"]


class LayoutError(UserError):
  """A skeleton layout that cannot be used (bad edges, disconnected joints, unknown name)."""


_MAX_LAYOUT_BYTES = 16 << 20      # a layout JSON is a few hundred bytes; refuse to read more
_LAYOUT_FIELDS = '{"num_joints": V, "edges": [[child, parent], ...], "center": c, "name": "..."}'


@dataclasses.dataclass(frozen=True)
class Layout:
  """A skeleton: ``num_joints`` joints, ``inward`` edges (child, parent) and a ``center`` joint.

  The edges must form a tree rooted at the centre: every joint except the centre has exactly one
  parent, and following parents from any joint reaches the centre. Joint counts and indices must
  be integers (``bool``, ``5.0`` and ``"5"`` are refused, not truncated).
  """
  name: str
  num_joints: int
  inward: tuple[tuple[int, int], ...]
  center: int

  def __post_init__(self):
    if not isinstance(self.name, str):
      raise LayoutError(f"layout {_short(self.name)}: field 'name' must be a string, got "
                        f"{_kind(self.name)}")
    object.__setattr__(self, "num_joints", _integer(self.num_joints, "num_joints", self.name))
    object.__setattr__(self, "center", _integer(self.center, "center", self.name))
    object.__setattr__(self, "inward", _edge_pairs(self.inward, self.name))
    _validate(self)

  @property
  def outward(self) -> tuple[tuple[int, int], ...]:
    return tuple((j, i) for i, j in self.inward)

  @property
  def parents(self) -> np.ndarray:
    """``parents[v]`` is the joint one step closer to the centre (the centre is its own parent)."""
    parents = np.arange(self.num_joints)
    for child, parent in self.inward:
      parents[child] = parent
    return parents

  @classmethod
  def from_edges(cls, num_joints: int, edges: Sequence[Sequence[int]], center: int,
                 name: str = "custom") -> "Layout":
    """A user-defined layout. ``edges`` are (child, parent) pairs, 0-based."""
    return cls(name=name, num_joints=num_joints, inward=edges, center=center)

  @classmethod
  def from_json(cls, path: str) -> "Layout":
    """Reads ``{"num_joints": V, "edges": [[child, parent], ...], "center": c, "name": ...}``.

    Raises:
      LayoutError: one message naming ``path`` (and the field) for an unreadable, binary or
        malformed file, a missing field, a non-integer count or index, or edges that are not a
        tree rooted at the centre.
    """
    try:
      with open(path, "rb") as f:
        raw = f.read(_MAX_LAYOUT_BYTES + 1)
    except OSError as err:
      raise LayoutError(f"{path}: cannot read layout JSON ({err.strerror or err})") from None
    if len(raw) > _MAX_LAYOUT_BYTES:
      raise LayoutError(f"{path}: larger than {_MAX_LAYOUT_BYTES >> 20} MiB; a layout JSON file is "
                        f"small: {_LAYOUT_FIELDS}")
    try:
      spec = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
      raise LayoutError(f"{path}: not a layout JSON text file (byte 0x{raw[err.start]:02x} at "
                        f"offset {err.start} is not UTF-8); expected {_LAYOUT_FIELDS}") from None
    except json.JSONDecodeError as err:
      raise LayoutError(f"{path}:{err.lineno}: malformed layout JSON ({err.msg} at column "
                        f"{err.colno}); expected {_LAYOUT_FIELDS}") from None
    except (ValueError, RecursionError) as err:   # e.g. an integer of > 4300 digits, deep nesting
      raise LayoutError(f"{path}: malformed layout JSON ({type(err).__name__}: "
                        f"{str(err)[:200]})") from None
    if not isinstance(spec, dict):
      raise LayoutError(f"{path}: a layout JSON file must hold one object {_LAYOUT_FIELDS}, got "
                        f"{_kind(spec)}")
    missing = [k for k in ("num_joints", "edges", "center") if k not in spec]
    if missing:
      raise LayoutError(f"{path}: layout JSON is missing field(s) {missing}; expected "
                        f"{_LAYOUT_FIELDS}")
    try:
      return cls.from_edges(spec["num_joints"], spec["edges"], spec["center"],
                            name=spec.get("name", os.path.splitext(os.path.basename(path))[0]))
    except LayoutError as err:
      raise LayoutError(f"{path}: {err}") from None

  def to_json(self) -> dict:
    return {"name": self.name, "num_joints": self.num_joints,
            "edges": [list(e) for e in self.inward], "center": self.center}


def _short(value, limit: int = 60) -> str:
  text = repr(value)
  return text if len(text) <= limit else text[:limit] + "..."


def _kind(value) -> str:
  return f"{type(value).__name__} {_short(value)}"


def _integer(value, field: str, name) -> int:
  """``value`` as an int; bool, float (even ``5.0``), str and everything else are refused."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    raise LayoutError(f"layout {name!r}: field {field!r} must be an integer, got {_kind(value)}")
  return int(value)


def _edge_pairs(edges, name) -> tuple[tuple[int, int], ...]:
  """``edges`` as int pairs; a list / tuple / 2-axis array of [child, parent] pairs is expected."""
  if not (isinstance(edges, (list, tuple))
          or isinstance(edges, np.ndarray) and (edges.ndim == 2 or edges.size == 0)):
    raise LayoutError(f"layout {name!r}: field 'edges' must be a list of [child, parent] pairs, "
                      f"got {_kind(edges)}")
  pairs = []
  for k, edge in enumerate(edges):
    pair = isinstance(edge, (list, tuple)) or isinstance(edge, np.ndarray) and edge.ndim == 1
    if not pair or len(edge) != 2:
      raise LayoutError(f"layout {name!r}: field 'edges[{k}]' must be a [child, parent] pair of "
                        f"joint indices, got {_kind(edge)}")
    pairs.append((_integer(edge[0], f"edges[{k}][0]", name),
                  _integer(edge[1], f"edges[{k}][1]", name)))
  return tuple(pairs)


def _validate(layout: Layout) -> None:
  v, name, center = layout.num_joints, layout.name, layout.center
  if v < 1:
    raise LayoutError(f"layout {name!r}: num_joints must be >= 1, got {v}")
  if not 0 <= center < v:
    raise LayoutError(f"layout {name!r}: center joint {center} is out of range [0, {v})")
  for child, parent in layout.inward:
    if not (0 <= child < v and 0 <= parent < v):
      raise LayoutError(f"layout {name!r}: edge ({child}, {parent}) refers to a joint outside "
                        f"[0, {v})")
    if child == parent:
      raise LayoutError(f"layout {name!r}: edge ({child}, {parent}) is a self loop; self links are "
                        "added by the graph modes")
  seen = set()
  for e in layout.inward:
    key = frozenset(e)
    if key in seen:
      raise LayoutError(f"layout {name!r}: edge {e} is listed twice")
    seen.add(key)
  # Every joint must be reachable from the centre, or it never exchanges information. Only the
  # joints named in edges are visited, so a huge num_joints costs nothing.
  adj: dict[int, list[int]] = {}
  for i, j in layout.inward:
    adj.setdefault(i, []).append(j)
    adj.setdefault(j, []).append(i)
  reached, stack = {center}, [center]
  while stack:
    for n in adj.get(stack.pop(), ()):
      if n not in reached:
        reached.add(n)
        stack.append(n)
  if len(reached) < v:
    lonely = []
    for j in range(v):              # stops after len(reached) + 10 joints at most
      if j not in reached:
        lonely.append(j)
        if len(lonely) == 10:
          break
    more = v - len(reached) - len(lonely)
    raise LayoutError(f"layout {name!r}: joint(s) {lonely}{f' and {more} more' if more else ''} "
                      f"are not connected to the centre joint {center}")
  cycle = _undirected_cycle(layout.inward)
  if cycle is not None:
    shown = cycle if len(cycle) <= 12 else cycle[:6] + ["..."] + cycle[-6:]
    raise LayoutError(f"layout {name!r}: the edges form a cycle through joints "
                      f"{' - '.join(map(str, shown))}; {len(layout.inward)} edges for {v} joints, "
                      f"a skeleton tree has {v - 1} (every joint except the centre has one parent)")
  problem = _direction_problem(v, layout.inward, center)
  if problem is not None:
    flipped = tuple((j, i) for i, j in layout.inward)
    if _direction_problem(v, flipped, center) is None:
      i, j = layout.inward[0]
      raise LayoutError(f"layout {name!r}: the edges are reversed: each edge is [child, parent], "
                        f"pointing towards the centre joint {center}, so write [{j}, {i}], not "
                        f"[{i}, {j}]; reversed, they form a valid tree")
    raise LayoutError(f"layout {name!r}: {problem}")


def _undirected_cycle(edges) -> list[int] | None:
  """The joints of a cycle in the undirected edge graph (first one closed), or ``None``."""
  root: dict[int, int] = {}
  tree: dict[int, list[int]] = {}

  def find(x):
    while root.get(x, x) != x:
      root[x] = root.get(root[x], root[x])      # path halving: near-constant time per edge
      x = root[x]
    return x

  for i, j in edges:
    ri, rj = find(i), find(j)
    if ri == rj:                    # the tree so far already joins i and j: find that path
      prev, stack = {i: None}, [i]
      while stack:
        n = stack.pop()
        for m in tree.get(n, ()):
          if m not in prev:
            prev[m] = n
            stack.append(m)
      path, n = [], j
      while n is not None:
        path.append(n)
        n = prev[n]
      return path + [j]
    root[ri] = rj
    tree.setdefault(i, []).append(j)
    tree.setdefault(j, []).append(i)
  return None


def _direction_problem(v: int, inward, center: int) -> str | None:
  """What keeps ``inward`` (child, parent) from being a tree rooted at ``center``, or ``None``.

  Called after the range, duplicate, connectivity and cycle checks, so ``v <= len(inward) + 1``.
  """
  parents: dict[int, int] = {}
  for child, parent in inward:
    if child == center:
      return (f"the centre joint {center} has a parent (edge [{child}, {parent}]); edges are "
              "[child, parent] and lead towards the centre, which has none")
    if child in parents:
      return (f"joint {child} has two parents, {parents[child]} and {parent} (edges "
              f"[{child}, {parents[child]}] and [{child}, {parent}]); every joint except the "
              "centre has exactly one")
    parents[child] = parent
  for j in range(v):
    if j != center and j not in parents:
      return (f"joint {j} has no parent (no edge [{j}, parent]); every joint except the centre "
              f"joint {center} has exactly one")
  done = {center}
  for j in range(v):
    path, on_path = [], set()
    while j not in done:
      if j in on_path:
        return f"following parents from joint {path[0]} loops ({' -> '.join(map(str, path))})"
      path.append(j)
      on_path.add(j)
      j = parents[j]
    done.update(path)
  return None


def _one_based(pairs):
  return tuple((i - 1, j - 1) for i, j in pairs)


LAYOUTS: dict[str, Layout] = {
    "nturgb+d": Layout("nturgb+d", 25, _one_based([
        (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
        (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
        (20, 19), (22, 8), (23, 8), (24, 12), (25, 12)]), center=20),
    "coco": Layout("coco", 17, (
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 5), (12, 6), (9, 7), (7, 5), (10, 8), (8, 6),
        (5, 0), (6, 0), (1, 0), (3, 1), (2, 0), (4, 2)), center=0),
    "openpose": Layout("openpose", 18, (
        (4, 3), (3, 2), (7, 6), (6, 5), (13, 12), (12, 11), (10, 9), (9, 8), (11, 5), (8, 2),
        (5, 1), (2, 1), (0, 1), (15, 0), (14, 0), (17, 15), (16, 14)), center=1),
    # Kinect v1 (NW-UCLA, CTR-GCN's graph/ucla.py); the root is the shoulder centre (joint 3, 1-based).
    "nw-ucla": Layout("nw-ucla", 20, _one_based([
        (1, 2), (2, 3), (4, 3), (5, 3), (6, 5), (7, 6), (8, 7), (9, 3), (10, 9), (11, 10),
        (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
        (20, 19)]), center=2),
}


def get_layout(layout: str | Layout | dict) -> Layout:
  """A layout by name, from a JSON file path, from a dict, or passed through."""
  if isinstance(layout, Layout):
    return layout
  if isinstance(layout, dict):
    missing = [k for k in ("num_joints", "edges", "center") if k not in layout]
    if missing:
      raise LayoutError(f"layout dict is missing field(s) {missing}; expected {_LAYOUT_FIELDS}")
    return Layout.from_edges(layout["num_joints"], layout["edges"], layout["center"],
                             name=layout.get("name", "custom"))
  if isinstance(layout, str):
    if layout in LAYOUTS:
      return LAYOUTS[layout]
    if layout.lower().endswith(".json"):
      if not os.path.exists(layout):
        raise LayoutError(f"layout file {layout!r} does not exist")
      return Layout.from_json(layout)
  raise LayoutError(f"unknown layout {layout!r}; expected one of {sorted(LAYOUTS)}, a path to a "
                    "layout JSON file, or a Layout")


def edge2mat(edges, num_joints: int) -> np.ndarray:
  """``A[j, i] = 1`` for every edge ``(i, j)``: joint ``j`` sends to joint ``i``."""
  a = np.zeros((num_joints, num_joints))
  for i, j in edges:
    a[j, i] = 1
  return a


def normalize_digraph(a: np.ndarray) -> np.ndarray:
  """Divides every column by its sum (zero columns stay zero)."""
  col = a.sum(0)
  scale = np.where(col > 0, 1.0 / np.where(col > 0, col, 1.0), 0.0)
  return a * scale[None, :]


def hop_distance(layout: Layout, max_hop: int = 1) -> np.ndarray:
  """Hop distances up to ``max_hop``; farther pairs are ``+inf`` (pyskl's behaviour)."""
  v = layout.num_joints
  a = np.eye(v)
  for i, j in layout.inward:
    a[i, j] = a[j, i] = 1
  dist = np.full((v, v), np.inf)
  reach = np.stack([np.linalg.matrix_power(a, d) for d in range(max_hop + 1)]) > 0
  for d in range(max_hop, -1, -1):
    dist[reach[d]] = d
  return dist


def _stgcn_spatial(layout: Layout, max_hop: int) -> np.ndarray:
  v, c = layout.num_joints, layout.center
  dist = hop_distance(layout, max_hop)
  norm = normalize_digraph((dist <= max_hop).astype(np.float64))
  subsets = []
  for hop in range(max_hop + 1):
    close, further = np.zeros((v, v)), np.zeros((v, v))
    # sender j, receiver i; +inf >= +inf puts far-from-centre pairs in `close`, as ST-GCN does.
    pair = dist == hop
    closer = dist[:, c][:, None] >= dist[:, c][None, :]
    close[pair & closer] = norm[pair & closer]
    further[pair & ~closer] = norm[pair & ~closer]
    subsets.append(close)
    if hop > 0:
      subsets.append(further)
  return np.stack(subsets)


def adjacency(layout: str | Layout, mode: str = "spatial", *, max_hop: int = 1,
              num_filter: int = 3, init_std: float = 0.02, init_off: float = 0.04,
              seed: int = 0) -> np.ndarray:
  """The ``(K, V, V)`` float32 adjacency stack of ``layout`` in graph ``mode``."""
  layout = get_layout(layout)
  v = layout.num_joints
  if mode == "spatial":
    a = np.stack([np.eye(v), normalize_digraph(edge2mat(layout.inward, v)),
                  normalize_digraph(edge2mat(layout.outward, v))])
  elif mode == "stgcn_spatial":
    a = _stgcn_spatial(layout, max_hop)
  elif mode == "random":
    a = np.random.default_rng(seed).standard_normal((num_filter, v, v)) * init_std + init_off
  else:
    raise LayoutError(f"unknown graph mode {mode!r}; expected 'spatial', 'stgcn_spatial' "
                      "or 'random'")
  return a.astype(np.float32)
