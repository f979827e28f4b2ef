"""Small two-block convolutional network for MNIST/CIFAR-sized images, with fast CPU gradients.

The network is (3x3 conv 'SAME' + ReLU + 2x2 max pool) per entry of `features`, then Dense +
ReLU, then Dense to logits: the same parameter tree (`Conv_i/{kernel,bias}`, `Dense_j/...`),
initialisation and outputs (up to float summation order) as the plain `nn.Conv` / `nn.max_pool`
/ `nn.Dense` stack, written so that XLA:CPU trains it ~3x faster (measurements in
benchmarks/RESULTS.md; at batch 256 on 2 cores the step went from ~260 ms to ~80 ms):

* **Convolutions on Eigen, not YNNPACK** (`parallel.EIGEN_CONVOLUTIONS_FLAG`): jaxlib's default
  runs convolutions single-threaded, and kernel gradients ~6x slower.
* **Kernel gradients written out** (`conv_same`'s custom VJP). Autodiff's kernel gradient is a
  convolution with the batch as its feature axis; XLA:CPU canonicalises its layout with
  transposes outside loops, but runs it as a naive loop inside a `lax.scan` body (~50x slower),
  which ruled out several steps per call. Here it is written in the canonical layout (any
  context), as one im2col matrix product when a call holds a single image (per-example
  gradients: a batched matrix product instead of a grouped convolution), and as im2col when
  convolutions run on YNNPACK. The input gradient is the forward convolution of the flipped
  kernel.
* **A first layer without a library convolution.** With 1-3 input channels the convolution is
  kh*kw*C broadcast multiply-adds in one fused loop (1.6 ms against 7.9 ms on MNIST at batch 256).
* **Pool before bias and ReLU.** max_pool(relu(y + b)) == relu(max_pool(y) + b) exactly (adding a
  per-channel constant and ReLU are monotone, so they commute with the max, and float rounding
  is monotone too), so the bias and the ReLU touch a quarter of the elements.
* **Pooling by reshape, with a one-pass gradient.** XLA:CPU's reduce_window backward pass is very
  slow; autodiff of the reshape + max materialises float masks and tie counts in separate
  passes.
* **Dense kernel gradients in their own layout.** Autodiff forms x^T g transposed and then copies
  it; vmapped for per-example gradients that copy of every example's (I, O) gradient dominated.

Every custom gradient is checked against autodiff of Flax's own layers, also under `vmap`,
forward-over-reverse and reverse-over-reverse (tests/test_compile.py).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from unlearn_jax import parallel

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _same_padding(size: int) -> tuple[int, int]:
  """(low, high) padding of a 'SAME' stride-1 window of `size` (lax's convention)."""
  return (size - 1) // 2, size - 1 - (size - 1) // 2


def _conv(x: jax.Array, kernel: jax.Array, padding) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_DIMENSIONS)


def patches(x: jax.Array, kernel_size: tuple[int, int]) -> jax.Array:
  """im2col: (N, H, W, kh*kw*C) windows of a 'SAME' stride-1 conv, tap-major and channel-minor.

  `patches(x, (kh, kw)) @ kernel.reshape(kh*kw*C, O)` equals the convolution with an HWIO kernel.
  """
  kh, kw = kernel_size
  _, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), _same_padding(kh), _same_padding(kw), (0, 0)))
  return jnp.concatenate([padded[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)],
                         axis=-1)


# Up to this many input channels the forward convolution is kh*kw*C broadcast multiply-adds in
# one fused loop: XLA:CPU's library convolutions are slow for 1-3 input channels (MNIST's first
# layer: 7.9 ms against 1.6 ms at batch 256 on 2 cores).
_ELEMENTWISE_MAX_CHANNELS = 3
# Kernel gradients of calls with fewer images than this use im2col (see _conv_same_bwd).
_IM2COL_MAX_IMAGES = 8


def _forward(x: jax.Array, kernel: jax.Array) -> jax.Array:
  kh, kw, channels, _ = kernel.shape
  if channels > _ELEMENTWISE_MAX_CHANNELS:
    return _conv(x, kernel, "SAME")
  _, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), _same_padding(kh), _same_padding(kw), (0, 0)))
  return sum(padded[:, i:i + h, j:j + w, c:c + 1] * kernel[i, j, c]
             for i in range(kh) for j in range(kw) for c in range(channels))


@jax.custom_vjp
def conv_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """'SAME' stride-1 convolution of NHWC `x` with an HWIO `kernel`, no bias.

  Values equal `lax.conv_general_dilated` up to float summation order; so do the gradients,
  computed with a forward convolution (input) and a kernel-gradient formula XLA:CPU runs fast.
  """
  return _forward(x, kernel)


def _conv_same_fwd(x: jax.Array, kernel: jax.Array):
  return _forward(x, kernel), (x, kernel)


def _conv_same_bwd(residuals, cotangent: jax.Array):
  x, kernel = residuals
  kh, kw = kernel.shape[:2]
  # The transpose of a 'SAME' conv is a conv with the flipped, in/out-swapped kernel and the
  # padding mirrored (low and high swap; equal for odd kernels).
  flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
  mirrored = [_same_padding(kh)[::-1], _same_padding(kw)[::-1]]
  x_grad = _conv(cotangent, flipped, mirrored)
  # YNNPACK runs the convolution form single-threaded and slowly (~130 ms for the CNN's second
  # layer at batch 256, against ~45 ms for im2col and ~20 ms for Eigen's convolution).
  # Per-example gradients (`vmap(grad)` over single images) batch x and the cotangent: the
  # convolution form then becomes a grouped convolution, slow on XLA:CPU, and im2col one batched
  # matrix product (a third of the time).
  if parallel.ynn_convolutions() or x.shape[0] < _IM2COL_MAX_IMAGES:
    kernel_grad = _kernel_grad_im2col(x, cotangent, (kh, kw))
  else:
    kernel_grad = _kernel_grad_conv(x, cotangent, (kh, kw))
  return x_grad, kernel_grad.astype(kernel.dtype)


def _kernel_grad_im2col(x: jax.Array, cotangent: jax.Array,
                        kernel_size: tuple[int, int]) -> jax.Array:
  """patches(x)^T @ cotangent: one (kh*kw*C, N*H*W) x (N*H*W, O) matrix product."""
  kh, kw = kernel_size
  channels, features = x.shape[-1], cotangent.shape[-1]
  rows = x.shape[0] * x.shape[1] * x.shape[2]
  grad = lax.dot_general(patches(x, kernel_size).reshape(rows, kh * kw * channels),
                         cotangent.reshape(rows, features), (((0,), (0,)), ((), ())))
  return grad.reshape(kh, kw, channels, features)


def _kernel_grad_conv(x: jax.Array, cotangent: jax.Array,
                      kernel_size: tuple[int, int]) -> jax.Array:
  """The kernel gradient as a convolution written in XLA:CPU's canonical layout.

  dK[i, j, c, o] = sum_{n,h,w} x_pad[n, h+i, w+j, c] * g[n, h, w, o]: a convolution of x,
  padded as the forward pass pads it (channels as batch, images as features), with g (images as
  input features, an H x W window) as the kernel.
  Autodiff emits the same convolution in another layout, which XLA:CPU canonicalises with
  transposes outside loops but runs with a naive loop inside a `lax.scan` body; written
  canonically here, it runs on Eigen's multi-threaded convolution in both.
  """
  kh, kw = kernel_size
  lhs = jnp.transpose(x, (3, 1, 2, 0))  # (C, H, W, N): batch C, features N
  rhs = jnp.transpose(cotangent, (1, 2, 0, 3))  # (H, W, N, O): an H x W window
  grad = lax.conv_general_dilated(lhs, rhs, (1, 1), [_same_padding(kh), _same_padding(kw)],
                                  dimension_numbers=_DIMENSIONS)  # (C, kh, kw, O)
  return jnp.transpose(grad, (1, 2, 0, 3))


conv_same.defvjp(_conv_same_fwd, _conv_same_bwd)


def _windows(x: jax.Array) -> jax.Array:
  """(N, H, W, C) -> (N, H//2, 2, W//2, 2, C), an odd last row/column dropped."""
  n, h, w, c = x.shape
  return x[:, :h - h % 2, :w - w % 2, :].reshape(n, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """2x2 max pool with stride 2 and 'VALID' padding on (N, H, W, C) input.

  Equal (values and gradients, absent ties) to
  `nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')`, but written as
  reshape + max because XLA:CPU's reduce_window backward pass is very slow.
  An odd last row/column is dropped, as 'VALID' pooling does. Tied maxima share the
  gradient equally (as `jnp.max` does); the backward pass is one fused elementwise pass
  instead of autodiff's materialised float masks and separate tie counts.
  """
  return _windows(x).max(axis=(2, 4))


def _max_pool_fwd(x: jax.Array):
  pooled = _windows(x).max(axis=(2, 4))
  return pooled, (x, pooled)


def _max_pool_bwd(residuals, cotangent: jax.Array):
  x, pooled = residuals
  windows = _windows(x)
  hit = windows == pooled[:, :, None, :, None, :]
  # Ties counted from the four strided corners: elementwise, so it fuses into the one pass.
  count = sum((windows[:, :, i, :, j, :] == pooled).astype(x.dtype) for i in (0, 1) for j in (0, 1))
  share = (cotangent / count)[:, :, None, :, None, :]
  grad = jnp.where(hit, share, jnp.zeros((), x.dtype)).reshape(
      x.shape[0], 2 * pooled.shape[1], 2 * pooled.shape[2], x.shape[3])
  n, h, w, c = x.shape
  return (jnp.pad(grad, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


@jax.custom_vjp
def dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x @ kernel for x (N, I) and kernel (I, O); the kernel gradient is x^T g, made as (I, O).

  Autodiff forms the kernel gradient as (O, I) and transposes it; vmapped for per-example
  gradients that is a (N, I, O) transposed copy of every example's gradient (~100 MB for the
  CNN's first dense layer at 64 examples), which took more time than all the rest.
  """
  return x @ kernel


def _dense_fwd(x: jax.Array, kernel: jax.Array):
  return x @ kernel, (x, kernel)


def _dense_bwd(residuals, cotangent: jax.Array):
  x, kernel = residuals
  return cotangent @ kernel.T, lax.dot_general(x, cotangent, (((0,), (0,)), ((), ())))


dense.defvjp(_dense_fwd, _dense_bwd)


class Dense(nn.Dense):
  """`nn.Dense` (same fields, parameters, initialisers and values) whose matmul is `dense`.

  A subclass, so code that finds a model's dense layers (e.g. remedies.detect's embeddings)
  sees it as one.
  """

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param("kernel", self.kernel_init, (inputs.shape[-1], self.features),
                        self.param_dtype)
    outputs = dense(inputs, kernel)
    if self.use_bias:
      outputs = outputs + self.param("bias", self.bias_init, (self.features,), self.param_dtype)
    return outputs


class ConvPool(nn.Module):
  """relu(max_pool_2x2(conv(x) + bias)), computed as relu(max_pool_2x2(conv(x)) + bias).

  Parameters `kernel` (kh, kw, C, features) and `bias` (features,) are created exactly as
  `nn.Conv(features, kernel_size, padding='SAME')` creates them (same names, order,
  initialisers), so a module named `Conv_i` initialises to the same values.
  """

  features: int  # Output channels.
  kernel_size: tuple[int, int] = (3, 3)  # Window (height, width), in pixels.

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    return nn.relu(max_pool_2x2(conv_same(x, kernel)) + bias)


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
    for index, channels in enumerate(self.features):
      # Named like the nn.Conv layers they replace: same parameter tree and initial values.
      x = ConvPool(channels, name=f"Conv_{index}")(x)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(Dense(self.dense, name="Dense_0")(x))
    return Dense(self.num_classes, name="Dense_1")(x)


def make(num_classes: int, features: Sequence[int] = (32, 64),
         dense: int = 128) -> nn.Module:
  """Builds a `CNN`; `features` are conv channels, `dense` the hidden width."""
  # Tuple so the module stays hashable when configs pass lists.
  return CNN(num_classes=num_classes, features=tuple(features), dense=dense)
