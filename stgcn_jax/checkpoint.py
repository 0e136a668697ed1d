"""Model checkpoints on disk: orbax for arrays, ``model.json`` for what builds the model.

A *model checkpoint* (``save_model`` / ``load_model``) is a directory with ``model.json``
(``{"backbone", "num_classes", "layout", "in_channels", "options"}``, and from training also
``class_names`` and ``pipeline``, the test-mode ``PipelineConfig`` fields the model was trained
with plus the data's ``channels``; ``stgcn_jax.predict`` reads them) and ``variables/`` (an orbax
PyTree checkpoint of ``{'params', 'batch_stats'}``). ``python -m experiments.convert`` writes one
from a pyskl state_dict; training accepts one as ``--pretrained``. Orbax writes to a temporary
directory and renames it when complete, so an interrupted save never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
from typing import Any

import orbax.checkpoint as ocp

from stgcn_jax import atomic
from stgcn_jax import graph as graph_lib
from stgcn_jax import models

__all__ = ["CheckpointError", "save_model", "load_model", "model_spec_json"]


class CheckpointError(ValueError):
  """A checkpoint that is missing, incomplete or for another model."""


def model_spec_json(backbone: str, num_classes: int, layout, in_channels: int = 3,
                    options: dict | None = None, *, class_names=None,
                    pipeline: dict | None = None) -> dict:
  """The ``model.json`` object; ``class_names`` and ``pipeline`` are written only when given."""
  layout = graph_lib.get_layout(layout)
  layout_json = layout.name if graph_lib.LAYOUTS.get(layout.name) == layout else layout.to_json()
  spec = {"backbone": backbone, "num_classes": int(num_classes), "layout": layout_json,
          "in_channels": int(in_channels), "options": dict(options or {})}
  if class_names is not None:
    spec["class_names"] = [str(n) for n in class_names]
  if pipeline is not None:
    spec["pipeline"] = dict(pipeline)
  return spec


def build_model(spec: dict) -> models.Recognizer:
  return models.get_model(spec["backbone"], spec["num_classes"], layout=spec["layout"],
                          in_channels=spec.get("in_channels", 3), **spec.get("options", {}))


def save_model(path: str, spec: dict, variables: dict[str, Any], *, overwrite: bool = False) -> None:
  path = os.path.abspath(path)
  if os.path.exists(path) and not overwrite:
    raise CheckpointError(f"{path} already exists; choose another --out or remove it")
  os.makedirs(path, exist_ok=True)
  ckptr = ocp.StandardCheckpointer()
  target = os.path.join(path, "variables")
  ckptr.save(target, {k: variables[k] for k in ("params", "batch_stats") if k in variables},
             force=overwrite)
  ckptr.wait_until_finished()
  with atomic.atomic_open(os.path.join(path, "model.json")) as f:
    json.dump(spec, f, indent=2)


def load_model(path: str) -> tuple[models.Recognizer, dict[str, Any]]:
  """``(model, variables)`` from a directory written by ``save_model``."""
  path = os.path.abspath(path)
  spec_path = os.path.join(path, "model.json")
  if not os.path.isfile(spec_path):
    raise CheckpointError(f"{path}: not a model checkpoint (no model.json); expected a directory "
                          "written by `python -m experiments.convert` or by training")
  with open(spec_path) as f:
    spec = json.load(f)
  model = build_model(spec)
  abstract = models.abstract_variables(model)
  try:
    variables = ocp.StandardCheckpointer().restore(os.path.join(path, "variables"), abstract)
  except (ValueError, KeyError, FileNotFoundError) as err:
    raise CheckpointError(f"{path}: variables do not fit {spec['backbone']} ({err})") from err
  return model, variables
