"""One-pixel shifts: the target moved by one pixel in one of the 8 directions, per copy.

The "jittered" virtual examples of DeCoste & Schölkopf ("Training invariant support vector
machines", Machine Learning 46, 2002): a digit translated by one pixel up, down, sideways or
diagonally is the same digit, and nearly the same image. Vacated pixels are 0 and the pixels
moved past the edge are dropped. The directions are random permutations of the 8, one after
another, so up to 8 copies all differ and more copies take every direction equally often (±1).
The generator reads no `sed` field of its own.
"""

from __future__ import annotations

import numpy as np

from unlearn_jax.data import generators

# (rows down, columns right) of the 8 one-pixel moves.
DIRECTIONS = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])


def translate(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """`image` (H, W, C) moved `dy` rows down and `dx` columns right; vacated pixels are 0."""
  height, width = image.shape[:2]
  moved = np.zeros_like(image)
  moved[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = (
      image[max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)])
  return moved


def shift(image: np.ndarray, count: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """`count` one-pixel shifts of the image, directions from consecutive permutations of the 8.

  Returns:
    copies uint8 (count, H, W, C) and their moves int (count, 2): (rows down, columns right).
  """
  cycles = -(-count // len(DIRECTIONS))
  order = [int(i) for _ in range(cycles) for i in rng.permutation(len(DIRECTIONS))][:count]
  moves = DIRECTIONS[np.asarray(order, dtype=int)]
  copies = np.zeros((count,) + image.shape, np.uint8)
  for copy, (dy, dx) in zip(copies, moves):
    copy[...] = translate(image, int(dy), int(dx))
  return copies, moves


def derive(image: np.ndarray, count: int, rng: np.random.Generator, sed_config) -> np.ndarray:
  del sed_config
  return shift(image, count, rng)[0]


GENERATOR = generators.Generator(name="shift", derive=derive)
