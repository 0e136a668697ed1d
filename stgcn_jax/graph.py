"""Skeleton layouts and their adjacency stacks (numpy only).

Conventions (shared with pyskl, see ``spec/BACKBONES.md`` section 2):

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

__all__ = ["Layout", "LayoutError", "LAYOUTS", "get_layout", "adjacency", "hop_distance",
           "normalize_digraph"]


class LayoutError(ValueError):
  """A skeleton layout that cannot be used (bad edges, disconnected joints, unknown name)."""


@dataclasses.dataclass(frozen=True)
class Layout:
  """A skeleton: ``num_joints`` joints, ``inward`` edges (child, parent) and a ``center`` joint."""
  name: str
  num_joints: int
  inward: tuple[tuple[int, int], ...]
  center: int

  def __post_init__(self):
    object.__setattr__(self, "inward", tuple((int(i), int(j)) for i, j in self.inward))
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
    try:
      inward = tuple((int(e[0]), int(e[1])) for e in edges)
    except (TypeError, ValueError, IndexError) as err:
      raise LayoutError(f"layout {name!r}: edges must be a list of (child, parent) integer pairs, "
                        f"got {edges!r}") from err
    if any(len(e) != 2 for e in edges):
      raise LayoutError(f"layout {name!r}: every edge must have exactly two joints, got {edges!r}")
    return cls(name=name, num_joints=int(num_joints), inward=inward, center=int(center))

  @classmethod
  def from_json(cls, path: str) -> "Layout":
    """Reads ``{"num_joints": V, "edges": [[child, parent], ...], "center": c, "name": ...}``."""
    try:
      with open(path) as f:
        spec = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
      raise LayoutError(f"{path}: cannot read layout JSON ({err})") from err
    missing = [k for k in ("num_joints", "edges", "center") if k not in spec]
    if missing:
      raise LayoutError(f"{path}: layout JSON is missing field(s) {missing}; expected "
                        '{"num_joints": V, "edges": [[child, parent], ...], "center": c}')
    try:
      return cls.from_edges(spec["num_joints"], spec["edges"], spec["center"],
                            name=spec.get("name", os.path.splitext(os.path.basename(path))[0]))
    except LayoutError as err:
      raise LayoutError(f"{path}: {err}") from None

  def to_json(self) -> dict:
    return {"name": self.name, "num_joints": self.num_joints,
            "edges": [list(e) for e in self.inward], "center": self.center}


def _validate(layout: Layout) -> None:
  v, name = layout.num_joints, layout.name
  if v < 1:
    raise LayoutError(f"layout {name!r}: num_joints must be >= 1, got {v}")
  if not 0 <= layout.center < v:
    raise LayoutError(f"layout {name!r}: center joint {layout.center} is out of range [0, {v})")
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
  # Every joint must be reachable from the centre, or it never exchanges information.
  adj = [[] for _ in range(v)]
  for i, j in layout.inward:
    adj[i].append(j)
    adj[j].append(i)
  reached, stack = {layout.center}, [layout.center]
  while stack:
    for n in adj[stack.pop()]:
      if n not in reached:
        reached.add(n)
        stack.append(n)
  lonely = sorted(set(range(v)) - reached)
  if lonely:
    raise LayoutError(f"layout {name!r}: joint(s) {lonely} are not connected to the centre joint "
                      f"{layout.center}")


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
      raise LayoutError(f"layout dict is missing field(s) {missing}")
    return Layout.from_edges(layout["num_joints"], layout["edges"], layout["center"],
                             name=layout.get("name", "custom"))
  if isinstance(layout, str):
    if layout in LAYOUTS:
      return LAYOUTS[layout]
    if layout.endswith(".json"):
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
  elif mode == "binary_adj":
    a = edge2mat(layout.inward + layout.outward, v)[None]
  else:
    raise LayoutError(f"unknown graph mode {mode!r}; expected 'spatial', 'stgcn_spatial', "
                      "'random' or 'binary_adj'")
  return a.astype(np.float32)
