"""``experiments.run``'s flags: a mistake in ``--config.FIELD`` is one error line and status 2."""

import subprocess
import sys

import pytest

from experiments import run
from stgcn_jax import cli

from conftest import REPO

# ml_collections loads the config file with importlib's deprecated load_module.
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


def _error(capsys, argv) -> str:
  assert cli.run(run.main, argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1, err
  return err


def test_misspelt_config_field_is_one_line_with_the_hint():
  result = subprocess.run([sys.executable, "-m", "experiments.run", "--config.num_epoch=3"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
  assert result.stderr.startswith("error: --config.num_epoch: the config has no field "
                                  "'num_epoch'; did you mean --config.optim.num_epochs?")


@pytest.mark.parametrize("argv,message", [
    (["--config.optim.num_epochs=abc"],
     "flag --config.optim.num_epochs=abc: invalid literal for int()"),
    (["--config.model.base_channel=2"], "did you mean --config.model.base_channels?"),
    (["--config.zzzz=1"], "--config.zzzz: the config has no field 'zzzz'"),
    (["--config=experiments/configs/default.py:test", "--config.num_epoch=3"],
     "did you mean --config.optim.num_epochs?"),
    (["--config=no_such_config.py"], "--config=no_such_config.py: "),
    (["--config=experiments/configs/default.py:bogus"], "unknown config variant 'bogus'"),
    (["--epochs=two"], "flag --epochs=two"),
    (["stray"], "unexpected arguments ['stray']"),
], ids=["value", "nested_hint", "unknown", "variant_hint", "missing_file", "variant", "shortcut",
        "positional"])
def test_config_flag_mistakes_are_one_error_line(capsys, argv, message):
  assert message in _error(capsys, argv)
