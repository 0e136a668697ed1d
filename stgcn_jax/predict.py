"""Predictions of a trained model on raw skeleton files and on a live stream of frames.

>>> predictor = load_predictor("runs/ntu60/model")            # or a workdir, or "wd1,wd2,..."
>>> samples, bad = read_samples("S001C001P001R001A011.skeleton", layout=predictor.layout)
>>> result = predictor.predict([s.record for s in samples])   # scores (N, classes), summed
>>> top_k(result.probs[0], predictor.class_names, k=5)        # [(name, probability), ...]

Models (``load_predictor``): a model checkpoint (``model.json`` + ``variables/``), a training
workdir (its ``model/``, and its ``config.json`` for the test pipeline), a joint-ensemble workdir
(``mode=ensemble``: its ``members/s<sparsity>/`` model checkpoints; for a workdir written before
those were saved, the stacked state of the newest checkpoint in ``checkpoints/``, params multiplied
by the masks) or several of them comma-separated: a post-hoc ensemble whose
clip-averaged softmax scores are summed over the members, as ``stgcn_jax.fusion`` fuses. Members
that share the architecture and the pipeline are stacked and run in one jitted call with
``jax.vmap`` over the member axis; a single model runs without vmap.

The test pipeline is the one the model was trained with: ``model.json``'s ``pipeline`` (written by
training), else the workdir's ``config.json``, else (a model converted from pyskl) pyskl's test
defaults: 10 clips of 100 frames, joint modality, PreNormalize with spine alignment.

Raw inputs are read by ``stgcn_jax.raw_input`` (``read_samples``, re-exported here) exactly as the
converters would store them. The data's layout must be the model's.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import sys
import time
from typing import Any, Iterable, Sequence, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from stgcn_jax import atomic, checkpoint, graph, models
from stgcn_jax import data as data_lib
from stgcn_jax.data.records import DataError
from stgcn_jax.raw_input import (FORMATS, PredictError, Sample, detect_format, parse_frame,
                                 read_samples)

__all__ = ["FORMATS", "PredictError", "Predictor", "Prediction", "Sample", "detect_format",
           "load_predictor", "read_samples", "stream", "top_k", "write_predictions"]

# pyskl's test pipeline for its GCN configs (j modality, 10 clips of 100 frames).
PYSKL_TEST_PIPELINE = {"clip_len": 100, "num_clips": 10, "modality": "j", "normalize": "auto",
                       "align_spine": True}
_PIPELINE_KEYS = ("clip_len", "num_clips", "modality", "normalize", "align_spine", "zaxis", "xaxis",
                  "num_person", "seed")


@dataclasses.dataclass
class Prediction:
  member_scores: np.ndarray     # (members, N, classes) clip-averaged softmax of every member
  scores: np.ndarray            # (N, classes): summed over the members (fusion.fuse)
  num_members: int

  @property
  def probs(self) -> np.ndarray:
    """The mean over the members: probabilities that sum to 1 per sample."""
    return self.scores / self.num_members


@dataclasses.dataclass
class _Group:
  """Members that share the architecture and the pipeline: one jitted call."""
  model: models.Recognizer
  variables: Any                # one model's, or stacked over the members (leading axis)
  count: int
  pipeline: dict                # PipelineConfig fields (test mode) + "channels" when known
  sources: list[str]
  fn: Any = None

  def __post_init__(self):
    model = self.model

    def probs(variables, x):
      logits = model.apply(variables, x, train=False)     # (B, clips, classes)
      return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).mean(axis=-2)

    if self.count > 1:
      self.fn = jax.jit(jax.vmap(probs, in_axes=(0, None)))
    else:
      self.fn = jax.jit(lambda v, x: probs(v, x)[None])

  @property
  def modalities(self) -> int:
    return len(self.pipeline["modality"].split(","))

  @property
  def data_channels(self) -> int:
    return self.model.backbone.in_channels // self.modalities

  def make_pipeline(self, channels: Sequence[str], num_clips: int | None = None
                    ) -> data_lib.Pipeline:
    fields = {k: self.pipeline[k] for k in _PIPELINE_KEYS if k in self.pipeline}
    for key in ("zaxis", "xaxis"):
      if key in fields:
        fields[key] = tuple(fields[key])
    if num_clips:
      fields["num_clips"] = int(num_clips)
    config = data_lib.PipelineConfig(test_mode=True, **fields)
    layout = self.model.backbone.layout
    info = data_lib.DatasetInfo(name="predict", path="", layout=layout,
                                num_classes=self.model.num_classes, class_names=(), splits={},
                                default_splits={}, num_persons=config.num_person,
                                channels=tuple(channels), metadata={})
    try:
      return data_lib.Pipeline(config, info)
    except ValueError as err:
      raise PredictError(f"the model's test pipeline does not fit its data: {err}") from None


@dataclasses.dataclass
class Predictor:
  """A model or an ensemble, with its test pipeline(s), layout and class names."""
  groups: list[_Group]
  layout: graph.Layout
  num_classes: int
  class_names: list[str]
  channels: tuple[str, ...] | None        # the data channels the model was trained on, if known
  notes: list[str]
  sources: list[str]

  @property
  def num_members(self) -> int:
    return sum(g.count for g in self.groups)

  @property
  def clip_len(self) -> int:
    return int(self.groups[0].pipeline["clip_len"])

  def check_channels(self, channels: Sequence[str], where: str) -> None:
    """DataError when data with ``channels`` cannot feed the model (naming ``where``)."""
    channels = tuple(channels)
    if self.channels is not None and channels != tuple(self.channels):
      raise DataError(f"{where}: the data has channels {','.join(channels)}, the model was "
                      f"trained on {','.join(self.channels)}")
    for g in self.groups:
      if len(channels) != g.data_channels:
        raise DataError(f"{where}: the data has {len(channels)} channels "
                        f"({','.join(channels)}), the model takes {g.data_channels} per modality")

  def inputs(self, records: Sequence[dict], channels: Sequence[str], num_clips: int | None = None
             ) -> list[np.ndarray]:
    """Per group, the float32 ``(N, clips, M, T, V, C)`` model input of ``records``."""
    out = []
    for g in self.groups:
      pipe = g.make_pipeline(channels, num_clips)
      out.append(np.stack([pipe(r) for r in records]))
    return out

  def run(self, inputs: Sequence[np.ndarray], batch_size: int = 16) -> Prediction:
    """Scores of model inputs from :meth:`inputs` in fixed-size batches (one compile per group)."""
    n = len(inputs[0])
    member_scores = []
    for g, x in zip(self.groups, inputs):
      b = max(1, min(int(batch_size), n))
      parts = []
      for start in range(0, n, b):
        chunk = x[start:start + b]
        if len(chunk) < b:
          pad = np.zeros((b - len(chunk),) + chunk.shape[1:], chunk.dtype)
          chunk = np.concatenate([chunk, pad])
        parts.append(np.asarray(g.fn(g.variables, jnp.asarray(chunk)))[:, :min(b, n - start)])
      member_scores.append(np.concatenate(parts, axis=1))
    member_scores = np.concatenate(member_scores, axis=0).astype(np.float32)
    return Prediction(member_scores, member_scores.sum(0), self.num_members)

  def predict(self, records: Sequence[dict], channels: Sequence[str] | None = None, *,
              batch_size: int = 16, num_clips: int | None = None) -> Prediction:
    channels = tuple(channels or self.channels or _guess_channels(self.layout, self.groups[0]))
    return self.run(self.inputs(records, channels, num_clips), batch_size)


def top_k(probs: np.ndarray, class_names: Sequence[str], k: int = 5
          ) -> list[tuple[str, int, float]]:
  """The ``k`` most likely classes as ``(name, index, probability)``, most likely first."""
  order = np.argsort(-np.asarray(probs), kind="stable")[:max(1, int(k))]
  return [(class_names[i], int(i), float(probs[i])) for i in order]


# ----------------------------------------------------------------------------------- models
def _read_json(path: str, what: str) -> dict:
  try:
    with open(path) as f:
      value = json.load(f)
  except OSError as err:
    raise PredictError(f"{path}: cannot read {what} ({err.strerror or err})") from None
  except ValueError as err:
    raise PredictError(f"{path}: {what} is not valid JSON ({err})") from None
  if not isinstance(value, dict):
    raise PredictError(f"{path}: {what} must be a JSON object, got {type(value).__name__}")
  return value


def _dataset_info(config: dict, data_dir: str | None):
  name = config.get("dataset")
  root = data_dir or config.get("data_dir") or data_lib.default_data_dir()
  root = os.path.abspath(os.path.expanduser(root))
  if not name or not data_lib.exists(name, root):
    return None, f"dataset {name!r} is not under {root}"
  try:
    return data_lib.info(name, root), None
  except (DataError, KeyError, OSError, ValueError) as err:
    return None, f"dataset {name!r} under {root} is unreadable ({err})"


def _pipeline_from_config(config: dict, info) -> dict:
  pipe = {"clip_len": int(config.get("clip_len", 100)),
          "num_clips": int(config.get("num_clips_test", 10)),
          "modality": config.get("modality", "j"), "normalize": config.get("normalize", "auto"),
          "align_spine": bool(config.get("align_spine", True)),
          "num_person": int(config.get("num_person", 2))}
  if info is not None:
    pipe["channels"] = list(info.channels)
  return pipe


def _from_model_dir(path: str, config: dict | None, data_dir: str | None, notes: list[str]):
  try:
    model, variables = checkpoint.load_model(path)
  except (checkpoint.CheckpointError, graph.LayoutError) as err:
    raise PredictError(str(err)) from None
  except (ValueError, TypeError, KeyError) as err:
    raise PredictError(f"{path}: model.json does not build a model ({err})") from None
  spec = _read_json(os.path.join(path, "model.json"), "model.json")
  names, pipe = spec.get("class_names"), spec.get("pipeline")
  info = None
  if config is not None and (names is None or pipe is None):
    info, _ = _dataset_info(config, data_dir)
  if pipe is None and config is not None:
    pipe = _pipeline_from_config(config, info)
  if pipe is None:
    pipe = dict(PYSKL_TEST_PIPELINE, num_person=int(model.backbone.num_person))
    notes.append(f"note: {path} records no test pipeline (a converted pyskl model?): using "
                 f"pyskl's test defaults ({pipe['num_clips']} clips of {pipe['clip_len']} "
                 f"frames, modality j, spine alignment)")
  if names is None and info is not None:
    names = list(info.class_names)
  spec_core = {k: spec[k] for k in ("backbone", "num_classes", "layout", "in_channels", "options")
               if k in spec}
  return [(model, variables, 1, pipe, names, spec_core, path)]


def _newest_state(workdir: str) -> tuple[dict, str]:
  """The raw (target-free) restore of the newest checkpoint of ``workdir/checkpoints``."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = sorted((int(n) for n in os.listdir(ckpt_dir) if n.isdigit()), reverse=True) \
      if os.path.isdir(ckpt_dir) else []
  if not steps:
    raise PredictError(f"{workdir}: a joint-ensemble workdir without a checkpoint in "
                       f"{ckpt_dir}; train it first")
  errors = []
  for step in steps:
    path = os.path.join(ckpt_dir, str(step), "state")
    try:
      return ocp.StandardCheckpointer().restore(path), path
    except Exception as err:  # pylint: disable=broad-except  (orbax raises bare Exception)
      errors.append(f"step {step}: {str(err).splitlines()[0][:200] if str(err) else err!r}")
  raise PredictError(f"{workdir}: no checkpoint restores ({'; '.join(errors)})")


def _from_joint_ensemble(workdir: str, config: dict, data_dir: str | None, notes: list[str]):
  import ml_collections  # pylint: disable=import-outside-toplevel
  from stgcn_jax import sparsity  # pylint: disable=import-outside-toplevel
  from stgcn_jax.training import loop  # pylint: disable=import-outside-toplevel
  info, why = _dataset_info(config, data_dir)
  if info is None:
    raise PredictError(f"{workdir}: a joint-ensemble workdir keeps no model.json; its layout and "
                       f"classes come from its dataset, but {why} (pass --data_dir)")
  state, path = _newest_state(workdir)
  if not all(k in state for k in ("params", "batch_stats", "masks")):
    raise PredictError(f"{path}: not a training state (keys {sorted(state)})")
  try:
    options = loop.model_options(ml_collections.ConfigDict(config))
  except loop.RunError as err:
    raise PredictError(f"{workdir}/config.json: {err}") from None
  in_channels = info.num_channels * len(str(config.get("modality", "j")).split(","))
  model = models.get_model(config["backbone"], info.num_classes, layout=info.layout,
                           in_channels=in_channels, **dict(options))
  params = sparsity.apply_masks(state["params"], state["masks"])
  as_float32 = lambda a: np.asarray(a, np.float32) if np.asarray(a).dtype.kind == "f" else a
  variables = jax.tree.map(as_float32, {"params": params, "batch_stats": state["batch_stats"]})
  count = int(jax.tree.leaves(variables["params"])[0].shape[0])
  if config.get("precise_bn_batches"):
    notes.append(f"note: {path} holds the members' running-average BatchNorm statistics; the "
                 "precise-BN statistics of the workdir's results.json are not saved for a joint "
                 "ensemble, so scores differ slightly from scores.npz")
  spec_core = checkpoint.model_spec_json(config["backbone"], info.num_classes, info.layout,
                                         in_channels, options)
  return [(model, variables, count, _pipeline_from_config(config, info), list(info.class_names),
           spec_core, workdir)]


def _load_source(src: str, data_dir: str | None, notes: list[str]):
  path = os.path.abspath(os.path.expanduser(src))
  if not os.path.exists(path):
    raise PredictError(f"--model {src}: no such file or directory")
  if os.path.isfile(os.path.join(path, "model.json")):
    return _from_model_dir(path, None, data_dir, notes)
  config_path = os.path.join(path, "config.json")
  config = _read_json(config_path, "config.json") if os.path.isfile(config_path) else None
  if os.path.isfile(os.path.join(path, "model", "model.json")):
    return _from_model_dir(os.path.join(path, "model"), config, data_dir, notes)
  members = os.path.join(path, "members")
  member_dirs = sorted(os.path.join(members, n) for n in os.listdir(members)
                       if os.path.isfile(os.path.join(members, n, "model.json"))) \
      if os.path.isdir(members) else []
  if member_dirs:  # a joint ensemble's members as training saved them (precise-BN statistics)
    return [m for d in member_dirs for m in _from_model_dir(d, config, data_dir, notes)]
  if config is not None and config.get("mode") == "ensemble":
    return _from_joint_ensemble(path, config, data_dir, notes)
  raise PredictError(f"--model {src}: neither a model checkpoint (model.json), a training workdir "
                     "(model/) nor a joint-ensemble workdir (config.json with mode=ensemble and "
                     "checkpoints/)")


def _canonical_pipeline(pipe: dict, source: str) -> dict:
  """Every ``PipelineConfig`` field (test mode) and ``channels``: equal dicts, equal inputs."""
  fields = {k: pipe[k] for k in _PIPELINE_KEYS if k in pipe}
  for key in ("zaxis", "xaxis"):
    if key in fields:
      fields[key] = tuple(fields[key])
  try:
    config = data_lib.PipelineConfig(test_mode=True, **fields)
  except (TypeError, ValueError) as err:
    raise PredictError(f"{source}: the recorded test pipeline {pipe} is not usable ({err})") \
        from None
  out = dataclasses.asdict(config)
  if pipe.get("channels"):
    out["channels"] = [str(c) for c in pipe["channels"]]
  return out


def _shapes(tree) -> str:
  return str(jax.tree.map(lambda a: (tuple(np.shape(a)), str(np.asarray(a).dtype)), tree))


def load_predictor(model: str | Sequence[str], *, data_dir: str | None = None) -> Predictor:
  """A ``Predictor`` for one model source or several (a post-hoc ensemble).

  Raises:
    PredictError: a source that is not a model, members that disagree on classes or layout.
  """
  sources = [s.strip() for s in (model.split(",") if isinstance(model, str) else model)]
  sources = [s for s in sources if s]
  if not sources:
    raise PredictError("--model is empty; give a model checkpoint or a training workdir")
  notes: list[str] = []
  members = [m[:3] + (_canonical_pipeline(m[3], m[6]),) + m[4:]
             for s in sources for m in _load_source(s, data_dir, notes)]
  first = members[0]
  for m in members[1:]:
    for what, a, b in (("classes", first[0].num_classes, m[0].num_classes),
                       ("layout", first[0].backbone.layout.name, m[0].backbone.layout.name)):
      if a != b:
        raise PredictError(f"ensemble members disagree on {what}: {first[6]} has {a}, "
                           f"{m[6]} has {b}")
    if first[0].backbone.layout != m[0].backbone.layout:
      raise PredictError(f"ensemble members disagree on the layout's graph: {first[6]} vs {m[6]}")
  # Members with the same architecture, pipeline and variable shapes are stacked (one vmap call).
  buckets: dict[str, list] = collections.OrderedDict()
  for m in members:
    key = json.dumps([m[5], m[3]], sort_keys=True, default=str)
    key += _shapes(m[1]) if m[2] == 1 else _shapes(jax.tree.map(lambda a: a[0], m[1]))
    buckets.setdefault(key, []).append(m)
  groups = []
  for bucket in buckets.values():
    if len(bucket) == 1:
      m = bucket[0]
      groups.append(_Group(m[0], m[1], m[2], m[3], [m[6]]))
      continue
    parts = [m[1] if m[2] > 1 else jax.tree.map(lambda a: np.asarray(a)[None], m[1])
             for m in bucket]
    stacked = jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *parts)
    groups.append(_Group(bucket[0][0], stacked, sum(m[2] for m in bucket), bucket[0][3],
                         [m[6] for m in bucket]))
  num_classes = first[0].num_classes
  names = next((m[4] for m in members if m[4] is not None), None)
  if names is None or len(names) != num_classes:
    names = [f"class {k}" for k in range(num_classes)]
  channels = [tuple(g.pipeline["channels"]) for g in groups if g.pipeline.get("channels")]
  return Predictor(groups=groups, layout=first[0].backbone.layout, num_classes=num_classes,
                   class_names=list(names), channels=channels[0] if channels else None,
                   notes=notes, sources=sources)


def _guess_channels(layout: graph.Layout, group: _Group) -> tuple[str, ...]:
  """Data channels when the model records none: 2D pose layouts carry a score."""
  c = group.data_channels
  if c == 2:
    return ("x", "y")
  if c == 3 and layout.name in ("coco", "openpose"):
    return ("x", "y", "score")
  return ("x", "y", "z")[:c] if c <= 3 else tuple(f"c{i}" for i in range(c))


# ------------------------------------------------------------------------------------ inputs
def write_predictions(path: str, rows: list[dict]) -> None:
  """``rows`` as JSON (a list) or CSV (one line per rank), chosen by the extension; atomic."""
  ext = os.path.splitext(path)[1].lower()
  if ext not in (".json", ".csv"):
    raise PredictError(f"--out {path}: expected a .json or .csv file name")
  try:
    with atomic.atomic_open(path, "w", newline="") as f:
      if ext == ".json":
        json.dump(rows, f, indent=2)
        f.write("\n")
      else:
        import csv  # pylint: disable=import-outside-toplevel
        writer = csv.writer(f)
        writer.writerow(["sample", "source", "format", "rank", "class", "class_index",
                         "probability"])
        for row in rows:
          for rank, top in enumerate(row["top_k"], 1):
            writer.writerow([row["sample"], row["source"], row["format"], rank, top["class"],
                             top["index"], f"{top['prob']:.6f}"])
  except OSError as err:
    raise PredictError(f"--out {path}: cannot write it ({err.strerror or err})") from None


# ------------------------------------------------------------------------------------ stream
def stream(predictor: Predictor, lines: Iterable[str], out: TextIO, err: TextIO = sys.stderr, *,
           window: int | None = None, hop: int | None = None, k: int = 5, num_clips: int = 1,
           img_shape=(0, 0), channels: Sequence[str] | None = None, warmup: bool = True) -> int:
  """Reads frames (JSON lines) from ``lines``; every ``hop`` frames once ``window`` frames are
  in, writes one JSON line ``{"frame", "classes", "probs", "latency_ms"}`` to ``out`` (latency: the
  pipeline and the model, from the frame's arrival to the scores). Returns the number of
  predictions. A bad line is one warning on ``err`` and is skipped."""
  window = int(window or predictor.clip_len)
  hop = int(hop or max(1, window // 4))
  if window < 1 or hop < 1:
    raise PredictError(f"--window and --hop must be >= 1, got {window} and {hop}")
  channels = tuple(channels or predictor.channels or _guess_channels(predictor.layout,
                                                                     predictor.groups[0]))
  predictor.check_channels(channels, "--stream")
  v, c = predictor.layout.num_joints, len(channels)
  pipes = [g.make_pipeline(channels, num_clips) for g in predictor.groups]
  frames: collections.deque = collections.deque(maxlen=window)

  def scores(kp):
    record = {"keypoint": kp, "img_shape": tuple(img_shape)}
    xs = [pipe(record)[None] for pipe in pipes]
    result = predictor.run(xs, batch_size=1)
    return result.probs[0]

  if warmup:
    dummy = np.zeros((1, window, v, c), np.float32)
    dummy[..., 0] = 0.1
    scores(dummy)
  count = emitted = 0
  for lineno, line in enumerate(lines, 1):
    if not line.strip():
      continue
    t0 = time.perf_counter()
    try:
      frame = parse_frame(line, v, c)
    except ValueError as error:
      err.write(f"warning: stdin line {lineno}: skipped: {error}\n")
      err.flush()
      continue
    frames.append(frame)
    count += 1
    if count < window or (count - window) % hop:
      continue
    persons = max(1, max(f.shape[0] for f in frames))
    kp = np.zeros((persons, len(frames), v, c), np.float32)
    for t, f in enumerate(frames):
      kp[:f.shape[0], t] = f
    if not kp.any():
      err.write(f"warning: frame {count - 1}: no joint in the last {len(frames)} frames; "
                "no prediction\n")
      continue
    probs = scores(kp)
    latency = (time.perf_counter() - t0) * 1e3
    best = top_k(probs, predictor.class_names, k)
    out.write(json.dumps({"frame": count - 1, "classes": [b[0] for b in best],
                          "probs": [round(b[2], 6) for b in best],
                          "latency_ms": round(latency, 3)}) + "\n")
    out.flush()
    emitted += 1
  return emitted
