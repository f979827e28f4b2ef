"""Entropy, parameter distance and relearn time against independent computations."""

import jax
import ml_collections
import numpy as np
import pytest
from scipy import stats

from unlearn_jax import config as config_lib
from unlearn_jax import defaults, train
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


def relearn(lr: float) -> dict:
  """The study's relearning: SGD at `lr` (no momentum) with the training step
  (ImageTask.evaluate in tasks/image.py)."""
  return {"optimizer": train.make_optimizer("sgd", lr, 1, momentum=0.0),
          "train_step": train.jit_train_step}


def test_relearn_steps(toy):
  state, data, _, mesh = toy
  trained_loss = metrics.forget_loss(state, data.forget, mesh, **relearn(0.1))
  # The trained model is already at its own level; a fresh one needs steps; an unreachable
  # level is censored at the cap + 1.
  assert metrics.relearn_steps(state, data.forget, trained_loss, **relearn(0.1), max_steps=50,
                               mesh=mesh) == 0
  fresh = data.init_state(jax.random.key(5))
  steps = metrics.relearn_steps(fresh, data.forget, trained_loss, **relearn(0.5),
                                max_steps=500, mesh=mesh)
  assert 0 < steps <= 500
  assert metrics.relearn_steps(fresh, data.forget, -1.0, **relearn(0.1), max_steps=7,
                               mesh=mesh) == 8
  # Relearning does not touch the model it starts from.
  assert metrics.forget_loss(fresh, data.forget, mesh, **relearn(0.1)) > trained_loss


def test_relearn_counts_use_one_configured_level_for_every_model(toy):
  state, data, _, mesh = toy
  fresh = data.init_state(jax.random.key(5))
  trained_loss = metrics.forget_loss(state, data.forget, mesh, **relearn(0.1))
  fresh_loss = metrics.forget_loss(fresh, data.forget, mesh, **relearn(0.1))
  assert trained_loss < 0.8 < fresh_loss  # measured: 0.66 and 1.22
  models = {"trained": state, "fresh": fresh}
  # A level between the two: the model below it needs 0 steps, the one above some.
  between = ml_collections.ConfigDict({"target_loss": 0.8, "lr": 0.5, "max_steps": 500})
  counts = metrics.relearn_counts(models, data.forget, between, mesh, **relearn(0.5))
  assert counts["trained"] == 0 and 0 < counts["fresh"] <= 500
  assert counts["fresh"] == metrics.relearn_steps(fresh, data.forget, 0.8, **relearn(0.5),
                                                  max_steps=500, mesh=mesh)
  # A level below both, reachable by both: the model that saw the forget set gets there first.
  below = ml_collections.ConfigDict({"target_loss": 0.3, "lr": 0.5, "max_steps": 500})
  counts = metrics.relearn_counts(models, data.forget, below, mesh, **relearn(0.5))
  assert 0 < counts["trained"] < counts["fresh"] <= 500, counts


def test_relearn_level_is_a_configured_loss():
  relearn = defaults.base_config().eval.relearn
  # Reachable: well above a float32 loss's resolution, below a confident model's loss.
  assert 1e-6 < relearn.target_loss < 0.1
  config = defaults.base_config()
  config.eval.relearn.target_loss = -1.0
  with pytest.raises(config_lib.ConfigError, match="eval.relearn.target_loss"):
    defaults.validate(config)
