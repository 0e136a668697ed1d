"""Configs for ``python -m experiments.run``.

``python -m experiments.run --backbone=ctrgcn --sparsity=0.95`` uses ``get_config()``: the built-in
synthetic dataset (10 classes; chance 10 %), a reduced CTR-GCN (4 blocks of 16-64 channels, one
person, clips of 24 frames), lr 0.1 at batch 16 with a 1-epoch LR warm-up, 12 epochs of which 7
are the dense warm-up; about 3 minutes on a 2-core CPU and about 94 % test top-1 (README).
``--config=experiments/configs/default.py:ntu60_xsub`` selects a named variant, and any field is
overridden with ``--config.FIELD=VALUE`` (e.g. ``--config.num_epochs=20``).

Variants (the paper's recipe, docs/METHOD.md section 7, on real data):
  ``ntu60_xsub``, ``ntu60_xview``, ``ntu120_xsub``, ``ntu120_xset``: clip 100, 2 persons, batch 128
    (lr 0.1 scaled linearly), 100 epochs with 60 warm-up, rotation +-0.2 rad, 10-clip test.
  ``nw_ucla``: cross-view NW-UCLA (views 1-2 train, 3 test), clip 52, 1 person, near CTR-GCN's
    published NW-UCLA recipe: lr 0.1 at batch 16, a 5-epoch LR warm-up, the training set repeated
    5 times per epoch, 30 (long) epochs of which 18 warm-up, cosine decay.
  ``test``: tiny channels, T=16, 2 blocks, for tests.
"""

import ml_collections

from stgcn_jax import sparsity


def get_config(variant: str = "synthetic") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.variant = variant
  # Data.
  c.dataset = "synthetic"
  c.data_dir = ""                 # "" -> $STGCN_JAX_DATA_DIR or ~/.stgcn_jax/data
  c.train_split = "train"
  c.test_split = "test"
  c.modality = "j"                # j, b, jm, bm (or comma-joined)
  c.clip_len = 100
  c.num_clips_test = 10
  c.num_person = 2
  c.normalize = "auto"
  c.align_spine = False           # the sparse recipe centres only (docs/DATA.md section 3)
  c.rotate = 0.2
  # Model.
  c.backbone = "ctrgcn"
  # The block list every backbone shares (pyskl's defaults); --config.model.base_channels=32 etc.
  c.model = ml_collections.ConfigDict(dict(base_channels=64, ch_ratio=2, num_stages=10,
                                           inflate_stages=(5, 8), down_stages=(5, 8)))
  # Backbone-specific options as JSON, e.g. '{"gcn_attention": false}' for the 3.47M AA-GCN.
  c.model_options = ""
  c.pretrained = ""               # model checkpoint dir (experiments.convert) for mode=lth
  # Sparsity and optimisation: every field of stgcn_jax.sparsity.SparseConfig.
  sp = sparsity.default_config()
  for key, value in sp.items():
    c[key] = value
  c.sparsity = 0.95
  c.steps_per_epoch = 0           # 0 -> computed from the dataset
  c.eval_batch_size = 0           # 0 -> batch_size
  # Loop.
  c.seed = 0
  c.log_every_steps = 50
  # Validation (model selection; the test split is only for the final report).
  c.val_split = ""                # a split of the dataset; "" -> its own "val" split if it has one,
  c.val_fraction = 0.1            # else this fraction of train held out (by performer, else by class)
  c.eval_every_epochs = 5         # 1-clip validation every N epochs, best/ by it (0 = none)
  c.precise_bn_batches = 50       # exact BN statistics over N train batches (0 = running averages)
  c.train_repeat = 1              # one epoch = this many passes over the training data
  c.checkpoint_every_epochs = 1
  c.keep_checkpoints = 2
  c.tensorboard = False
  c.distributed = False           # jax.distributed.initialize() for multi-host runs
  c.progress_bar = True

  if variant == "synthetic":
    c.clip_len = 24
    c.num_person = 1
    c.rotate = 0.1
    c.model.update(base_channels=16, num_stages=4, inflate_stages=(2, 3), down_stages=(2, 3))
    c.batch_size = 16
    c.learning_rate = 0.8         # per batch 128: 0.1 at batch 16
    c.lr_warmup_epochs = 1.0
    c.num_epochs = 12
    c.warmup_epochs = 7
    c.eval_every_epochs = 4
    c.num_clips_test = 5
    c.log_every_steps = 10
  elif variant.startswith(("ntu60_", "ntu120_")):
    c.dataset = variant
  elif variant == "nw_ucla":
    c.dataset = "nw_ucla"
    c.clip_len = 52
    c.num_person = 1
    c.batch_size = 16
    c.learning_rate = 0.8         # per batch 128: 0.1 at batch 16
    c.lr_warmup_epochs = 5.0
    c.train_repeat = 5
    c.num_epochs = 30
    c.warmup_epochs = 18
  elif variant == "test":
    c.clip_len = 16
    c.num_clips_test = 2
    c.model.update(base_channels=8, num_stages=2, inflate_stages=(), down_stages=())
    c.batch_size = 8
    c.num_epochs = 2
    c.warmup_epochs = 1
    c.log_every_steps = 5
    c.eval_every_epochs = 0       # tests that validate ask for it
    c.precise_bn_batches = 4
    c.progress_bar = False
  else:
    raise ValueError(f"unknown config variant {variant!r}; expected synthetic, ntu60_xsub, "
                     "ntu60_xview, ntu120_xsub, ntu120_xset, nw_ucla or test")
  return c
