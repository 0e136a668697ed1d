"""Bad model folders: one clear ``CheckpointError``, never a traceback or orbax's noise.

``checkpoint.load_model`` checks ``model.json`` for types and sane sizes and against the shapes
saved in ``variables/`` before anything is built or read; a damaged ``variables/`` is one error
without orbax's asyncio tracebacks. Ends with a seeded fuzz test of model folders.
"""

import copy
import json
import logging
import os
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from stgcn_jax import checkpoint, models

from conftest import REPO

OPTIONS = dict(base_channels=8, num_stages=2, inflate_stages=[], down_stages=[])


def _random_variables(model, seed=0):
  """Random weights of the model's shapes (``eval_shape``: no slow unjitted ``init``)."""
  shapes = models.abstract_variables(model)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32) * 0.1, shapes)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A tiny model folder."""
  root = tmp_path_factory.mktemp("saved")
  spec = checkpoint.model_spec_json("stgcn", 4, "nw-ucla", 3, OPTIONS,
                                    class_names=[f"c{k}" for k in range(4)])
  checkpoint.save_model(str(root / "model"), spec, _random_variables(checkpoint.build_model(spec)))
  return {"dir": root / "model", "spec": spec}


def _copy(saved, tmp_path, name="m"):
  dst = tmp_path / name
  shutil.copytree(saved["dir"], dst)
  return dst


def _edit_spec(folder, **changes):
  spec = json.loads((folder / "model.json").read_text())
  spec.update(changes)
  (folder / "model.json").write_text(json.dumps(spec))


def _one_error_line(capsys, status):
  assert status == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1, err
  return err


# --------------------------------------------------------------------- model folders
def test_model_json_with_other_classes_names_the_saved_shape(saved, tmp_path):
  folder = _copy(saved, tmp_path)
  _edit_spec(folder, num_classes=11, class_names=None)
  with pytest.raises(checkpoint.CheckpointError) as err:
    checkpoint.load_model(str(folder))
  message = str(err.value)
  assert f"{folder}/model.json does not fit the variables saved in {folder}/variables" in message
  assert "cls_head/fc_cls/bias is (4,) there" in message and "needs (11,)" in message


def test_a_200000_joint_layout_is_refused_before_anything_is_built(saved, tmp_path):
  folder = _copy(saved, tmp_path)
  layout = {"num_joints": 200_000, "edges": [[i, i - 1] for i in range(1, 200_000)], "center": 0}
  _edit_spec(folder, layout=layout)
  start = time.perf_counter()
  with pytest.raises(checkpoint.CheckpointError, match="layout: num_joints must be an integer in "
                                                       r"1\.\.1000, got 200000"):
    checkpoint.load_model(str(folder))
  assert time.perf_counter() - start < 10


@pytest.mark.parametrize("change,message", [
    ({"num_classes": "4"}, "num_classes must be an integer in 1..100000, got '4'"),
    ({"num_classes": 0}, "num_classes must be an integer"),
    ({"backbone": "resnet"}, "backbone 'resnet' is not one of"),
    ({"in_channels": 10 ** 9}, "in_channels must be an integer in 1..1000"),
    ({"layout": "/dev/zero.json"}, "is not a built-in layout"),
    ({"layout": [1, 2]}, "layout must be a built-in layout name or an object"),
    ({"options": dict(OPTIONS, num_stages=10 ** 6)}, "options.num_stages is 1000000"),
    ({"options": dict(OPTIONS, base_channels=1e300)}, "expected at most 100,000"),
    ({"class_names": ["a", "b"]}, "class_names must be a list of num_classes = 4 strings"),
    ({"pipeline": {"clip_len": 10 ** 12}}, "pipeline: clip_len must be an integer"),
], ids=["classes_str", "classes_0", "backbone", "channels", "layout_path", "layout_list",
        "stages", "channels_huge", "class_names", "clip_len"])
def test_model_json_fields_are_checked(saved, tmp_path, change, message):
  folder = _copy(saved, tmp_path)
  _edit_spec(folder, **change)
  with pytest.raises(checkpoint.CheckpointError) as err:
    checkpoint.load_model(str(folder))
  assert str(err.value).startswith(f"{folder}/model.json") and message in str(err.value)


@pytest.mark.parametrize("text", ["{", "[1, 2]", "\xff", "[" * 100_000])
def test_model_json_that_is_not_an_object_is_one_error(saved, tmp_path, text):
  folder = _copy(saved, tmp_path)
  (folder / "model.json").write_bytes(text.encode("latin-1"))
  with pytest.raises(checkpoint.CheckpointError, match=f"{folder}/model.json: "):
    checkpoint.load_model(str(folder))


def _truncate_data_files(folder):
  for root, _, files in os.walk(folder / "variables"):
    for name in files:
      path = os.path.join(root, name)
      if "/d/" in path or name.endswith("manifest.ocdbt"):
        with open(path, "r+b") as f:
          f.truncate(40)


def test_truncated_variables_are_one_line_and_the_hooks_are_restored(saved, tmp_path):
  folder = _copy(saved, tmp_path)
  _truncate_data_files(folder)
  hook, filters = sys.unraisablehook, list(logging.getLogger("absl").filters)
  with pytest.raises(checkpoint.CheckpointError, match=f"{folder}/variables: "):
    checkpoint.load_model(str(folder))
  assert sys.unraisablehook is hook and logging.getLogger("absl").filters == filters
  result = subprocess.run(
      [sys.executable, "-m", "experiments.export", f"--model={folder}",
       f"--out={tmp_path / 'out.npz'}"], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {folder}/variables")
  assert not (tmp_path / "out.npz").exists()


def test_predict_on_an_edited_model_folder_is_one_line(saved, tmp_path, capsys):
  from experiments import predict as predict_cli  # pylint: disable=import-outside-toplevel
  folder = _copy(saved, tmp_path)
  _edit_spec(folder, num_classes=11, class_names=None)
  src = tmp_path / "x.json"
  src.write_text("{}")
  err = _one_error_line(capsys, predict_cli.main([f"--model={folder}", f"--src={src}"]))
  assert "cls_head/fc_cls/bias is (4,) there" in err


# --------------------------------------------------------------------- fuzz
_BAD_VALUES = [None, "x", -1, 0, 1, 3, 10 ** 9, 2 ** 70, 1e300, float("nan"), True, [], {},
               [1, 2], {"a": 1}, "nturgb+d", "coco", [[0]], "\x00" * 3]


def _mutate_spec(rng, spec):
  """One random field-level mutation of a ``model.json`` object (in place)."""
  what = rng.integers(5)
  if what == 0:                                   # any top-level field replaced or dropped
    key = list(spec)[rng.integers(len(spec))]
    if rng.random() < 0.3:
      del spec[key]
    else:
      spec[key] = _BAD_VALUES[rng.integers(len(_BAD_VALUES))]
  elif what == 1:                                 # an option
    options = spec.setdefault("options", {}) if isinstance(spec.get("options"), dict) else {}
    key = ["base_channels", "num_stages", "inflate_stages", "down_stages", "num_person",
           "ch_ratio", "bogus", "gcn"][rng.integers(8)]
    options[key] = _BAD_VALUES[rng.integers(len(_BAD_VALUES))]
  elif what == 2:                                 # the layout as an object
    layout = {"num_joints": int(rng.choice([0, 1, 3, 20, 2000])), "center": int(rng.integers(3)),
              "edges": [[i, i - 1] for i in range(1, int(rng.integers(1, 25)))]}
    if rng.random() < 0.3:
      layout["edges"].append(["a", 1])
    spec["layout"] = layout
  elif what == 3:                                 # classes and class names
    spec["num_classes"] = int(rng.choice([1, 4, 5, 11, 100_001]))
    spec["class_names"] = [f"c{k}" for k in range(int(rng.integers(0, 6)))]
  else:                                           # the pipeline
    spec["pipeline"] = {k: _BAD_VALUES[rng.integers(len(_BAD_VALUES))]
                        for k in ("clip_len", "num_clips", "modality")[:int(rng.integers(1, 4))]}


def _mutate_bytes(rng, data: bytes) -> bytes:
  mutant = bytearray(data)
  for _ in range(rng.integers(1, 4)):
    at = int(rng.integers(max(1, len(mutant))))
    op = rng.integers(4)
    if op == 0 and mutant:
      mutant[at] ^= 1 << int(rng.integers(8))
    elif op == 1:
      mutant[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
    elif op == 2:
      del mutant[at:at + int(rng.integers(1, 64))]
    else:
      mutant = mutant[:at]
  return bytes(mutant)


def _check_loaded(model, variables):
  want = models.abstract_variables(model)
  assert jax.tree.structure(variables) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(want)):
    assert a.shape == b.shape


def test_fuzz_model_folders_load_or_raise_checkpoint_errors(saved, tmp_path, capfd):
  rng = np.random.default_rng(20240622)
  base_spec = json.loads((saved["dir"] / "model.json").read_text())
  files = sorted(p for p in (saved["dir"] / "variables").rglob("*") if p.is_file())
  outcomes = {"ok": 0, "error": 0}
  start = time.perf_counter()
  for n in range(120):
    folder = tmp_path / f"m{n}"
    shutil.copytree(saved["dir"], folder)
    if n % 3 != 2:                                # model.json: fields, then maybe its bytes
      spec = copy.deepcopy(base_spec)
      for _ in range(rng.integers(1, 3)):
        _mutate_spec(rng, spec)
      text = json.dumps(spec).encode()
      (folder / "model.json").write_bytes(_mutate_bytes(rng, text) if n % 5 == 0 else text)
    else:                                         # one file of variables/ damaged
      victim = folder / files[rng.integers(len(files))].relative_to(saved["dir"])
      victim.write_bytes(_mutate_bytes(rng, victim.read_bytes()))
    try:
      model, variables = checkpoint.load_model(str(folder))
    except checkpoint.CheckpointError as err:
      assert str(folder) in str(err) and "\n" not in str(err), err
      outcomes["error"] += 1
      continue
    _check_loaded(model, variables)
    outcomes["ok"] += 1
  assert outcomes["ok"] >= 8 and outcomes["error"] >= 60, outcomes
  assert time.perf_counter() - start < 40
  assert "Traceback" not in capfd.readouterr().err      # orbax's noise stays silenced
