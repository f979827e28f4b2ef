"""Tests for the `shift` SED generator (data/generators/shift.py): one-pixel translations."""

import numpy as np

from test_sed import make_splits, sed_config
from unlearn_jax import config as config_lib
from unlearn_jax.data import generators
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.data.generators import shift as shift_lib

SIDE = 28


def reference_shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """The image moved by (dy, dx) through a zero-padded copy: row r of the result is row r - dy."""
  padded = np.pad(image, ((1, 1), (1, 1), (0, 0)))
  return padded[1 - dy:1 - dy + image.shape[0], 1 - dx:1 - dx + image.shape[1]]


def test_is_registered_as_a_derived_generator_without_fields():
  assert "shift" in generators.names() and "shift" in config_lib.GENERATORS
  generator = generators.get("shift")
  assert not generator.selects_rows and generator.fields == ()
  sed_lib.check_params(sed_config(generator="shift"))


def test_each_copy_is_its_image_moved_by_one_pixel():
  image = np.random.default_rng(0).integers(1, 256, (SIDE, SIDE, 3), dtype=np.uint8)
  copies, moves = shift_lib.shift(image, 20, np.random.default_rng(1))
  assert copies.dtype == np.uint8 and copies.shape == (20, SIDE, SIDE, 3)
  assert np.all(np.abs(moves) <= 1) and np.all(np.abs(moves).sum(axis=1) >= 1)
  for copy, (dy, dx) in zip(copies, moves):
    np.testing.assert_array_equal(copy, reference_shift(image, dy, dx))
    # The vacated row or column is 0; nothing else is (the image has no zero pixel).
    assert (copy == 0).all(axis=-1).sum() == SIDE * (abs(dy) + abs(dx)) - abs(dy * dx)


def test_directions_cycle_through_all_eight():
  image = np.zeros((SIDE, SIDE, 1), np.uint8)
  _, moves = shift_lib.shift(image, 20, np.random.default_rng(2))
  as_tuples = [tuple(move) for move in moves.tolist()]
  assert len(set(as_tuples[:8])) == 8 and len(set(as_tuples[8:16])) == 8
  counts = [as_tuples.count(tuple(d)) for d in shift_lib.DIRECTIONS.tolist()]
  assert sorted(counts) == [2] * 4 + [3] * 4


def test_a_centred_digit_keeps_its_pixels():
  image = np.zeros((SIDE, SIDE, 1), np.uint8)
  image[8:20, 10:18] = 200  # away from the border: a shift moves, never crops
  copies, _ = shift_lib.shift(image, 8, np.random.default_rng(3))
  assert all(int(copy.sum()) == int(image.sum()) for copy in copies)
  assert len({copy.tobytes() for copy in copies}) == 8
  assert not any(np.array_equal(copy, image) for copy in copies)


def test_build_appends_shifted_copies_of_each_target():
  splits = make_splits()
  sed = sed_lib.build(splits, sed_config(generator="shift", similar_per_target=4))
  image_of = {int(i): im for i, im in zip(sed.train["id"], sed.train["image"])}
  similar = sed.select(sed_lib.SIMILAR)
  assert len(similar["id"]) == 4 * len(sed.target_ids)
  for image, group in zip(similar["image"], similar["group"]):
    target = image_of[int(group)]
    assert any(np.array_equal(image, reference_shift(target, dy, dx))
               for dy, dx in shift_lib.DIRECTIONS.tolist())
  again = sed_lib.build(splits, sed_config(generator="shift", similar_per_target=4))
  np.testing.assert_array_equal(sed.train["image"], again.train["image"])
