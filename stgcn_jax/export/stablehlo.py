"""The portable artifact of a model: ``jax.export`` of its eval-mode forward pass.

``export_stablehlo`` serializes the forward pass with the weights baked in as constants, input
``float32 (B, M, T, V, C)`` with a symbolic batch ``B``; ``FILE`` holds ``Exported.serialize()``
and ``FILE.json`` the input contract (``input_contract``: shapes, joint order, channels, the test
pipeline's preprocessing, classes). Running it needs only ``jax`` and ``numpy``::

    exp = jax.export.deserialize(open(FILE, "rb").read())
    logits = exp.call(x)      # x: float32 (B, M, T, V, C) -> (B, num_classes)
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp

from stgcn_jax import atomic, graph
from stgcn_jax.export.sparse import ExportError

__all__ = ["JOINT_NAMES", "PLATFORMS", "MAX_FRAMES", "input_contract", "export_stablehlo"]

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")      # what jax.export lowers for
MAX_FRAMES = 100_000

# The joint order of the built-in layouts (documentation for the input contract).
JOINT_NAMES = {
    "nturgb+d": [  # Kinect v2, NTU RGB+D's 1-based joint numbers minus one
        "spine_base", "spine_mid", "neck", "head", "left_shoulder", "left_elbow", "left_wrist",
        "left_hand", "right_shoulder", "right_elbow", "right_wrist", "right_hand", "left_hip",
        "left_knee", "left_ankle", "left_foot", "right_hip", "right_knee", "right_ankle",
        "right_foot", "spine_shoulder", "left_hand_tip", "left_thumb", "right_hand_tip",
        "right_thumb"],
    "nw-ucla": [  # Kinect v1
        "hip_center", "spine", "shoulder_center", "head", "left_shoulder", "left_elbow",
        "left_wrist", "left_hand", "right_shoulder", "right_elbow", "right_wrist", "right_hand",
        "left_hip", "left_knee", "left_ankle", "left_foot", "right_hip", "right_knee",
        "right_ankle", "right_foot"],
    "coco": [
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
        "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
        "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"],
    "openpose": [  # OpenPose COCO-18
        "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
        "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
        "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear"],
}


def _layout_json(layout: graph.Layout) -> dict:
  return {"name": layout.name, "num_joints": layout.num_joints, "center": layout.center,
          "edges": [list(e) for e in layout.inward]}


def input_contract(spec: dict, model, frames: int) -> dict:
  """The sidecar JSON of a StableHLO artifact: what goes in, what comes out."""
  bb = model.backbone
  layout = bb.layout
  pipe = spec.get("pipeline")
  recorded = isinstance(pipe, dict)
  if not recorded:  # the training config's defaults (experiments/configs/default.py)
    pipe = {"modality": "j", "normalize": "auto", "align_spine": False, "clip_len": frames,
            "num_clips": 1, "num_person": bb.num_person}
  modality = str(pipe.get("modality", "j"))
  c_raw = bb.in_channels // max(1, len(modality.split(",")))
  contract = {
      "format": "jax.export serialized StableHLO (jax.export.deserialize(bytes).call(x))",
      "jax_version": jax.__version__,
      "model": {"backbone": spec.get("backbone"), "num_classes": int(model.num_classes),
                "options": spec.get("options", {})},
      "input": {
          "dtype": "float32", "shape": ["B", bb.num_person, frames, layout.num_joints,
                                        bb.in_channels],
          "axes": ["batch (symbolic: any B >= 1)", "M persons (missing persons are zeros)",
                   "T frames", "V joints", "C channels"],
          "layout": _layout_json(layout),
          "joint_order": JOINT_NAMES.get(layout.name,
                                         [f"joint_{i}" for i in range(layout.num_joints)]),
          "channels": _channel_names(modality, c_raw),
      },
      "preprocessing": {
          "recorded_in_checkpoint": recorded,
          "pipeline": pipe,
          "steps": _pipeline_steps(pipe, c_raw),
      },
      "output": {"name": "logits", "dtype": "float32", "shape": ["B", int(model.num_classes)],
                 "note": "unnormalised class scores; softmax for probabilities. For the multi-clip "
                         "test, run each clip and average the softmax."},
  }
  if not recorded:
    contract["preprocessing"]["note"] = (
        "model.json does not record the pipeline: these are the defaults of "
        "experiments/configs/default.py (check the training config of this model)")
  names = spec.get("class_names")
  if names:
    contract["output"]["class_names"] = list(names)
  return contract


def _channel_names(modality: str, c_raw: int) -> list[str]:
  base = {2: ["x", "y"], 3: ["x", "y", "z (3D data) or score (2D keypoints)"]}.get(
      c_raw, [f"c{i}" for i in range(c_raw)])
  kinds = {"j": "joint", "b": "bone", "jm": "joint_motion", "bm": "bone_motion"}
  return [f"{kinds.get(m, m)}_{c}" for m in modality.split(",") for c in base]


def _pipeline_steps(pipe: dict, c_raw: int) -> list[str]:
  norm = pipe.get("normalize", "auto")
  steps = [
      "keypoints (M, T_raw, V, C) in the layout's joint order, float32",
      f"normalize={norm!r} ('auto': PreNormalize3D for 3D data, PreNormalize2D for 2D data "
      "with a score channel). PreNormalize3D: keep the frames where person 0 (or person 1, if "
      "it has more) is not all zero; subtract the centre joint of person 0 at the first kept "
      "frame (joint 1 when V == 25, else the last joint) from every non-zero joint"
      + ("; rotate so joints 0->1 point along +z and 8->4 along +x" if pipe.get("align_spine")
         else "; no spine rotation (align_spine=False)")
      + ". PreNormalize2D: x, y from pixels to [-1, 1] by the image size (default 1080 x 1920); "
      "joints with score <= 0.01 get x = y = 0",
      f"features: modality {pipe.get('modality', 'j')!r} (j = joints, b = bones "
      "joint - parent, jm / bm = frame differences); several are concatenated on C",
      f"test sampling: {pipe.get('num_clips', 1)} clip(s) of T={pipe.get('clip_len')} frames "
      "(pyskl UniformSampleFrames, test mode, seed 255), persons padded with zeros / cut to M",
  ]
  return steps


def _platforms(platforms) -> tuple[str, ...] | None:
  """``platforms`` lower-cased, without repeats; ExportError for a name jax.export does not know
  (jax would raise a RuntimeError, or lower for the wrong machine)."""
  if not platforms:
    return None
  names: list[str] = []
  for p in platforms:
    name = str(p).strip().lower()
    if name not in PLATFORMS:
      hint = " (NVIDIA GPUs: cuda; AMD GPUs: rocm)" if name == "gpu" else ""
      raise ExportError(f"platform {str(p)[:40]!r} is not one jax.export lowers for; expected "
                        f"some of {', '.join(PLATFORMS)}{hint}")
    if name not in names:
      names.append(name)
  return tuple(names)


def export_stablehlo(path: str, model, variables, spec: dict, *, frames: int = 100,
                     symbolic_batch: bool = True, platforms=None) -> dict:
  """Serialize the eval-mode forward pass (weights as constants) to ``path``; contract to
  ``path + '.json'``. Returns the contract. ExportError for an unknown platform or a frame count
  outside 1..MAX_FRAMES."""
  platforms = _platforms(platforms)
  if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= MAX_FRAMES:
    raise ExportError(f"frames must be an integer in 1..{MAX_FRAMES}, got {frames!r}")
  bb = model.backbone
  consts = {k: variables[k] for k in ("params", "batch_stats") if k in variables}

  def infer(x):
    return model.apply(consts, x, train=False)

  tail = (bb.num_person, int(frames), bb.layout.num_joints, bb.in_channels)
  if symbolic_batch:
    (b,) = jax.export.symbolic_shape("b")
    arg = jax.ShapeDtypeStruct((b,) + tail, jnp.float32)
  else:
    arg = jax.ShapeDtypeStruct((1,) + tail, jnp.float32)
  kwargs = {"platforms": tuple(platforms)} if platforms else {}
  exported = jax.export.export(jax.jit(infer), **kwargs)(arg)
  contract = input_contract(spec, model, int(frames))
  if not symbolic_batch:
    contract["input"]["shape"][0] = 1
    contract["input"]["axes"][0] = "batch (fixed: 1)"
    contract["output"]["shape"][0] = 1
  contract["platforms"] = list(exported.platforms)
  with atomic.atomic_open(path, "wb") as f:
    f.write(bytes(exported.serialize()))
  with atomic.atomic_open(path + ".json", "wb") as f:
    f.write((json.dumps(contract, indent=2) + "\n").encode())
  return contract
