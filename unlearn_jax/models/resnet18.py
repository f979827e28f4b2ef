"""CIFAR-variant ResNet-18 (He et al. 2016) with BatchNorm.

Differences from the ImageNet ResNet-18: the stem is a single 3x3 conv with
stride 1 and there is no stem max-pool, so 32x32 inputs keep enough spatial
resolution. BatchNorm statistics live in the `batch_stats` collection.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

# torchvision's ResNet init (kaiming normal, fan_out); flax's default
# lecun_normal under-scales ReLU networks this deep.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

_STAGE_STRIDES = (1, 2, 2, 2)
_BLOCKS_PER_STAGE = 2


class BasicBlock(nn.Module):
  """Two 3x3 conv+BN layers with an identity or 1x1-conv+BN shortcut."""

  channels: int
  strides: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """Applies the block; `train` selects batch vs. running statistics."""
    conv = functools.partial(nn.Conv, use_bias=False, kernel_init=_conv_init)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5)
    y = conv(self.channels, (3, 3), strides=self.strides, padding=1)(x)
    y = nn.relu(norm()(y))
    y = conv(self.channels, (3, 3), padding=1)(y)
    y = norm()(y)
    if self.strides != 1 or x.shape[-1] != self.channels:
      x = conv(self.channels, (1, 1), strides=self.strides, name="shortcut_conv")(x)
      x = norm(name="shortcut_bn")(x)
    return nn.relu(x + y)


class ResNet18(nn.Module):
  """CIFAR ResNet-18: stem, 4 stages of 2 BasicBlocks, global mean, Dense."""

  num_classes: int
  width: int = 64  # Channels of the stem and first stage; doubled per stage.

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Maps (N, H, W, C) float32 images to (N, num_classes) logits.

    With `train=True` BatchNorm uses batch statistics and updates
    `batch_stats`, so call `apply(..., mutable=['batch_stats'])`.
    """
    x = nn.Conv(self.width, (3, 3), padding=1, use_bias=False,
                kernel_init=_conv_init, name="stem_conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     epsilon=1e-5, name="stem_bn")(x)
    x = nn.relu(x)
    for stage, stage_strides in enumerate(_STAGE_STRIDES):
      channels = self.width * 2**stage
      for block in range(_BLOCKS_PER_STAGE):
        strides = stage_strides if block == 0 else 1
        x = BasicBlock(channels, strides,
                       name=f"stage{stage + 1}_block{block}")(x, train)
    # A mean rather than nn.avg_pool: works for any final spatial size.
    x = x.mean(axis=(1, 2))
    return nn.Dense(self.num_classes, name="head")(x)


def make(num_classes: int, width: int = 64) -> nn.Module:
  """Builds a `ResNet18`; `width` is the base channel count (64 standard)."""
  return ResNet18(num_classes=num_classes, width=width)
