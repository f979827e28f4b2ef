"""Entropy, parameter distance and relearn time against independent computations."""

import jax
import numpy as np
import pytest
from scipy import stats

from unlearn_jax.evaluate import metrics


def test_entropy_matches_scipy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(20, 5)) * 3
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  scores = metrics.example_scores(logits, rng.integers(0, 5, 20))
  np.testing.assert_allclose(scores["entropy"], stats.entropy(probs, axis=-1), rtol=1e-10)


def test_param_distance_is_the_euclidean_norm_of_the_difference():
  a = {"w": np.ones((2, 3)), "b": np.zeros(4)}
  b = {"w": np.zeros((2, 3)), "b": np.full(4, 2.0)}
  assert metrics.param_distance(a, b) == pytest.approx(np.sqrt(6 + 16))
  assert metrics.param_distance(a, a) == 0.0
  with pytest.raises(ValueError, match="structure"):
    metrics.param_distance(a, {"w": a["w"]})


@pytest.fixture(scope="module")
def toy():
  from conftest import make_toy_unlearning  # pylint: disable=g-import-not-at-top
  return make_toy_unlearning(epochs=30, lr=0.1)


def test_relearn_steps(toy):
  state, data, _, mesh = toy
  trained_loss = metrics.forget_loss(state, data.forget, mesh)
  # The trained model is already at its own level; a fresh one needs steps; an unreachable
  # level is censored at the cap + 1.
  assert metrics.relearn_steps(state, data.forget, trained_loss, lr=0.1, max_steps=50,
                               mesh=mesh) == 0
  fresh = data.init_state(jax.random.key(5))
  steps = metrics.relearn_steps(fresh, data.forget, trained_loss, lr=0.5, max_steps=500,
                                mesh=mesh)
  assert 0 < steps <= 500
  assert metrics.relearn_steps(fresh, data.forget, -1.0, lr=0.1, max_steps=7, mesh=mesh) == 8
  # Relearning does not touch the model it starts from.
  assert metrics.forget_loss(fresh, data.forget, mesh) > trained_loss
