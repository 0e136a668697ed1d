"""Bad sparse exports and export flags: one clear ``ExportError``, never a traceback.

``sparse.load_sparse`` reads a truncated, corrupted or tampered ``.npz`` as one ``ExportError``
naming the file and field, before anything is allocated and without unpickling anything;
``experiments.export`` and ``experiments.convert`` print it as one line. Ends with a seeded fuzz
test of sparse exports.
"""

import json
import time

import jax
import numpy as np
import pytest

from experiments import convert as convert_cli
from experiments import export as export_cli
from stgcn_jax import checkpoint
from stgcn_jax.export import sparse, stablehlo

from test_bad_input_model import (OPTIONS, _check_loaded, _mutate_bytes, _mutate_spec,
                                  _one_error_line, _random_variables, _BAD_VALUES)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A tiny model's sparse export, compressed and not (half of every kernel zero)."""
  root = tmp_path_factory.mktemp("saved")
  spec = checkpoint.model_spec_json("stgcn", 4, "nw-ucla", 3, OPTIONS,
                                    class_names=[f"c{k}" for k in range(4)])
  variables = _random_variables(checkpoint.build_model(spec))
  variables["params"] = jax.tree.map(lambda a: np.where(np.arange(a.size).reshape(a.shape) % 2,
                                                        a, 0), variables["params"])
  sparse.save_sparse(str(root / "model.npz"), spec, variables)
  sparse.save_sparse(str(root / "plain.npz"), spec, variables, compress=False)
  return {"npz": root / "model.npz", "plain": root / "plain.npz", "spec": spec,
          "variables": variables}


# --------------------------------------------------------------------- sparse exports
def _arrays(path):
  with np.load(path, allow_pickle=False) as f:
    return {k: f[k] for k in f.files}


def _json(arrays, key):
  return json.loads(bytes(arrays[key]))


def _set_json(arrays, key, value):
  arrays[key] = np.frombuffer(json.dumps(value).encode(), np.uint8)


def _tamper(arrays, what):
  """One named tampering of the arrays of a sparse export (in place)."""
  index = _json(arrays, "index")
  if what == "short_mask":
    arrays["mask"] = arrays["mask"][:3]
  elif what == "short_values":
    arrays["values_0"] = arrays["values_0"][:5]
  elif what == "extra_values":
    arrays["dense_0"] = np.concatenate([arrays["dense_0"], np.ones(3, np.float32)])
  elif what in ("negative_shape", "huge_shape"):
    index[0]["shape"] = [-3, 8] if what == "negative_shape" else [10 ** 6, 10 ** 6]
    _set_json(arrays, "index", index)
  elif what == "object_dtype":
    index[0]["dtype"] = "|O"
    _set_json(arrays, "index", index)
  elif what == "kept":
    next(e for e in index if e["storage"] == "sparse")["kept"] += 1
    _set_json(arrays, "index", index)
  elif what == "huge_layout":
    spec = _json(arrays, "spec")
    spec["layout"] = {"num_joints": 200_000, "edges": [], "center": 0}
    _set_json(arrays, "spec", spec)
  elif what == "classes":
    _set_json(arrays, "spec", dict(_json(arrays, "spec"), num_classes=11, class_names=None))


@pytest.mark.parametrize("what,message", [
    ("short_mask", "mask of params/backbone/block0/gcn/conv/kernel: 72 values needed, 24 left"),
    ("short_values", "values of params/backbone/block0/gcn/conv/kernel: "),
    ("extra_values", "field 'dense_0' holds 3 more entries than the index uses"),
    ("negative_shape", "index[0]: params/backbone/block0/gcn/PA [-3, 8] is not a leaf"),
    ("huge_shape", "index[0]: params/backbone/block0/gcn/PA [1000000, 1000000] is not a leaf"),
    ("object_dtype", "index[0]: dtype '|O' is not a plain numeric dtype"),
    ("kept", "keeps 36 weights, the index says 37"),
    ("huge_layout", "field 'spec': layout: num_joints must be an integer in 1..1000"),
    ("classes", "cls_head/fc_cls/bias [4] is not a leaf of the model the spec builds (it has "
                "(11,))"),
])
def test_tampered_fields_are_one_export_error(saved, tmp_path, what, message):
  arrays = _arrays(saved["npz"])
  _tamper(arrays, what)
  path = tmp_path / f"{what}.npz"
  np.savez(path, **arrays)
  with pytest.raises(sparse.ExportError) as err:
    sparse.load_sparse(str(path))
  assert str(err.value).startswith(f"{path}: ") and message in str(err.value), err.value


def _write_pickled_member(saved, path):
  arrays = _arrays(saved["npz"])
  arrays["dense_0"] = np.array([1.0, "x", None], dtype=object)
  np.savez(path, allow_pickle=True, **arrays)


def _write_huge_header(saved, path):
  """A member whose .npy header claims 10^13 entries (np.load would allocate 9 TiB)."""
  import io, zipfile  # pylint: disable=import-outside-toplevel,multiple-imports
  with zipfile.ZipFile(path, "w") as z:
    for key, value in _arrays(saved["npz"]).items():
      buf = io.BytesIO()
      np.save(buf, value)
      data = buf.getvalue()
      if key == "mask":
        data = data.replace(repr(value.shape).encode(), b"(10000000000000,)", 1)
      z.writestr(f"{key}.npy", data)


@pytest.mark.parametrize("what,message", [
    ("truncated", "damaged sparse export: truncated or corrupted (BadZipFile"),
    ("crc", "member 'values_0.npy': truncated or corrupted (BadZipFile: Bad CRC-32"),
    ("pickled", "member 'dense_0.npy': dtype object is not a plain numeric dtype"),
    ("huge_header", "the header says shape (10000000000000,) of uint8"),
    ("not_zip", "not a sparse model export: not an .npz file"),
])
def test_damaged_files_are_one_export_error(saved, tmp_path, what, message):
  path = tmp_path / f"{what}.npz"
  raw = saved["plain"].read_bytes()
  if what == "truncated":
    path.write_bytes(raw[:len(raw) // 2])
  elif what == "crc":
    start = raw.index(b"values_0.npy") + 200     # inside the member's data
    path.write_bytes(raw[:start] + bytes([raw[start] ^ 0xFF]) + raw[start + 1:])
  elif what == "pickled":
    _write_pickled_member(saved, path)
  elif what == "huge_header":
    _write_huge_header(saved, path)
  else:
    path.write_bytes(b"\x80\x04" + raw[4:100])
  with pytest.raises(sparse.ExportError) as err:
    sparse.load_sparse(str(path))
  assert str(err.value).startswith(f"{path}: ") and message in str(err.value), err.value


def test_export_convert_and_platform_mistakes_are_one_error_line(saved, tmp_path, capsys):
  raw = saved["npz"].read_bytes()
  truncated = tmp_path / "truncated.npz"
  truncated.write_bytes(raw[:len(raw) // 2])
  out = tmp_path / "out.shlo"
  err = _one_error_line(capsys, export_cli.main([f"--model={truncated}", f"--out={out}",
                                                 "--format=stablehlo"]))
  assert f"{truncated}: damaged sparse export" in err
  err = _one_error_line(capsys, convert_cli.main([f"--src={truncated}", "--backbone=stgcn",
                                                  "--num_classes=4", f"--out={tmp_path / 'c'}"]))
  assert f"{truncated}: truncated or corrupted (BadZipFile" in err
  err = _one_error_line(capsys, export_cli.main([f"--model={saved['npz']}", f"--out={out}",
                                                 "--format=stablehlo", "--platforms=gpu"]))
  assert "platform 'gpu' is not one jax.export lowers for" in err and "cuda" in err
  assert not out.exists() and not (tmp_path / "c").exists()
  model = checkpoint.build_model(saved["spec"])
  with pytest.raises(sparse.ExportError, match="frames must be an integer in 1..100000"):
    stablehlo.export_stablehlo(str(out), model, saved["variables"], saved["spec"], frames=0)


# --------------------------------------------------------------------- fuzz
def _mutate_npz_fields(rng, arrays):
  """One random field-level mutation of a sparse export's arrays (in place)."""
  what = rng.integers(6)
  key = ["index", "spec", "dtypes"][rng.integers(3)]
  try:
    for name in ("index", "spec", "dtypes"):
      _json(arrays, name)
  except (KeyError, ValueError):                  # an earlier mutation broke a JSON field
    what = 2
  if what == 0:                                   # a JSON field's entry replaced or dropped
    value = _json(arrays, key)
    target = value[rng.integers(len(value))] if isinstance(value, list) and value else value
    if isinstance(target, dict) and target:
      field = list(target)[rng.integers(len(target))]
      target[field] = _BAD_VALUES[rng.integers(len(_BAD_VALUES))]
    else:
      value = _BAD_VALUES[rng.integers(len(_BAD_VALUES))]
    _set_json(arrays, key, value)
  elif what == 1:                                 # a JSON field's bytes
    arrays[key] = np.frombuffer(_mutate_bytes(rng, bytes(arrays[key])), np.uint8)
  elif what == 2:                                 # an array cut, extended, or of another dtype
    name = list(arrays)[rng.integers(len(arrays))]
    a = arrays[name]
    arrays[name] = [a[:int(rng.integers(a.size + 1))], np.concatenate([a, a[:3]]),
                    a.astype(np.float64), a.astype(np.int8), a.reshape(1, -1)][rng.integers(5)]
  elif what == 3:                                 # an array dropped
    del arrays[list(arrays)[rng.integers(len(arrays))]]
  elif what == 4:                                 # an index entry's shape, kept or storage
    index = _json(arrays, "index")
    entry = index[rng.integers(len(index))]
    field = ["shape", "kept", "storage", "keys", "dtype"][rng.integers(5)]
    entry[field] = [[-1], [10 ** 12], 10 ** 9, "dense", "sparse", ["x"], "<f8", "|b1",
                    [entry.get("shape", [1])[0]]][rng.integers(9)]
    _set_json(arrays, "index", index)
  else:                                           # the spec's layout, classes or options
    spec = _json(arrays, "spec")
    _mutate_spec(rng, spec)
    _set_json(arrays, "spec", spec)


def test_fuzz_sparse_exports_load_or_raise_export_errors(saved, tmp_path):
  rng = np.random.default_rng(20240623)
  base = _arrays(saved["npz"])
  outcomes = {"ok": 0, "error": 0}
  start = time.perf_counter()
  for n in range(500):
    path = tmp_path / f"x{n % 4}.npz"
    if n % 2:                                     # the file's bytes
      raw = (saved["npz"] if n % 4 == 1 else saved["plain"]).read_bytes()
      path.write_bytes(_mutate_bytes(rng, raw) if rng.random() < 0.9 else raw)
    else:                                         # its fields
      arrays = {k: v.copy() for k, v in base.items()}
      for _ in range(rng.integers(1, 3)):
        _mutate_npz_fields(rng, arrays)
      np.savez(path, **arrays)
    try:
      model, variables = sparse.load_sparse(str(path))
    except sparse.ExportError as err:
      assert str(err).startswith(f"{path}: ") and "\n" not in str(err), err
      outcomes["error"] += 1
      continue
    _check_loaded(model, variables)
    outcomes["ok"] += 1
  assert outcomes["ok"] >= 15 and outcomes["error"] >= 250, outcomes
  assert time.perf_counter() - start < 40
