"""Running a loaded model or an ensemble: ``Predictor`` (built by ``sources.load_predictor``).

A ``Predictor`` holds groups of members that share the architecture and the test pipeline; each
group runs in one jitted call (``jax.vmap`` over its members when it has several). ``predict``
turns records into the model input with the group's test pipeline and returns the clip-averaged
softmax scores of every member and their sum (as ``stgcn_jax.fusion`` fuses). ``top_k`` ranks
them, ``write_predictions`` writes the ranked rows as JSON or CSV.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stgcn_jax import atomic, graph, models
from stgcn_jax import data as data_lib
from stgcn_jax.data.records import DataError
from stgcn_jax.inference.raw_input import PredictError

__all__ = ["Prediction", "Group", "Predictor", "pipeline_config", "guess_channels", "top_k",
           "write_predictions"]

_PIPELINE_KEYS = ("clip_len", "num_clips", "modality", "normalize", "align_spine", "zaxis", "xaxis",
                  "num_person", "seed")


def pipeline_config(pipe: dict, num_clips: int | None = None) -> data_lib.PipelineConfig:
  """The test-mode ``PipelineConfig`` of a recorded pipeline (its ``PipelineConfig`` fields;
  ``num_clips`` overrides its own). Raises what ``PipelineConfig`` raises on bad fields."""
  fields = {k: pipe[k] for k in _PIPELINE_KEYS if k in pipe}
  for key in ("zaxis", "xaxis"):
    if key in fields:
      fields[key] = tuple(fields[key])
  if num_clips:
    fields["num_clips"] = int(num_clips)
  return data_lib.PipelineConfig(test_mode=True, **fields)


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
class Group:
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
    config = pipeline_config(self.pipeline, num_clips)
    layout = self.model.backbone.layout
    info = data_lib.DatasetInfo(name="predict", path="", layout=layout,
                                num_classes=self.model.num_classes, class_names=(), splits={},
                                default_splits={}, num_persons=config.num_person,
                                channels=tuple(channels), metadata={})
    try:
      return data_lib.Pipeline(config, info)
    except ValueError as err:
      raise PredictError(f"the model's test pipeline does not fit its data: {err}") from None


def guess_channels(layout: graph.Layout, group: Group) -> tuple[str, ...]:
  """Data channels when the model records none: 2D pose layouts carry a score."""
  c = group.data_channels
  if c == 2:
    return ("x", "y")
  if c == 3 and layout.name in ("coco", "openpose"):
    return ("x", "y", "score")
  return ("x", "y", "z")[:c] if c <= 3 else tuple(f"c{i}" for i in range(c))


@dataclasses.dataclass
class Predictor:
  """A model or an ensemble, with its test pipeline(s), layout and class names."""
  groups: list[Group]
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

  def default_channels(self, channels: Sequence[str] | None = None) -> tuple[str, ...]:
    """``channels``, else the channels the model was trained on, else a guess from the layout."""
    return tuple(channels or self.channels or guess_channels(self.layout, self.groups[0]))

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
    channels = self.default_channels(channels)
    return self.run(self.inputs(records, channels, num_clips), batch_size)


def top_k(probs: np.ndarray, class_names: Sequence[str], k: int = 5
          ) -> list[tuple[str, int, float]]:
  """The ``k`` most likely classes as ``(name, index, probability)``, most likely first."""
  order = np.argsort(-np.asarray(probs), kind="stable")[:max(1, int(k))]
  return [(class_names[i], int(i), float(probs[i])) for i in order]


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
