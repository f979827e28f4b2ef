"""FLOP accounting: XLA's count for a compiled step, the textbook count, and the matmul peak.

Achieved GFLOP/s = FLOPs of one step / its median time. The FLOPs come from XLA's cost analysis
of the compiled step (what the issue asks for); the textbook count of the CNN (2 FLOPs per
multiply-add, backward = 2x forward except the first layer's unused input gradient) is printed
beside it as a check. The machine's peak is measured, not taken from a data sheet: the best
GFLOP/s of a large jitted float32 matrix product, on the same devices, in the same process.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def xla_flops(jitted: Any, *args: Any) -> float:
  """FLOPs of one call of `jitted(*args)` according to XLA's cost analysis (0 if unknown)."""
  analysis = jitted.lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older JAX: one dict per device program
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


def cnn_flops(batch: int, image_shape: Sequence[int], features: Sequence[int], dense: int,
              num_classes: int, kernel: int = 3) -> dict[str, float]:
  """Textbook FLOPs of the CNN (conv 'SAME' + 2x2 pool per block, dense, dense) at `batch`.

  Returns forward FLOPs and train-step FLOPs (forward + input and weight gradients; the first
  conv needs no input gradient). Element-wise work (ReLU, pooling, bias, softmax) is left out.
  """
  height, width, channels = image_shape
  forward, first_input_grad = 0.0, 0.0
  for index, out in enumerate(features):
    layer = 2.0 * batch * height * width * kernel * kernel * channels * out
    forward += layer
    if index == 0:
      first_input_grad = layer
    height, width, channels = height // 2, width // 2, out
  for fan_in, fan_out in ((height * width * channels, dense), (dense, num_classes)):
    forward += 2.0 * batch * fan_in * fan_out
  return {"forward": forward, "train_step": 3.0 * forward - first_input_grad}


def matmul_peak(size: int = 2048, repeats: int = 7) -> dict[str, float]:
  """Measured float32 matmul throughput (GFLOP/s) of a jitted `a @ b` on the default device.

  Returns the best and the median of `repeats` timed products (after one warm-up); the best is
  the machine's peak (noise only ever slows a run down).
  """
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((size, size)), jnp.float32)
  b = jnp.asarray(rng.standard_normal((size, size)), jnp.float32)
  product = jax.jit(jnp.matmul)
  product(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    product(a, b).block_until_ready()
    times.append(time.perf_counter() - start)
  flops = 2.0 * size ** 3
  return {"size": size, "peak_gflops": flops / min(times) / 1e9,
          "median_gflops": flops / float(np.median(times)) / 1e9}
