"""Model checkpoints on disk: orbax for arrays, ``model.json`` for what builds the model.

A *model checkpoint* (``save_model`` / ``load_model``) is a directory with ``model.json``
(``{"backbone", "num_classes", "layout", "in_channels", "options"}``, and from training also
``class_names`` and ``pipeline``, the test-mode ``PipelineConfig`` fields the model was trained
with plus the data's ``channels``; ``stgcn_jax.inference`` reads them) and ``variables/`` (an orbax
PyTree checkpoint of ``{'params', 'batch_stats'}``). ``python -m experiments.convert`` writes one
from a pyskl state_dict; training accepts one as ``--pretrained``. A model is written beside its
folder and renamed into place when complete, so an interrupted save (also one that replaces a
model) never leaves a half-written or missing checkpoint (``save_model``, ``recover_model_swap``).

``load_model`` trusts nothing it reads: ``model.json`` is checked for its fields' types and sane
sizes (``check_spec``: at most ``MAX_JOINTS`` joints, ``MAX_CLASSES`` classes, bounded options and
pipeline) before a model is built, and the model it builds is compared with the shapes saved in
``variables/`` before a weight is read (an edited ``num_classes`` names the head's two shapes).
Every failure is one ``CheckpointError`` naming the file; what orbax prints while it fails on a
damaged checkpoint is silenced for that call only.

On several processes every one enters ``save_model`` (orbax's save waits for all of them) and
process 0 alone moves folders and writes ``model.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from stgcn_jax import atomic, distributed
from stgcn_jax import graph as graph_lib
from stgcn_jax import models
from stgcn_jax.errors import UserError

__all__ = ["CheckpointError", "save_model", "load_model", "model_spec_json", "read_spec",
           "check_spec", "build_checked", "recover_model_swap", "MAX_CLASSES", "MAX_JOINTS",
           "MAX_VALUES"]

# Bounds of what a model.json may ask for: beyond them it is damaged or hand-edited (a 200,000-joint
# layout would allocate a 298 GiB adjacency before any weight is read).
MAX_CLASSES = 100_000           # the converters' bound; Kinetics-700 has 700
MAX_JOINTS = 1_000              # skeleton layouts have 17-133 joints (whole-body COCO: 133)
MAX_IN_CHANNELS = 1_000
MAX_STAGES = 100                # pyskl's backbones have 10 blocks
MAX_OPTION_VALUE = 100_000      # any number among the backbone options (channels: at most 512)
MAX_OPTION_ITEMS = 1_000
MAX_VALUES = 1 << 28            # 268M values (1 GiB of float32); CTR-GCN holds 1.4M
MAX_PIPELINE = {"clip_len": 100_000, "num_clips": 1_000, "num_person": 1_000}
_MAX_SPEC_BYTES = 16 << 20
_SPEC_FIELDS = '{"backbone", "num_classes", "layout", "in_channels", "options"}'


class CheckpointError(UserError):
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


def _short(value) -> str:
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + "..."


def _bounded_int(spec: dict, key: str, hi: int, where: str, lo: int = 1) -> None:
  value = spec[key]
  if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
    raise CheckpointError(f"{where}: {key} must be an integer in {lo}..{hi}, got {_short(value)}")


def _check_layout(layout, where: str) -> None:
  if isinstance(layout, str):
    if layout not in graph_lib.LAYOUTS:
      raise CheckpointError(f"{where}: layout {_short(layout)} is not a built-in layout "
                            f"({', '.join(sorted(graph_lib.LAYOUTS))}) nor a layout object")
    return
  if not isinstance(layout, dict) or "num_joints" not in layout:
    raise CheckpointError(f"{where}: layout must be a built-in layout name or an object "
                          f'{{"num_joints", "edges", "center"}}, got {_short(layout)}')
  _bounded_int(layout, "num_joints", MAX_JOINTS, f"{where}: layout")
  try:
    graph_lib.get_layout(layout)
  except graph_lib.LayoutError as err:
    raise CheckpointError(f"{where}: {err}") from None


def _check_options(value, where: str, depth: int = 0) -> None:
  """Backbone options: JSON of bounded size (``models.resolve_options`` checks names and types)."""
  if depth > 4 or isinstance(value, (list, dict)) and len(value) > MAX_OPTION_ITEMS:
    raise CheckpointError(f"{where}: nested too deeply or too long; expected the backbone options "
                          "that training or experiments.convert write")
  if isinstance(value, dict):
    for key, item in value.items():
      _check_options(item, f"{where}.{key}", depth + 1)
  elif isinstance(value, list):
    for k, item in enumerate(value):
      _check_options(item, f"{where}[{k}]", depth + 1)
  elif isinstance(value, (int, float)) and not isinstance(value, bool) and \
      not abs(value) <= MAX_OPTION_VALUE:
    raise CheckpointError(f"{where} is {_short(value)}; expected at most {MAX_OPTION_VALUE:,} in "
                          "magnitude")
  if where.endswith("num_stages") and isinstance(value, int) and value > MAX_STAGES:
    raise CheckpointError(f"{where} is {value}; expected at most {MAX_STAGES}")


def _check_extras(spec: dict, where: str) -> None:
  """``options``, ``class_names`` and ``pipeline``, when present."""
  if not isinstance(spec.get("options", {}), dict):
    raise CheckpointError(f"{where}: options must be an object, got {_short(spec['options'])}")
  _check_options(spec.get("options", {}), f"{where}: options")
  names = spec.get("class_names")
  if names is not None and (not isinstance(names, list) or len(names) != spec["num_classes"]
                            or not all(isinstance(n, str) for n in names)):
    got = f"{len(names)} entries" if isinstance(names, list) else _short(names)
    raise CheckpointError(f"{where}: class_names must be a list of num_classes = "
                          f"{spec['num_classes']} strings, got {got}")
  pipe = spec.get("pipeline")
  if pipe is None:
    return
  if not isinstance(pipe, dict):
    raise CheckpointError(f"{where}: pipeline must be an object, got {_short(pipe)}")
  for key, hi in MAX_PIPELINE.items():
    if key in pipe:
      _bounded_int(pipe, key, hi, f"{where}: pipeline")


def check_spec(spec, where: str) -> None:
  """CheckpointError naming ``where`` unless ``spec`` is a ``model.json`` object whose fields have
  the right types and sane sizes (checked before anything is built or allocated)."""
  if not isinstance(spec, dict):
    raise CheckpointError(f"{where}: expected a JSON object {_SPEC_FIELDS}, got "
                          f"{type(spec).__name__}")
  missing = [k for k in ("backbone", "num_classes", "layout") if k not in spec]
  if missing:
    raise CheckpointError(f"{where}: field(s) {missing} missing; expected {_SPEC_FIELDS}")
  if not isinstance(spec["backbone"], str) or spec["backbone"] not in models.BACKBONES:
    raise CheckpointError(f"{where}: backbone {_short(spec['backbone'])} is not one of "
                          f"{', '.join(sorted(models.BACKBONES))}")
  _bounded_int(spec, "num_classes", MAX_CLASSES, where)
  if "in_channels" in spec:
    _bounded_int(spec, "in_channels", MAX_IN_CHANNELS, where)
  _check_layout(spec["layout"], where)
  _check_extras(spec, where)


def read_spec(path: str) -> dict:
  """The checked ``model.json`` of the model checkpoint directory ``path`` (:func:`check_spec`)."""
  spec_path = os.path.join(path, "model.json")
  if not os.path.isfile(spec_path):
    raise CheckpointError(f"{path}: not a model checkpoint (no model.json); expected a directory "
                          "written by `python -m experiments.convert` or by training")
  try:
    with open(spec_path, "rb") as f:
      raw = f.read(_MAX_SPEC_BYTES + 1)
  except OSError as err:
    raise CheckpointError(f"{spec_path}: cannot read it ({err.strerror or err})") from None
  if len(raw) > _MAX_SPEC_BYTES:
    raise CheckpointError(f"{spec_path}: larger than {_MAX_SPEC_BYTES >> 20} MiB; expected a "
                          f"small JSON object {_SPEC_FIELDS}")
  try:
    spec = json.loads(raw.decode("utf-8"))
  except (UnicodeDecodeError, ValueError, RecursionError) as err:
    raise CheckpointError(f"{spec_path}: not valid JSON ({str(err)[:200]})") from None
  check_spec(spec, spec_path)
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


def build_checked(spec, where: str) -> tuple[models.Recognizer, dict]:
  """``(model, abstract variables)`` of a spec read from a file (``where``): checked by
  :func:`check_spec`, then built; CheckpointError naming ``where`` for anything wrong."""
  check_spec(spec, where)
  try:
    model = build_model(spec)
    abstract = models.abstract_variables(model)
  # The backbones' constructors run on values from the file: whatever they raise (ValueError,
  # TypeError, ZeroDivisionError for 0 channels, flax's errors, ...) is the file's mistake.
  except Exception as err:  # pylint: disable=broad-except
    first = (str(err).splitlines() or [""])[0][:300]
    raise CheckpointError(f"{where}: does not build a {spec['backbone']} model "
                          f"({type(err).__name__}: {first})") from None
  total = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(abstract))
  if total > MAX_VALUES:
    raise CheckpointError(f"{where}: describes a model of {total:,} values, more than the "
                          f"{MAX_VALUES:,} a model may hold")
  return model, abstract


def load_model(path: str) -> tuple[models.Recognizer, dict[str, Any]]:
  """``(model, variables)`` from a directory written by ``save_model``.

  ``model.json`` is checked (:func:`check_spec`) and the model it builds is compared with the
  shapes saved in ``variables/`` before any weight is read.
  """
  path = os.path.abspath(path)
  spec_path = os.path.join(path, "model.json")
  model, abstract = build_checked(read_spec(path), spec_path)
  target = os.path.join(path, "variables")
  with _quiet_orbax():
    _check_saved_shapes(target, abstract, spec_path)
    try:
      return model, ocp.StandardCheckpointer().restore(target, abstract)
    except Exception as err:  # pylint: disable=broad-except  (orbax raises a bare Exception)
      raise CheckpointError(f"{target}: cannot read the saved variables (a damaged or truncated "
                            f"checkpoint?): {_first_line(err)}") from None


@contextlib.contextmanager
def _quiet_orbax(grace_s: float = 2.0):
  """Silences what orbax prints while it fails on a damaged checkpoint, which the caller reports as
  one error: its absl log lines, and the "Event loop is closed" tracebacks (unraisable exceptions)
  of tensorstore reads still in flight. Both are restored afterwards; after a failure, once the
  late tracebacks have stopped for 0.3 s (at most ``grace_s`` seconds). Other unraisable
  exceptions pass through."""
  previous, late = sys.unraisablehook, [0]

  def hook(unraisable):
    if isinstance(unraisable.exc_value, RuntimeError) and \
        "Event loop is closed" in str(unraisable.exc_value):
      late[0] += 1
      return
    previous(unraisable)

  absl_logger = logging.getLogger("absl")
  mute = lambda record: False
  sys.unraisablehook = hook
  absl_logger.addFilter(mute)
  try:
    yield
  except BaseException:
    quiet_since, deadline, seen = time.monotonic(), time.monotonic() + grace_s, late[0]
    while time.monotonic() < min(deadline, quiet_since + 0.3):
      time.sleep(0.05)
      if late[0] != seen:
        quiet_since, seen = time.monotonic(), late[0]
    raise
  finally:
    sys.unraisablehook = previous
    absl_logger.removeFilter(mute)


def _first_line(err: BaseException) -> str:
  """The first line of the innermost cause of ``err`` (orbax wraps tensorstore's clear error)."""
  while err.__cause__ is not None:
    err = err.__cause__
  lines = [line for line in str(err).splitlines() if line.strip()]
  return f"{type(err).__name__}: {lines[0][:300] if lines else ''}"


def _check_saved_shapes(target: str, abstract: dict, spec_path: str) -> None:
  """CheckpointError unless ``target`` holds exactly the leaves of ``abstract``, in its shapes."""
  try:
    meta = ocp.StandardCheckpointer().metadata(target)
  except Exception as err:  # pylint: disable=broad-except
    raise CheckpointError(f"{target}: not a readable orbax checkpoint (damaged or missing "
                          f"metadata): {_first_line(err)}") from None
  meta = getattr(meta, "item_metadata", meta)
  as_dict = lambda tree: {"/".join(str(getattr(k, "key", k)) for k in p): tuple(leaf.shape)
                          for p, leaf in jax.tree_util.tree_leaves_with_path(tree)}
  try:
    saved = as_dict(meta) if meta is not None else {}
  except (AttributeError, TypeError):
    saved = {}
  if not saved:
    raise CheckpointError(f"{target}: no readable variable metadata (a damaged or truncated "
                          "checkpoint?); expected the variables/ folder that save_model writes")
  want = as_dict(abstract)
  for name in sorted(set(want) | set(saved)):
    if want.get(name) != saved.get(name):
      got = saved.get(name, "missing")
      raise CheckpointError(
          f"{spec_path} does not fit the variables saved in {target}: {name} is {got} there, "
          f"the model that model.json describes needs {want.get(name, 'no such variable')} "
          "(was model.json edited, e.g. num_classes or the layout?)")
