"""DG-STGCN (Duan et al. 2022) as pyskl's ``DGSTGCN`` computes it.

pyskl config ``dgstgcn/ntu60_xsub_3dkp``: 8 learnable random graphs per block (N(0.04, 0.02^2), the
same draw in every block), dynamic graph terms (``ctr``: channel-wise tanh differences; ``ada``:
softmax affinities), and ``dgmstcn``: six temporal branches plus a mean-joint column fused back via
``add_coeff``. PyTorch default initialisation.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from stgcn_jax.models import layers
from stgcn_jax.models.base import Backbone, adjacency

_ACTS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid}


def _act(name: str, x: jax.Array, axis: int) -> jax.Array:
  if name == "softmax":
    return jax.nn.softmax(x, axis=axis)
  if name not in _ACTS:
    raise ValueError(f"unknown activation {name!r}; expected tanh, relu, sigmoid or softmax")
  return _ACTS[name](x)


class DGGCN(nn.Module):
  """pyskl ``dggcn`` (with ``ctr``/``ada`` in {None, 'T'})."""
  features: int
  A: Any  # (K, V, V) initial graphs
  ratio: float = 0.125
  ctr: str | None = "T"
  ada: str | None = "T"
  subset_wise: bool = False
  ada_act: str = "softmax"
  ctr_act: str = "tanh"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for opt in ("ctr", "ada"):
      if getattr(self, opt) not in (None, "T"):
        raise ValueError(f"dggcn: gcn_{opt} must be None or 'T', got {getattr(self, opt)!r}")
    k = self.A.shape[0]
    mid = int(self.ratio * self.features)
    a = self.param("A", lambda *_: jnp.asarray(self.A))
    alpha = self.param("alpha", nn.initializers.zeros, (k,))
    beta = self.param("beta", nn.initializers.zeros, (k,))
    res = (layers.ConvBN(self.features, name="down")(x, train)
           if x.shape[-1] != self.features else x)
    pre = layers.Conv(mid * k, name="pre")(x)
    pre = nn.relu(layers.BatchNorm(name="pre_bn")(pre, train))
    pre = pre.reshape(pre.shape[:-1] + (k, mid))                               # K-major channels
    if self.ctr is None and self.ada is None:
      out = jnp.einsum("btvkc,kvw->btwkc", pre, a)
    else:
      x_mean = jnp.mean(x, axis=1, keepdims=True)
      x1 = layers.Conv(mid * k, name="conv1")(x_mean)[:, 0].reshape(x.shape[0], -1, k, mid)
      x2 = layers.Conv(mid * k, name="conv2")(x_mean)[:, 0].reshape(x.shape[0], -1, k, mid)
      g = jnp.einsum("kvw->vwk", a)[None, :, :, :, None]                        # (1, V, W, K, 1)
      if self.ctr is not None:
        ctr = _act(self.ctr_act, x1[:, :, None] - x2[:, None], axis=1)        # (B, V, W, K, C)
        g = g + ctr * (alpha[:, None] if self.subset_wise else alpha[0])
      if self.ada is not None:
        aff = jnp.einsum("bvkc,bwkc->bvwk", x1, x2)
        aff = _act(self.ada_act, aff, axis=1)[..., None]                      # softmax over senders
        g = g + aff * (beta[:, None] if self.subset_wise else beta[0])
      out = jnp.einsum("btvkc,bvwkc->btwkc", pre, g)
    out = layers.Conv(self.features, name="post")(out.reshape(out.shape[:-2] + (-1,)))
    return nn.relu(layers.BatchNorm(name="bn")(out, train) + res)


class DGSTGCN(Backbone):
  graph_mode: str = "random"
  num_filter: int = 8
  init_std: float = 0.02
  init_off: float = 0.04
  graph_seed: int = 0
  data_bn_type: str | None = "VC"
  gcn_ratio: float = 0.125
  gcn_ctr: str | None = "T"
  gcn_ada: str | None = "T"
  gcn_subset_wise: bool = False
  gcn_ada_act: str = "softmax"
  gcn_ctr_act: str = "tanh"
  tcn_ms_cfg: tuple = layers.MS_CFG
  tcn_num_joints: int = 25

  def graph(self):
    if self.graph_mode == "random":
      return adjacency(self.layout, "random", num_filter=self.num_filter, init_std=self.init_std,
                       init_off=self.init_off, seed=self.graph_seed)
    return adjacency(self.layout, self.graph_mode)

  def units(self, cout, stride, dropout, a):
    gcn = functools.partial(DGGCN, cout, a, self.gcn_ratio, self.gcn_ctr, self.gcn_ada,
                            self.gcn_subset_wise, self.gcn_ada_act, self.gcn_ctr_act)
    tcn = functools.partial(layers.MultiBranchTCN, cout, stride, self.tcn_ms_cfg,
                            global_joint=True,
                            num_joints=max(self.tcn_num_joints, self.layout.num_joints),
                            dropout=dropout, conv_impl=self.temporal_conv)
    return gcn, tcn
