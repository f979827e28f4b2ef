"""Gaussian noise: the target plus noise of std `sed.sigma` ([0, 1] intensity), fresh per copy.

The noisy image is rounded and clipped to uint8 (it never wraps around).
"""

from __future__ import annotations

import numpy as np

from unlearn_jax.data import generators


def gaussian_noise(image: np.ndarray, count: int, rng: np.random.Generator, *,
                   sigma: float) -> np.ndarray:
  """Adds N(0, sigma²) noise in [0, 1] intensity units, then rounds and clips to uint8."""
  noise = rng.normal(0.0, sigma * 255.0, size=(count,) + image.shape)
  return np.clip(np.rint(image[None].astype(np.float64) + noise), 0, 255).astype(np.uint8)


def derive(image: np.ndarray, count: int, rng: np.random.Generator, sed_config) -> np.ndarray:
  return gaussian_noise(image, count, rng, sigma=sed_config.sigma)


GENERATOR = generators.Generator(name="gaussian_noise", fields=("sigma",), derive=derive)
