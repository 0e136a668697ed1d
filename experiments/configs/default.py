"""Configs for ``python -m experiments.run``.

``python -m experiments.run --backbone=ctrgcn --sparsity=0.95`` uses ``get_config()``: the built-in
synthetic dataset (10 classes; chance 10 %), a reduced CTR-GCN (4 blocks of 16-64 channels, one
person, clips of 24 frames), lr 0.1 at batch 16 with a 1-epoch LR warm-up, 12 epochs of which 7
are the dense warm-up; about 3 minutes on a 2-core CPU and about 97 % test top-1 (README).
``--config=experiments/configs/default.py:ntu60_xsub`` selects a named variant, and any field is
overridden with ``--config.FIELD=VALUE`` (e.g. ``--config.num_epochs=20``).

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

from stgcn_jax.training import config as config_lib


def get_config(variant: str = "synthetic") -> ml_collections.ConfigDict:
  """The flat command-line config; ``training.config.RunConfig.from_flat`` sorts it into its
  data / model / optim / sparsity / loop parts, whose docstrings describe every field."""
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.seed = 0
  for part in (config_lib.DataConfig(), config_lib.OptimConfig(), config_lib.SparsityConfig(),
               config_lib.LoopConfig()):
    c.update(dataclasses.asdict(part))
  c.steps_per_epoch = 0           # 0 -> computed from the dataset
  c.sparsity = 0.95
  # Model.
  c.backbone = "ctrgcn"
  # The block list every backbone shares (pyskl's defaults); --config.model.base_channels=32 etc.
  c.model = ml_collections.ConfigDict(dict(base_channels=64, ch_ratio=2, num_stages=10,
                                           inflate_stages=(5, 8), down_stages=(5, 8)))
  # Backbone options in pyskl's spelling as a JSON object, e.g. '{"gcn_attention": false}' for the
  # 3.47M AA-GCN (or '{"gcn": {"attention": false}}'); models.resolve_options types them.
  c.model_options = ""
  c.pretrained = ""               # model checkpoint dir (experiments.convert) for mode=lth

  # lr 0.1 at batch 16 (the config's learning_rate is per batch 128, scaled linearly).
  batch_16 = dict(batch_size=16, learning_rate=0.8)
  if variant == "synthetic":
    c.update(clip_len=24, num_person=1, rotate=0.1, lr_warmup_epochs=1.0, num_epochs=12,
             warmup_epochs=7, eval_every_epochs=4, num_clips_test=5, log_every_steps=10,
             **batch_16)
    c.model.update(base_channels=16, num_stages=4, inflate_stages=(2, 3), down_stages=(2, 3))
  elif variant.startswith(("ntu60_", "ntu120_")):
    c.dataset = variant
  elif variant == "nw_ucla":
    c.update(dataset="nw_ucla", clip_len=52, num_person=1, lr_warmup_epochs=5.0, train_repeat=5,
             num_epochs=30, warmup_epochs=18, **batch_16)
  elif variant == "nw_ucla_cpu":
    c.update(dataset="nw_ucla", clip_len=52, num_person=1, lr_warmup_epochs=3.0, train_repeat=1,
             num_epochs=30, warmup_epochs=18, val_fraction=0.0, num_clips_test=1, rotate=0.3,
             eval_every_epochs=0, **batch_16)
  elif variant == "test":
    c.update(clip_len=16, num_clips_test=2, batch_size=8, num_epochs=2, warmup_epochs=1,
             log_every_steps=5, precise_bn_batches=4, progress_bar=False,
             eval_every_epochs=0)       # tests that validate ask for it
    c.model.update(base_channels=8, num_stages=2, inflate_stages=(), down_stages=())
  else:
    raise ValueError(f"unknown config variant {variant!r}; expected synthetic, ntu60_xsub, "
                     "ntu60_xview, ntu120_xsub, ntu120_xset, nw_ucla, nw_ucla_cpu or test")
  return c
