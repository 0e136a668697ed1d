"""CTR-GCN (Chen et al. 2021) as pyskl's ``CTRGCN`` computes it.

Channel-wise topology refinement: per subset, a per-sample, per-channel graph
``G = conv4(tanh(x1_u - x2_v)) * alpha + A_i``; the temporal unit is MS-G3D's 4-branch ``MSTCN``
(kernel 5, dilations 1 and 2, max-pool, 1x1). Data BN is always ``MVC``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from stgcn_jax.models import layers
from stgcn_jax.models.base import Backbone


class CTRGC(nn.Module):
  """One subset of ``unit_ctrgcn``: channel-wise refined graph convolution. Returns the subset's
  features ``x3`` and its refined graph ``g``; ``refined_graph_conv`` contracts them (all subsets
  at once), as ``einsum("btuc,buvc->btvc", x3, g)`` per subset."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array, a_i: jax.Array, alpha: jax.Array) -> tuple:
    cin = x.shape[-1]
    rel = 8 if cin <= 16 else cin // 8
    # conv(x).mean(T) == conv(x.mean(T)) for a 1x1 conv; the latter is T times cheaper.
    x_mean = jnp.mean(x, axis=1, keepdims=True)                                # (B, 1, V, C)
    x1 = layers.Conv(rel, init_scheme="fan_out", name="conv1")(x_mean)[:, 0]         # (B, V, R)
    x2 = layers.Conv(rel, init_scheme="fan_out", name="conv2")(x_mean)[:, 0]
    x3 = layers.Conv(self.features, init_scheme="fan_out", name="conv3")(x)         # (B, T, V, C)
    d = jnp.tanh(x1[:, :, None, :] - x2[:, None, :, :])                      # (B, U, V, R)
    g = layers.Conv(self.features, init_scheme="fan_out", name="conv4")(d)
    g = g * alpha[0] + a_i[None, :, :, None]
    return x3, g


class UnitCTRGCN(layers.GraphUnit):
  """pyskl ``unit_ctrgcn``: the sum of one ``CTRGC`` per graph, BN, + down, ReLU."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    a = self.param("A", lambda *_: jnp.asarray(self.A))
    alpha = self.param("alpha", nn.initializers.zeros, (1,))
    xs, gs = zip(*(CTRGC(self.features, name=f"convs_{i}")(x, a[i], alpha)
                   for i in range(a.shape[0])))
    y = layers.refined_graph_conv(xs, gs)
    down = (layers.ConvBN(self.features, init_scheme="fan_out", name="down")(x, train)
            if x.shape[-1] != self.features else x)
    return nn.relu(layers.BatchNorm(scale_init=1e-6, name="bn")(y, train) + down)


@dataclasses.dataclass(frozen=True)
class GCNOptions:
  """``unit_ctrgcn`` has no options."""


@dataclasses.dataclass(frozen=True)
class TCNOptions:
  """The options of CTR-GCN's ``MSTCN`` (pyskl: ``kernel_size``, ``dilations``, ``tcn_dropout``)."""
  kernel_size: int = 5
  dilations: tuple[int, ...] = (1, 2)
  dropout: float = 0.0


class MSTCN(nn.Module):
  """MS-G3D's multi-scale TCN as pyskl uses it in CTR-GCN (``residual=False``).

  Branches: per dilation, 1x1 -> BN -> ReLU -> (k x 1) conv -> BN; max: 1x1 -> BN -> ReLU ->
  max-pool -> BN; last: strided 1x1 -> BN with the remainder channels. Concat -> ReLU -> dropout.
  """
  features: int
  kernel_size: int = 5
  stride: int = 1
  dilations: tuple[int, ...] = (1, 2)
  dropout: float = 0.0
  conv_impl: str = "custom_vjp"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    nb = len(self.dilations) + 2
    bc = self.features // nb
    rem = self.features - bc * (nb - 1)

    def pointwise(i, c, stride=1):
      y = layers.Conv(c, stride=stride, init_scheme="fan_out", name=f"branch{i}_pw")(x)
      return layers.BatchNorm(name=f"branch{i}_pw_bn")(y, train)

    outs = []
    for i, d in enumerate(self.dilations):
      y = nn.relu(pointwise(i, bc))
      y = layers.Conv(bc, self.kernel_size, self.stride, d, init_scheme="fan_out",
                      impl=self.conv_impl, name=f"branch{i}_tconv")(y)
      outs.append(layers.BatchNorm(name=f"branch{i}_tconv_bn")(y, train))
    i = len(self.dilations)
    y = layers.max_pool_time(nn.relu(pointwise(i, bc)), self.stride)
    outs.append(layers.BatchNorm(name=f"branch{i}_pool_bn")(y, train))
    outs.append(pointwise(i + 1, rem, self.stride))
    y = nn.relu(jnp.concatenate(outs, axis=-1))
    if self.dropout > 0:
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return y


class CTRGCN(Backbone):
  graph_mode: str = "spatial"
  data_bn_type: str = "MVC"
  gcn: GCNOptions = GCNOptions()
  tcn: TCNOptions = TCNOptions()

  pyskl_blocks = "net"
  pyskl_units = {"gcn": "gcn1", "tcn": "tcn1"}
  pyskl_names: ClassVar[dict[str, str]] = {"kernel_size": "tcn_kernel_size",
                                           "dilations": "tcn_dilations"}

  def pyskl_fixed_buffers(self):
    return {"backbone.A": self.graph()}

  def units(self, cout, stride, dropout, a):
    gcn = functools.partial(UnitCTRGCN, cout, a)
    tcn = functools.partial(MSTCN, cout, self.tcn.kernel_size, stride, self.tcn.dilations,
                            dropout, conv_impl=self.temporal_conv)
    return gcn, tcn
