"""Configs for ``python -m experiments.run``.

``python -m experiments.run --backbone=ctrgcn --sparsity=0.95`` uses ``get_config()``: the built-in
synthetic dataset (10 classes; chance 10 %), a reduced CTR-GCN (4 blocks of 16-64 channels, one
person, clips of 24 frames), lr 0.1 at batch 16 with a 1-epoch LR warm-up, 12 epochs of which 7
are the dense warm-up; about 3 minutes on a 2-core CPU and about 97 % test top-1 (README).
``--config=experiments/configs/default.py:ntu60_xsub`` selects a named variant, and any field is
overridden with ``--config.PART.FIELD=VALUE`` (e.g. ``--config.optim.num_epochs=20``). The parts
are ``data``, ``model``, ``optim``, ``sparsity`` and ``loop``; ``stgcn_jax.training.config``
documents every field, and its dataclasses hold every default (the variants below change some).

Variants (the paper's recipe, docs/METHOD.md section 7, on real data):
  ``ntu60_xsub``, ``ntu60_xview``, ``ntu120_xsub``, ``ntu120_xset``: clip 100, 2 persons, batch 128
    (lr 0.1 scaled linearly), 100 epochs with 60 warm-up, rotation +-0.2 rad, 10-clip test.
  ``nw_ucla``: cross-view NW-UCLA (views 1-2 train, 3 test), clip 52, 1 person, near CTR-GCN's
    published NW-UCLA recipe: lr 0.1 at batch 16, a 5-epoch LR warm-up, the training set repeated
    5 times per epoch, 30 (long) epochs of which 18 warm-up, cosine decay.
  ``nw_ucla_cpu``: the NW-UCLA grid's protocol, sized for one CPU core (about 55 min a full-size
    CTR-GCN run): all 1,020 training clips (no validation hold-out, no selection: the final model is
    reported on test), 30 single-pass epochs of which 18 warm-up, a 3-epoch LR warm-up, rotation
    +-0.3 rad, 1-clip test. pyskl's CTR-GCN reaches 87.9 % with this recipe.
  ``test``: tiny channels, T=16, 2 blocks, for tests.
"""

import dataclasses

import ml_collections

from stgcn_jax.models.base import Backbone
from stgcn_jax.training import config as config_lib


def _part(dataclass_instance) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dataclasses.asdict(dataclass_instance))


def get_config(variant: str = "synthetic") -> ml_collections.ConfigDict:
  """The nested command-line config, typed by ``training.config.RunConfig.from_config``."""
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.seed = 0
  c.data = _part(config_lib.DataConfig())
  # The backbone, its block list (pyskl's defaults, those of models.base.Backbone:
  # --config.model.base_channels=32 etc.), more options in pyskl's spelling as a JSON object
  # (e.g. '{"gcn_attention": false}' for the 3.47M AA-GCN; models.resolve_options types them),
  # and the pretrained model dir (experiments.convert) of mode lth.
  c.model = ml_collections.ConfigDict(dict(
      backbone=config_lib.ModelConfig.backbone, options="",
      pretrained=config_lib.ModelConfig.pretrained,
      **{f: getattr(Backbone, f) for f in ("base_channels", "ch_ratio", "num_stages",
                                           "inflate_stages", "down_stages")}))
  c.optim = _part(config_lib.OptimConfig())     # steps_per_epoch 0: computed from the dataset
  c.sparsity = _part(config_lib.SparsityConfig())
  c.loop = _part(config_lib.LoopConfig())

  # lr 0.1 at batch 16 (the config's learning_rate is per batch 128, scaled linearly).
  batch_16 = dict(batch_size=16, learning_rate=0.8)
  reduced = dict(base_channels=16, num_stages=4, inflate_stages=(2, 3), down_stages=(2, 3))
  if variant == "synthetic":
    c.data.update(clip_len=24, num_person=1, rotate=0.1, num_clips_test=5)
    c.optim.update(lr_warmup_epochs=1.0, num_epochs=12, **batch_16)
    c.sparsity.update(warmup_epochs=7)
    c.loop.update(eval_every_epochs=4, log_every_steps=10)
    c.model.update(reduced)
  elif variant.startswith(("ntu60_", "ntu120_")):
    c.data.dataset = variant
  elif variant == "nw_ucla":
    c.data.update(dataset="nw_ucla", clip_len=52, num_person=1, train_repeat=5)
    c.optim.update(lr_warmup_epochs=5.0, num_epochs=30, **batch_16)
    c.sparsity.warmup_epochs = 18
  elif variant == "nw_ucla_cpu":
    c.data.update(dataset="nw_ucla", clip_len=52, num_person=1, train_repeat=1, val_fraction=0.0,
                  num_clips_test=1, rotate=0.3)
    c.optim.update(lr_warmup_epochs=3.0, num_epochs=30, **batch_16)
    c.sparsity.warmup_epochs = 18
    c.loop.eval_every_epochs = 0
  elif variant == "test":
    c.data.update(clip_len=16, num_clips_test=2)
    c.optim.update(batch_size=8, num_epochs=2)
    c.sparsity.warmup_epochs = 1
    c.loop.update(log_every_steps=5, precise_bn_batches=4, progress_bar=False,
                  eval_every_epochs=0)       # tests that validate ask for it
    c.model.update(base_channels=8, num_stages=2, inflate_stages=(), down_stages=())
  else:
    raise ValueError(f"unknown config variant {variant!r}; expected synthetic, ntu60_xsub, "
                     "ntu60_xview, ntu120_xsub, ntu120_xset, nw_ucla, nw_ucla_cpu or test")
  return c
