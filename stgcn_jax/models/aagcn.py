"""AA-GCN (Shi et al. 2020) as pyskl's ``AAGCN`` computes it.

pyskl config ``aagcn_pyskl``: ``spatial`` graph learned per block, data-dependent attention graphs
(``conv_a``/``conv_b``), spatial/temporal/channel attention, 9x1 temporal convs, ``MVC`` data BN.
``gcn=GCNOptions(attention=False)`` (pyskl's spelling: ``gcn_attention=False``) gives the
3.47M-parameter model the paper quotes.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from stgcn_jax.models import layers
from stgcn_jax.models.base import Backbone


@dataclasses.dataclass(frozen=True)
class GCNOptions:
  """The options of ``unit_aagcn`` (pyskl's ``gcn_*`` keywords of ``AAGCN``).

  adaptive: the graph is learned per block, plus data-dependent graphs (``conv_a``/``conv_b``).
  attention: spatial, temporal and channel attention.
  coff_embedding: the channel reduction of the data-dependent graphs.
  """
  adaptive: bool = True
  attention: bool = True
  coff_embedding: int = 4


class UnitAAGCN(layers.GraphUnit):
  """pyskl ``unit_aagcn``."""
  opts: GCNOptions = GCNOptions()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    k, v = self.A.shape[0], self.A.shape[-1]
    t, inter = x.shape[1], self.features // self.opts.coff_embedding
    if self.opts.adaptive:
      a = self.param("A", lambda *_: jnp.asarray(self.A))
      alpha = self.param("alpha", nn.initializers.zeros, (1,))
    else:
      a = jnp.asarray(self.A)
    y = 0.0
    for i in range(k):
      g = a[i]
      if self.opts.adaptive:
        ea = layers.Conv(inter, init_scheme="fan_out", name=f"conv_a_{i}")(x)
        eb = layers.Conv(inter, init_scheme="fan_out", name=f"conv_b_{i}")(x)
        s = jnp.tanh(layers.graph_gram(ea, eb) / (inter * t))
        g = g[None] + alpha[0] * s
        xg = layers.graph_matmul(x, g)
      else:
        xg = layers.graph_matmul(x, g)
      y = y + layers.Conv(self.features, init_scheme=f"branch{k}", name=f"conv_d_{i}")(xg)
    down = (layers.ConvBN(self.features, init_scheme="fan_out", name="down")(x, train)
            if x.shape[-1] != self.features else x)
    y = nn.relu(layers.BatchNorm(scale_init=1e-6, name="bn")(y, train) + down)
    if self.opts.attention:
      ks = v if v % 2 else v - 1
      sa_init, _ = layers.conv_inits("xavier", self.features * ks, ks)
      se = nn.Conv(1, (ks,), padding=(((ks - 1) // 2,) * 2,), kernel_init=sa_init,
                   name="conv_sa")(jnp.mean(y, axis=1))                        # (B, V, 1)
      y = y * jax.nn.sigmoid(se)[:, None] + y
      se = nn.Conv(1, (9,), padding=((4, 4),), kernel_init=nn.initializers.zeros,
                   name="conv_ta")(jnp.mean(y, axis=2))                        # (B, T, 1)
      y = y * jax.nn.sigmoid(se)[:, :, None] + y
      fc1_init, _ = layers.conv_inits("fan_in", self.features, self.features // 2)
      se = nn.relu(nn.Dense(self.features // 2, kernel_init=fc1_init,
                            name="fc1c")(jnp.mean(y, axis=(1, 2))))
      se = jax.nn.sigmoid(nn.Dense(self.features, kernel_init=nn.initializers.zeros,
                                   name="fc2c")(se))
      y = y * se[:, None, None] + y
    return y


class AAGCN(Backbone):
  graph_mode: str = "spatial"
  data_bn_type: str | None = "MVC"
  gcn: GCNOptions = GCNOptions()

  def pyskl_fixed_buffers(self):
    a = self.graph()
    out = {"backbone.A": a}
    if not self.gcn.adaptive:
      out.update({f"backbone.gcn.{i}.gcn.A": a for i in range(len(self.specs()))})
    return out

  def units(self, cout, stride, dropout, a):
    gcn = functools.partial(UnitAAGCN, cout, a, self.gcn)
    # AAGCN re-initialises its unit_tcn (kaiming fan_out).
    tcn = layers.temporal_unit(self.tcn, cout, stride, dropout, init_scheme="fan_out",
                               conv_impl=self.temporal_conv)
    return gcn, tcn
