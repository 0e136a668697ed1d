"""Units shared by the four backbones: convolutions, BatchNorm, temporal units, data BN and blocks.

Everything is channels-last: a feature map is ``x_BTVC`` (batch*persons, frames, joints, channels).
Parameter names mirror pyskl's (``conv``, ``bn``, ``down``, ``residual``...) so that
``stgcn_jax.convert`` maps pyskl checkpoints by a few renaming rules.

Initialisation follows pyskl per backbone (``spec/BACKBONES.md`` section 6). A ``Conv`` takes an ``init``
scheme name:
  * ``"torch"``: PyTorch's default, kernel and bias ~ U(+-1/sqrt(fan_in)).
  * ``"fan_out"``: kaiming normal over fan_out (std sqrt(2/fan_out)), bias 0 (pyskl's ``conv_init``).
  * ``"branch{K}"``: N(0, 2/(cout*cin*kt*K)), bias 0 (pyskl's ``conv_branch_init``).
  * ``"zeros"``: kernel and bias 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def _uniform(bound: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def _normal(std: float):
  def init(key, shape, dtype=jnp.float32):
    return std * jax.random.normal(key, shape, dtype)
  return init


def conv_inits(init: str, fan_in: int, fan_out: int):
  """(kernel_init, bias_init) for a named pyskl initialisation scheme."""
  zeros = nn.initializers.zeros
  if init == "torch":
    bound = 1.0 / math.sqrt(fan_in)
    return _uniform(bound), _uniform(bound)
  if init == "fan_out":
    return _normal(math.sqrt(2.0 / fan_out)), zeros
  if init.startswith("branch"):
    branches = int(init[len("branch"):])
    return _normal(math.sqrt(2.0 / (fan_out * fan_in * branches))), zeros
  if init == "zeros":
    return zeros, zeros
  if init == "xavier":
    return _normal(math.sqrt(2.0 / (fan_in + fan_out))), zeros
  if init == "fan_in":
    return _normal(math.sqrt(2.0 / fan_in)), zeros
  raise ValueError(f"unknown initialisation scheme {init!r}")


class Conv(nn.Module):
  """A ``(kernel_size x 1)`` convolution over time of ``x_BTVC``, PyTorch ``Conv2d`` semantics.

  Padding is symmetric, ``dilation * (kernel_size - 1) // 2`` frames on each side (pyskl's
  ``unit_tcn``); XLA's ``SAME`` would pad stride-2 convolutions asymmetrically. Kernel layout is
  ``(kt, 1, cin, cout)``.
  """
  features: int
  kernel_size: int = 1
  stride: int = 1
  dilation: int = 1
  init_scheme: str = "torch"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cin, kt = x.shape[-1], self.kernel_size
    k_init, b_init = conv_inits(self.init_scheme, cin * kt, self.features * kt)
    kernel = self.param("kernel", k_init, (kt, 1, cin, self.features))
    bias = self.param("bias", b_init, (self.features,))
    if kt == 1:
      if self.stride > 1:
        x = x[:, ::self.stride]
      y = jnp.einsum("btvc,cd->btvd", x, kernel[0, 0])
    else:
      pad = (kt + (kt - 1) * (self.dilation - 1) - 1) // 2
      y = lax.conv_general_dilated(
          x, kernel, window_strides=(self.stride, 1), padding=((pad, pad), (0, 0)),
          rhs_dilation=(self.dilation, 1), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias


class BatchNorm(nn.Module):
  """BatchNorm over the last axis with PyTorch semantics.

  Training normalises with the biased batch variance and updates ``var`` with the *unbiased* one
  (momentum 0.1 in PyTorch's convention); evaluation uses the running statistics. Statistics are
  taken over every axis but the last, so under a sharded ``jit`` they cover the global batch.
  """
  epsilon: float = 1e-5
  momentum: float = 0.1
  scale_init: float = 1.0

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.constant(self.scale_init), (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
    if train:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x, axes)
      var = jnp.mean(jnp.square(x - mean), axes)
      if not self.is_initializing():
        n = x.size // c
        unbiased = var * (n / max(n - 1, 1))
        m = self.momentum
        ra_mean.value = (1 - m) * ra_mean.value + m * lax.stop_gradient(mean)
        ra_var.value = (1 - m) * ra_var.value + m * lax.stop_gradient(unbiased)
    else:
      mean, var = ra_mean.value, ra_var.value
    mul = scale * lax.rsqrt(var + self.epsilon)
    return (x - mean) * mul + bias


class UnitTCN(nn.Module):
  """pyskl ``unit_tcn``: temporal conv -> BN (optional) -> dropout."""
  features: int
  kernel_size: int = 9
  stride: int = 1
  dilation: int = 1
  use_bn: bool = True
  dropout: float = 0.0
  init_scheme: str = "torch"

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    x = Conv(self.features, self.kernel_size, self.stride, self.dilation, init_scheme=self.init_scheme,
             name="conv")(x)
    if self.use_bn:
      x = BatchNorm(name="bn")(x, train)
    if self.dropout > 0:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return x


class ConvBN(nn.Module):
  """1x1 conv + BN: the ``down`` path of the GCN units (pyskl ``Sequential(Conv2d, BN)``)."""
  features: int
  init_scheme: str = "torch"

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    return BatchNorm(name="bn")(Conv(self.features, init_scheme=self.init_scheme, name="conv")(x), train)


def max_pool_time(x: Array, stride: int) -> Array:
  """MaxPool2d((3, 1), stride (s, 1), padding (1, 0)) over the frame axis of ``x_BTVC``."""
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 1, 1), (1, stride, 1, 1),
                           ((0, 0), (1, 1), (0, 0), (0, 0)))


class MultiBranchTCN(nn.Module):
  """pyskl ``mstcn`` / ``dgmstcn``: parallel temporal branches, concat, BN-ReLU-1x1, BN.

  ``ms_cfg`` entries: ``(k, d)`` = 1x1 -> BN -> ReLU -> (k x 1) conv with dilation d (no BN);
  ``("max", 3)`` = 1x1 -> BN -> ReLU -> max-pool; ``"1x1"`` = strided 1x1 conv. Branch 0 gets the
  remainder channels. With ``global_joint`` (DG-STGCN's dgmstcn) a mean-joint column is appended
  before the branches and fused back through the learnable ``add_coeff``.
  """
  features: int
  stride: int = 1
  ms_cfg: Sequence[Any] = ((3, 1), (3, 2), (3, 3), (3, 4), ("max", 3), "1x1")
  mid_channels: float | None = None
  global_joint: bool = False
  num_joints: int = 25
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    v, nb = x.shape[2], len(self.ms_cfg)
    if self.mid_channels is None:
      mid = self.features // nb
      rem = self.features - mid * (nb - 1)
    else:
      mid = rem = int(self.features * self.mid_channels)
    if self.global_joint:
      if v > self.num_joints:
        raise ValueError(f"dgmstcn: {v} joints exceed num_joints={self.num_joints}")
      add_coeff = self.param("add_coeff", nn.initializers.zeros, (self.num_joints,))
      x = jnp.concatenate([x, jnp.mean(x, axis=2, keepdims=True)], axis=2)
    outs = []
    for i, cfg in enumerate(self.ms_cfg):
      c = rem if i == 0 else mid
      name = f"branch{i}"
      if cfg == "1x1":
        outs.append(Conv(c, stride=self.stride, name=f"{name}_conv")(x))
        continue
      y = Conv(c, name=f"{name}_pw")(x)
      y = nn.relu(BatchNorm(name=f"{name}_pw_bn")(y, train))
      if cfg[0] == "max":
        outs.append(max_pool_time(y, self.stride))
      else:
        outs.append(Conv(c, cfg[0], self.stride, cfg[1], name=f"{name}_tconv")(y))
    y = jnp.concatenate(outs, axis=-1)
    if self.global_joint:
      y = y[:, :, :v] + y[:, :, v:] * add_coeff[:v, None]
    y = nn.relu(BatchNorm(name="transform_bn")(y, train))
    y = Conv(self.features, name="transform_conv")(y)
    y = BatchNorm(name="bn")(y, train)
    if self.dropout > 0:
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return y


def data_bn(x_NMTVC: Array, mode: str | None, train: bool) -> Array:
  """Input BatchNorm (module ``data_bn``) over ``V*C`` or ``M*V*C`` channels; returns ``x_BTVC``.

  ``"VC"``: persons share statistics and affine parameters, channel order ``v*C + c``.
  ``"MVC"``: one channel per person slot, order ``m*V*C + v*C + c``. Statistics over batch and
  frames, as pyskl's ``BatchNorm1d``. Call inside a compact module.
  """
  n, m, t, v, c = x_NMTVC.shape
  if mode == "VC":
    x = BatchNorm(name="data_bn")(x_NMTVC.reshape(n * m, t, v * c), train)
    return x.reshape(n * m, t, v, c)
  if mode == "MVC":
    x = jnp.transpose(x_NMTVC, (0, 2, 1, 3, 4)).reshape(n, t, m * v * c)
    x = BatchNorm(name="data_bn")(x, train).reshape(n, t, m, v, c)
    return jnp.transpose(x, (0, 2, 1, 3, 4)).reshape(n * m, t, v, c)
  if mode is None:
    return x_NMTVC.reshape(n * m, t, v, c)
  raise ValueError(f"unknown data_bn_type {mode!r}; expected 'VC', 'MVC' or None")


def block_specs(in_channels: int, base_channels: int = 64, ch_ratio: float = 2,
                num_stages: int = 10, inflate_stages: Sequence[int] = (5, 8),
                down_stages: Sequence[int] = (5, 8)) -> list[tuple[int, int, int, str]]:
  """``(cin, cout, stride, residual)`` per block as pyskl builds them.

  ``residual`` is ``"none"`` for the first block, ``"identity"`` when shapes match and ``"proj"``
  (1x1 strided conv + BN) otherwise. When ``in_channels == base_channels`` pyskl skips block 0.
  """
  specs = []
  if in_channels != base_channels:
    specs.append((in_channels, base_channels, 1, "none"))
  cin, inflate = base_channels, 0
  for i in range(2, num_stages + 1):
    stride = 1 + (i in down_stages)
    inflate += i in inflate_stages
    cout = int(base_channels * ch_ratio ** inflate + 1e-4)
    specs.append((cin, cout, stride, "identity" if (cin == cout and stride == 1) else "proj"))
    cin = cout
  return specs


def residual(kind: str, features: int, stride: int, x: Array, train: bool):
  """The block-level residual (module ``residual``): 0, identity, or 1x1 strided conv + BN."""
  if kind == "none":
    return 0.0
  if kind == "identity":
    return x
  return UnitTCN(features, kernel_size=1, stride=stride, name="residual")(x, train)
