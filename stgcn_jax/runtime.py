"""Process-wide settings that the entry points apply explicitly; importing the library changes none.

>>> from stgcn_jax import runtime
>>> runtime.configure_xla()   # first thing in a program's main(), before any JAX computation
"""

from __future__ import annotations

import os

__all__ = ["configure_xla", "XLA_FLAGS"]

# XLA:GPU aborts while compiling these models' train steps in its Triton GEMM fusion pass ("Check
# failed: subdim_size_accumulator == dim_size", seen with jax 0.11.2 on an H100 for all four
# backbones); cuBLAS GEMMs compile and run.
XLA_FLAGS = ("--xla_gpu_enable_triton_gemm=false",)


def configure_xla() -> str:
  """Adds :data:`XLA_FLAGS` to ``$XLA_FLAGS`` (a flag the user set there keeps the user's value)
  and returns the result. XLA reads the variable when its first backend starts, so call this before
  any JAX computation; afterwards it has no effect on the running process."""
  current = os.environ.get("XLA_FLAGS", "")
  extra = [f for f in XLA_FLAGS if f.split("=", 1)[0] not in current]
  if extra:
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [current, *extra]))
  return os.environ.get("XLA_FLAGS", "")
