"""Seeded fuzz of the workdirs that ``experiments.fuse`` and ``experiments.sweep --table_only``
read: random mutations of results.json, config.json, scores.npz, sweep_times.json and the saved
model folders. The only acceptable outcomes are success, or the project's clear error (status 2,
one ``error:`` line naming a file of the workdirs); never another exception."""

import json
import os
import shutil
import time

import numpy as np

from experiments import fuse, sweep
from stgcn_jax import cli

from test_bad_input_fuse_sweep import CONFIG, save_tiny_model, store
from test_fusion import A, B, LABELS, budget_results, make_run

# Values a damaged or hand-edited JSON field may hold.
VALUES = [None, True, -1, 0, 0.5, 2, 10**400, float("nan"), float("inf"), "x", "", [], [0.5, "a"],
          {}, {"fingerprint": "f" * 64}, {"fingerprint": 1}, [{}], [{"prunable_nonzero": "x"}],
          {"platform": "cpu"}, {"run": "7"}]
RESULTS_KEYS = ["top1", "top5", "mean_class_accuracy", "prunable_sparsity", "prunable_nonzero",
                "prunable_params", "nonzero_params", "total_params", "members", "data_store",
                "hardware", "seeds"]
CONFIG_KEYS = ["sparsity", "ensemble_sparsities", "backbone", "modality", "mode", "data_store"]
SPEC_KEYS = ["backbone", "num_classes", "layout", "in_channels", "options"]


def _bytes(rng, blob: bytes) -> bytes:
  kind = rng.integers(4)
  if kind == 0 or not blob:
    return rng.bytes(int(rng.integers(0, 64)))
  if kind == 1:
    return blob[:int(rng.integers(0, len(blob)))]                   # truncated
  out = bytearray(blob)
  for i in rng.integers(0, len(out), int(rng.integers(1, 6))):
    out[i] ^= int(rng.integers(1, 256))
  return bytes(out)


def _mutate_json(rng, path: str, keys: list[str]) -> None:
  kind = rng.integers(6)
  try:
    with open(path, "rb") as f:
      obj = json.loads(f.read().decode("utf-8"))
  except (OSError, ValueError):  # absent, a folder, or damaged by an earlier mutation
    kind = 0
  if kind == 0:
    if not os.path.isdir(path):
      blob = open(path, "rb").read() if os.path.isfile(path) else b""
      with open(path, "wb") as f:
        f.write(_bytes(rng, blob))
    return
  if kind == 1:
    obj = VALUES[rng.integers(len(VALUES))]
  elif isinstance(obj, list):                                        # sweep_times.json
    obj.append({"wall_s": VALUES[rng.integers(len(VALUES))], "returncode": 0})
  elif kind in (2, 3, 4):
    obj[keys[rng.integers(len(keys))]] = VALUES[rng.integers(len(VALUES))]
  else:
    obj.pop(keys[rng.integers(len(keys))], None)
  with open(path, "w") as f:
    json.dump(obj, f)


def _mutate_npz(rng, path: str) -> None:
  if rng.integers(4) == 0 or not os.path.isfile(path):
    _mutate_bytes(rng, path)
    return
  try:
    with np.load(path) as f:
      arrays = {k: f[k] for k in f.files}
  except Exception:  # pylint: disable=broad-except  (already damaged by an earlier mutation)
    return
  key = ["scores", "labels", "index", "names", "member_scores", "member_sparsities"][
      rng.integers(6)]
  n = len(arrays.get("labels", [0, 0, 0]))
  choices = [None, np.zeros((0, 3)), np.full((n, 3), np.nan), np.array(["a"] * n),
             np.arange(n, dtype=np.float32) + 0.5, np.array([5] * n), np.array([-1] * n),
             np.zeros(n, int), np.ones((2, n, 3)), np.ones((2, n, 4)), np.array([0.6, 0.8]),
             np.array(["x", "y"]), np.ones(n, bool), np.ones((n, 3), complex), np.float32(3)]
  value = choices[rng.integers(len(choices))]
  if value is None:
    arrays.pop(key, None)
  else:
    arrays[key] = value
  np.savez(path, **arrays)


def _mutate_bytes(rng, path: str) -> None:
  kind = rng.integers(3)
  if kind == 0 and os.path.isfile(path):
    os.remove(path)
  elif kind == 1 and os.path.isfile(path):
    os.remove(path)
    os.mkdir(path)
  elif os.path.isfile(path):
    blob = open(path, "rb").read()
    with open(path, "wb") as f:
      f.write(_bytes(rng, blob))


def _mutate_model(rng, model: str) -> None:
  if not os.path.isdir(model):
    return
  files = sorted(os.path.join(d, n) for d, _, ns in os.walk(model) for n in ns)
  kind = rng.integers(6)
  if kind == 0:
    shutil.rmtree(os.path.join(model, "variables"), ignore_errors=True)
  elif kind == 1:                                                    # a kill between the renames
    os.replace(model, os.path.join(os.path.dirname(model), ".model.replaced"))
  elif kind == 2 and os.path.isfile(os.path.join(model, "model.json")):
    _mutate_json(rng, os.path.join(model, "model.json"), SPEC_KEYS)
  elif files:
    _mutate_bytes(rng, files[rng.integers(len(files))])


def _mutate_workdir(rng, workdir: str) -> None:
  target = rng.integers(5)
  if target == 0:
    _mutate_json(rng, os.path.join(workdir, "results.json"), RESULTS_KEYS)
  elif target == 1:
    _mutate_json(rng, os.path.join(workdir, "config.json"), CONFIG_KEYS)
  elif target == 2:
    _mutate_npz(rng, os.path.join(workdir, "scores.npz"))
  elif target == 3:
    _mutate_json(rng, os.path.join(workdir, "sweep_times.json"), [])
  else:
    _mutate_model(rng, os.path.join(workdir, "model"))


def _outcome(capsys, monkeypatch, module, argv, where: str) -> int:
  monkeypatch.setenv("XLA_FLAGS", "")
  status = cli.run(module.main, argv)
  err = capsys.readouterr().err
  assert status in (0, 2), err
  if status == 2:
    assert err.startswith("error: ") and where in err, err
    assert err.strip().splitlines()[-1].startswith("error: ") or len(err.splitlines()) == 1, err
  return status


def _fuzz(tmp_path, capsys, monkeypatch, base, module, argv_of, seed: int, iterations: int):
  """``iterations`` copies of ``base`` with one to three mutations each; returns the outcomes."""
  rng = np.random.default_rng(seed)
  workdirs = sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)))
  outcomes = {0: 0, 2: 0}
  for i in range(iterations):
    root = tmp_path / f"it{i}"
    shutil.copytree(base, root)
    for _ in range(int(rng.integers(1, 4))):
      _mutate_workdir(rng, str(root / workdirs[rng.integers(len(workdirs))]))
    start = time.time()
    outcomes[_outcome(capsys, monkeypatch, module, argv_of(root), str(root))] += 1
    # A guard against a mutation that makes the program hang (one read of a tiny workdir is well
    # under a second), not a speed target: generous enough for a loaded machine.
    assert time.time() - start < 60, f"iteration {i} took {time.time() - start:.0f} s"
    shutil.rmtree(root)
  return outcomes


def _results(level: float) -> dict:
  return dict(budget_results(1 - level), data_store=store("a"), seeds={"run": 0},
              hardware={"platform": "cpu", "device_kind": "cpu", "device_count": 1,
                        "cpu_count": 2})


def test_fuzz_fuse_workdirs(tmp_path, capsys, monkeypatch):
  base = tmp_path / "base"
  for name, scores in (("a", A), ("b", B)):
    save_tiny_model(make_run(base, name, scores, LABELS, results=_results(.8)) + "/model")
  argv_of = lambda root: [f"--workdirs={root}/a,{root}/b", f"--out={root}/out", "--save_scores"]
  outcomes = _fuzz(tmp_path, capsys, monkeypatch, base, fuse, argv_of, seed=22, iterations=80)
  assert outcomes[0] >= 5 and outcomes[2] >= 30, outcomes


def test_fuzz_sweep_table(tmp_path, capsys, monkeypatch):
  base = tmp_path / "base"
  levels = (0.6, 0.8, 0.95, 0.99)
  for level in levels:
    workdir = make_run(base, f"stgcn_s{level:g}", A if level < 0.9 else B, LABELS,
                       results=_results(level), config={"backbone": "stgcn", "sparsity": level})
    with open(f"{workdir}/sweep_times.json", "w") as f:
      json.dump([{"wall_s": 60.0, "returncode": 0}], f)
  save_tiny_model(f"{base}/stgcn_s0.6/model")
  argv_of = lambda root: [CONFIG, f"--root={root}", "--table_only", "--backbones=stgcn",
                          "--sparsities=0.6,0.8,0.95,0.99", "--dense_seeds=0"]
  outcomes = _fuzz(tmp_path, capsys, monkeypatch, base, sweep, argv_of, seed=2022, iterations=60)
  assert outcomes[0] >= 5 and outcomes[2] >= 20, outcomes
