"""Mixed precision for the models' 1x1 convolutions, a measurement tool, not a training option.

``compute_dtype(jnp.bfloat16)`` makes every ``layers.Conv`` with a (1 x 1) kernel traced inside the
block run as a bfloat16 matmul with float32 accumulation and output (``matmul``); parameters,
BatchNorm, the optimizer and the (k x 1) convolutions stay float32. On a CPU with AMX it took 5-13 %
off a full-size train step, but its accuracy was not shown equal to float32's
(``experiments/BENCHMARKS.md``, "bfloat16 on this CPU"), so no training config sets it:
``experiments.bench --dtype=bfloat16`` and ``experiments.bf16_step`` do.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

_COMPUTE_DTYPE = contextvars.ContextVar("stgcn_jax_compute_dtype", default=None)
_FOLD_TRANSPOSE = contextvars.ContextVar("stgcn_jax_fold_transpose", default=False)


@contextlib.contextmanager
def compute_dtype(dtype, *, force: bool = False, fold_transpose: bool = False):
  """Trace the 1x1 convolutions with ``dtype`` inputs and float32 accumulation and outputs
  (``None`` / float32: the plain float32 matmul, the default, unless ``force``). Read when a model
  is traced, and not part of ``jax.jit``'s cache key: trace the step inside the block
  (``jax.jit(f).lower(...).compile()``, or its first call). ``fold_transpose`` lets XLA fold the
  kernel gradient's transpose into its dot (what ``experiments.bf16_step`` compares against)."""
  plain = dtype is None or (jnp.dtype(dtype) == jnp.float32 and not force)
  tokens = (_COMPUTE_DTYPE.set(None if plain else jnp.dtype(dtype)),
            _FOLD_TRANSPOSE.set(fold_transpose))
  try:
    yield
  finally:
    _COMPUTE_DTYPE.reset(tokens[0])
    _FOLD_TRANSPOSE.reset(tokens[1])


def matmul(x_MK: Array, w_KN: Array) -> Array:
  """``x @ w``: float32, or ``mixed_matmul`` inside ``compute_dtype``."""
  dtype = _COMPUTE_DTYPE.get()
  return x_MK @ w_KN if dtype is None else mixed_matmul(x_MK, w_KN, dtype, _FOLD_TRANSPOSE.get())


def rows_transposed(x_MK: Array) -> Array:
  """``x.T`` materialised as a ``(K, M)`` row-major array. A plain ``x.T`` feeding a dot is folded
  into the dot's dimension numbers (XLA's transpose folding), and XLA:CPU's YNNPACK runs bfloat16
  dots only when the left operand's contracting dimension is its last: others are upcast to a
  float32 Eigen dot. A 3-D transpose is not folded."""
  m, k = x_MK.shape
  r = next((d for d in (16, 8, 4, 2) if m % d == 0 and m > d), None)
  if r is None:
    return x_MK.T
  return jnp.transpose(x_MK.reshape(m // r, r, k), (2, 0, 1)).reshape(k, m)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def mixed_matmul(x_MK: Array, w_KN: Array, dtype, fold_transpose: bool = False) -> Array:
  """``x @ w`` with ``dtype`` (bfloat16) inputs and float32 accumulation and output; its gradients
  are the same kind of products (the float32 cotangent cast to ``dtype``), each posed so that
  XLA:CPU runs it as a bfloat16 YNNPACK dot; they come back float32."""
  del fold_transpose  # the backward's choice
  return jnp.dot(x_MK.astype(dtype), w_KN.astype(dtype), preferred_element_type=jnp.float32)


def _mixed_matmul_fwd(x_MK, w_KN, dtype, fold_transpose):
  del fold_transpose
  xb, wb = x_MK.astype(dtype), w_KN.astype(dtype)
  return jnp.dot(xb, wb, preferred_element_type=jnp.float32), (xb, wb)


def _mixed_matmul_bwd(dtype, fold_transpose, res, g_MN):
  xb, wb = res
  gb = g_MN.astype(dtype)
  dx = lax.dot_general(gb, wb, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
  xb_KM = xb.T if fold_transpose else rows_transposed(xb)
  dw = jnp.dot(xb_KM, gb, preferred_element_type=jnp.float32)
  return dx, dw


mixed_matmul.defvjp(_mixed_matmul_fwd, _mixed_matmul_bwd)
