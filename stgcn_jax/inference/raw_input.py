"""Raw skeleton files and live frames -> records, as the converters would store them.

A raw input goes through the converters' own parse functions and coordinate rule
(``stgcn_jax.data.formats``), so a file gives exactly the record ``data_prep`` would store: NTU
``.skeleton`` (``formats.ntu``), a Kinetics-skeleton video JSON (``formats.kinetics``), an NW-UCLA
JSON (``formats.nw_ucla``) and a pyskl annotation pickle (``formats.pyskl``: every annotation is a
sample; read by the restricted unpickler). A sample's repairs (the coordinate rule: NaN, inf, out-of-range
joints set to 0) are listed in its ``warnings``, naming the file and how many joints. A pyskl
pickle whose keypoints would hold more numbers than its bytes can store (shared references that
expand, a pickle bomb) is refused before anything is materialised. ``parse_frame``
(``stgcn_jax.inference.frames``) reads one frame of a JSON-lines stream.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from stgcn_jax import data as data_lib
from stgcn_jax import graph
from stgcn_jax.data.formats import files, kinetics, ntu, nw_ucla, pyskl
from stgcn_jax.data.records import DataError
from stgcn_jax.errors import UserError
from stgcn_jax.inference.frames import parse_frame

__all__ = ["FORMATS", "FORMAT_LAYOUTS", "FORMAT_CHANNELS", "PredictError", "Sample",
           "detect_format", "read_samples", "parse_frame"]

FORMATS = ("ntu", "kinetics", "nw_ucla", "pyskl")
FORMAT_TITLES = {"ntu": "NTU .skeleton", "kinetics": "Kinetics-skeleton", "nw_ucla": "NW-UCLA",
                 "pyskl": "pyskl pickle"}
FORMAT_LAYOUTS = {"ntu": "nturgb+d", "kinetics": "openpose", "nw_ucla": "nw-ucla"}
FORMAT_CHANNELS = {"ntu": ("x", "y", "z"), "kinetics": ("x", "y", "score"),
                   "nw_ucla": ("x", "y", "z")}
_PYSKL_CHANNELS = {"3d": ("x", "y", "z"), "2d": ("x", "y"), "2d+score": ("x", "y", "score")}
_SUFFIXES = {".skeleton": "ntu", ".pkl": "pyskl", ".pickle": "pyskl", ".json": None}

class PredictError(UserError):
  """A user mistake (a model, file or flag that cannot be used), reported as one line."""


@dataclasses.dataclass
class Sample:
  """One sample read from a raw file: ``record`` is what the converter would store."""
  name: str
  source: str
  format: str
  record: dict
  channels: tuple[str, ...]
  label: int | None = None
  warnings: list[str] = dataclasses.field(default_factory=list)   # what was repaired, and where


def detect_format(path: str) -> str:
  """``ntu``, ``kinetics``, ``nw_ucla`` or ``pyskl`` from the extension and, for JSON, the content.

  Raises:
    DataError: naming the file, when the format cannot be told.
  """
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in _SUFFIXES:
    raise DataError(f"{path}: unknown file type {suffix or '(no extension)'}; expected .skeleton "
                    "(NTU), .json (Kinetics-skeleton or NW-UCLA) or .pkl (pyskl), or pass --format")
  if _SUFFIXES[suffix] is not None:
    return _SUFFIXES[suffix]
  obj = kinetics.read_json(path)
  if isinstance(obj, dict) and "data" in obj:
    return "kinetics"
  if isinstance(obj, dict) and "skeletons" in obj:
    return "nw_ucla"
  keys = sorted(map(str, obj))[:3] if isinstance(obj, dict) else None
  kind = "an object" if isinstance(obj, dict) else "a list" if isinstance(obj, list) else "a value"
  raise DataError(f"{path}: neither a Kinetics-skeleton video ({{\"data\": [...]}}) nor an NW-UCLA "
                  f"sample ({{\"skeletons\": [...]}}); got {kind}"
                  + (f" with keys {keys}..." if keys is not None else ""))


def _list_files(src: str) -> list[str]:
  if not os.path.exists(src):
    raise PredictError(f"--src {src}: no such file or directory")
  if not os.path.isdir(src):
    return [src]
  try:
    names = sorted(os.listdir(src))
  except OSError as err:
    raise PredictError(f"--src {src}: cannot list it ({err.strerror or err})") from None
  files = [os.path.join(src, n) for n in names
           if os.path.splitext(n)[1].lower() in _SUFFIXES and os.path.isfile(os.path.join(src, n))]
  if not files:
    raise PredictError(f"--src {src}: no .skeleton, .json or .pkl file in it")
  return files


def _check_layout(fmt: str, model_layout: graph.Layout, pyskl_layout, where: str) -> graph.Layout:
  name = FORMAT_LAYOUTS.get(fmt)
  layout = graph.get_layout(name) if name else (pyskl_layout or model_layout)
  if layout != model_layout:
    raise PredictError(f"{where}: {FORMAT_TITLES[fmt]} data is layout {layout.name!r}, but the "
                       f"model was trained on layout {model_layout.name!r}")
  return layout


def _repairs(report) -> list[str]:
  """The repair messages of ``report`` (each names the file and what was repaired)."""
  return [m.split(": ", 1)[1] for m in report.messages if m.startswith("repaired: ")]


def _cleaned(record: dict, path: str, fmt: str, report, max_abs: float) -> Sample:
  """A converter's record of a 3D file after the coordinate and all-zero rules, as a Sample."""
  kp = files.clean_keypoint(record["keypoint"], path, report, max_abs=max_abs)
  if kp is None:
    raise DataError(report.messages[-1].split(": ", 1)[1])
  label = record.get("label")
  return Sample(record["frame_dir"], path, fmt, {"keypoint": kp.astype(np.float32),
                                                 "img_shape": (0, 0)},
                FORMAT_CHANNELS[fmt], None if label is None else int(label), _repairs(report))


def _read_file(path: str, fmt: str, layout: graph.Layout) -> tuple[list[Sample], list[str]]:
  """Samples of one file and the messages of its rejected samples (pyskl: per annotation)."""
  report = data_lib.ConversionReport()
  if fmt == "ntu":
    try:
      ntu.parse_name(ntu.stem(os.path.basename(path)))
    except DataError:
      record = _ntu_unnamed(path)     # a recording of one's own: no NTU name, no label
    else:
      record = ntu.to_record(path)
    return [_cleaned(record, path, fmt, report, ntu.MAX_ABS_METRES)], []
  if fmt == "kinetics":
    kp, label_index, _ = kinetics.parse_video(path, report)
    if kp is None:
      raise DataError(report.messages[-1].split(": ", 1)[1])
    name = os.path.splitext(os.path.basename(path))[0]
    return [Sample(name, path, fmt, {"keypoint": kp.astype(np.float32), "img_shape": (1, 1)},
                   FORMAT_CHANNELS[fmt], label_index, _repairs(report))], []
  if fmt == "nw_ucla":
    return [_cleaned(nw_ucla.parse_file(path), path, fmt, report, nw_ucla.MAX_ABS)], []
  obj = pyskl.read_pickle(path)
  annotations, _, _ = pyskl.annotations_and_splits(obj, path)
  pyskl.check_total_size(annotations, path, os.path.getsize(path))
  if annotations and not any(isinstance(a, dict) and "keypoint" in a for a in annotations):
    raise DataError(f"{path}: no annotation has a 'keypoint' field (a K400-style metadata pickle "
                    "whose keypoints live in separate kpfiles?); nothing to predict")
  samples, bad = [], []
  for i, ann in enumerate(annotations):
    if isinstance(ann, dict) and not pyskl.is_label(ann.get("label")):
      ann = dict(ann, label=0)      # a label is not needed to predict
    try:
      # pyskl's own per-annotation parsing (labels unused: shift 0, no class count)
      record = pyskl.to_record(ann, i, path, layout, 0, None, report)
    except DataError as err:
      bad.append(str(err))
      continue
    if record is None:
      bad.append(report.messages[-1].split(": ", 1)[1])
      continue
    notes = [f"{record['where']}: " + "; ".join(m for _, m in record["repairs"])] \
        if record["repairs"] else []
    samples.append(Sample(record["frame_dir"], path, fmt,
                          {"keypoint": record["keypoint"], "img_shape": record["img_shape"]},
                          _PYSKL_CHANNELS[record["kind"]], None, notes))
  if not annotations:
    raise DataError(f"{path}: the pickle holds no annotation")
  return samples, bad


def _ntu_unnamed(path: str) -> dict:
  """``formats.ntu.to_record`` for a file whose name is not an NTU sample name: the same two most
  energetic bodies, named by the file."""
  num_frames, bodies = ntu.read_bodies(path)
  if num_frames == 0 or not bodies:
    raise DataError(f"{path}: zero-length sequence ({num_frames} frames, no body in any frame)")
  ids = list(bodies)
  energy = [ntu.motion_energy(ntu.usable(bodies[i][1])) for i in ids]
  order = sorted(range(len(ids)), key=lambda k: -energy[k])[:2]
  kp = np.zeros((len(order), num_frames, ntu.NUM_JOINTS, 3))
  for m, k in enumerate(order):
    frames, xyz = bodies[ids[k]]
    kp[m, frames] = xyz
  return {"keypoint": kp, "label": None,
          "frame_dir": ntu.stem(os.path.basename(path))}


def read_samples(src: str, *, layout: graph.Layout, fmt: str | None = None,
                 pyskl_layout: str | None = None, check=None) -> tuple[list[Sample], list[str]]:
  """The samples of a file or directory and one message per bad file / annotation.

  ``layout`` is the model's; data of another layout is a ``PredictError`` naming both. ``check``
  (e.g. ``Predictor.check_channels``) may reject a sample with a DataError.
  """
  if fmt is not None and fmt not in FORMATS:
    raise PredictError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
  try:
    pyskl_layout = graph.get_layout(pyskl_layout) if pyskl_layout else None
  except graph.LayoutError as err:
    raise PredictError(f"--layout: {err}") from None
  samples, bad = [], []
  for path in _list_files(src):
    try:
      file_fmt = fmt or detect_format(path)
      file_layout = _check_layout(file_fmt, layout, pyskl_layout, path)
      got, rejected = _read_file(path, file_fmt, file_layout)
      bad.extend(rejected)
      for sample in got:
        try:
          if check is not None:
            check(sample.channels, f"{path} ({sample.name})")
          samples.append(sample)
        except DataError as err:
          bad.append(str(err))
    except DataError as err:
      bad.append(str(err) if str(err).startswith(path) else f"{path}: {err}")
    except (OSError, ValueError) as err:
      if isinstance(err, PredictError):
        raise
      bad.append(f"{path}: cannot read it ({type(err).__name__}: {str(err)[:200]})")
  return samples, bad
