"""The typed run config (``training.config``) and the backbones' typed options
(``models.resolve_options``)."""

import dataclasses
import inspect
import json

import pytest

from experiments.configs import default
from stgcn_jax import models
from stgcn_jax.models import aagcn, ctrgcn, layers, stgcn
from stgcn_jax.models.base import Backbone
from stgcn_jax.training import workdir
from stgcn_jax.sparsity import masks
from stgcn_jax.training.config import (DataConfig, LoopConfig, OptimConfig, RunConfig, SparsityConfig,
                                       TrainConfig, as_train_config, migrate_record, model_options,
                                       resolve)


def _config(variant="test", **fields):
  """The CLI's nested config of ``variant`` with ``fields`` set by dotted path."""
  c = default.get_config(variant).to_dict()
  for path, value in fields.items():
    *parts, field = path.split("__")
    node = c
    for part in parts:
      node = node.setdefault(part, {})
    node[field] = value
  return c


def test_every_config_field_lands_in_its_part_and_comes_back():
  for variant in ("synthetic", "nw_ucla", "nw_ucla_cpu", "ntu60_xsub", "test"):
    nested = _config(variant)
    run = RunConfig.from_config(nested)
    back = run.to_dict()
    for part in ("data", "optim", "sparsity", "loop"):
      for key, value in nested[part].items():
        expected = list(value) if isinstance(value, tuple) else value
        assert back[part][key] == expected, (variant, part, key)
    # The model's options come back whole and typed: the block list plus gcn / tcn.
    assert run.model.options["base_channels"] == nested["model"]["base_channels"]
    assert isinstance(run.model.options["tcn"], ctrgcn.TCNOptions)
    assert RunConfig.from_config(back) == run
    assert RunConfig.from_config(json.loads(json.dumps(back))) == run    # config.json


def test_one_default_per_knob():
  """The CLI config's fields are the dataclasses' defaults, except where a variant sets them."""
  c = default.get_config("ntu60_xsub").to_dict()
  assert c["data"] == dict(dataclasses.asdict(DataConfig()), dataset="ntu60_xsub")
  assert c["optim"] == dataclasses.asdict(OptimConfig())
  assert c["sparsity"] == dataclasses.asdict(SparsityConfig())
  assert c["loop"] == dataclasses.asdict(LoopConfig())
  options = RunConfig.from_config(c).model.options
  for field in ("base_channels", "ch_ratio", "num_stages", "inflate_stages", "down_stages"):
    assert options[field] == getattr(Backbone, field), field    # the model's own defaults
  assert OptimConfig().steps_per_epoch == 0 and SparsityConfig().level == 0.95
  # The mask draw's own default agrees with the config's.
  assert inspect.signature(masks.make_masks).parameters["cover_channels"].default is (
      SparsityConfig.mask_cover_channels)


def test_the_flat_config_of_earlier_versions_migrates_once():
  flat = dict(seed=3, dataset="nw_ucla", val_fraction=0.0, num_epochs=4, steps_per_epoch=5,
              sparsity=0.9, warmup_epochs=2, backbone="aagcn",
              model={"base_channels": 8, "num_stages": 2, "inflate_stages": [],
                     "down_stages": []},
              model_options='{"gcn_attention": false}', eval_every_epochs=0,
              seeds={"run": 3}, data_store=None)
  nested = migrate_record(flat)
  assert nested["data"] == {"dataset": "nw_ucla", "val_fraction": 0.0}
  assert nested["sparsity"] == {"level": 0.9, "warmup_epochs": 2}
  assert nested["model"]["backbone"] == "aagcn" and nested["model"]["options"].startswith("{")
  assert nested["seeds"] == {"run": 3} and nested["loop"] == {"eval_every_epochs": 0}
  run = RunConfig.from_config(flat)
  assert run == RunConfig.from_config(nested)
  assert (run.seed, run.optim.steps_per_epoch, run.sparsity.level) == (3, 5, 0.9)
  assert run.model.options["gcn"].attention is False
  assert migrate_record(run.to_dict()) == run.to_dict()    # a nested record is left as it is


def test_the_run_policy_is_applied_once_in_the_config():
  dense = RunConfig.from_config(_config(sparsity__level=0.0))
  assert (dense.sparsity.mode, dense.sparsity.level) == ("dense", 0.0)
  assert RunConfig.from_config(_config(sparsity__mode="dense",
                                       sparsity__level=0.9)).sparsity.level == 0.0
  # A warm-up longer than a short run becomes 60 % of it, unless the user set it.
  short = _config(optim__num_epochs=5, sparsity__warmup_epochs=60)
  assert RunConfig.from_config(short).sparsity.warmup_epochs == 3
  with pytest.raises(ValueError, match="config.sparsity.warmup_epochs must be in"):
    RunConfig.from_config(short, explicit={"sparsity.warmup_epochs"})
  lr = RunConfig.from_config(_config(optim__num_epochs=4, optim__lr_warmup_epochs=5.0))
  assert lr.optim.lr_warmup_epochs == pytest.approx(0.4)
  # The steps' config: the iterator's steps per epoch unless the config fixes them.
  run = RunConfig.from_config(_config(optim__num_epochs=4, sparsity__warmup_epochs=1))
  cfg = run.train_config(steps_per_epoch=7)
  assert isinstance(cfg, TrainConfig) and cfg.warmup_steps == 7 and cfg.total_steps == 28
  assert cfg.phase_at(6) == "warmup" and cfg.phase_at(7) == "finetune"
  fixed = RunConfig.from_config(_config(optim__num_epochs=4, sparsity__warmup_epochs=1,
                                        optim__steps_per_epoch=3))
  assert fixed.train_config(steps_per_epoch=7).steps_per_epoch == 3


def test_bad_fields_are_named():
  with pytest.raises(ValueError, match=r"unknown config field\(s\) \['optim.num_epoch'\]"):
    RunConfig.from_config(_config(optim__num_epoch=3))
  with pytest.raises(ValueError, match=r"unknown config field\(s\) \['num_epoch'\]"):
    RunConfig.from_config(dict(num_epoch=3))     # a flat record: its unknown field
  with pytest.raises(ValueError, match="config.data.train_repeat must be >= 1"):
    RunConfig.from_config(_config(data__train_repeat=0))
  with pytest.raises(ValueError, match="config.sparsity.mask_method must be one of"):
    RunConfig.from_config(_config(sparsity__mask_method="random"))
  with pytest.raises(ValueError, match="model.options must be a JSON object"):
    RunConfig.from_config(_config(model__options="{gcn_attention: false}"))
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['attention'\] for backbone 'aagcn'"):
    RunConfig.from_config(_config(model__backbone="aagcn", model__options='{"attention": false}'))
  with pytest.raises(TypeError, match="expected a training.config.TrainConfig"):
    as_train_config({"sparsity": 0.8})        # the core takes the typed config only


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
  """Before the nested config, config.json was flat: the block list in ``model`` and the rest of
  the options as a JSON string; the workdir identity check compares what they resolve to."""
  new = RunConfig.from_config(_config(model__backbone="aagcn",
                                      model__options='{"gcn_attention": false}'))
  old = dict(backbone="aagcn", model_options='{"gcn_attention": false}', sparsity=0.95,
             model=dict(base_channels=8, ch_ratio=2, num_stages=2, inflate_stages=[],
                        down_stages=[]), dataset="synthetic", seed=0)
  assert workdir._identity(old)["model"] == workdir._identity(new.to_dict())["model"]
  other = dict(old, model_options="")
  assert workdir._identity(other)["model"] != workdir._identity(new.to_dict())["model"]
  assert model_options(migrate_record(old)["model"]) == new.model.options
  assert dataclasses.asdict(new.model.options["gcn"])["attention"] is False


def test_a_workdir_of_other_backbone_options_names_the_option(tmp_path):
  (tmp_path / "checkpoints" / "10").mkdir(parents=True)
  old = RunConfig.from_config(_config(model__backbone="aagcn",
                                      model__options='{"gcn_attention": false}'))
  (tmp_path / "config.json").write_text(json.dumps(old.to_dict()))
  workdir.prepare_workdir(str(tmp_path), old)  # the same run resumes
  with pytest.raises(workdir.RunError, match=r"holds another run \(model option gcn_attention="
                                             r"False there, True here\), whose"):
    workdir.prepare_workdir(str(tmp_path), RunConfig.from_config(_config(model__backbone="aagcn")))
  with pytest.raises(workdir.RunError, match=r"holds another run \(sparsity.level=0.95 there, "
                                             r"0.8 here"):
    workdir.prepare_workdir(str(tmp_path), RunConfig.from_config(_config(
        model__backbone="aagcn", model__options='{"gcn_attention": false}', sparsity__level=0.8)))


def test_the_flat_flags_of_earlier_versions_still_work(capsys):
  from experiments import run
  fv = run._parse(["--config=experiments/configs/default.py:test", "--config.val_fraction=0.2",
                   "--config.sparsity=0.9", "--config.model_options={\"tcn_dropout\": 0.1}",
                   "--config.optim.num_epochs=3"])
  config = run._config(fv)
  assert (config.data.val_fraction, config.sparsity.level, config.optim.num_epochs) == (0.2, 0.9, 3)
  assert config.model.options["tcn"].dropout == 0.1
  notes = capsys.readouterr().err.splitlines()
  assert notes == ["note: --config.val_fraction is now --config.data.val_fraction",
                   "note: --config.sparsity is now --config.sparsity.level",
                   "note: --config.model_options is now --config.model.options"]
