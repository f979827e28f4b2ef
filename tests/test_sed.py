"""Tests for unlearn_jax.data.sed and its derived-image generators (block_mask, duplicate,
gaussian_noise): SED provenance, the generators, validation.

Every test builds tiny synthetic splits in memory (60 training images, 20 test images), so nothing
is read from tfds.
"""

import os

import numpy as np
import pytest

from unlearn_jax import config as config_lib
from unlearn_jax import defaults
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.data.generators import block_mask as block_mask_lib
from unlearn_jax.data.generators import duplicate as duplicate_lib
from unlearn_jax.data.generators import gaussian_noise as gaussian_noise_lib

NUM_TRAIN, NUM_TEST, NUM_CLASSES, SIDE = 60, 20, 10, 28
ID_OFFSET = 1000  # training ids are a shuffled 1000..1059, so ids never equal row indices


def make_splits(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
  """Random 28x28x1 uint8 images, 6 examples of each class, shuffled ids with an offset."""
  rng = np.random.default_rng(seed)
  train = {
      "image": rng.integers(0, 256, (NUM_TRAIN, SIDE, SIDE, 1), dtype=np.uint8),
      "label": rng.permutation(np.arange(NUM_TRAIN) % NUM_CLASSES).astype(np.int32),
      "id": (rng.permutation(NUM_TRAIN) + ID_OFFSET).astype(np.int64),
  }
  test = {
      "image": rng.integers(0, 256, (NUM_TEST, SIDE, SIDE, 1), dtype=np.uint8),
      "label": (np.arange(NUM_TEST) % NUM_CLASSES).astype(np.int32),
      "id": np.arange(NUM_TEST, dtype=np.int64),
  }
  return {"train": train, "test": test}


def sed_config(**overrides):
  """`base_config().sed` with small, non-default values (and any overrides)."""
  config = defaults.base_config().sed
  config.num_targets = 5
  config.similar_per_target = 3
  config.block = 4
  config.ratio = 0.25
  config.seed = 7
  for key, value in overrides.items():
    config[key] = value
  return config


@pytest.fixture(scope="module")
def splits():
  return make_splits()


@pytest.fixture(scope="module")
def sed(splits):
  return sed_lib.build(splits, sed_config())


def ids_of(arrays) -> np.ndarray:
  return np.sort(arrays["id"])


# ----------------------------------------------------------------------------------------------
# Provenance.


def test_sizes_and_dtypes(sed):
  train = sed.train
  assert len(train["id"]) == NUM_TRAIN + 5 * 3
  assert train["image"].dtype == np.uint8 and train["image"].shape[1:] == (SIDE, SIDE, 1)
  assert train["label"].dtype == np.int32
  assert train["id"].dtype == np.int64 and train["group"].dtype == np.int64
  assert train["kind"].dtype == np.int8
  counts = np.bincount(train["kind"], minlength=3)
  np.testing.assert_array_equal(counts, [5, 15, NUM_TRAIN - 5])
  assert len(sed.target_ids) == 5 and len(set(sed.target_ids.tolist())) == 5


def test_retain_is_exactly_d_minus_targets(sed):
  all_ids = sed.train["id"]
  assert len(np.unique(all_ids)) == len(all_ids)  # ids identify examples
  expected = np.setdiff1d(all_ids, sed.target_ids)
  np.testing.assert_array_equal(ids_of(sed.retain), expected)
  assert set(sed.retain["kind"].tolist()) == {sed_lib.SIMILAR, sed_lib.REST}
  np.testing.assert_array_equal(ids_of(sed.forget), np.sort(sed.target_ids))


def test_rest_is_d_minus_targets_minus_similar(sed):
  all_ids = sed.train["id"]
  similar_ids = all_ids[sed.train["kind"] == sed_lib.SIMILAR]
  expected = np.setdiff1d(np.setdiff1d(all_ids, sed.target_ids), similar_ids)
  np.testing.assert_array_equal(ids_of(sed.rest), expected)
  assert len(expected) == NUM_TRAIN - 5
  assert np.all(sed.rest["kind"] == sed_lib.REST)
  assert np.all(sed.rest["group"] == -1)


def test_similar_samples_belong_to_a_target_with_its_label(sed):
  train = sed.train
  label_of = dict(zip(train["id"].tolist(), train["label"].tolist()))
  similar = sed.select(sed_lib.SIMILAR)
  assert set(similar["group"].tolist()) <= set(sed.target_ids.tolist())
  for target_id in sed.target_ids.tolist():
    in_group = similar["group"] == target_id
    assert in_group.sum() == 3
    np.testing.assert_array_equal(similar["label"][in_group], label_of[target_id])


def test_similar_images_derive_from_their_own_target(sed):
  # block_mask copies agree with their target wherever they are not zeroed, and lose pixels.
  train = sed.train
  image_of = {int(i): image for i, image in zip(train["id"], train["image"])}
  similar = sed.select(sed_lib.SIMILAR)
  for image, group in zip(similar["image"], similar["group"]):
    target = image_of[int(group)]
    changed = image != target
    assert changed.any()
    assert np.all(image[changed] == 0)
    # 12 of the 49 4x4 blocks are zeroed: at most 12*16 pixels change.
    assert changed.sum() <= 12 * 16


def test_targets_group_is_their_own_id(sed):
  targets = sed.forget
  np.testing.assert_array_equal(targets["group"], targets["id"])
  assert np.all(targets["kind"] == sed_lib.TARGET)


def test_similar_ids_are_fresh_and_unique(sed, splits):
  similar_ids = sed.select(sed_lib.SIMILAR)["id"]
  assert len(np.unique(similar_ids)) == len(similar_ids) == 15
  assert not set(similar_ids.tolist()) & set(splits["train"]["id"].tolist())
  # Documented: fresh ids above every training id.
  assert similar_ids.min() > splits["train"]["id"].max()


def test_original_examples_keep_id_label_and_image(sed, splits):
  train = splits["train"]
  row_of = {int(i): row for row, i in enumerate(sed.train["id"])}
  for row, example_id in enumerate(train["id"].tolist()):
    sed_row = row_of[example_id]
    assert sed.train["label"][sed_row] == train["label"][row]
    np.testing.assert_array_equal(sed.train["image"][sed_row], train["image"][row])
  for key in ("image", "label", "id"):
    np.testing.assert_array_equal(sed.test[key], splits["test"][key])


def test_no_similar_samples_makes_rest_equal_retain(splits):
  sed = sed_lib.build(splits, sed_config(similar_per_target=0))
  assert len(sed.train["id"]) == NUM_TRAIN
  np.testing.assert_array_equal(ids_of(sed.rest), ids_of(sed.retain))
  assert len(sed.forget["id"]) == 5


# ----------------------------------------------------------------------------------------------
# Generators.


def expected_pixel_mask(block_mask: np.ndarray, block: int, height: int, width: int):
  """Pixel mask from a (rows, cols) block mask, built block by block (edge blocks cropped)."""
  pixels = np.zeros((height, width), bool)
  for i, j in zip(*np.nonzero(block_mask)):
    pixels[i * block:min((i + 1) * block, height), j * block:min((j + 1) * block, width)] = True
  return pixels


@pytest.mark.parametrize("block, ratio, rows", [
    (4, 0.25, 7),   # 49 blocks, 12 zeroed
    (5, 0.25, 6),   # 28 is not a multiple of 5: 36 blocks, edge blocks 3 pixels wide, 9 zeroed
    (5, 0.6, 6),    # 21.6 -> 22 zeroed
    (28, 0.4, 1),   # one block: round(0.4) = 0 zeroed
])
def test_block_mask_zeroes_exactly_round_r_blocks(block, ratio, rows):
  image = np.full((SIDE, SIDE, 1), 255, np.uint8)
  copies, masks = block_mask_lib.block_mask(image, 6, np.random.default_rng(0), block=block,
                                            ratio=ratio)
  num_masked = int(round(ratio * rows * rows))
  assert copies.dtype == np.uint8 and copies.shape == (6, SIDE, SIDE, 1)
  assert masks.dtype == bool and masks.shape == (6, rows, rows)
  np.testing.assert_array_equal(masks.reshape(6, -1).sum(axis=1), num_masked)
  for copy, mask in zip(copies, masks):
    pixels = expected_pixel_mask(mask, block, SIDE, SIDE)
    np.testing.assert_array_equal(copy[..., 0] == 0, pixels)
    np.testing.assert_array_equal(copy[..., 0][~pixels], 255)


def test_block_mask_edge_blocks_are_cropped():
  # 28 = 5*5 + 3: the last row/column of blocks covers 3 pixels, so the zeroed pixel count
  # depends on which blocks were chosen; check it against the block areas.
  image = np.full((SIDE, SIDE, 1), 255, np.uint8)
  copies, masks = block_mask_lib.block_mask(image, 20, np.random.default_rng(1), block=5, ratio=0.5)
  side = np.array([5] * 5 + [3])
  areas = side[:, None] * side[None, :]
  for copy, mask in zip(copies, masks):
    assert (copy == 0).sum() == areas[mask].sum()
  # Over 20 copies some edge block is chosen (all 11 edge blocks avoided: p ~ 1e-5 per copy).
  assert masks[:, -1, :].any() or masks[:, :, -1].any()


def test_block_mask_ratio_zero_gives_exact_copies():
  image = np.random.default_rng(2).integers(0, 256, (SIDE, SIDE, 1), dtype=np.uint8)
  copies, masks = block_mask_lib.block_mask(image, 4, np.random.default_rng(0), block=5, ratio=0.0)
  assert not masks.any()
  np.testing.assert_array_equal(copies, np.repeat(image[None], 4, axis=0))


def test_block_mask_keeps_unmasked_pixels_and_zeroes_every_channel():
  image = np.random.default_rng(3).integers(1, 256, (SIDE, SIDE, 3), dtype=np.uint8)
  copies, masks = block_mask_lib.block_mask(image, 3, np.random.default_rng(0), block=4, ratio=0.5)
  for copy, mask in zip(copies, masks):
    pixels = expected_pixel_mask(mask, 4, SIDE, SIDE)
    assert np.all(copy[pixels] == 0)
    np.testing.assert_array_equal(copy[~pixels], image[~pixels])


def test_block_mask_fresh_choice_per_copy():
  image = np.full((SIDE, SIDE, 1), 255, np.uint8)
  copies, masks = block_mask_lib.block_mask(image, 10, np.random.default_rng(0), block=4,
                                            ratio=0.25)
  # C(49, 12) ~ 9e10 choices: ten copies with a fresh choice each are pairwise different.
  assert len({mask.tobytes() for mask in masks}) == 10
  assert len({copy.tobytes() for copy in copies}) == 10


def test_duplicate_gives_exact_copies(splits):
  image = splits["train"]["image"][0]
  copies = duplicate_lib.duplicate(image, 4, np.random.default_rng(0))
  assert copies.dtype == np.uint8 and copies.shape == (4,) + image.shape
  np.testing.assert_array_equal(copies, np.repeat(image[None], 4, axis=0))

  sed = sed_lib.build(splits, sed_config(generator="duplicate"))
  image_of = {int(i): im for i, im in zip(sed.train["id"], sed.train["image"])}
  similar = sed.select(sed_lib.SIMILAR)
  for image, group in zip(similar["image"], similar["group"]):
    np.testing.assert_array_equal(image, image_of[int(group)])


def test_gaussian_noise_has_requested_std_and_stays_uint8():
  image = np.full((SIDE, SIDE, 1), 128, np.uint8)
  copies = gaussian_noise_lib.gaussian_noise(image, 50, np.random.default_rng(0), sigma=0.05)
  assert copies.dtype == np.uint8 and copies.shape == (50, SIDE, SIDE, 1)
  diff = copies.astype(np.float64) - 128.0
  # sigma is in [0, 1] intensity units: 0.05 * 255 = 12.75 grey levels (39,200 samples).
  assert abs(diff.std() - 0.05 * 255) < 0.02 * 0.05 * 255
  assert abs(diff.mean()) < 0.5
  assert (diff != 0).mean() > 0.9
  # Copies differ from each other (fresh noise per copy).
  assert not np.array_equal(copies[0], copies[1])


def test_gaussian_noise_clips_instead_of_wrapping():
  image = np.full((SIDE, SIDE, 1), 250, np.uint8)
  copies = gaussian_noise_lib.gaussian_noise(image, 20, np.random.default_rng(0), sigma=0.1)
  # Wrapping 260 to 4 would put values far below 250 - 6 sigma = 97.
  assert copies.min() > 250 - 6 * 25.5
  assert copies.max() == 255


def test_build_uses_sigma_of_the_config(splits):
  small = sed_lib.build(splits, sed_config(generator="gaussian_noise", sigma=0.01))
  large = sed_lib.build(splits, sed_config(generator="gaussian_noise", sigma=0.2))

  def noise_std(sed):
    image_of = {int(i): im for i, im in zip(sed.train["id"], sed.train["image"])}
    similar = sed.select(sed_lib.SIMILAR)
    diffs = [im.astype(float) - image_of[int(g)] for im, g in zip(similar["image"],
                                                                   similar["group"])]
    return np.std(diffs)

  # Random images clip often, so only compare the two: 0.01*255 = 2.55 vs 0.2*255 = 51.
  assert noise_std(small) < 3.0 < 20.0 < noise_std(large)


# ----------------------------------------------------------------------------------------------
# Determinism and target selection.


def test_same_seed_same_sed(splits):
  first = sed_lib.build(splits, sed_config(seed=3))
  second = sed_lib.build(splits, sed_config(seed=3))
  np.testing.assert_array_equal(first.target_ids, second.target_ids)
  for key in first.train:
    np.testing.assert_array_equal(first.train[key], second.train[key])


def test_different_seed_different_targets(splits):
  first = sed_lib.build(splits, sed_config(seed=3))
  second = sed_lib.build(splits, sed_config(seed=4))
  assert set(first.target_ids.tolist()) != set(second.target_ids.tolist())


def test_class_balanced_selection_spreads_targets(splits):
  sed = sed_lib.build(splits, sed_config(num_targets=10, selection="class_balanced"))
  np.testing.assert_array_equal(np.sort(sed.forget["label"]), np.arange(10))
  sed = sed_lib.build(splits, sed_config(num_targets=20, selection="class_balanced"))
  np.testing.assert_array_equal(np.bincount(sed.forget["label"], minlength=10), [2] * 10)


def test_class_balanced_selection_with_unequal_classes():
  labels = np.array([0] * 8 + [1] * 2 + [2] * 1)
  rows = sed_lib.choose_targets(labels, 6, "class_balanced", np.random.default_rng(0))
  assert len(set(rows.tolist())) == 6
  # Round robin: 0,1,2, then 0,1, then 0.
  np.testing.assert_array_equal(np.bincount(labels[rows], minlength=3), [3, 2, 1])


# ----------------------------------------------------------------------------------------------
# Validation.


@pytest.mark.parametrize("field, value", [
    ("ratio", 1.0),
    ("ratio", -0.1),
    ("block", 0),
    ("block", SIDE + 1),
    ("num_targets", NUM_TRAIN + 1),
    ("num_targets", 0),
    ("similar_per_target", -1),
    ("generator", "blur"),
    ("selection", "atypicall"),
])
def test_invalid_parameters_raise_config_error_naming_the_field(splits, field, value):
  with pytest.raises(config_lib.ConfigError, match=rf"sed\.{field}") as info:
    sed_lib.build(splits, sed_config(**{field: value}))
  assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("field, value", [
    ("ratio", 0.0), ("block", SIDE), ("num_targets", NUM_TRAIN), ("similar_per_target", 0)])
def test_boundary_parameters_are_accepted(splits, field, value):
  sed = sed_lib.build(splits, sed_config(**{field: value}))
  assert len(sed.target_ids) == (NUM_TRAIN if field == "num_targets" else 5)


def test_unknown_generator_lists_the_allowed_ones():
  with pytest.raises(config_lib.ConfigError, match="block_mask, duplicate, gaussian_noise"):
    sed_lib.check_params(sed_config(generator="blur"))


# ----------------------------------------------------------------------------------------------
# stratified_subset.


def test_stratified_subset_keeps_class_proportions_and_size():
  rng = np.random.default_rng(0)
  labels = rng.permutation(np.repeat([0, 1, 2], [30, 20, 10])).astype(np.int32)
  split = {"label": labels, "id": np.arange(60, dtype=np.int64) + 500,
           "image": np.arange(60, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1),
                                                                               np.uint8)}
  subset = sed_lib.stratified_subset(split, 30, seed=1)
  assert len(subset["label"]) == 30
  np.testing.assert_array_equal(np.bincount(subset["label"]), [15, 10, 5])
  assert len(np.unique(subset["id"])) == 30
  # Rows stay aligned: each kept example has its own label and image.
  rows = subset["id"] - 500
  np.testing.assert_array_equal(subset["label"], labels[rows])
  np.testing.assert_array_equal(subset["image"][:, 0, 0, 0], rows)


def test_stratified_subset_rounding_and_determinism():
  labels = np.repeat([0, 1, 2], [7, 7, 6]).astype(np.int32)
  split = {"label": labels, "id": np.arange(20, dtype=np.int64)}
  subset = sed_lib.stratified_subset(split, 10, seed=0)
  counts = np.bincount(subset["label"], minlength=3)
  assert counts.sum() == 10
  assert np.all(np.abs(counts - np.array([3.5, 3.5, 3.0])) <= 0.5)
  again = sed_lib.stratified_subset(split, 10, seed=0)
  np.testing.assert_array_equal(subset["id"], again["id"])


@pytest.mark.parametrize("size", [0, 20, 25])
def test_stratified_subset_zero_or_too_large_keeps_everything(size):
  split = {"label": np.arange(20) % 3, "id": np.arange(20)}
  subset = sed_lib.stratified_subset(split, size, seed=0)
  np.testing.assert_array_equal(subset["id"], split["id"])


# ----------------------------------------------------------------------------------------------
# Provenance on disk.


def test_provenance_round_trip(sed, tmp_path):
  path = os.path.join(tmp_path, "data", "provenance.npz")
  sed_lib.save_provenance(sed, path)
  loaded = sed_lib.load_provenance(path)
  expected = sed_lib.provenance(sed)
  assert loaded.keys() == expected.keys()
  for key in expected:
    np.testing.assert_array_equal(loaded[key], expected[key])
  num_d = len(sed.train["id"])
  np.testing.assert_array_equal(loaded["id"][:num_d], sed.train["id"])
  np.testing.assert_array_equal(loaded["id"][num_d:], sed.test["id"])
  np.testing.assert_array_equal(loaded["group"][:num_d], sed.train["group"])
  np.testing.assert_array_equal(loaded["split"], [0] * num_d + [1] * NUM_TEST)
  assert list(loaded["kind_names"]) == ["target", "similar", "rest"]
  # Saving the same SED again is accepted.
  sed_lib.save_provenance(sed, path)


def test_saving_a_different_sed_to_the_same_path_raises(sed, splits, tmp_path):
  path = os.path.join(tmp_path, "data", "provenance.npz")
  sed_lib.save_provenance(sed, path)
  other = sed_lib.build(splits, sed_config(seed=8))
  with pytest.raises(RuntimeError, match="different SED"):
    sed_lib.save_provenance(other, path)
  # The file on disk still describes the first SED.
  np.testing.assert_array_equal(sed_lib.load_provenance(path)["kind"],
                                sed_lib.provenance(sed)["kind"])


def test_save_provenance_to_a_bare_file_name(sed, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  sed_lib.save_provenance(sed, "provenance.npz")
  assert os.path.exists(tmp_path / "provenance.npz")


def test_atypical_selection_takes_the_lowest_scores():

  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 50)
  scores = np.full(50, np.nan)
  scores[25:] = rng.normal(size=25)
  rows = sed_lib.choose_targets(labels, 4, "atypical", np.random.default_rng(1), scores)
  np.testing.assert_array_equal(np.sort(rows), np.sort(25 + np.argsort(scores[25:])[:4]))
  with pytest.raises(ValueError, match="candidates"):
    sed_lib.choose_targets(labels, 30, "atypical", np.random.default_rng(1), scores)
  with pytest.raises(ValueError, match="atypicality"):
    sed_lib.choose_targets(labels, 3, "atypical", np.random.default_rng(1))

