"""The four backbones as Flax modules, and ``get_model``.

>>> model = get_model("ctrgcn", num_classes=60, layout="nturgb+d", in_channels=3)
>>> variables = model.init(jax.random.key(0), x_NMTVC)           # {'params', 'batch_stats'}
>>> logits = model.apply(variables, x_NMTVC, train=False)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from stgcn_jax import graph as graph_lib
from stgcn_jax.models.base import Backbone, GCNHead, Recognizer
from stgcn_jax.models.aagcn import AAGCN
from stgcn_jax.models.ctrgcn import CTRGCN
from stgcn_jax.models.dgstgcn import DGSTGCN
from stgcn_jax.models.stgcn import STGCN

BACKBONES: dict[str, type[Backbone]] = {"stgcn": STGCN, "aagcn": AAGCN, "ctrgcn": CTRGCN,
                                        "dgstgcn": DGSTGCN}

HEAD_OPTIONS = ("head_dropout",)


def backbone_options(name: str) -> list[str]:
  """The keyword options ``get_model`` accepts for backbone ``name``."""
  cls = _backbone_class(name)
  return sorted(f.name for f in dataclasses.fields(cls)
                if f.name not in ("parent", "name", "layout", "in_channels"))


def _backbone_class(name: str) -> type[Backbone]:
  if name not in BACKBONES:
    raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
  return BACKBONES[name]


def get_model(name: str, num_classes: int, layout="nturgb+d", in_channels: int = 3,
              **options) -> Recognizer:
  """A ``Recognizer`` (backbone + ``GCNHead``) for backbone ``name``.

  ``layout`` is a layout name (``nturgb+d``, ``coco``, ``openpose``, ``nw-ucla``), a path to a layout
  JSON file, a dict or a ``graph.Layout``. ``options`` are the backbone's pyskl-named options (see
  ``backbone_options(name)``), e.g. ``attention=False`` for AA-GCN, plus ``head_dropout``.
  """
  cls = _backbone_class(name)
  if int(num_classes) < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}")
  head = {k: options.pop(k) for k in HEAD_OPTIONS if k in options}
  valid = backbone_options(name)
  for key in list(options):  # pyskl's unprefixed spellings: attention -> gcn_attention
    for alias in (f"gcn_{key}", f"tcn_{key}"):
      if key not in valid and alias in valid and alias not in options:
        options[alias] = options.pop(key)
  unknown = sorted(set(options) - set(valid))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for backbone {name!r}; valid options: {valid}")
  for key, value in options.items():  # lists from configs/JSON -> hashable tuples
    if isinstance(value, list):
      options[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
  backbone = cls(layout=graph_lib.get_layout(layout), in_channels=int(in_channels), **options,
                 name="backbone")
  return Recognizer(backbone=backbone, num_classes=int(num_classes), **head)


def abstract_variables(model: Recognizer, num_frames: int = 16) -> dict:
  """The model's ``{'params', 'batch_stats'}`` as ``jax.ShapeDtypeStruct`` trees, computed with
  ``jax.eval_shape`` (nothing is initialised): the restore target of a checkpoint."""
  bb = model.backbone
  x = jax.ShapeDtypeStruct((1, bb.num_person, num_frames, bb.layout.num_joints, bb.in_channels),
                           jnp.float32)
  abstract = jax.eval_shape(lambda k: model.init(k, jnp.zeros(x.shape, x.dtype)),
                            jax.random.key(0))
  return {k: abstract[k] for k in ("params", "batch_stats") if k in abstract}


__all__ = ["BACKBONES", "Backbone", "GCNHead", "Recognizer", "abstract_variables",
           "backbone_options", "get_model"]
