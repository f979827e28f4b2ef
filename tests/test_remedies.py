"""Tests for unlearn_jax.remedies: similarity scores, neighbour rules, precision/recall, weights,
and the distributional-unlearning removal rule.

References never reuse the code under test: numpy pixel cosines, scikit-image's SSIM, embeddings
read from the models' parameters (MLP) or Flax's `capture_intermediates` (CNN), per-example
gradients from `jax.grad` one example at a time, and hand-made cases for the rules. The SED is a
tiny block-masked one built from the embedded MNIST subset (real digits).
"""

import functools
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from skimage.metrics import structural_similarity

from devices import run_on_cpu_devices

from unlearn_jax import defaults, models, train
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.data import sources
from unlearn_jax.remedies import detect
from unlearn_jax.remedies import select as select_lib

NUM_CLASSES = 10
BATCH = 64  # candidates per chunk in the MNIST tests (one shape, so one compile per measure)
reference_ssim = functools.partial(structural_similarity, gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False, data_range=1.0, channel_axis=-1)


@pytest.fixture(scope="module")
def mnist_sed(tfds_data_dir):
  """A block-masked SED (b=4, r=0.25) over 200 real digits: 5 targets × 6 similar samples."""
  splits = sources.load("mnist_subset", data_dir=tfds_data_dir)
  # The split is sorted by class: a stratified draw gives every digit.
  small = {"train": sed_lib.stratified_subset(splits["train"], 200, seed=0),
           "test": sed_lib.stratified_subset(splits["test"], 20, seed=0)}
  config = defaults.base_config().sed
  config.num_targets, config.similar_per_target = 5, 6
  config.block, config.ratio, config.seed = 4, 0.25, 3
  return sed_lib.build(small, config)


def _candidates(sed):
  """Every training example that is not a target (similar samples and the rest)."""
  keep = sed.train["kind"] != sed_lib.TARGET
  return {key: value[keep] for key, value in sed.train.items()}


def _cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return (a @ b.T) / np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))


def _brute_force_precision_recall(selected, group, target_ids):
  """Loops over targets and candidates; returns (mean precision, mean recall)."""
  precisions, recalls = [], []
  for row, target in enumerate(target_ids):
    chosen = [n for n in range(len(group)) if selected[row, n]]
    truth = [n for n in range(len(group)) if group[n] == target]
    hits = len(set(chosen) & set(truth))
    if chosen:
      precisions.append(hits / len(chosen))
    if truth:
      recalls.append(hits / len(truth))
  return np.mean(precisions), np.mean(recalls)


# ----------------------------------------------------------------------------------------------
# Pixel cosine and SSIM on real digits.


@pytest.mark.parametrize("centre", [True, False])
def test_pixel_cosine_matches_numpy(mnist_sed, centre):
  targets, candidates = mnist_sed.forget, _candidates(mnist_sed)
  # BATCH does not divide the 225 candidates: the padded last chunk is exercised.
  got = detect.scores("pixel_cosine", targets["image"], candidates["image"], batch_size=BATCH,
                      centre_pixels=centre)
  flat = lambda images: images.reshape(len(images), -1) / 255.0
  a, b = flat(targets["image"]), flat(candidates["image"])
  if centre:
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
  assert got.shape == (5, 225) and got.dtype == np.float32
  np.testing.assert_allclose(got, _cosine_matrix(a, b), atol=1e-5)


def test_ssim_scores_match_scikit_image(mnist_sed):
  targets, candidates = mnist_sed.forget, _candidates(mnist_sed)
  images = candidates["image"][-60:]  # the 30 similar samples and 30 unrelated digits
  got = detect.scores("ssim", targets["image"], images, batch_size=BATCH)
  expected = np.array([[reference_ssim(t / 255.0, c / 255.0) for c in images]
                       for t in targets["image"]])
  np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("measure, tau", [("pixel_cosine", 0.6), ("ssim", 0.5)])
def test_block_masked_copies_are_detected(mnist_sed, measure, tau):
  targets, candidates = mnist_sed.forget, _candidates(mnist_sed)
  similarity = detect.scores(measure, targets["image"], candidates["image"], batch_size=BATCH)
  selected = detect.select(similarity, tau=tau)
  result = detect.precision_recall(selected, candidates["group"], targets["id"])
  # Measured on this SED: recall 1.0 for both; mean precision 0.62 (pixel) and 0.75 (SSIM):
  # other digits of a target's class look alike too (two targets are 1s).
  assert result["mean_recall"] >= 0.95 and result["micro_recall"] >= 0.95
  assert result["num_similar"].tolist() == [6] * 5
  precision, recall = _brute_force_precision_recall(selected, candidates["group"], targets["id"])
  assert result["mean_precision"] == pytest.approx(precision, abs=1e-12)
  assert result["mean_recall"] == pytest.approx(recall, abs=1e-12)
  # Each target's own copies outrank the unrelated digits on average.
  truth = candidates["group"][None] == targets["id"][:, None]
  assert similarity[truth].mean() > similarity[~truth].mean() + 0.2


# ----------------------------------------------------------------------------------------------
# Embedding and gradient cosines against per-example references.


def _tiny_state(name: str, seed: int = 0) -> train.TrainState:
  kwargs = {"mlp": {"hidden": (16, 12)}, "cnn": {"features": (4,), "dense": 8}}[name]
  model = models.get(name, NUM_CLASSES, **kwargs)
  return train.create_state(model, jax.random.key(seed), (28, 28, 1))


def _reference_embedding(name: str, state: train.TrainState, images: np.ndarray) -> np.ndarray:
  """The penultimate activations, one image at a time, without the code under test."""
  rows = []
  for image in images:
    x = image[None].astype(np.float64) / 255.0
    if name == "mlp":  # relu(... relu(x W0 + b0) ... W1 + b1), straight from the parameters
      h = x.reshape(1, -1)
      for layer in ("Dense_0", "Dense_1"):
        params = state.params[layer]
        h = np.maximum(h @ np.asarray(params["kernel"], np.float64) + np.asarray(params["bias"]),
                       0.0)
    else:  # the CNN's hidden Dense output, captured by Flax, through the ReLU
      h = np.maximum(np.asarray(_captured_dense_0(state.apply_fn, state.variables(),
                                                  jnp.asarray(x, jnp.float32))), 0.0)
    rows.append(h[0])
  return np.stack(rows)


@functools.partial(jax.jit, static_argnums=0)
def _captured_dense_0(apply_fn, variables, image):
  _, captured = apply_fn(variables, image, capture_intermediates=True)
  return captured["intermediates"]["Dense_0"]["__call__"][0]


@functools.partial(jax.jit, static_argnums=0)
def _example_grad(apply_fn, params, image, label):
  def loss(params):
    logits = apply_fn({"params": params}, jnp.asarray(image[None], jnp.float32) / 255.0)
    return optax.softmax_cross_entropy_with_integer_labels(logits, label[None])[0]

  return jax.grad(loss)(params)


def _reference_gradients(state: train.TrainState, images: np.ndarray, labels: np.ndarray,
                         last_only: bool) -> np.ndarray:
  """Flattened ∇θ cross-entropy, one example at a time with jax.grad."""

  rows = []
  for image, label in zip(images, labels):  # one example at a time
    grads = _example_grad(state.apply_fn, state.params, image, jnp.asarray(label))
    if last_only:  # the head is the last Dense: Dense_2 of the MLP (16, 12), Dense_1 of the CNN
      head = sorted(key for key in grads if key.startswith("Dense_"))[-1]
      grads = grads[head]
    rows.append(np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(grads)]))
  return np.stack(rows)


@pytest.fixture(scope="module")
def pairs(mnist_sed):
  """7 targets/anchors and 11 candidates with labels (a few of each kind)."""
  train_split = mnist_sed.train
  rows = np.r_[np.flatnonzero(train_split["kind"] == sed_lib.TARGET),
               np.flatnonzero(train_split["kind"] == sed_lib.SIMILAR)[::6][:2]]
  other = np.r_[np.flatnonzero(train_split["kind"] == sed_lib.SIMILAR)[1::5][:5],
                np.flatnonzero(train_split["kind"] == sed_lib.REST)[:6]]
  pick = lambda index: (train_split["image"][index], train_split["label"][index])
  return pick(rows), pick(other)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_embedding_cosine_matches_per_example_reference(pairs, name):
  (targets, _), (candidates, _) = pairs
  state = _tiny_state(name)
  # batch_size 4: targets and candidates both span several chunks, the last ones padded.
  got = detect.scores("embedding", targets, candidates, state=state, batch_size=4)
  expected = _cosine_matrix(_reference_embedding(name, state, targets),
                            _reference_embedding(name, state, candidates))
  assert got.shape == (7, 11)
  np.testing.assert_allclose(got, expected, atol=1e-4)
  np.testing.assert_allclose(detect.embeddings(state, candidates, batch_size=4),
                             _reference_embedding(name, state, candidates), atol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("gradient_params", ["last", "all"])
def test_gradient_cosine_matches_per_example_jax_grad(pairs, name, gradient_params):
  (targets, target_labels), (candidates, candidate_labels) = pairs
  state = _tiny_state(name, seed=1)
  got = detect.scores("gradient", targets, candidates, state=state, target_labels=target_labels,
                      candidate_labels=candidate_labels, batch_size=4,
                      gradient_params=gradient_params)
  last_only = gradient_params == "last"
  expected = _cosine_matrix(_reference_gradients(state, targets, target_labels, last_only),
                            _reference_gradients(state, candidates, candidate_labels, last_only))
  assert np.ptp(expected) > 0.5  # the pairs span a real range of cosines
  np.testing.assert_allclose(got, expected, atol=1e-4)


def test_gradient_cosine_depends_on_the_labels(pairs):
  (images, labels), _ = pairs
  state = _tiny_state("mlp")
  same = detect.scores("gradient", images, images, state=state, target_labels=labels,
                       candidate_labels=labels, batch_size=4)
  flipped = detect.scores("gradient", images, images, state=state, target_labels=labels,
                          candidate_labels=(labels + 1) % NUM_CLASSES, batch_size=4)
  np.testing.assert_allclose(np.diag(same), 1.0, atol=1e-5)
  assert np.all(np.diag(flipped) < 0.9)


MESH_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from unlearn_jax import models, parallel, train
    from unlearn_jax.remedies import detect
    assert jax.device_count() == 4
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    candidates = rng.integers(0, 256, (13, 16, 16, 3), dtype=np.uint8)
    labels = dict(target_labels=rng.integers(0, 10, 3), candidate_labels=rng.integers(0, 10, 13))
    model = models.get("cnn", 10, features=(4,), dense=8)
    state = train.create_state(model, jax.random.key(0), (16, 16, 3))
    mesh = parallel.make_mesh()
    for measure, extra in [("ssim", {}), ("embedding", {}),
                           ("gradient", {"gradient_params": "all"})]:
      kwargs = dict(state=state, batch_size=5, **labels, **extra)  # 5 -> chunks of 8 rows
      one = detect.scores(measure, targets, candidates, **kwargs)
      four = detect.scores(measure, targets, candidates, mesh=mesh, **kwargs)
      np.testing.assert_allclose(four, one, atol=1e-5, err_msg=f"{measure} {extra}")
    print("EQUAL")
""")


def test_scores_on_four_devices_equal_scores_on_one():
  # Per-example conv gradients are where XLA's own partitioning went wrong (see detect.py).
  assert "EQUAL" in run_on_cpu_devices(MESH_SCRIPT, num_devices=4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(measure="lpips"), "allowed values: ssim, pixel_cosine, embedding, gradient"),
    (dict(measure="embedding"), "needs `state`"),
    (dict(measure="gradient", state="model"), "needs target_labels"),
    (dict(measure="gradient", state="model", gradient_params="first",
          target_labels=np.zeros(2, int), candidate_labels=np.zeros(3, int)),
     "allowed values: last, all"),
    (dict(measure="pixel_cosine", targets=np.zeros((2, 28, 28, 1), np.float32)), "uint8"),
    (dict(measure="pixel_cosine", candidates=np.zeros((3, 14, 14, 1), np.uint8)), "same"),
    (dict(measure="pixel_cosine", batch_size=0), "batch_size"),
])
def test_scores_rejects_bad_inputs(kwargs, match):
  arguments = dict(targets=np.zeros((2, 28, 28, 1), np.uint8),
                   candidates=np.zeros((3, 28, 28, 1), np.uint8))
  if kwargs.get("state") == "model":
    kwargs["state"] = _tiny_state("mlp")
  arguments.update(kwargs)
  measure = arguments.pop("measure")
  with pytest.raises(ValueError, match=match):
    detect.scores(measure, **arguments)


# ----------------------------------------------------------------------------------------------
# Neighbour rules, precision/recall, weights.


SCORES = np.array([[0.9, 0.2, 0.5, 0.5, np.nan],
                   [0.1, 0.8, 0.3, 0.7, 0.6]])


def test_select_threshold_is_inclusive_and_skips_nan():
  np.testing.assert_array_equal(detect.select(SCORES, tau=0.5),
                                [[1, 0, 1, 1, 0], [0, 1, 0, 1, 1]])
  np.testing.assert_array_equal(detect.select(SCORES, tau=0.95), np.zeros((2, 5), bool))


def test_select_top_k_breaks_ties_by_index_and_respects_exclude():
  np.testing.assert_array_equal(detect.select(SCORES, top_k=2),
                                [[1, 0, 1, 0, 0], [0, 1, 0, 1, 0]])
  # Candidate 0 excluded for everyone: target 0's next best are the tied 2 and 3.
  np.testing.assert_array_equal(detect.select(SCORES, top_k=2, exclude=np.array([1, 0, 0, 0, 0])),
                                [[0, 0, 1, 1, 0], [0, 1, 0, 1, 0]])
  per_target = np.array([[0, 0, 0, 0, 0], [0, 1, 0, 0, 0]], bool)
  np.testing.assert_array_equal(detect.select(SCORES, top_k=1, exclude=per_target),
                                [[1, 0, 0, 0, 0], [0, 0, 0, 1, 0]])
  # More neighbours asked than eligible: every eligible candidate, never the NaN.
  np.testing.assert_array_equal(detect.select(SCORES, top_k=10),
                                [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
  assert not detect.select(SCORES, top_k=0).any()


@pytest.mark.parametrize("kwargs, match", [
    ({}, "exactly one"), (dict(tau=0.5, top_k=2), "exactly one"),
    (dict(top_k=-1), "non-negative"), (dict(top_k=1.5), "non-negative"),
    (dict(tau=float("nan")), "finite"), (dict(tau=0.5, exclude=np.zeros(4, bool)), "shape"),
])
def test_select_rejects_bad_rules(kwargs, match):
  with pytest.raises(ValueError, match=match):
    detect.select(SCORES, **kwargs)


def test_precision_recall_hand_made_case():
  # Targets 100, 200, 300. Candidates: groups 100 100 200 -1 300 -1.
  group = np.array([100, 100, 200, -1, 300, -1])
  selected = np.array([[1, 0, 0, 1, 0, 1],    # 100: 1 of 3 right, 1 of its 2 found
                       [0, 0, 0, 0, 0, 0],    # 200: nothing selected -> precision undefined
                       [0, 0, 0, 0, 1, 0]],   # 300: exact
                      bool)
  result = detect.precision_recall(selected, group, np.array([100, 200, 300]))
  np.testing.assert_allclose(result["precision"], [1 / 3, np.nan, 1.0])
  np.testing.assert_allclose(result["recall"], [0.5, 0.0, 1.0])
  assert result["num_selected"].tolist() == [3, 0, 1]
  assert result["num_correct"].tolist() == [1, 0, 1]
  assert result["num_similar"].tolist() == [2, 1, 1]
  assert result["mean_precision"] == pytest.approx((1 / 3 + 1) / 2)
  assert result["mean_recall"] == pytest.approx(0.5)
  assert result["micro_precision"] == pytest.approx(2 / 4)
  assert result["micro_recall"] == pytest.approx(2 / 4)
  assert result["num_empty_selections"] == 1 and result["num_without_similar"] == 0


def test_precision_recall_kind_keeps_a_target_from_being_its_own_neighbour():
  group = np.array([7, 7, -1])  # the target (id 7) itself, one similar sample, one unrelated
  kind = np.array([sed_lib.TARGET, sed_lib.SIMILAR, sed_lib.REST])
  selected = np.array([[1, 1, 0]], bool)
  with_kind = detect.precision_recall(selected, group, np.array([7]), candidate_kind=kind)
  assert with_kind["precision"][0] == 0.5 and with_kind["recall"][0] == 1.0
  without = detect.precision_recall(selected, group, np.array([7]))
  assert without["precision"][0] == 1.0


def test_precision_recall_all_undefined_means_are_nan():
  result = detect.precision_recall(np.zeros((2, 3), bool), np.array([-1, -1, -1]),
                                   np.array([1, 2]))
  assert np.isnan(result["mean_precision"]) and np.isnan(result["mean_recall"])
  assert np.isnan(result["micro_precision"]) and np.isnan(result["micro_recall"])
  assert result["num_empty_selections"] == 2 and result["num_without_similar"] == 2


def test_neighbour_weights_hand_made_case():
  scores = np.array([[0.8, 0.4, 0.9, -0.2, 0.3],
                     [0.2, 0.6, 0.1, 0.5, 0.95]])
  selected = np.array([[1, 1, 0, 1, 0],
                       [1, 1, 0, 0, 0]], bool)
  # Candidate max over selecting targets: 0.8, 0.6, -, -0.2 -> 0, -; scaled by 0.8.
  np.testing.assert_allclose(detect.neighbour_weights(scores, selected),
                             [1.0, 0.75, 0.0, 0.0, 0.0], rtol=1e-6)
  # No positive similarity among the neighbours: the unweighted variant.
  np.testing.assert_array_equal(detect.neighbour_weights(-np.abs(scores), selected),
                                [1, 1, 0, 1, 0])


# ----------------------------------------------------------------------------------------------
# The distributional rule.


def test_distributional_removal_removes_the_outliers_first():
  rng = np.random.default_rng(0)
  retained = rng.normal(scale=0.5, size=(400, 2)) + [1.0, -1.0]
  retained -= retained.mean(0) - [1.0, -1.0]  # retained mean exactly (1, -1)
  candidates = np.array([[1.2, -0.9],    # inlier, distance ~0.22
                         [11.0, -1.0],   # 10
                         [1.0, -8.0],    # 7
                         [4.0, 3.0],     # 5
                         [0.9, -1.1],    # inlier, ~0.14
                         [-2.0, -1.0]])  # 3
  order = select_lib.distributional_removal(retained, candidates, budget=4)
  assert order.tolist() == [1, 2, 3, 5] and order.dtype == np.int64
  np.testing.assert_allclose(select_lib.removal_scores(retained, candidates),
                             [np.hypot(0.2, 0.1), 10, 7, 5, np.hypot(0.1, 0.1), 3], atol=1e-9)
  assert select_lib.distributional_removal(retained, candidates, budget=6).tolist()[-2:] == [0, 4]
  assert select_lib.distributional_removal(retained, candidates, budget=0).tolist() == []


def test_distributional_removal_standardized_metric_uses_the_retained_spread():
  retained = np.array([[-1.0, -10.0], [1.0, 10.0], [-1.0, 10.0], [1.0, -10.0]])  # std (1, 10)
  candidates = np.array([[5.0, 0.0], [0.0, 20.0]])
  assert select_lib.distributional_removal(retained, candidates, 1).tolist() == [1]
  assert select_lib.distributional_removal(retained, candidates, 1,
                                           metric="standardized").tolist() == [0]
  np.testing.assert_allclose(
      select_lib.removal_scores(retained, candidates, metric="standardized"), [5.0, 2.0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(budget=3), r"\[0, 2\]"), (dict(budget=-1), r"\[0, 2\]"),
    (dict(budget=1, metric="cosine"), "allowed values: euclidean, standardized"),
    (dict(budget=1, features_retained=np.zeros((0, 2))), "empty"),
    (dict(budget=1, features_retained=np.zeros((3, 3))), "one d"),
    (dict(budget=1, features_candidates=np.array([[np.nan, 0.0], [0.0, 0.0]])), "finite"),
])
def test_distributional_removal_rejects_bad_inputs(kwargs, match):
  arguments = dict(features_retained=np.zeros((3, 2)), features_candidates=np.ones((2, 2)))
  arguments.update(kwargs)
  with pytest.raises(ValueError, match=match):
    select_lib.distributional_removal(**arguments)


def test_features(pairs):
  (images, _), _ = pairs
  np.testing.assert_allclose(select_lib.features("pixel", images),
                             images.reshape(len(images), -1) / 255.0, atol=1e-7)
  state = _tiny_state("mlp")
  np.testing.assert_allclose(select_lib.features("embedding", images, state=state, batch_size=4),
                             _reference_embedding("mlp", state, images), atol=1e-5)
  with pytest.raises(ValueError, match="needs `state`"):
    select_lib.features("embedding", images)
  with pytest.raises(ValueError, match="allowed values: pixel, embedding"):
    select_lib.features("hog", images)
