"""User mistakes vs bugs (``stgcn_jax.errors``): a ``UserError`` is one ``error:`` line and exit
status 2; any other exception, a plain ``ValueError`` included, is a bug and leaves the program
with its traceback. And every exception class of the project that reports a user's input
subclasses ``UserError``, so that no program has to list it."""

from __future__ import annotations

import ast
import importlib

import pytest

from data_prep import common
from data_prep import synthetic as synthetic_cli
from experiments import convert as convert_cli
from experiments import export as export_cli
from experiments import predict as predict_cli
from experiments import run as run_cli
from stgcn_jax import cli
from stgcn_jax.errors import UserError
from stgcn_jax.training import config as training_config

from conftest import REPO

# ml_collections loads the config file with importlib's deprecated load_module.
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

PACKAGES = ("stgcn_jax", "experiments", "data_prep")
# Exception classes that are not a user's mistake, or cannot subclass UserError: the reason.
NOT_USER_ERRORS = {
    "stgcn_jax.errors.Stopped": "a run stopped on request (SIGTERM) after saving, not a mistake: "
                                "cli.run prints its one 'stopped:' line and exits 143",
    "experiments.bench_pyskl.UserError": "runs under a torch python that has no stgcn_jax; its "
                                         "main catches this, and only this, itself",
}


def _one_error_line(capsys, status) -> str:
  err = capsys.readouterr().err
  assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, (status, err)
  assert "Traceback" not in err
  return err


def _bug(*_, **__):
  raise ValueError("an internal invariant failed")


# ----------------------------------------------------------------- cli.run
@pytest.mark.parametrize("error", [ValueError, RuntimeError, KeyError, AssertionError])
def test_cli_run_lets_a_bug_through_with_its_traceback(error, capsys):
  def main(argv):
    raise error(f"bug {argv}")
  with pytest.raises(error):
    cli.run(main, ["x"])
  assert capsys.readouterr().err == ""


@pytest.mark.parametrize("error", [UserError, cli.UsageError])
def test_cli_run_prints_a_user_error_in_one_line(error, capsys):
  def main(argv):
    raise error(f"--flag={argv[0]}: expected a number")
  err = _one_error_line(capsys, cli.run(main, ["x"]))
  assert err == "error: --flag=x: expected a number\n"


def test_user_error_is_a_value_error():
  assert issubclass(UserError, ValueError) and issubclass(cli.UsageError, UserError)


# ----------------------------------------------------------------- the programs
def test_a_bug_in_convert_is_a_traceback_and_a_mistake_one_line(tmp_path, monkeypatch, capsys):
  src = tmp_path / "model.npz"
  src.write_bytes(b"")
  argv = [f"--src={src}", "--backbone=stgcn", "--num_classes=4", f"--out={tmp_path / 'out'}"]
  _one_error_line(capsys, convert_cli.main(argv + ["--option=no_value"]))
  err = _one_error_line(capsys, convert_cli.main([f"--src={tmp_path / 'missing.npz'}",
                                                  *argv[1:]]))
  assert "missing.npz: no such file" in err
  monkeypatch.setattr(convert_cli.models, "get_model", _bug)
  with pytest.raises(ValueError, match="internal invariant") as info:
    convert_cli.main(argv)
  assert not isinstance(info.value, UserError)


def test_a_bug_in_export_is_a_traceback_and_a_mistake_one_line(tmp_path, monkeypatch, capsys):
  from stgcn_jax.export import deploy  # pylint: disable=import-outside-toplevel
  argv = [f"--model={tmp_path / 'missing'}", f"--out={tmp_path / 'out.npz'}"]
  err = _one_error_line(capsys, export_cli.main(argv))
  assert "missing" in err
  _one_error_line(capsys, export_cli.main(argv[:1]))            # no --out
  monkeypatch.setattr(deploy, "resolve_model_dir", _bug)
  with pytest.raises(ValueError, match="internal invariant"):
    export_cli.main(argv)


def test_a_bug_in_predict_is_a_traceback_and_a_mistake_one_line(tmp_path, monkeypatch, capsys):
  from stgcn_jax.inference import sources  # pylint: disable=import-outside-toplevel
  argv = [f"--model={tmp_path / 'missing'}", f"--src={tmp_path}"]
  err = _one_error_line(capsys, predict_cli.main(argv))
  assert "no such file or directory" in err
  _one_error_line(capsys, predict_cli.main(argv + ["--top_k=0"]))
  monkeypatch.setattr(sources, "load_predictor", _bug)
  with pytest.raises(ValueError, match="internal invariant"):
    predict_cli.main(argv)


def test_a_bug_in_run_is_a_traceback_and_a_mistake_one_line(tmp_path, monkeypatch, capsys):
  from stgcn_jax.training import loop  # pylint: disable=import-outside-toplevel
  argv = ["--dataset=synthetic", f"--workdir={tmp_path / 'w'}", f"--data_dir={tmp_path}"]
  err = _one_error_line(capsys, run_cli.main(argv + ["--sparsity=abc"]))
  assert "--sparsity: expected a fraction" in err
  err = _one_error_line(capsys, run_cli.main(argv + ["--config.sparsity.penalty_lambda=-1"]))
  assert "config.sparsity.penalty_lambda must be >= 0" in err
  err = _one_error_line(capsys, run_cli.main(argv + ["--variants=s=0.8,x"]))
  assert "--variants lists the members of --mode=variants" in err
  err = _one_error_line(capsys, run_cli.main(argv + ["--mode=variants", "--variants=s=0.8,x"]))
  monkeypatch.setattr(loop, "train_and_evaluate", _bug)
  with pytest.raises(ValueError, match="internal invariant"):
    run_cli.main(argv)
  # A bug while the config is typed is a bug too (the config's own checks raise UserError).
  monkeypatch.setattr(training_config.RunConfig, "from_config", _bug)
  with pytest.raises(ValueError, match="internal invariant"):
    run_cli.main(argv)


def test_a_bug_in_a_converter_is_a_traceback_and_a_mistake_one_line(tmp_path, monkeypatch,
                                                                     capsys):
  argv = [f"--out={tmp_path}", "--num_classes=3"]
  err = _one_error_line(capsys, common.run_cli(synthetic_cli.main, argv + ["--num_train=0"]))
  assert "at least 1 training" in err
  _one_error_line(capsys, common.run_cli(synthetic_cli.main, argv + ["--num_classes=1"]))
  monkeypatch.setattr(synthetic_cli.synthetic, "build_synthetic", _bug)
  with pytest.raises(ValueError, match="internal invariant"):
    common.run_cli(synthetic_cli.main, argv)


# ----------------------------------------------------------------- every error class
def _exception_classes() -> dict[str, type]:
  """``{"module.Class": class}`` of every exception class defined in the project's source (read
  with ``ast`` to find the candidates, then imported)."""
  found = {}
  for package in PACKAGES:
    for path in sorted((REPO / package).rglob("*.py")):
      parts = list(path.relative_to(REPO).with_suffix("").parts)
      if parts[-1] == "__init__":
        parts.pop()
      names = [node.name for node in ast.walk(ast.parse(path.read_text(), str(path)))
               if isinstance(node, ast.ClassDef) and node.bases]
      if not names:
        continue
      module = importlib.import_module(".".join(parts))
      for name in names:
        cls = getattr(module, name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException) \
            and cls.__module__ == module.__name__:
          found[f"{module.__name__}.{name}"] = cls
  return found


def test_every_error_class_for_user_input_is_a_user_error():
  classes = _exception_classes()
  assert "stgcn_jax.data.records.DataError" in classes and "stgcn_jax.cli.UsageError" in classes
  stale = sorted(set(NOT_USER_ERRORS) - set(classes))
  assert not stale, f"NOT_USER_ERRORS names classes that no longer exist: {stale}"
  missing = sorted(name for name, cls in classes.items()
                   if not issubclass(cls, UserError) and name not in NOT_USER_ERRORS)
  assert not missing, (f"{missing}: subclass stgcn_jax.errors.UserError (a user's mistake, one "
                       "error: line) or add the class to NOT_USER_ERRORS with the reason")
