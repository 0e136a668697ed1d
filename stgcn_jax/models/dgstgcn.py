"""DG-STGCN (Duan et al. 2022) as pyskl's ``DGSTGCN`` computes it.

pyskl config ``dgstgcn/ntu60_xsub_3dkp``: 8 learnable random graphs per block (N(0.04, 0.02^2), the
same draw in every block), dynamic graph terms (``ctr``: channel-wise tanh differences; ``ada``:
softmax affinities), and ``dgmstcn``: six temporal branches plus a mean-joint column fused back via
``add_coeff``. PyTorch default initialisation.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from stgcn_jax.errors import UserError
from stgcn_jax.models import layers
from stgcn_jax.models.base import Backbone, adjacency

_ACTS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid}


def _act(name: str, x: jax.Array, axis: int) -> jax.Array:
  if name == "softmax":
    return jax.nn.softmax(x, axis=axis)
  if name not in _ACTS:
    raise UserError(f"unknown activation {name!r}; expected tanh, relu, sigmoid or softmax")
  return _ACTS[name](x)


@dataclasses.dataclass(frozen=True)
class GCNOptions:
  """The options of ``dggcn`` (pyskl's ``gcn_*`` keywords of ``DGSTGCN``).

  ratio: the mid channels, as a fraction of the output channels.
  ctr, ada: the channel-wise tanh-difference / the affinity graph terms: 'T' (on) or None (off).
  subset_wise: one ``alpha``/``beta`` per graph instead of one shared.
  ada_act, ctr_act: their activations (tanh, relu, sigmoid or softmax).
  """
  ratio: float = 0.125
  ctr: str | None = "T"
  ada: str | None = "T"
  subset_wise: bool = False
  ada_act: str = "softmax"
  ctr_act: str = "tanh"


@dataclasses.dataclass(frozen=True)
class TCNOptions:
  """The options of ``dgmstcn`` (pyskl's ``tcn_*`` keywords of ``DGSTGCN``).

  ms_cfg: the temporal branches (``layers.MultiBranchTCN``); mid_channels: the branch width as a
  fraction of the output channels (None: an equal split); num_joints: at least the layout's joints
  (the mean-joint column's fusion weights); dropout: in every block but the first.
  """
  ms_cfg: tuple = layers.MS_CFG
  mid_channels: float | None = None
  num_joints: int = 25
  dropout: float = 0.0


class DGGCN(layers.GraphUnit):
  """pyskl ``dggcn`` (with ``ctr``/``ada`` in {None, 'T'})."""
  opts: GCNOptions = GCNOptions()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    opts = self.opts
    for opt in ("ctr", "ada"):
      if getattr(opts, opt) not in (None, "T"):
        raise UserError(f"dggcn: gcn_{opt} must be None or 'T', got {getattr(opts, opt)!r}")
    k = self.A.shape[0]
    mid = int(opts.ratio * self.features)
    a = self.param("A", lambda *_: jnp.asarray(self.A))
    alpha = self.param("alpha", nn.initializers.zeros, (k,))
    beta = self.param("beta", nn.initializers.zeros, (k,))
    res = (layers.ConvBN(self.features, name="down")(x, train)
           if x.shape[-1] != self.features else x)
    pre = layers.Conv(mid * k, name="pre")(x)
    pre = nn.relu(layers.BatchNorm(name="pre_bn")(pre, train))
    pre = pre.reshape(pre.shape[:-1] + (k, mid))                               # K-major channels
    if opts.ctr is None and opts.ada is None:
      out = jnp.einsum("btvkc,kvw->btwkc", pre, a)
    else:
      x_mean = jnp.mean(x, axis=1, keepdims=True)
      x1 = layers.Conv(mid * k, name="conv1")(x_mean)[:, 0].reshape(x.shape[0], -1, k, mid)
      x2 = layers.Conv(mid * k, name="conv2")(x_mean)[:, 0].reshape(x.shape[0], -1, k, mid)
      g = jnp.einsum("kvw->vwk", a)[None, :, :, :, None]                        # (1, V, W, K, 1)
      if opts.ctr is not None:
        ctr = _act(opts.ctr_act, x1[:, :, None] - x2[:, None], axis=1)        # (B, V, W, K, C)
        g = g + ctr * (alpha[:, None] if opts.subset_wise else alpha[0])
      if opts.ada is not None:
        aff = jnp.einsum("bvkc,bwkc->bvwk", x1, x2)
        aff = _act(opts.ada_act, aff, axis=1)[..., None]                      # softmax over senders
        g = g + aff * (beta[:, None] if opts.subset_wise else beta[0])
      # einsum("btvkc,bvwkc->btwkc", pre, g): one refined graph over the (k, c) channel pairs.
      b, t, v = pre.shape[:3]
      g = jnp.broadcast_to(g, (b,) + g.shape[1:4] + (mid,)).reshape(b, v, -1, k * mid)
      out = layers.refined_graph_conv((pre.reshape(b, t, v, k * mid),), (g,))
    out = layers.Conv(self.features, name="post")(out.reshape(out.shape[:3] + (-1,)))
    return nn.relu(layers.BatchNorm(name="bn")(out, train) + res)


class DGSTGCN(Backbone):
  graph_mode: str = "random"
  num_filter: int = 8
  init_std: float = 0.02
  init_off: float = 0.04
  graph_seed: int = 0
  data_bn_type: str | None = "VC"
  gcn: GCNOptions = GCNOptions()
  tcn: TCNOptions = TCNOptions()

  def graph(self):
    if self.graph_mode == "random":
      return adjacency(self.layout, "random", num_filter=self.num_filter, init_std=self.init_std,
                       init_off=self.init_off, seed=self.graph_seed)
    return adjacency(self.layout, self.graph_mode)

  def units(self, cout, stride, dropout, a):
    gcn = functools.partial(DGGCN, cout, a, self.gcn)
    tcn = functools.partial(layers.MultiBranchTCN, cout, stride, self.tcn.ms_cfg,
                            mid_channels=self.tcn.mid_channels, global_joint=True,
                            num_joints=max(self.tcn.num_joints, self.layout.num_joints),
                            dropout=dropout, conv_impl=self.temporal_conv)
    return gcn, tcn
