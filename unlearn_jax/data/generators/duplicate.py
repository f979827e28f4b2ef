"""Exact copies of the target."""

from __future__ import annotations

import numpy as np

from unlearn_jax.data import generators


def duplicate(image: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
  """Exact copies of the image."""
  del rng
  return np.repeat(image[None], count, axis=0)


def derive(image: np.ndarray, count: int, rng: np.random.Generator, sed_config) -> np.ndarray:
  del sed_config
  return duplicate(image, count, rng)


GENERATOR = generators.Generator(name="duplicate", derive=derive)
