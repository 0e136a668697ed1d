"""ST-GCN (Yan et al. 2018) as pyskl's ``STGCN`` computes it; also ST-GCN++ through its options.

pyskl config ``stgcn_pyskl``: ``stgcn_spatial`` graph with edge importance (``A * PA``), 9x1 temporal
convs, ``VC`` data BN, PyTorch default initialisation. ST-GCN++: ``graph_mode='spatial',
gcn_adaptive='init', gcn_with_res=True, tcn_type='mstcn'``.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from stgcn_jax.models import layers
from stgcn_jax.models.base import Backbone


class UnitGCN(nn.Module):
  """pyskl ``unit_gcn``: K-subset graph convolution -> BN (-> + down) -> ReLU."""
  features: int
  A: Any  # (K, V, V) numpy constant
  adaptive: str | None = "importance"
  conv_pos: str = "pre"
  with_res: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    k = self.A.shape[0]
    a = jnp.asarray(self.A)
    if self.adaptive == "init":
      a = self.param("A", lambda *_: jnp.asarray(self.A))
    elif self.adaptive == "importance":
      a = a * self.param("PA", nn.initializers.ones, self.A.shape)
    elif self.adaptive == "offset":
      a = a + self.param("PA", lambda key, s: jax.random.uniform(key, s, minval=-1e-6, maxval=1e-6),
                         self.A.shape)
    elif self.adaptive is not None:
      raise ValueError(f"unknown gcn_adaptive {self.adaptive!r}; expected None, 'init', "
                       "'offset' or 'importance'")
    res = 0.0
    if self.with_res:
      res = (layers.ConvBN(self.features, name="down")(x, train)
             if x.shape[-1] != self.features else x)
    if self.conv_pos == "pre":
      z = layers.Conv(k * self.features, name="conv")(x)
      z = z.reshape(z.shape[:-1] + (k, self.features))  # pyskl splits channels K-major
      y = jnp.einsum("btvkc,kvw->btwc", z, a)
    elif self.conv_pos == "post":
      z = jnp.einsum("btvc,kvw->btwkc", x, a)
      y = layers.Conv(self.features, name="conv")(z.reshape(z.shape[:-2] + (-1,)))
    else:
      raise ValueError(f"unknown gcn_conv_pos {self.conv_pos!r}; expected 'pre' or 'post'")
    return nn.relu(layers.BatchNorm(name="bn")(y, train) + res)


class STGCN(Backbone):
  graph_mode: str = "stgcn_spatial"
  data_bn_type: str | None = "VC"
  gcn_adaptive: str | None = "importance"
  gcn_conv_pos: str = "pre"
  gcn_with_res: bool = False
  tcn_type: str = "unit_tcn"
  tcn_ms_cfg: tuple = layers.MS_CFG

  def pyskl_fixed_buffers(self):
    if self.gcn_adaptive == "init":  # then A is a parameter of every block
      return {}
    a = self.graph()
    return {f"backbone.gcn.{i}.gcn.A": a for i in range(len(self.specs()))}

  def units(self, cout, stride, dropout, a):
    gcn = functools.partial(UnitGCN, cout, a, self.gcn_adaptive, self.gcn_conv_pos,
                            self.gcn_with_res)
    tcn = layers.temporal_unit(self.tcn_type, cout, stride, ms_cfg=self.tcn_ms_cfg,
                               dropout=dropout, conv_impl=self.temporal_conv)
    return gcn, tcn
