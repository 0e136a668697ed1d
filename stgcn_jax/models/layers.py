"""Units shared by the four backbones: convolutions, BatchNorm, temporal units, data BN and blocks.

Everything is channels-last: a feature map is ``x_BTVC`` (batch*persons, frames, joints, channels).
Parameter names mirror pyskl's (``conv``, ``bn``, ``down``, ``residual``...) so that
``stgcn_jax.models.pyskl`` maps pyskl checkpoints by a few renaming rules.

Initialisation follows pyskl per backbone (``docs/BACKBONES.md`` section 6); ``Conv``'s ``init``:
  * ``"torch"``: PyTorch's default, kernel and bias ~ U(+-1/sqrt(fan_in)).
  * ``"fan_out"``: kaiming normal over fan_out (std sqrt(2/fan_out)), bias 0 (pyskl's ``conv_init``).
  * ``"branch{K}"``: N(0, 2/(cout*cin*kt*K)), bias 0 (pyskl's ``conv_branch_init``).
  * ``"zeros"``: kernel and bias 0.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from stgcn_jax.errors import UserError
from stgcn_jax.models import mixed_precision

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
  raise UserError(f"unknown initialisation scheme {init!r}")


def per_channel(v: Array, ndim: int) -> Array:
  """A ``(C,)`` vector shaped ``(1, ..., 1, C)`` to broadcast over a channel-last array of rank
  ``ndim`` (explicitly: the tests run with ``jax_numpy_rank_promotion='raise'``)."""
  return jnp.reshape(v, (1,) * (ndim - jnp.ndim(v)) + jnp.shape(v))


def _frame_batched_dot(lhs_NIK: Array, rhs_NKJ: Array, rhs_contracting: int) -> Array:
  """``lhs[n] @ rhs[n]`` (``rhs_contracting=1``) or ``lhs[n] @ rhs[n].T`` (``2``) for every n."""
  return lax.dot_general(lhs_NIK, rhs_NKJ, (((2,), (rhs_contracting,)), ((0,), (0,))))


def graph_matmul(x_BTUC: Array, graph: Array) -> Array:
  """``einsum("btuc,uw->btwc", x, graph)``, or ``"btuc,buw->btwc"`` for a per-sample ``graph``.

  A joint contraction between channel-last feature maps: as an einsum, XLA:CPU transposes the
  features so that ``u`` is contracted as a matrix dimension, and back (a quarter of an ST-GCN
  train step at the NW-UCLA shape). Here every frame is its own ``(W x U) @ (U x C)`` product, the
  graph broadcast over the frames: a batched matmul on the arrays as they lie, whose gradients are
  batched matmuls too (forward + backward 2.6-3.2x faster at ST-GCN's shapes,
  ``experiments.bench_graph``). Same numbers to float32 rounding.
  """
  b, t, u, c = x_BTUC.shape
  graph_WU = jnp.swapaxes(graph, -1, -2)
  w = graph_WU.shape[-2]
  if graph.ndim == 2:
    graph_NWU = jnp.broadcast_to(graph_WU[None], (b * t, w, u))
  else:
    graph_NWU = jnp.broadcast_to(graph_WU[:, None], (b, t, w, u)).reshape(b * t, w, u)
  y = _frame_batched_dot(graph_NWU, x_BTUC.reshape(b * t, u, c), 1)
  return y.reshape(b, t, w, c)


def graph_gram(x_BTVC: Array, y_BTWC: Array) -> Array:
  """``einsum("btvc,btwc->bvw", x, y)`` as one ``(V x C) @ (C x W)`` product per frame, summed
  over the frames (see ``graph_matmul``)."""
  b, t, v, c = x_BTVC.shape
  w = y_BTWC.shape[2]
  s = _frame_batched_dot(x_BTVC.reshape(b * t, v, c), y_BTWC.reshape(b * t, w, c), 2)
  return jnp.sum(s.reshape(b, t, v, w), axis=1)


def _accumulate(acc: jax.Array, term, n: int, unroll: int = 4) -> jax.Array:
  """``acc + sum(term(k) for k in range(n))``: a ``fori_loop`` over chunks of ``unroll`` terms
  (XLA fuses a chunk into one loop over the channel-last output; the loop keeps the compiled
  program small), the remainder unrolled after it."""
  def chunk(i, acc):
    for j in range(unroll):
      acc = acc + term(i * unroll + j)
    return acc
  acc = lax.fori_loop(0, n // unroll, chunk, acc)
  for k in range(n - n % unroll, n):
    acc = acc + term(k)
  return acc


def _at(x: jax.Array, k, axis: int) -> jax.Array:
  return lax.dynamic_index_in_dim(x, k, axis, keepdims=False)


@jax.custom_vjp
def refined_graph_conv(xs: tuple, gs: tuple) -> jax.Array:
  """``sum_i einsum("btuc,buvc->btvc", xs[i], gs[i])``: every subset's features ``(B, T, U, C)``
  through its own per-sample, per-channel graph ``(B, U, V, C)``, summed over the subsets.

  CTR-GCN's refined graphs, and DG-STGCN's (one subset whose channels are the (subset, channel)
  pairs). As an einsum this is a batched matmul over ``B * C`` tiny ``(T x U) @ (U x V)`` products,
  which XLA:CPU runs slowly and with transposes around it (channel-last arrays, batch axes b and c).
  Posed as a sum over ``u`` of broadcast products, the forward pass and both gradients (``dx`` a sum
  over ``v``, ``dg`` a sum over ``t``) are fused loops over the channel-last output: 2-4x faster on
  CPU at CTR-GCN's shapes (``experiments/BENCHMARKS.md``), the same numbers to float32 rounding.
  """
  b, t, _, c = xs[0].shape
  y = jnp.zeros((b, t, gs[0].shape[2], c), xs[0].dtype)
  for x, g in zip(xs, gs):
    y = _accumulate(y, lambda u, x=x, g=g: _at(x, u, 2)[:, :, None, :] * _at(g, u, 1)[:, None],
                    x.shape[2])
  return y


def _refined_graph_conv_fwd(xs, gs):
  return refined_graph_conv(xs, gs), (xs, gs)


def _refined_graph_conv_bwd(res, dy):
  xs, gs = res
  dxs = tuple(_accumulate(jnp.zeros_like(x), lambda v, g=g: _at(dy, v, 2)[:, :, None, :]
                          * _at(g, v, 2)[:, None], g.shape[2]) for x, g in zip(xs, gs))
  dgs = tuple(_accumulate(jnp.zeros_like(g), lambda t, x=x: _at(x, t, 1)[:, :, None, :]
                          * _at(dy, t, 1)[:, None], x.shape[1]) for x, g in zip(xs, gs))
  return dxs, dgs


refined_graph_conv.defvjp(_refined_graph_conv_fwd, _refined_graph_conv_bwd)


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
  impl: str = "custom_vjp"   # how (k x 1) convs are differentiated: TEMPORAL_CONV_IMPLS

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cin, kt = x.shape[-1], self.kernel_size
    k_init, b_init = conv_inits(self.init_scheme, cin * kt, self.features * kt)
    kernel = self.param("kernel", k_init, (kt, 1, cin, self.features))
    bias = self.param("bias", b_init, (self.features,))
    if kt == 1:
      if self.stride > 1:
        x = x[:, ::self.stride]
      # A plain matmul: XLA:CPU differentiates it ~2x faster than the einsum (bf16: mixed_precision).
      y = mixed_precision.matmul(x.reshape(-1, cin), kernel[0, 0]).reshape(x.shape[:-1] + (-1,))
    elif self.impl == "xla":
      y = _temporal_conv(x, kernel, self.stride, self.dilation)
    elif self.impl == "custom_vjp":
      y = temporal_conv(x, kernel, self.stride, self.dilation)
    else:
      raise UserError(f"temporal conv impl must be one of {TEMPORAL_CONV_IMPLS}, got {self.impl!r}")
    return y + per_channel(bias, y.ndim)


# "custom_vjp" (default): ``temporal_conv``; "xla": XLA's own gradient (same function; kept for
# benchmarks and as a fallback). A backbone's ``temporal_conv`` field selects it.
TEMPORAL_CONV_IMPLS = ("custom_vjp", "xla")


def _temporal_conv(x_BTVC: Array, kernel: Array, stride: int, dilation: int) -> Array:
  """``(kt x 1)`` conv over frames, symmetric padding ``dilation * (kt - 1) // 2``."""
  pad = dilation * (kernel.shape[0] - 1) // 2
  return lax.conv_general_dilated(
      x_BTVC, kernel, window_strides=(stride, 1), padding=((pad, pad), (0, 0)),
      rhs_dilation=(dilation, 1), dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def temporal_conv(x_BTVC: Array, kernel: Array, stride: int, dilation: int) -> Array:
  """``_temporal_conv`` with a kernel gradient that XLA:CPU computes ~4x faster.

  XLA differentiates a convolution w.r.t. its kernel with a "backward-filter" convolution that
  XLA:CPU runs at a fraction of its forward-conv speed (``docs/STACK.md`` section 7). Here the
  kernel gradient is posed as a *forward* convolution instead (``_kernel_grad``); the input gradient
  is XLA's own (a forward conv with the flipped, transposed kernel), so it is unchanged.
  """
  return _temporal_conv(x_BTVC, kernel, stride, dilation)


def _temporal_conv_fwd(x_BTVC, kernel, stride, dilation):
  return _temporal_conv(x_BTVC, kernel, stride, dilation), (x_BTVC, kernel)


def _kernel_grad(x_BTVC: Array, g_BTVD: Array, kt: int, stride: int, dilation: int) -> Array:
  """``dL/dkernel[k, 0, c, d] = sum_{b,t,v} xpad[b, stride*t + dilation*k, v, c] g[b, t, v, d]``.

  A forward 1-D convolution over frames in which the channels ``c`` are the batch, the (batch,
  joint) pairs ``(b, v)`` are the contracted input features, and ``g`` is the kernel: ``T_out``
  taps spaced ``stride`` apart (``rhs_dilation``), evaluated at ``kt`` offsets spaced
  ``dilation`` apart (``window_strides``).
  """
  b, t, v, c = x_BTVC.shape
  t_out, d = g_BTVD.shape[1], g_BTVD.shape[-1]
  pad = dilation * (kt - 1) // 2
  lhs_CTF = jnp.transpose(x_BTVC, (3, 1, 0, 2)).reshape(c, t, b * v)
  rhs_TFD = jnp.transpose(g_BTVD, (1, 0, 2, 3)).reshape(t_out, b * v, d)
  out_CKD = lax.conv_general_dilated(
      lhs_CTF, rhs_TFD, window_strides=(dilation,), padding=((pad, pad),),
      rhs_dilation=(stride,), dimension_numbers=("NWC", "WIO", "NWC"))
  return jnp.transpose(out_CKD[:, :kt], (1, 0, 2))[:, None]


def _temporal_conv_bwd(stride, dilation, res, g):
  x_BTVC, kernel = res
  _, input_vjp = jax.vjp(lambda x: _temporal_conv(x, kernel, stride, dilation), x_BTVC)
  (dx,) = input_vjp(g)
  dkernel = _kernel_grad(x_BTVC, g, kernel.shape[0], stride, dilation).astype(kernel.dtype)
  return dx, dkernel


temporal_conv.defvjp(_temporal_conv_fwd, _temporal_conv_bwd)


class BatchNorm(nn.Module):
  """BatchNorm over the last axis with PyTorch semantics.

  Training normalises with the biased batch variance and updates ``var`` with the *unbiased* one
  (momentum 0.1 in PyTorch's convention); evaluation uses the running statistics. Statistics are
  taken over every axis but the last, so under a sharded ``jit`` they cover the global batch.
  When the collection ``bn_moments`` is mutable in a training-mode call, the batch's mean, biased
  variance and element count per channel are stored there as well
  (``stgcn_jax.training.precise_bn`` averages them into exact population statistics).
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
    channel = lambda v: per_channel(v, x.ndim)
    if train:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x, axes)
      var = jnp.mean(jnp.square(x - channel(mean)), axes)
      if not self.is_initializing():
        n = x.size // c
        unbiased = var * (n / max(n - 1, 1))
        m = self.momentum
        ra_mean.value = (1 - m) * ra_mean.value + m * lax.stop_gradient(mean)
        ra_var.value = (1 - m) * ra_var.value + m * lax.stop_gradient(unbiased)
      if self.is_mutable_collection("bn_moments") and not self.is_initializing():
        self.put_variable("bn_moments", "mean", lax.stop_gradient(mean))
        self.put_variable("bn_moments", "var", lax.stop_gradient(var))
        self.put_variable("bn_moments", "count", jnp.asarray(x.size // c, jnp.float32))
    else:
      mean, var = ra_mean.value, ra_var.value
    mul = scale * lax.rsqrt(var + self.epsilon)
    return (x - channel(mean)) * channel(mul) + channel(bias)


class UnitTCN(nn.Module):
  """pyskl ``unit_tcn``: temporal conv -> BN (optional) -> dropout."""
  features: int
  kernel_size: int = 9
  stride: int = 1
  dilation: int = 1
  use_bn: bool = True
  dropout: float = 0.0
  init_scheme: str = "torch"
  conv_impl: str = "custom_vjp"

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    x = Conv(self.features, self.kernel_size, self.stride, self.dilation, init_scheme=self.init_scheme,
             impl=self.conv_impl, name="conv")(x)
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


# pyskl's default multi-branch temporal conv: four dilated 3x1 convs, a max-pool and a 1x1 conv.
MS_CFG = ((3, 1), (3, 2), (3, 3), (3, 4), ("max", 3), "1x1")


class MultiBranchTCN(nn.Module):
  """pyskl ``mstcn`` / ``dgmstcn``: parallel temporal branches, concat, BN-ReLU-1x1, BN.

  ``ms_cfg`` entries: ``(k, d)`` = 1x1 -> BN -> ReLU -> (k x 1) conv with dilation d (no BN);
  ``("max", 3)`` = 1x1 -> BN -> ReLU -> max-pool; ``"1x1"`` = strided 1x1 conv. Branch 0 gets the
  remainder channels. With ``global_joint`` (DG-STGCN's dgmstcn) a mean-joint column is appended
  before the branches and fused back through the learnable ``add_coeff``.
  """
  features: int
  stride: int = 1
  ms_cfg: Sequence[Any] = MS_CFG
  mid_channels: float | None = None
  global_joint: bool = False
  num_joints: int = 25
  dropout: float = 0.0
  conv_impl: str = "custom_vjp"

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
        outs.append(Conv(c, cfg[0], self.stride, cfg[1], impl=self.conv_impl,
                         name=f"{name}_tconv")(y))
    y = jnp.concatenate(outs, axis=-1)
    if self.global_joint:
      y = y[:, :, :v] + y[:, :, v:] * add_coeff[None, None, :v, None]
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
  raise UserError(f"unknown data_bn_type {mode!r}; expected 'VC', 'MVC' or None")


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


ModuleDef = Any  # a module constructor, e.g. functools.partial(UnitTCN, 64, stride=2)


@dataclasses.dataclass(frozen=True)
class TCNOptions:
  """The temporal unit of an ST-GCN / AA-GCN block (pyskl's ``tcn_*`` keywords): ``type``
  'unit_tcn' (one 9x1 conv + BN) or 'mstcn' (pyskl's multi-branch TCN with ``ms_cfg``);
  ``dropout`` after the unit, in every block but the first."""
  type: str = "unit_tcn"
  ms_cfg: tuple = MS_CFG
  dropout: float = 0.0


def temporal_unit(opts: TCNOptions, features: int, stride: int, dropout: float, *,
                  init_scheme: str = "torch", conv_impl: str = "custom_vjp") -> ModuleDef:
  """The ``tcn`` of an ST-GCN / AA-GCN block: ``unit_tcn`` (9x1) or pyskl's ``mstcn``."""
  if opts.type == "unit_tcn":
    return functools.partial(UnitTCN, features, 9, stride, dropout=dropout,
                             init_scheme=init_scheme, conv_impl=conv_impl)
  if opts.type == "mstcn":
    return functools.partial(MultiBranchTCN, features, stride, opts.ms_cfg, dropout=dropout,
                             conv_impl=conv_impl)
  raise UserError(f"unknown tcn_type {opts.type!r}; expected 'unit_tcn' or 'mstcn'")


class GraphUnit(nn.Module):
  """Every GCN unit: ``features`` out over the ``(K, V, V)`` numpy graphs ``A`` (plus ``opts``)."""
  features: int
  A: Any


class Block(nn.Module):
  """One block of every backbone (pyskl's ``*Block``): ``gcn`` -> ``tcn``, + residual, ReLU.

  As the flax ResNet example composes its blocks, ``gcn`` and ``tcn`` are module constructors
  (``functools.partial`` of a unit with its options), built here as the children ``gcn`` and
  ``tcn``; ``residual`` is ``"none"``, ``"identity"`` or ``"proj"`` (see :func:`block_specs`)."""
  gcn: ModuleDef
  tcn: ModuleDef
  features: int
  stride: int = 1
  residual: str = "proj"

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    y = self.gcn(name="gcn")(x, train)
    y = self.tcn(name="tcn")(y, train)
    return nn.relu(y + residual(self.residual, self.features, self.stride, x, train))


def residual(kind: str, features: int, stride: int, x: Array, train: bool):
  """The block-level residual (module ``residual``): 0, identity, or 1x1 strided conv + BN."""
  if kind == "none":
    return 0.0
  if kind == "identity":
    return x
  return UnitTCN(features, kernel_size=1, stride=stride, name="residual")(x, train)
