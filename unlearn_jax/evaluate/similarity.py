"""Image similarity: SSIM of image pairs, of every target against every candidate, best matches.

Reconstruction-based verification (issue 5) scores a target as recovered when some image
reconstructed from a model's parameters is structurally similar to it, so SSIM is computed for
every (target, reconstruction) pair and each target keeps its best match.

SSIM is the standard definition of Wang, Bovik, Sheikh and Simoncelli, "Image quality assessment:
from error visibility to structural similarity" (IEEE TIP, 2004): local means, variances and
covariance under an 11×11 Gaussian window of σ = 1.5 (population statistics, no n/(n-1)
correction), K1 = 0.01, K2 = 0.03 and data range 1, so images are floats in [0, 1].

Convention at the border: the SSIM map is computed only where the whole window lies inside the
image ("valid" filtering, a (H-10)×(W-10) map) and the image's SSIM is the mean of that map, over
channels too. This is dm-pix's `ssim` and equals scikit-image's
`structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1)`, which filters the whole image with reflected borders and then averages the map
cropped by (win_size - 1) // 2 = 5 pixels on every side: exactly the pixels whose window never
reaches the reflected border. With `channel_axis` scikit-image averages the per-channel means,
which is the same mean because every channel has the same number of pixels. Images must therefore
be at least 11×11.

`ssim` calls dm-pix. `pairwise_ssim` computes the same quantity for all N×M pairs without
rebuilding each image's own statistics M (or N) times: the Gaussian filter is separable and
linear, so per image the local means and second moments are two small matrix products, and only
the cross moment E[a·b] needs one filtering per pair. It clips the statistics exactly as dm-pix
does, so `pairwise_ssim(a, b)[i, i] == ssim(a, b)[i]` up to float32 rounding.
"""

from __future__ import annotations

import functools

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax import parallel

WINDOW = 11  # Gaussian window side, in pixels.
SIGMA = 1.5  # Gaussian window standard deviation, in pixels.
K1 = 0.01
K2 = 0.03
DATA_RANGE = 1.0  # Images are floats in [0, 1].

_HIGHEST = jax.lax.Precision.HIGHEST  # Accelerators would otherwise multiply in bfloat16.


def _as_images(images: np.ndarray | jax.Array, name: str) -> jax.Array:
  """Checks that `images` is a float (N, H, W, C) batch at least WINDOW pixels on a side."""
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"{name} must be a batch of images of shape (N, H, W, C); got shape "
                     f"{images.shape}.")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"{name} must hold floats in [0, 1]; got dtype {images.dtype} "
                     "(divide uint8 images by 255).")
  height, width = images.shape[1:3]
  if height < WINDOW or width < WINDOW:
    raise ValueError(f"{name} images are {height}×{width}; SSIM needs at least "
                     f"{WINDOW}×{WINDOW} (its Gaussian window).")
  return images.astype(jnp.float32)


@jax.jit
def _ssim_dm_pix(a: jax.Array, b: jax.Array) -> jax.Array:
  return dm_pix.ssim(a, b, max_val=DATA_RANGE, filter_size=WINDOW, filter_sigma=SIGMA,
                     k1=K1, k2=K2)


def ssim(a: np.ndarray | jax.Array, b: np.ndarray | jax.Array) -> np.ndarray:
  """SSIM of each pair (a[i], b[i]) (Wang et al., 2004; conventions in the module docstring).

  Args:
    a: (N, H, W, C) float images in [0, 1], H and W at least 11.
    b: images of the same shape as `a`.

  Returns:
    (N,) float32 numpy array; 1 for identical images.

  Raises:
    ValueError: if the shapes differ or are not (N, H, W, C) with H, W ≥ 11, or the images are
      not floats.
  """
  a, b = _as_images(a, "a"), _as_images(b, "b")
  if a.shape != b.shape:
    raise ValueError(f"a and b must have the same shape; got {a.shape} and {b.shape}.")
  return np.asarray(_ssim_dm_pix(a, b))


def _window_matrix(size: int) -> jnp.ndarray:
  """(size - WINDOW + 1, size) matrix: times a column, the column's valid Gaussian filtering."""
  offsets = np.arange(WINDOW) - WINDOW // 2
  taps = np.exp(-0.5 * (offsets / SIGMA) ** 2)
  taps /= taps.sum()
  matrix = np.zeros((size - WINDOW + 1, size), np.float32)
  for row in range(size - WINDOW + 1):
    matrix[row, row:row + WINDOW] = taps
  return jnp.asarray(matrix)


def _filter(images: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
  """Valid Gaussian filtering of (..., H, W, C) images as rows @ image @ cols.T per channel."""
  return jnp.einsum("yh,...hwc,xw->...yxc", rows, images, cols, precision=_HIGHEST)


@functools.partial(jax.jit, static_argnames=("chunk",))
def _pairwise(a: jax.Array, b: jax.Array, chunk: int) -> jax.Array:
  """(N, M) SSIM; N must be a multiple of `chunk`."""
  rows, cols = _window_matrix(a.shape[1]), _window_matrix(a.shape[2])
  mu_a, mu_b = _filter(a, rows, cols), _filter(b, rows, cols)
  # Variances clipped at eps² (as dm-pix) so a constant patch does not give 0/0.
  eps = jnp.finfo(jnp.float32).eps ** 2
  var_a = jnp.maximum(eps, _filter(a * a, rows, cols) - mu_a**2)
  var_b = jnp.maximum(eps, _filter(b * b, rows, cols) - mu_b**2)
  c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2

  def one_chunk(args):
    a_chunk, mu_a_chunk, var_a_chunk = args  # (chunk, H, W, C), (chunk, h, w, C) twice.
    cross = _filter(a_chunk[:, None] * b[None], rows, cols)  # (chunk, M, h, w, C)
    mu_ab = mu_a_chunk[:, None] * mu_b[None]
    var_ab = var_a_chunk[:, None] * var_b[None]
    cov = cross - mu_ab
    # Float rounding can break Cauchy–Schwarz; clip |cov| to sqrt(var_a·var_b) like dm-pix.
    cov = jnp.sign(cov) * jnp.minimum(jnp.sqrt(var_ab), jnp.abs(cov))
    numer = (2 * mu_ab + c1) * (2 * cov + c2)
    denom = ((mu_a_chunk**2)[:, None] + (mu_b**2)[None] + c1) * (
        var_a_chunk[:, None] + var_b[None] + c2)
    return jnp.mean(numer / denom, axis=(2, 3, 4))

  split = lambda x: x.reshape((-1, chunk) + x.shape[1:])
  per_chunk = jax.lax.map(one_chunk, (split(a), split(mu_a), split(var_a)))
  return per_chunk.reshape(-1, b.shape[0])


def pairwise_ssim(a: np.ndarray | jax.Array, b: np.ndarray | jax.Array,
                  chunk: int = 8) -> np.ndarray:
  """SSIM of every a[i] against every b[j], jitted and chunked over the rows of `a`.

  Args:
    a: (N, H, W, C) float images in [0, 1] (e.g. the targets), H and W at least 11.
    b: (M, H, W, C) float images in [0, 1] (e.g. the reconstructions).
    chunk: rows of `a` compared at once; peak memory is about
      6 · chunk · M · H · W · C float32 values, so lower it for large M.

  Returns:
    (N, M) float32 numpy array with entry [i, j] = ssim(a[i], b[j]).

  Raises:
    ValueError: for non-image inputs, images of different sizes, or chunk < 1.
  """
  a, b = _as_images(a, "a"), _as_images(b, "b")
  if a.shape[1:] != b.shape[1:]:
    raise ValueError(f"a and b images must have the same (H, W, C); got {a.shape[1:]} and "
                     f"{b.shape[1:]}.")
  if chunk < 1:
    raise ValueError(f"chunk must be a positive number of rows; got {chunk}.")
  num_a = a.shape[0]
  if num_a == 0 or b.shape[0] == 0:
    return np.zeros((num_a, b.shape[0]), np.float32)
  chunk = min(chunk, num_a)
  padded = -num_a % chunk
  a = jnp.concatenate([a, jnp.zeros((padded,) + a.shape[1:], a.dtype)]) if padded else a
  # Gathered from every process when `b` is split across several (a collective then).
  return parallel.to_host(_pairwise(a, b, chunk))[:num_a]


def best_match(targets: np.ndarray | jax.Array, candidates: np.ndarray | jax.Array,
               chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
  """For each target, the candidate with the highest SSIM.

  Args:
    targets: (N, H, W, C) float images in [0, 1].
    candidates: (M, H, W, C) float images in [0, 1], M ≥ 1.
    chunk: see `pairwise_ssim`.

  Returns:
    (best_ssim, best_index): (N,) float32 SSIM of each target's best candidate and its (N,) int
    index into `candidates` (the first one on ties).

  Raises:
    ValueError: if there are no candidates, or as `pairwise_ssim`.
  """
  if np.shape(candidates)[0:1] == (0,):
    raise ValueError("best_match needs at least one candidate; got 0.")
  scores = pairwise_ssim(targets, candidates, chunk=chunk)
  best_index = np.argmax(scores, axis=1)
  return scores[np.arange(len(scores)), best_index], best_index
