"""ST-GCN (Yan et al. 2018) as pyskl's ``STGCN`` computes it; also ST-GCN++ through its options.

pyskl config ``stgcn_pyskl``: ``stgcn_spatial`` graph with edge importance (``A * PA``), 9x1 temporal
convs, ``VC`` data BN, PyTorch default initialisation. ST-GCN++: ``graph_mode='spatial',
gcn_adaptive='init', gcn_with_res=True, tcn_type='mstcn'`` (pyskl's spellings of
``gcn=GCNOptions(adaptive='init', with_res=True), tcn=layers.TCNOptions(type='mstcn')``).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from stgcn_jax.errors import UserError
from stgcn_jax.models import layers
from stgcn_jax.models.base import Backbone


@dataclasses.dataclass(frozen=True)
class GCNOptions:
  """The options of ``unit_gcn`` (pyskl's ``gcn_*`` keywords of ``STGCN``).

  adaptive: None (fixed graph), 'init' (the graph is a parameter), 'importance' (``A * PA``) or
    'offset' (``A + PA``).
  conv_pos: the 1x1 conv 'pre' (before the graph product) or 'post'.
  with_res: a residual inside the unit.
  """
  adaptive: str | None = "importance"
  conv_pos: str = "pre"
  with_res: bool = False


class UnitGCN(layers.GraphUnit):
  """pyskl ``unit_gcn``: K-subset graph convolution -> BN (-> + down) -> ReLU."""
  opts: GCNOptions = GCNOptions()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    k, opts = self.A.shape[0], self.opts
    a = jnp.asarray(self.A)
    if opts.adaptive == "init":
      a = self.param("A", lambda *_: jnp.asarray(self.A))
    elif opts.adaptive == "importance":
      a = a * self.param("PA", nn.initializers.ones, self.A.shape)
    elif opts.adaptive == "offset":
      a = a + self.param("PA", lambda key, s: jax.random.uniform(key, s, minval=-1e-6, maxval=1e-6),
                         self.A.shape)
    elif opts.adaptive is not None:
      raise UserError(f"unknown gcn_adaptive {opts.adaptive!r}; expected None, 'init', "
                      "'offset' or 'importance'")
    res = 0.0
    if opts.with_res:
      res = (layers.ConvBN(self.features, name="down")(x, train)
             if x.shape[-1] != self.features else x)
    if opts.conv_pos == "pre":
      z = layers.Conv(k * self.features, name="conv")(x)
      # pyskl splits the channels K-major: z[..., v, k, c] meets a[k, v, w] as row (v, k).
      b, t, v = z.shape[:3]
      y = layers.graph_matmul(z.reshape(b, t, v * k, self.features),
                              jnp.transpose(a, (1, 0, 2)).reshape(v * k, -1))
    elif opts.conv_pos == "post":
      v, w = a.shape[1:]
      z = layers.graph_matmul(x, jnp.transpose(a, (1, 2, 0)).reshape(v, w * k))  # (B, T, W*K, C)
      y = layers.Conv(self.features, name="conv")(z.reshape(z.shape[:2] + (w, -1)))
    else:
      raise UserError(f"unknown gcn_conv_pos {opts.conv_pos!r}; expected 'pre' or 'post'")
    return nn.relu(layers.BatchNorm(name="bn")(y, train) + res)


class STGCN(Backbone):
  graph_mode: str = "stgcn_spatial"
  data_bn_type: str | None = "VC"
  gcn: GCNOptions = GCNOptions()

  def pyskl_fixed_buffers(self):
    if self.gcn.adaptive == "init":  # then A is a parameter of every block
      return {}
    a = self.graph()
    return {f"backbone.gcn.{i}.gcn.A": a for i in range(len(self.specs()))}

  def units(self, cout, stride, dropout, a):
    gcn = functools.partial(UnitGCN, cout, a, self.gcn)
    tcn = layers.temporal_unit(self.tcn, cout, stride, dropout, conv_impl=self.temporal_conv)
    return gcn, tcn
