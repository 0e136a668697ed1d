"""pyskl's own model (PyTorch, CPU) timed the way ``experiments.bench`` times ours: the torch side
of the side-by-side benchmark.

  TORCH_PYTHON experiments/bench_pyskl.py --pyskl_src=PATH --backbone=ctrgcn [--batch=16]
      [--persons=2] [--frames=100] [--layout=nturgb+d] [--classes=60] [--threads=2] [--steps=3]
      [--tiny] [--out=FILE]

``experiments.bench`` starts this file once per backbone with the python of a virtual environment
that has torch (``--torch_python``), so that the project's own environment needs no torch; it reads
only the standard library, numpy, torch and pyskl's source, never ``stgcn_jax`` (hence argparse,
not the absl flags of the other programs). It writes one JSON object (``--out``, else stdout).

The model is pyskl's: its backbone classes are imported from ``PATH/pyskl/models/gcns/`` and its
graph from ``PATH/pyskl/utils/graph.py``, with the four configs of ``configs/*/..._ntu60_xsub_3dkp/
j.py`` (the models ``stgcn_jax`` ports). pyskl's packages import mmcv at the top; this file puts
stubs for the few mmcv symbols those modules name into ``sys.modules`` (registries, the norm and
activation builders, ``load_checkpoint``) and skips the package ``__init__`` files that import the
rest; no pyskl layer is rewritten. The recognizer on top is pyskl's ``GCNHead`` at training time
(mean over T, V and persons, then a linear layer), written out here because importing the head would
pull in pyskl's losses and metrics. A layout pyskl lacks (nw-ucla) is added to its ``Graph`` from
``--layout_spec`` (the parent passes ``stgcn_jax.graph``'s edges), since pyskl's list is fixed.

Timed as in ``docs/BACKBONES.md`` section 10 (the reference harness): a train step is zero_grad +
forward + cross-entropy + backward + SGD (lr 0.1, Nesterov momentum 0.9, weight decay 5e-4, pyskl's
configs) in train mode; inference runs in eval mode under ``torch.inference_mode()`` (``no_grad``
without autograd's version counters); flush-denormal on. The first step of each is untimed (its
time is reported: torch's counterpart of a compile); then the median of ``--steps`` steps.
``--threads=N`` pins the process to the first N CPUs it may use and calls
``torch.set_num_threads(N)``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import resource
import statistics
import sys
import time
import types
from pathlib import Path

BACKBONES = ("stgcn", "aagcn", "ctrgcn", "dgstgcn")

# The ``backbone=`` of pyskl's configs/{stgcn/stgcn_pyskl, aagcn/aagcn_pyskl, ctrgcn/ctrgcn_pyskl,
# dgstgcn/}_ntu60_xsub_3dkp/j.py; the layout is the bench's.
PYSKL_CONFIGS = {
    "stgcn": dict(type="STGCN", graph_cfg=dict(mode="stgcn_spatial")),
    "aagcn": dict(type="AAGCN", graph_cfg=dict(mode="spatial")),
    "ctrgcn": dict(type="CTRGCN", graph_cfg=dict(mode="spatial")),
    "dgstgcn": dict(type="DGSTGCN", gcn_ratio=0.125, gcn_ctr="T", gcn_ada="T",
                    tcn_ms_cfg=[(3, 1), (3, 2), (3, 3), (3, 4), ("max", 3), "1x1"],
                    graph_cfg=dict(mode="random", num_filter=8, init_off=.04, init_std=.02)),
}
# experiments.bench's TINY_OPTIONS, in pyskl's spelling.
TINY_OPTIONS = dict(base_channels=8, num_stages=2, inflate_stages=[2], down_stages=[2])
PYSKL_LAYOUTS = ("openpose", "nturgb+d", "coco", "handmp")
SGD = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)


class UserError(ValueError):
  """A mistake in what the caller gave (one line); :func:`main` catches it and nothing else. The
  counterpart of ``stgcn_jax.errors.UserError``, which this file cannot import (see above)."""


# ----------------------------------------------------------------------------- importing pyskl


def _module(name: str, path: Path | None = None, **attrs) -> types.ModuleType:
  """A module object in ``sys.modules``; with ``path``, a package whose submodules import from
  there (its own ``__init__.py`` is not run)."""
  mod = types.ModuleType(name)
  if path is not None:
    mod.__path__ = [str(path)]
  mod.__dict__.update(attrs)
  sys.modules[name] = mod
  return mod


class _Registry:
  """mmcv's ``Registry`` as pyskl's model files use it: classes register themselves, no more."""

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def register_module(self, *args, **kwargs):
    del args, kwargs
    return lambda cls: cls


def _not_stubbed(what: str):
  def fail(*args, **kwargs):
    del args, kwargs
    raise NotImplementedError(f"{what} is an mmcv stub in experiments/bench_pyskl.py")
  return fail


def _stub_mmcv(nn) -> None:
  """The mmcv symbols that pyskl's ``models/gcns`` files import, as stubs over ``torch.nn``."""
  norms = {"BN": nn.BatchNorm2d, "BN1d": nn.BatchNorm1d, "BN2d": nn.BatchNorm2d,
           "BN3d": nn.BatchNorm3d}

  def build_norm_layer(cfg, num_features, postfix=""):
    cfg = dict(cfg)
    kind, requires_grad = cfg.pop("type"), cfg.pop("requires_grad", True)
    if kind not in norms:
      raise NotImplementedError(f"mmcv stub: norm type {kind!r}; stubbed: {sorted(norms)}")
    layer = norms[kind](num_features, **cfg)
    for param in layer.parameters():
      param.requires_grad = requires_grad
    return f"bn{postfix}", layer

  def build_activation_layer(cfg):
    cfg = dict(cfg)
    kind = cfg.pop("type")
    if not hasattr(nn, kind):
      raise NotImplementedError(f"mmcv stub: activation {kind!r} is not a torch.nn class")
    return getattr(nn, kind)(**cfg)

  _module("mmcv", __path__=[])   # a package with no submodules but the stubs
  _module("mmcv.runner", load_checkpoint=_not_stubbed("load_checkpoint"))
  _module("mmcv.cnn", build_norm_layer=build_norm_layer,
          build_activation_layer=build_activation_layer, MODELS=_Registry(),
          ConvModule=_not_stubbed("ConvModule"), normal_init=_not_stubbed("normal_init"))
  batch_norm = nn.modules.batchnorm._BatchNorm  # pylint: disable=protected-access
  _module("mmcv.utils", Registry=_Registry, _BatchNorm=batch_norm)


def _graph_with(base: type, spec: dict | None) -> type:
  """pyskl's ``Graph`` (``base``), plus the layout ``spec`` ({name, num_node, inward, center}) that
  its fixed list lacks; every other layout is pyskl's own."""
  if spec is None:
    return base

  class Graph(base):  # pylint: disable=too-few-public-methods
    def __init__(self, layout="coco", **kwargs):
      self._spec = spec if layout == spec["name"] else None
      # pyskl asserts the name is one of its own: pass one, get_layout below ignores it.
      super().__init__("coco" if self._spec else layout, **kwargs)
      if self._spec:
        self.layout = layout

    def get_layout(self, layout):
      if self._spec is None:
        return super().get_layout(layout)
      self.num_node, self.center = int(spec["num_node"]), int(spec["center"])
      self.inward = [tuple(int(j) for j in edge) for edge in spec["inward"]]
      self.self_link = [(i, i) for i in range(self.num_node)]
      self.outward = [(j, i) for (i, j) in self.inward]
      self.neighbor = self.inward + self.outward
      return None

  return Graph


def load_pyskl(src: str | Path, layout_spec: dict | None = None) -> types.ModuleType:
  """pyskl's ``pyskl.models.gcns`` package, imported from the checkout ``src``."""
  src = Path(src)
  if not (src / "pyskl" / "models" / "gcns" / "stgcn.py").is_file():
    raise UserError(f"--pyskl_src={src}: no pyskl/models/gcns/stgcn.py under it (expected a "
                    "pyskl source checkout, https://github.com/kennymckormick/pyskl)")
  import torch.nn as nn  # pylint: disable=import-outside-toplevel
  _stub_mmcv(nn)
  root = src / "pyskl"
  _module("pyskl", root)
  utils = _module("pyskl.utils", root / "utils",
                  cache_checkpoint=_not_stubbed("cache_checkpoint"))
  graph = importlib.import_module("pyskl.utils.graph")
  utils.Graph = _graph_with(graph.Graph, layout_spec)
  _module("pyskl.models", root / "models")
  _module("pyskl.models.builder", BACKBONES=_Registry(), MODELS=_Registry(), HEADS=_Registry())
  return importlib.import_module("pyskl.models.gcns")


def allocator() -> str:
  try:
    with open("/proc/self/maps") as f:
      return "tcmalloc" if "tcmalloc" in f.read() else "system malloc"
  except OSError:
    return "unknown"


def pyskl_version(src: str | Path) -> str | None:
  try:
    text = (Path(src) / "pyskl" / "version.py").read_text()
  except OSError:
    return None
  found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
  return found.group(1) if found else None


# ----------------------------------------------------------------------------- the model


def build_model(gcns, name: str, classes: int, layout: str, persons: int, frames: int,
                tiny: bool, options: dict | None = None):
  """pyskl's backbone ``name`` with a ``GCNHead``-equivalent classifier on top; ``options`` (the
  block list in pyskl's spelling, e.g. ``base_channels``) over the config's (and ``tiny``'s)."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PYSKL_CONFIGS[name].items()}
  cls = getattr(gcns, cfg.pop("type"))
  cfg["graph_cfg"]["layout"] = layout
  cfg.update(TINY_OPTIONS if tiny else {}, **(options or {}))
  backbone = cls(num_person=persons, **cfg)
  backbone.init_weights()
  backbone.eval()
  with torch.no_grad():   # the feature width, from one sample
    joints = backbone.graph.num_node
    channels = backbone(torch.zeros(1, persons, frames, joints, 3)).shape[2]

  class Recognizer(nn.Module):
    """pyskl's RecognizerGCN + GCNHead in training: ``fc_cls(mean_M(mean_TV(backbone(x))))``,
    dropout 0, ``fc_cls`` initialised N(0, 0.01^2) with bias 0."""

    def __init__(self):
      super().__init__()
      self.backbone = backbone
      self.fc_cls = nn.Linear(channels, classes)
      nn.init.normal_(self.fc_cls.weight, 0.0, 0.01)
      nn.init.zeros_(self.fc_cls.bias)

    def forward(self, x_NMTVC):
      x_NMCTV = self.backbone(x_NMTVC)
      n, m, c = x_NMCTV.shape[:3]
      return self.fc_cls(x_NMCTV.reshape(n, m, c, -1).mean(-1).mean(1))

  return Recognizer(), joints


# ----------------------------------------------------------------------------- timing


def pin_threads(threads: int) -> list[int]:
  """The first ``threads`` of the CPUs this process may use, pinned, and torch's intra-op pool of
  that size (``stgcn_jax.runtime.limit_cpu_threads`` on the JAX side); 0 leaves both alone."""
  import torch  # pylint: disable=import-outside-toplevel
  cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  if threads > 0:
    if cpus:
      cpus = cpus[:threads]
      os.sched_setaffinity(0, cpus)
    torch.set_num_threads(threads)
  return cpus


def _timed(fn, steps: int) -> tuple[float, list[float], dict]:
  """(first call's seconds, the next ``steps`` calls' seconds, user/system CPU seconds and minor
  faults per timed call)."""
  start = time.perf_counter()
  fn()
  first = time.perf_counter() - start
  times = []
  before = resource.getrusage(resource.RUSAGE_SELF)
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  after = resource.getrusage(resource.RUSAGE_SELF)
  usage = {"user_s": (after.ru_utime - before.ru_utime) / steps,
           "sys_s": (after.ru_stime - before.ru_stime) / steps,
           "minor_faults": (after.ru_minflt - before.ru_minflt) / steps}
  return first, times, usage


def measure(model, shape: tuple[int, ...], classes: int, steps: int) -> dict:
  """Train-step and inference figures of ``model`` at input ``shape`` (N, M, T, V, C)."""
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
  gen = torch.Generator().manual_seed(1)
  x = torch.randn(shape, generator=gen)
  label = torch.randint(0, classes, (shape[0],), generator=gen)
  optimizer = torch.optim.SGD(model.parameters(), **SGD)
  holder = {}

  def train_step():
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), label)
    loss.backward()
    optimizer.step()
    holder["loss"] = loss.detach()

  def infer_step():
    with torch.inference_mode():
      model(x)

  row = {"num_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
  model.train()
  first, times, usage = _timed(train_step, steps)
  row.update(train_first_step_s=first, train_step_s=statistics.median(times),
             train_step_s_all=times, train_cpu_per_step=usage,
             train_loss_finite=bool(torch.isfinite(holder["loss"]).item()))
  model.eval()
  first, times, _ = _timed(infer_step, steps)
  row.update(infer_first_step_s=first, infer_step_s=statistics.median(times),
             infer_step_s_all=times)
  for kind in ("train", "infer"):
    row[f"{kind}_samples_per_s"] = shape[0] / row[f"{kind}_step_s"]
  return row


def run(args: argparse.Namespace) -> dict:
  """Builds and times one backbone; the JSON object this program writes."""
  spec = json.loads(args.layout_spec) if args.layout_spec else None
  if args.layout not in PYSKL_LAYOUTS and (spec is None or spec.get("name") != args.layout):
    raise UserError(f"--layout={args.layout} is not one of pyskl's {PYSKL_LAYOUTS}: give its "
                    "joints with --layout_spec='{\"name\", \"num_node\", \"inward\", \"center\"}'")
  import torch  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  torch.set_flush_denormal(True)
  cpus = pin_threads(args.threads)
  gcns = load_pyskl(args.pyskl_src, spec)
  model, joints = build_model(gcns, args.backbone, args.classes, args.layout, args.persons,
                              args.frames, args.tiny)
  shape = (args.batch, args.persons, args.frames, joints, 3)
  row = {"backbone": args.backbone, "shape": list(shape), "layout": args.layout,
         "tiny": args.tiny, "threads": torch.get_num_threads(), "cpus": cpus,
         "torch": torch.__version__, "allocator": allocator(),
         "pyskl_src": str(Path(args.pyskl_src).resolve()),
         "pyskl_version": pyskl_version(args.pyskl_src)}
  row.update(measure(model, shape, args.classes, args.steps))
  row["peak_rss_bytes"] = peak_rss_bytes()
  return row


def peak_rss_bytes() -> int:
  """This process's peak resident memory. On Linux the ``VmHWM`` of ``/proc/self/status``: it
  starts afresh at exec, while ``ru_maxrss`` keeps the high-water mark of the parent that forked
  this process (the bench, holding its own models by then)."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(rss * (1 if sys.platform == "darwin" else 1024))


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
  parser.add_argument("--pyskl_src", required=True, help="a pyskl source checkout")
  parser.add_argument("--backbone", required=True, choices=BACKBONES)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--persons", type=int, default=2)
  parser.add_argument("--frames", type=int, default=100)
  parser.add_argument("--layout", default="nturgb+d")
  parser.add_argument("--layout_spec", default=None,
                      help="JSON {name, num_node, inward, center} of a layout pyskl lacks")
  parser.add_argument("--classes", type=int, default=60)
  parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
  parser.add_argument("--steps", type=int, default=3, help="timed steps (median)")
  parser.add_argument("--tiny", action="store_true", help="experiments.bench's tiny models")
  parser.add_argument("--out", default=None, help="write the JSON here (default stdout)")
  args = parser.parse_args(argv)
  for name in ("batch", "persons", "frames", "classes", "steps"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be at least 1")
  if args.threads < 0:
    parser.error("--threads must be 0 or more")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    row = run(args)
  except UserError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  text = json.dumps(row, indent=2)
  if args.out:
    Path(args.out).write_text(text)
  else:
    print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
