"""Block masking: a fraction `sed.ratio` of the `sed.block`-pixel blocks zeroed per copy.

The similar samples of Xu et al. (arXiv 2601.06938): the target with a fraction of its
`sed.block`×`sed.block` blocks zeroed, a fresh choice of blocks for each copy.
"""

from __future__ import annotations

import math

import numpy as np

from unlearn_jax.data import generators


def block_mask(image: np.ndarray, count: int, rng: np.random.Generator, *, block: int,
               ratio: float) -> tuple[np.ndarray, np.ndarray]:
  """Zeroes a fraction `ratio` of the image's block×block blocks, a fresh choice per copy.

  The image is tiled by ceil(H/block) × ceil(W/block) blocks (edge blocks may be smaller);
  exactly floor(ratio × number of blocks + 1/2) of them are zeroed in each copy.

  Returns:
    copies uint8 (count, H, W, C) and the block masks bool (count, rows, cols), True = zeroed.
  """
  height, width = image.shape[:2]
  rows, cols = -(-height // block), -(-width // block)
  num_masked = int(math.floor(ratio * rows * cols + 0.5))  # half up, not to even
  scores = rng.random((count, rows * cols))
  chosen = np.argsort(scores, axis=1)[:, :num_masked]
  masks = np.zeros((count, rows * cols), bool)
  np.put_along_axis(masks, chosen, True, axis=1)
  masks = masks.reshape(count, rows, cols)
  pixel_masks = masks.repeat(block, axis=1).repeat(block, axis=2)[:, :height, :width]
  copies = np.where(pixel_masks[..., None], 0, image[None]).astype(np.uint8)
  return copies, masks


def derive(image: np.ndarray, count: int, rng: np.random.Generator, sed_config) -> np.ndarray:
  return block_mask(image, count, rng, block=sed_config.block, ratio=sed_config.ratio)[0]


GENERATOR = generators.Generator(name="block_mask", fields=("block", "ratio"), derive=derive)
