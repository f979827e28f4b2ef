"""The CNN as it was before its custom gradients, for before/after timings in one run.

`nn.Conv` layers differentiated by XLA (the kernel gradient is a convolution with the batch as
its feature axis), ReLU and bias on the full-resolution maps, and the reshape + max pool with
autodiff's gradient. Same parameter tree, initialisation and outputs as
`unlearn_jax.models.cnn.CNN`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def autodiff_max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  n, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2, :].reshape(n, h // 2, 2, w // 2, 2, c)
  return x.max(axis=(2, 4))


class FlaxLayersCNN(nn.Module):
  """(nn.Conv 3x3 'SAME' + ReLU + 2x2 max pool) per feature count, Dense + ReLU, Dense."""
  num_classes: int
  features: Sequence[int] = (32, 64)
  dense: int = 128

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    del train
    for channels in self.features:
      x = nn.Conv(channels, (3, 3), padding="SAME")(x)
      x = autodiff_max_pool_2x2(nn.relu(x))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.dense)(x))
    return nn.Dense(self.num_classes)(x)
