"""Workdirs that ``experiments.run`` reuses (docs/BAD_INPUT.md, "Fusion, sweeps, workdirs and
datasets"): a run is never re-evaluated on another dataset of the same name, a workdir of another
run is refused before anything is written, and a kill while the final model is replaced never
leaves ``model/`` without its variables."""

import glob
import json
import logging
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from stgcn_jax import checkpoint, data, run_files
from stgcn_jax.training import workdir as workdir_lib

from conftest import SYNTHETIC, run_experiment
from test_bad_input_fuse_sweep import SPEC, save_tiny_model
from test_fusion import A, LABELS, make_run



class Killed(BaseException):
  """A kill -9 at a chosen point: nothing after it runs (``finally`` blocks aside)."""


def _tree(path) -> dict:
  """Every file under ``path`` with its bytes: what a refused run must leave as it was."""
  return {p: open(p, "rb").read() for p in glob.glob(f"{path}/**", recursive=True)
          if os.path.isfile(p)}


def test_results_and_config_record_the_dataset(finished_run):
  workdir, data_dir = finished_run
  expected = data.identity(data.info("synthetic", str(data_dir)))
  for name in ("results.json", "config.json"):
    assert json.loads((workdir / name).read_text())["data_store"] == expected


def test_reevaluation_on_another_dataset_of_that_name_is_refused(finished_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run[0], workdir)
  other = tmp_path / "other"
  data.build_synthetic(str(other), seed=2, **SYNTHETIC)   # same name, sizes and classes
  before = _tree(workdir)
  result = run_experiment(workdir, other)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      f"error: --workdir {workdir} was evaluated on dataset 'synthetic' at "
      f"{finished_run[1]}/synthetic/1.0.0 (test 20, train 48; fingerprint ")
  assert (f"but this run reads another dataset of that name: 'synthetic' at "
          f"{other}/synthetic/1.0.0") in lines[0]
  assert "pass the --data_dir that run used, or choose another --workdir" in lines[0]
  assert _tree(workdir) == before


def _store(fingerprint: str, path: str) -> dict:
  return {"dataset": "synthetic", "path": path, "num_samples": {"train": 4},
          "fingerprint": fingerprint}


def test_check_dataset_reads_config_json_and_accepts_a_moved_store(tmp_path):
  (tmp_path / "checkpoints" / "5").mkdir(parents=True)
  (tmp_path / "config.json").write_text(json.dumps({"data_store": _store("f" * 64, "/old")}))
  with pytest.raises(workdir_lib.RunError, match=r"was trained on dataset 'synthetic' at /old "
                                                 r"\(train 4; fingerprint ffffffffffff\)"):
    workdir_lib.check_dataset(str(tmp_path), _store("e" * 64, "/old"))
  note = workdir_lib.check_dataset(str(tmp_path), _store("f" * 64, "/new"))
  assert note == ("note: dataset 'synthetic' is now read from /new (the run used /old; the same "
                  "data by its fingerprint)")
  shutil.rmtree(tmp_path / "checkpoints")   # no checkpoints: the run starts afresh
  assert workdir_lib.check_dataset(str(tmp_path), _store("e" * 64, "/old")) is None


def test_workdir_without_config_of_another_backbone_is_refused_untouched(finished_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run[0], workdir)
  (workdir / "config.json").unlink()
  before = _tree(workdir)
  result = run_experiment(workdir, finished_run[1], "--backbone=stgcn")
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith(f"error: no checkpoint in {workdir}/checkpoints restores")
  assert lines[-1].endswith(f"; {workdir}/config.json is missing, so they may be the checkpoints "
                            "of another run (another backbone or model options)")
  assert "Traceback" not in result.stderr
  assert _tree(workdir) == before and not (workdir / "config.json").exists()
  # The run the checkpoints belong to is not refused as "another run"; a kill that interrupted
  # the replacement of its model (between the two renames) is finished first.
  os.replace(workdir / "model", workdir / ".model.replaced")
  shutil.copytree(workdir / ".model.replaced", workdir / ".model.incoming")
  result = run_experiment(workdir, finished_run[1])
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resumed from" in result.stdout
  assert f"note: {workdir}/model: finished a model replacement that was interrupted" in result.stdout
  assert not glob.glob(f"{workdir}/.model.*")
  checkpoint.load_model(str(workdir / "model"))


# ----------------------------------------------------------------------------- the model swap
def _variables(value: float) -> dict:
  model = checkpoint.build_model(SPEC)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 2, 16, 17, 3)))
  return jax.tree.map(lambda leaf: np.full(leaf.shape, value, np.float32), shapes)


def _value(path) -> float:
  _, variables = checkpoint.load_model(str(path))
  return float(np.asarray(jax.tree.leaves(variables["params"])[0]).flat[0])


def test_kill_while_the_new_variables_are_written_keeps_the_old_model(tmp_path, monkeypatch):
  path = tmp_path / "model"
  checkpoint.save_model(str(path), SPEC, _variables(1.0))

  def killed(self, directory, *args, force=False, **kwargs):
    if force:                              # what orbax does first with force=True
      shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)  # a partial write, then the kill
    raise Killed()
  monkeypatch.setattr(ocp.StandardCheckpointer, "save", killed)
  with pytest.raises(Killed):
    checkpoint.save_model(str(path), SPEC, _variables(2.0), overwrite=True)
  monkeypatch.undo()
  assert _value(path) == 1.0               # today's code deleted variables/ before the write
  assert checkpoint.recover_model_swap(str(path)) is None
  assert sorted(os.listdir(tmp_path)) == ["model"]


def test_kill_between_the_renames_is_finished_by_the_next_reader(tmp_path, monkeypatch):
  path = str(tmp_path / "model")
  checkpoint.save_model(path, SPEC, _variables(1.0))
  real = os.replace

  def replace(src, dst):
    if os.fspath(dst) == path:
      raise Killed()
    real(src, dst)
  monkeypatch.setattr(checkpoint.os, "replace", replace)
  with pytest.raises(Killed):
    checkpoint.save_model(path, SPEC, _variables(2.0), overwrite=True)
  monkeypatch.undo()
  assert not os.path.exists(path)
  run = run_files.load_run(make_run(tmp_path, "run", A, LABELS))
  shutil.move(tmp_path / ".model.incoming", tmp_path / "run" / ".model.incoming")
  shutil.move(tmp_path / ".model.replaced", tmp_path / "run" / ".model.replaced")
  assert run_files.disk_sizes([run]) is not None          # the reader finished the swap
  assert _value(tmp_path / "run" / "model") == 2.0
  assert checkpoint.recover_model_swap(str(tmp_path / "run" / "model")) is None
  assert not glob.glob(f"{tmp_path}/run/.model.*")     # a writer removes the leftovers


def test_interrupted_swap_without_a_complete_new_model_rolls_back(tmp_path):
  path = tmp_path / "model"
  save_tiny_model(path)
  os.replace(path, tmp_path / ".model.replaced")
  (tmp_path / ".model.incoming" / "variables").mkdir(parents=True)   # no model.json: incomplete
  note = checkpoint.recover_model_swap(str(path))
  assert note == f"{path}: restored the previous model (a replacement was interrupted)"
  checkpoint.load_model(str(path))
  assert sorted(os.listdir(tmp_path)) == ["model"]


def test_a_failed_restore_mutes_nothing_for_good(monkeypatch):
  """The asyncio logger and the unraisable hook are muted only while the failed reads are
  collected, and restored afterwards (a later asyncio error is still logged)."""
  class Failing:
    def restore(self, step, args):
      raise RuntimeError("damaged")
  monkeypatch.setattr(workdir_lib.time, "sleep", lambda s: None)
  asyncio_logger = logging.getLogger("asyncio")
  asyncio_logger.setLevel(logging.WARNING)
  hook = sys.unraisablehook
  restored, err = workdir_lib._quiet_restore(Failing(), 1, None)  # pylint: disable=protected-access
  assert restored is None and str(err) == "damaged"
  assert asyncio_logger.level == logging.WARNING
  assert sys.unraisablehook is hook
