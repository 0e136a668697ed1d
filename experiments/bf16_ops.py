"""What XLA:CPU does with bfloat16: op-level GFLOP/s, float32 against bfloat16 inputs.

  taskset -c 1 python -m experiments.bf16_ops [--reps=20] [--hlo]
  XLA_FLAGS=--xla_cpu_use_onednn=true taskset -c 1 python -m experiments.bf16_ops   # another XLA path

At CTR-GCN's NW-UCLA shape (rows = 16 * 52 * 20): a ``(rows x 64) @ (64 x 128)`` matmul (a 1x1
convolution) and a ``9x1`` temporal convolution (64 -> 64 channels), forward and forward + backward,
each in three forms:
  * ``f32``: float32 inputs and outputs;
  * ``bf16 autodiff``: inputs cast to bfloat16, ``preferred_element_type=float32``, JAX's own
    gradient (its transposed dots take the float32 cotangent and a bfloat16 operand);
  * ``bf16 mixed``: the same forward, with a ``custom_vjp`` whose backward casts the cotangent to
    bfloat16 too, so that every product has bfloat16 inputs and float32 accumulation.
Plus a 2048^2 matmul in both dtypes (the machine's dense rate). ``--hlo`` prints the optimised HLO's
custom calls / fusion kinds of each function, to see which library runs it.
"""

from __future__ import annotations

import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from jax import lax

BF = jnp.bfloat16
F32 = jnp.float32


def timed(fn, *args, reps: int) -> float:
  """Median wall seconds of ``reps`` calls after two untimed ones."""
  for _ in range(2):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


# ---------------------------------------------------------------------------- the ops


def mm_f32(x, w):
  return x @ w


def mm_bf16(x, w):
  return jnp.dot(x.astype(BF), w.astype(BF), preferred_element_type=F32)


@jax.custom_vjp
def mm_mixed(x, w):
  return mm_bf16(x, w)


def _mm_fwd(x, w):
  xb, wb = x.astype(BF), w.astype(BF)
  return jnp.dot(xb, wb, preferred_element_type=F32), (xb, wb)


def _mm_bwd(res, g):
  xb, wb = res
  gb = g.astype(BF)
  dx = jnp.dot(gb, wb.T, preferred_element_type=F32)
  dw = jnp.dot(xb.T, gb, preferred_element_type=F32)
  return dx, dw


mm_mixed.defvjp(_mm_fwd, _mm_bwd)


def _conv(x, k, dtype=None):
  pad = (k.shape[0] - 1) // 2
  return lax.conv_general_dilated(x, k, (1, 1), ((pad, pad), (0, 0)),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  preferred_element_type=dtype)


def conv_f32(x, k):
  return _conv(x, k)


def conv_bf16(x, k):
  return _conv(x.astype(BF), k.astype(BF), F32)


@jax.custom_vjp
def conv_mixed(x, k):
  return conv_bf16(x, k)


def _conv_fwd(x, k):
  xb, kb = x.astype(BF), k.astype(BF)
  return _conv(xb, kb, F32), (xb, kb)


def _conv_bwd(res, g):
  xb, kb = res
  gb = g.astype(BF)
  _, vjp = jax.vjp(lambda a, b: _conv(a, b, F32), xb, kb)
  dx, dk = vjp(gb.astype(F32))   # XLA's own transposed / backward-filter convs, bf16 operands
  return dx.astype(F32), dk.astype(F32)


conv_mixed.defvjp(_conv_fwd, _conv_bwd)


def grad_of(f):
  """Forward + backward with a given (random) output cotangent ``g``; a constant cotangent (the
  gradient of a plain sum) lets XLA fold the casts away and changes what is measured."""
  def fwd_bwd(a, b, g):
    y, vjp = jax.vjp(f, a, b)
    return y, vjp(g)
  return jax.jit(fwd_bwd)


def hlo_kinds(jitted, *args) -> str:
  text = jitted.lower(*args).compile().as_text()
  kinds = re.findall(r'custom_call_target="([^"]+)"', text)
  kinds += re.findall(r'kind=(k\w+)', text)
  # every dot / convolution with its operand types: "bf16,bf16->f32 dot"
  shapes = dict(re.findall(r'%([\w.\-]+) = (\w+)\[', text))
  ops = []
  for out, op, args in re.findall(r'= (\w+)\[[^=]*?\} (dot|convolution)\(([^)]*)\)', text):
    ins = ",".join(shapes.get(a.strip().lstrip("%"), "?") for a in args.split(","))
    ops.append(f"{op} {ins}->{out}")
  backend = re.findall(r'__(onednn|ynn|xnn)\w*', text)
  return f"ops={ops} fusions={sorted(set(kinds))} lib={sorted(set(backend))}"


def main(argv):
  reps = 20
  show_hlo = "--hlo" in argv
  for a in argv:
    if a.startswith("--reps="):
      reps = int(a.split("=")[1])
  print("XLA_FLAGS:", __import__("os").environ.get("XLA_FLAGS", ""), "| devices:", jax.devices())
  key = jax.random.key(0)
  for dtype in (F32, BF):
    n = 2048
    a = jax.random.normal(key, (n, n), dtype)
    f = jax.jit(lambda p, q: jnp.dot(p, q, preferred_element_type=F32))
    s = timed(f, a, a, reps=5)
    print(f"dense {n}^2 matmul {jnp.dtype(dtype).name:8s}: {2 * n**3 / s / 1e9:7.1f} GFLOP/s"
          f" ({s * 1e3:.1f} ms)")

  rows, cin, cout = 16 * 52 * 20, 64, 128
  x = jax.random.normal(key, (rows, cin), F32)
  w = jax.random.normal(jax.random.key(1), (cin, cout), F32) * 0.1
  mm_flops = 2 * rows * cin * cout
  xc = jax.random.normal(key, (16, 52, 20, 64), F32)
  kc = jax.random.normal(jax.random.key(1), (9, 1, 64, 64), F32) * 0.05
  conv_flops = 2 * 16 * 52 * 20 * 64 * 64 * 9
  cases = [("1x1 matmul (16640x64)@(64x128)", mm_flops, x, w,
            (("f32", mm_f32), ("bf16 autodiff", mm_bf16), ("bf16 mixed", mm_mixed))),
           ("9x1 conv (16,52,20,64)->64", conv_flops, xc, kc,
            (("f32", conv_f32), ("bf16 autodiff", conv_bf16), ("bf16 mixed", conv_mixed)))]
  for title, flops, a, b, forms in cases:
    print(f"\n{title}: {flops / 1e6:.0f} MFLOP forward")
    ref_f = ref_g = None
    for name, fn in forms:
      fwd = jax.jit(fn)
      grd = grad_of(fn)
      g = jax.random.normal(jax.random.key(2), fwd(a, b).shape, F32)
      tf = timed(fwd, a, b, reps=reps)
      tg = timed(grd, a, b, g, reps=reps)
      yf = fwd(a, b)
      _, (gx, gw) = grd(a, b, g)
      if ref_f is None:
        ref_f, ref_g = yf, (gx, gw)
      rel = float(jnp.max(jnp.abs(yf - ref_f)) / jnp.max(jnp.abs(ref_f)))
      relg = float(jnp.max(jnp.abs(gw - ref_g[1])) / jnp.max(jnp.abs(ref_g[1])))
      print(f"  {name:14s} fwd {tf * 1e3:7.2f} ms {flops / tf / 1e9:6.1f} GFLOP/s | fwd+bwd "
            f"{tg * 1e3:7.2f} ms {3 * flops / tg / 1e9:6.1f} GFLOP/s | max rel err fwd {rel:.1e}"
            f" dW {relg:.1e}")
      if show_hlo:
        print("     fwd HLO:", hlo_kinds(fwd, a, b))
        print("     grad HLO:", hlo_kinds(grd, a, b, g))


if __name__ == "__main__":
  main(sys.argv[1:])
