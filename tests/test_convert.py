"""The pyskl converter: round trips, refusals with the offending keys, the command line."""

import subprocess
import sys

import numpy as np
import pytest

from stgcn_jax import checkpoint, models
from stgcn_jax.models import pyskl

from conftest import BACKBONE_NAMES, REPO


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_round_trip_is_exact(pyskl_fixture, name):
  data = pyskl_fixture(name)
  model = models.get_model(name, 60)
  variables = pyskl.from_pyskl(data["sd"], model)
  back = pyskl.to_pyskl(variables, model)
  expected = {k for k in data["sd"] if not k.endswith("num_batches_tracked")}
  assert set(back) == expected
  for key in expected:
    np.testing.assert_array_equal(back[key], data["sd"][key], err_msg=key)


def test_missing_extra_and_misshaped_keys_are_listed(pyskl_fixture):
  sd = dict(pyskl_fixture("ctrgcn")["sd"])
  del sd["backbone.net.3.gcn1.convs.1.conv2.weight"]
  sd["backbone.net.3.extra.weight"] = np.zeros(3)
  sd["cls_head.fc_cls.weight"] = np.zeros((120, 256), np.float32)
  with pytest.raises(pyskl.ConversionError) as err:
    pyskl.from_pyskl(sd, models.get_model("ctrgcn", 60))
  msg = str(err.value)
  assert "missing keys (1): ['backbone.net.3.gcn1.convs.1.conv2.weight']" in msg
  assert "unexpected keys (1): ['backbone.net.3.extra.weight']" in msg
  assert "cls_head.fc_cls.weight: checkpoint (120, 256) vs model (60, 256)" in msg


def test_checkpoint_of_another_backbone_is_refused(pyskl_fixture):
  with pytest.raises(pyskl.ConversionError, match="missing keys"):
    pyskl.from_pyskl(pyskl_fixture("stgcn")["sd"], models.get_model("dgstgcn", 60))


def test_fixed_graph_mismatch_is_refused(pyskl_fixture):
  sd = dict(pyskl_fixture("stgcn")["sd"])
  sd["backbone.gcn.2.gcn.A"] = sd["backbone.gcn.2.gcn.A"] * 2
  with pytest.raises(pyskl.ConversionError,
                     match="backbone.gcn.2.gcn.A: the checkpoint's fixed graph"):
    pyskl.from_pyskl(sd, models.get_model("stgcn", 60))


def test_command_line_writes_a_loadable_checkpoint(tmp_path, pyskl_fixture):
  src = tmp_path / "ctrgcn.npz"
  data = pyskl_fixture("ctrgcn")
  np.savez(src, **{f"sd/{k}": v for k, v in data["sd"].items()})
  out = tmp_path / "converted"
  result = subprocess.run([sys.executable, "-m", "experiments.convert", "--src", str(src),
                           "--backbone", "ctrgcn", "--num_classes", "60", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  model, variables = checkpoint.load_model(str(out))
  logits = model.apply(variables, data["input"])
  np.testing.assert_allclose(logits, data["logits"], atol=1e-4)


def test_command_line_reports_bad_state_dict_in_one_line(tmp_path, pyskl_fixture):
  """Through the command, ``python -m experiments.convert``."""
  src = tmp_path / "stgcn.npz"
  np.savez(src, **{f"sd/{k}": v for k, v in pyskl_fixture("stgcn")["sd"].items()})
  result = subprocess.run([sys.executable, "-m", "experiments.convert", "--src", str(src),
                           "--backbone", "ctrgcn", "--num_classes", "60", "--out",
                           str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  assert "missing keys" in result.stderr
