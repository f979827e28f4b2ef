"""Small two-block convolutional network for MNIST/CIFAR-sized images."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """2x2 max pool with stride 2 and 'VALID' padding on (N, H, W, C) input.

  Equal (values and gradients, absent ties) to
  `nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')`, but written as
  reshape + max because XLA:CPU's reduce_window backward pass is very slow.
  An odd last row/column is dropped, as 'VALID' pooling does.
  """
  n, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2, :]
  x = x.reshape(n, h // 2, 2, w // 2, 2, c)
  return x.max(axis=(2, 4))


class CNN(nn.Module):
  """(3x3 conv 'SAME' + ReLU + 2x2 max pool) per entry of `features`, then
  Dense + ReLU, then Dense to logits."""

  num_classes: int
  features: Sequence[int] = (32, 64)  # Channels of each conv block.
  dense: int = 128  # Width of the hidden dense layer, in units.

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Maps (N, H, W, C) float32 images to (N, num_classes) logits.

    `train` is accepted (and ignored) so all models share one call signature.
    """
    del train
    for channels in self.features:
      x = nn.Conv(channels, (3, 3), padding="SAME")(x)
      x = max_pool_2x2(nn.relu(x))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.dense)(x))
    return nn.Dense(self.num_classes)(x)


def make(num_classes: int, features: Sequence[int] = (32, 64),
         dense: int = 128) -> nn.Module:
  """Builds a `CNN`; `features` are conv channels, `dense` the hidden width."""
  # Tuple so the module stays hashable when configs pass lists.
  return CNN(num_classes=num_classes, features=tuple(features), dense=dense)
