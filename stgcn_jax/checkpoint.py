"""Model checkpoints on disk: orbax for arrays, ``model.json`` for what builds the model.

A *model checkpoint* (``save_model`` / ``load_model``) is a directory with ``model.json``
(``{"backbone", "num_classes", "layout", "in_channels", "options"}``, and from training also
``class_names`` and ``pipeline``, the test-mode ``PipelineConfig`` fields the model was trained
with plus the data's ``channels``; ``stgcn_jax.predict`` reads them) and ``variables/`` (an orbax
PyTree checkpoint of ``{'params', 'batch_stats'}``). ``python -m experiments.convert`` writes one
from a pyskl state_dict; training accepts one as ``--pretrained``. A model is written beside its
folder and renamed into place when complete, so an interrupted save (also one that replaces a
model) never leaves a half-written or missing checkpoint (``save_model``, ``recover_model_swap``).
On several processes every one enters ``save_model`` (orbax's save waits for all of them) and
process 0 alone moves folders and writes ``model.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import orbax.checkpoint as ocp

from stgcn_jax import atomic, distributed
from stgcn_jax import graph as graph_lib
from stgcn_jax import models

__all__ = ["CheckpointError", "save_model", "load_model", "model_spec_json",
           "recover_model_swap"]


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


def _swap_names(path: str) -> tuple[str, str]:
  """The new model being written beside ``path``, and the old one while it is being replaced."""
  parent, name = os.path.split(path)
  return os.path.join(parent, f".{name}.incoming"), os.path.join(parent, f".{name}.replaced")


def save_model(path: str, spec: dict, variables: dict[str, Any], *, overwrite: bool = False) -> None:
  """Writes a model checkpoint to ``path``. The model is written completely beside it first
  (``.NAME.incoming``: ``variables/``, then ``model.json``) and then renamed into place; with
  ``overwrite`` an existing model is renamed aside (``.NAME.replaced``) for the moment between the
  two renames and removed after them, so a kill at any point leaves the old model or the new one,
  and :func:`recover_model_swap` (run here, by the next run and by readers) puts it in place."""
  path = os.path.abspath(path)
  main = distributed.is_main()
  if main:
    recover_model_swap(path)
  distributed.barrier(f"model save starts: {path}")
  if os.path.exists(path) and not overwrite:
    raise CheckpointError(f"{path} already exists; choose another --out or remove it")
  incoming, replaced = _swap_names(path)
  if main:
    shutil.rmtree(incoming, ignore_errors=True)   # a save that a kill interrupted
    os.makedirs(incoming)
  distributed.barrier(f"model save folder: {path}")
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(os.path.join(incoming, "variables"),
             {k: variables[k] for k in ("params", "batch_stats") if k in variables})
  ckptr.wait_until_finished()
  if main:
    with atomic.atomic_open(os.path.join(incoming, "model.json")) as f:
      json.dump(spec, f, indent=2)
    if os.path.lexists(path):
      shutil.rmtree(replaced, ignore_errors=True)
      os.replace(path, replaced)
    os.replace(incoming, path)
    shutil.rmtree(replaced, ignore_errors=True)
  distributed.barrier(f"model saved: {path}")


def recover_model_swap(path: str, *, cleanup: bool = True) -> str | None:
  """Finishes or rolls back a :func:`save_model` that a kill interrupted; returns a note saying
  which (None when there was nothing to do).

  With ``path`` missing, a complete new model (``.NAME.incoming`` with its ``model.json``) is
  renamed into place (finished), else the old one (``.NAME.replaced``) is (rolled back). With
  ``cleanup`` (a writer, not a reader that may run beside one) the leftovers beside an intact
  ``path`` are removed. A rename that fails is one CheckpointError naming both folders.
  """
  path = os.path.abspath(path)
  incoming, replaced = _swap_names(path)
  note = None
  if not os.path.lexists(path):
    source = (incoming if os.path.isfile(os.path.join(incoming, "model.json"))
              else replaced if os.path.isdir(replaced) else None)
    if source is None:
      return None
    try:
      os.replace(source, path)
    except OSError as err:
      raise CheckpointError(f"{path}: a model swap was interrupted and cannot be completed "
                            f"({err.strerror or err}); rename {source} to {path}") from None
    note = (f"{path}: finished a model replacement that was interrupted" if source == incoming
            else f"{path}: restored the previous model (a replacement was interrupted)")
  if cleanup:
    for leftover in (incoming, replaced):
      shutil.rmtree(leftover, ignore_errors=True)
  return note


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
