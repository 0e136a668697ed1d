"""The typed run config (``training.config``) and the backbones' typed options
(``models.resolve_options``)."""

import dataclasses
import json

import pytest

from experiments.configs import default
from stgcn_jax import models
from stgcn_jax.models import aagcn, ctrgcn, layers, stgcn
from stgcn_jax.training import workdir
from stgcn_jax.training.config import RunConfig, TrainConfig, model_options, resolve


def _flat(variant="test", **fields):
  c = default.get_config(variant).to_dict()
  c.update(fields)
  return c


def test_every_config_field_lands_in_one_part_and_comes_back():
  for variant in ("synthetic", "nw_ucla", "ntu60_xsub", "test"):
    flat = _flat(variant)
    run = RunConfig.from_flat(flat)
    back = run.to_flat()
    for key, value in flat.items():
      if key in ("model", "model_options"):
        continue
      expected = tuple(value) if isinstance(value, list) else value
      assert back[key] == expected, (variant, key)
    # The model's options come back whole and typed: the block list plus gcn / tcn.
    assert run.model.options["base_channels"] == flat["model"]["base_channels"]
    assert isinstance(run.model.options["tcn"], ctrgcn.TCNOptions)
    assert RunConfig.from_flat(back) == run


def test_the_run_policy_is_applied_once_in_the_config():
  dense = RunConfig.from_flat(_flat(sparsity=0.0))
  assert (dense.sparsity.mode, dense.sparsity.sparsity) == ("dense", 0.0)
  assert RunConfig.from_flat(_flat(mode="dense", sparsity=0.9)).sparsity.sparsity == 0.0
  # A warm-up longer than a short run becomes 60 % of it, unless the user set it.
  short = RunConfig.from_flat(_flat(num_epochs=5, warmup_epochs=60))
  assert short.sparsity.warmup_epochs == 3
  with pytest.raises(ValueError, match="warmup_epochs must be in"):
    RunConfig.from_flat(_flat(num_epochs=5, warmup_epochs=60), explicit={"warmup_epochs"})
  assert RunConfig.from_flat(_flat(num_epochs=4, lr_warmup_epochs=5.0)).optim.lr_warmup_epochs == (
      pytest.approx(0.4))
  # The steps' config: the iterator's steps per epoch unless the config fixes them.
  run = RunConfig.from_flat(_flat(num_epochs=4, warmup_epochs=1))
  cfg = run.train_config(steps_per_epoch=7)
  assert isinstance(cfg, TrainConfig) and cfg.warmup_steps == 7 and cfg.total_steps == 28
  assert cfg.phase_at(6) == "warmup" and cfg.phase_at(7) == "finetune"
  fixed = RunConfig.from_flat(_flat(num_epochs=4, warmup_epochs=1, steps_per_epoch=3))
  assert fixed.train_config(steps_per_epoch=7).steps_per_epoch == 3


def test_bad_fields_are_named():
  with pytest.raises(ValueError, match=r"unknown config field\(s\) \['num_epoch'\]"):
    RunConfig.from_flat(_flat(num_epoch=3))
  with pytest.raises(ValueError, match="config.train_repeat must be >= 1"):
    RunConfig.from_flat(_flat(train_repeat=0))
  with pytest.raises(ValueError, match="config.mask_method must be one of"):
    RunConfig.from_flat(_flat(mask_method="random"))
  with pytest.raises(ValueError, match="model_options must be a JSON object"):
    RunConfig.from_flat(_flat(model_options="{gcn_attention: false}"))
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['attention'\] for backbone 'aagcn'"):
    RunConfig.from_flat(_flat(backbone="aagcn", model_options='{"attention": false}'))


def test_resolve_builds_the_steps_config_from_flat_fields():
  cfg = resolve(dict(mode="ensemble", learning_rate=0.4, batch_size=64, steps_per_epoch=2,
                     num_epochs=3, warmup_epochs=1, ensemble_sparsities=[0.5, 0.9], seed=4))
  assert cfg.optim.peak_learning_rate == pytest.approx(0.2)
  assert cfg.sparsity.ensemble_sparsities == (0.5, 0.9) and cfg.warmup_steps == 2
  assert resolve(cfg) == cfg and resolve(cfg, mode="dense").warmup_steps == 0
  hash(cfg)  # the jitted steps close over it


@pytest.mark.parametrize("spelling", [
    dict(gcn_attention=False, tcn_type="mstcn", tcn_dropout=0.5),               # pyskl's keywords
    dict(gcn={"attention": False}, tcn={"type": "mstcn", "dropout": 0.5}),      # nested dicts
    dict(gcn=aagcn.GCNOptions(attention=False),
         tcn=layers.TCNOptions(type="mstcn", dropout=0.5)),                     # typed
])
def test_backbone_options_have_one_typed_form(spelling):
  options = models.resolve_options("aagcn", spelling)
  assert options["gcn"] == aagcn.GCNOptions(adaptive=True, attention=False, coff_embedding=4)
  assert options["tcn"] == layers.TCNOptions(type="mstcn", ms_cfg=layers.MS_CFG, dropout=0.5)
  # model.json stores them as JSON, and they read back the same.
  stored = json.loads(json.dumps(models.options_json(options)))
  assert models.resolve_options("aagcn", stored) == options


def test_pyskl_names_and_unknown_options():
  options = models.resolve_options("ctrgcn", dict(kernel_size=3, dilations=[1, 2, 3]))
  assert options["tcn"] == ctrgcn.TCNOptions(kernel_size=3, dilations=(1, 2, 3))
  model = models.get_model("stgcn", 4, gcn_adaptive="init", tcn_type="mstcn")
  assert model.backbone.gcn == stgcn.GCNOptions(adaptive="init")
  assert model.backbone.tcn.type == "mstcn"
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['gcn_ratio'\].*'gcn_with_res'"):
    models.resolve_options("stgcn", dict(gcn_ratio=0.5))
  assert "gcn_attention" in models.backbone_options("aagcn")
  assert "tcn_num_joints" in models.backbone_options("dgstgcn")


def test_an_older_config_json_is_the_same_run():
  """Before the typed config, config.json held the block list in ``model`` and the rest of the
  options as a JSON string; the workdir identity check compares what they resolve to."""
  new = RunConfig.from_flat(_flat(backbone="aagcn", model_options='{"gcn_attention": false}'))
  old = dict(_flat(backbone="aagcn"), model_options='{"gcn_attention": false}')
  old["model"] = dict(default.get_config("test").model)
  assert workdir._identity(old)["model"] == workdir._identity(new.to_flat())["model"]
  other = dict(old, model_options="")
  assert workdir._identity(other)["model"] != workdir._identity(new.to_flat())["model"]
  assert model_options(old) == new.model.options
  assert dataclasses.asdict(new.model.options["gcn"])["attention"] is False


def test_a_workdir_of_other_backbone_options_names_the_option(tmp_path):
  (tmp_path / "checkpoints" / "10").mkdir(parents=True)
  old = RunConfig.from_flat(_flat(backbone="aagcn", model_options='{"gcn_attention": false}'))
  (tmp_path / "config.json").write_text(json.dumps(old.to_flat()))
  workdir.prepare_workdir(str(tmp_path), old)  # the same run resumes
  with pytest.raises(workdir.RunError, match=r"holds another run \(model option gcn_attention="
                                             r"False there, True here\), whose"):
    workdir.prepare_workdir(str(tmp_path), RunConfig.from_flat(_flat(backbone="aagcn")))
