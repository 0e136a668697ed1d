"""The four backbones as Flax modules, and ``get_model``.

>>> model = get_model("ctrgcn", num_classes=60, layout="nturgb+d", in_channels=3)
>>> variables = model.init(jax.random.key(0), x_NMTVC)           # {'params', 'batch_stats'}
>>> logits = model.apply(variables, x_NMTVC, train=False)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from stgcn_jax import graph as graph_lib
from stgcn_jax.errors import UserError
from stgcn_jax.models.base import Backbone, GCNHead, Recognizer
from stgcn_jax.models.aagcn import AAGCN
from stgcn_jax.models.ctrgcn import CTRGCN
from stgcn_jax.models.dgstgcn import DGSTGCN
from stgcn_jax.models.stgcn import STGCN

BACKBONES: dict[str, type[Backbone]] = {"stgcn": STGCN, "aagcn": AAGCN, "ctrgcn": CTRGCN,
                                        "dgstgcn": DGSTGCN}

HEAD_OPTIONS = ("head_dropout",)
UNITS = ("gcn", "tcn")
_NOT_OPTIONS = ("parent", "name", "layout", "in_channels")


def _backbone_class(name: str) -> type[Backbone]:
  if name not in BACKBONES:
    raise UserError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
  return BACKBONES[name]


def _fields(cls) -> dict[str, dataclasses.Field]:
  return {f.name: f for f in dataclasses.fields(cls) if f.name not in _NOT_OPTIONS}


def backbone_options(name: str) -> list[str]:
  """The options of backbone ``name``, in pyskl's flat spelling (``gcn_X`` / ``tcn_X`` for the
  fields of its ``GCNOptions`` / ``TCNOptions``)."""
  out = []
  for key, field in _fields(_backbone_class(name)).items():
    if key in UNITS:
      out += [f"{key}_{f.name}" for f in dataclasses.fields(field.default)]
    else:
      out.append(key)
  return sorted(out)


def _hashable(value):
  """Lists from configs / JSON as the tuples the modules hold."""
  if isinstance(value, list):
    return tuple(_hashable(v) for v in value)
  return value


def resolve_options(name: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Backbone ``name``'s options as its module takes them: the block-list and graph fields, and
  ``gcn`` / ``tcn`` as the backbone's ``GCNOptions`` / ``TCNOptions`` with every field set.

  ``options`` gives ``gcn`` / ``tcn`` as such dataclasses or as dicts of their fields, or in
  pyskl's flat spelling: ``gcn_X`` / ``tcn_X`` (``gcn_attention=False``, ``tcn_dropout=0.5``)
  and the backbone's ``pyskl_names`` (CTR-GCN's ``kernel_size`` and ``dilations``). An unknown
  option is a ``UserError`` that lists the valid ones.
  """
  cls = _backbone_class(name)
  fields = _fields(cls)
  out: dict[str, Any] = {}
  units: dict[str, dict[str, Any]] = {u: {} for u in UNITS}
  unknown = []
  for key, value in (options or {}).items():
    key = cls.pyskl_names.get(key, key)
    unit, _, field = key.partition("_")
    if key in UNITS:
      units[key].update(value if isinstance(value, Mapping) else dataclasses.asdict(value))
    elif key in fields:
      out[key] = _hashable(value)
    elif unit in UNITS and field:
      units[unit][field] = value
    else:
      unknown.append(key)
  for unit in UNITS:
    default = fields[unit].default
    valid = {f.name for f in dataclasses.fields(default)}
    unknown += [f"{unit}_{k}" for k in units[unit] if k not in valid]
    out[unit] = dataclasses.replace(default, **{k: _hashable(v) for k, v in units[unit].items()
                                                if k in valid})
  if unknown:
    raise UserError(f"unknown option(s) {sorted(unknown)} for backbone {name!r}; valid options: "
                    f"{backbone_options(name)}")
  return out


def options_json(options: Mapping[str, Any]) -> dict[str, Any]:
  """Resolved options as JSON-ready values (``gcn`` / ``tcn`` as dicts), e.g. for ``model.json``;
  ``resolve_options`` reads them back."""
  return {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
          for k, v in options.items()}


def get_model(name: str, num_classes: int, layout="nturgb+d", in_channels: int = 3,
              **options) -> Recognizer:
  """A ``Recognizer`` (backbone + ``GCNHead``) for backbone ``name``.

  ``layout`` is a layout name (``nturgb+d``, ``coco``, ``openpose``, ``nw-ucla``), a path to a layout
  JSON file, a dict or a ``graph.Layout``. ``options`` are the backbone's (``resolve_options``:
  e.g. ``gcn=aagcn.GCNOptions(attention=False)``, or pyskl's ``gcn_attention=False``), plus
  ``head_dropout``.
  """
  cls = _backbone_class(name)
  if int(num_classes) < 1:
    raise UserError(f"num_classes must be >= 1, got {num_classes}")
  head = {k: options.pop(k) for k in HEAD_OPTIONS if k in options}
  backbone = cls(layout=graph_lib.get_layout(layout), in_channels=int(in_channels),
                 **resolve_options(name, options), name="backbone")
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
           "backbone_options", "get_model", "options_json", "resolve_options"]
