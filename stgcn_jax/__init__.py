"""stgcn-jax: sparse spatial-temporal graph convolution networks for skeleton action recognition."""

import os as _os

# XLA:GPU aborts while compiling these models' train steps in its Triton GEMM fusion pass ("Check
# failed: subdim_size_accumulator == dim_size", seen with jax 0.11.2 on an H100 for all four
# backbones); cuBLAS GEMMs compile and run. XLA reads XLA_FLAGS when the first backend starts, so
# this runs on import; a value for this flag that the user set in XLA_FLAGS is kept.
if "xla_gpu_enable_triton_gemm" not in _os.environ.get("XLA_FLAGS", ""):
  _os.environ["XLA_FLAGS"] = " ".join(
      filter(None, [_os.environ.get("XLA_FLAGS", ""), "--xla_gpu_enable_triton_gemm=false"]))
