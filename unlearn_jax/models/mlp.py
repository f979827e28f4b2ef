"""Multi-layer perceptron on flattened images."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  """Flatten, then `len(hidden)` Dense+ReLU layers, then a Dense to logits."""

  num_classes: int
  hidden: Sequence[int] = (256, 256)  # Width of each hidden layer, in units.

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Maps (N, H, W, C) float32 images to (N, num_classes) logits.

    `train` is accepted (and ignored) so all models share one call signature.
    """
    del train
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)


def make(num_classes: int, hidden: Sequence[int] = (256, 256)) -> nn.Module:
  """Builds an `MLP`; `hidden` lists the hidden-layer widths."""
  # Tuple so the module stays hashable when configs pass lists.
  return MLP(num_classes=num_classes, hidden=tuple(hidden))
