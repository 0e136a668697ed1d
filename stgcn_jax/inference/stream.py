"""Predictions on a live stream of frames: a sliding window over JSON lines, one prediction a hop.

>>> predictor = sources.load_predictor("runs/ntu60/model")
>>> stream(predictor, sys.stdin, sys.stdout, window=52, hop=2)   # one JSON line per prediction

Each line of the input is one frame (``stgcn_jax.inference.frames.parse_frame``: a list of
persons, each V joints of C values in the layout's joint order); each output line is
``{"frame", "classes", "probs", "latency_ms"}``.
"""

from __future__ import annotations

import collections
import json
import sys
import time
from typing import Iterable, Sequence, TextIO

import numpy as np

from stgcn_jax.errors import UserError
from stgcn_jax.inference.frames import coordinate_bound, parse_frame
from stgcn_jax.inference.predictor import Predictor, top_k
from stgcn_jax.inference.raw_input import PredictError

__all__ = ["stream", "MAX_WINDOW"]


def _window_scorer(predictor: Predictor, channels: Sequence[str], num_clips: int, img_shape):
  """``scores(kp)``: the mean probabilities of a ``(M, T, V, C)`` window over the members."""
  pipes = [g.make_pipeline(channels, num_clips) for g in predictor.groups]

  def scores(kp):
    record = {"keypoint": kp, "img_shape": tuple(img_shape)}
    xs = [pipe(record)[None] for pipe in pipes]
    result = predictor.run(xs, batch_size=1)
    return result.probs[0]
  return scores


def _stack_frames(frames: Sequence[np.ndarray], v: int, c: int) -> np.ndarray:
  """The ``(M, T, V, C)`` keypoints of per-frame ``(persons, V, C)`` arrays, absent persons 0."""
  persons = max(1, max(f.shape[0] for f in frames))
  kp = np.zeros((persons, len(frames), v, c), np.float32)
  for t, f in enumerate(frames):
    kp[:f.shape[0], t] = f
  return kp


_LISTED_REPAIRS = 10     # repaired stream lines named one by one; the rest are counted
MAX_WINDOW = 100_000     # frames of a stream window (the warm-up allocates one)


def _warn(err: TextIO, text: str) -> None:
  err.write(f"warning: {text}\n")
  err.flush()


def stream(predictor: Predictor, lines: Iterable[str], out: TextIO, err: TextIO = sys.stderr, *,
           window: int | None = None, hop: int | None = None, k: int = 5, num_clips: int = 1,
           img_shape=(0, 0), channels: Sequence[str] | None = None, warmup: bool = True) -> int:
  """Reads frames (JSON lines) from ``lines``; every ``hop`` frames once ``window`` frames are
  in, writes one JSON line ``{"frame", "classes", "probs", "latency_ms"}`` to ``out`` (latency: the
  pipeline and the model, from the frame's arrival to the scores). Returns the number of
  predictions. A bad line is one warning on ``err`` and is skipped; a frame's joints are repaired
  by the converters' coordinate rule (``stgcn_jax.inference.frames``), each repair one warning
  (the first ten lines; then a count at the end)."""
  window = int(window or predictor.clip_len)
  hop = int(hop or max(1, window // 4))
  if not (1 <= window <= MAX_WINDOW and 1 <= hop <= MAX_WINDOW):
    raise PredictError(f"--window and --hop must be in 1..{MAX_WINDOW}, got {window} and {hop}")
  channels = predictor.default_channels(channels)
  predictor.check_channels(channels, "--stream")
  v, c = predictor.layout.num_joints, len(channels)
  bound = coordinate_bound(predictor.layout.name, channels, img_shape)
  scores = _window_scorer(predictor, channels, num_clips, img_shape)
  frames: collections.deque = collections.deque(maxlen=window)
  if warmup:
    dummy = np.zeros((1, window, v, c), np.float32)
    dummy[..., 0] = 0.1
    scores(dummy)
  count = emitted = repaired = 0
  for lineno, line in enumerate(lines, 1):
    if not line.strip():
      continue
    t0 = time.perf_counter()
    try:
      frame, repair = parse_frame(line, v, c, max_abs=bound, has_score=channels[-1] == "score")
    except UserError as error:             # not a frame; anything else is a bug
      _warn(err, f"stdin line {lineno}: skipped: {error}")
      continue
    if repair is not None:
      repaired += 1
      if repaired <= _LISTED_REPAIRS:
        _warn(err, f"stdin line {lineno}: repaired: {repair}")
    frames.append(frame)
    count += 1
    if count < window or (count - window) % hop:
      continue
    kp = _stack_frames(frames, v, c)
    if not kp.any():
      _warn(err, f"frame {count - 1}: no joint in the last {len(frames)} frames; no prediction")
      continue
    probs = scores(kp)
    latency = (time.perf_counter() - t0) * 1e3
    best = top_k(probs, predictor.class_names, k)
    out.write(json.dumps({"frame": count - 1, "classes": [b[0] for b in best],
                          "probs": [round(b[2], 6) for b in best],
                          "latency_ms": round(latency, 3)}) + "\n")
    out.flush()
    emitted += 1
  if repaired > _LISTED_REPAIRS:
    _warn(err, f"stdin: joints were repaired on {repaired} lines in all (the first "
               f"{_LISTED_REPAIRS} are listed above)")
  return emitted
