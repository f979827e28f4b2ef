"""Unlearning methods: the registry, the contract, and what each update does on a toy problem."""

import importlib
import pkgutil

import jax
import numpy as np
import pytest

from conftest import make_toy_unlearning

import unlearn_jax
from unlearn_jax import methods, train
from unlearn_jax.methods import random_label

NUM_CLASSES = 3


def test_every_module_imports():
  for info in pkgutil.walk_packages(unlearn_jax.__path__, "unlearn_jax."):
    importlib.import_module(info.name)


def test_registry_lists_methods_and_explains_a_miss():
  assert {"finetune", "grad_ascent", "random_label", "retrain"} <= set(methods.available())
  assert "common" not in methods.available()
  with pytest.raises(ValueError, match="available: .*finetune"):
    methods.get("finetuen")
  for name in methods.available():
    assert callable(methods.get(name))


def test_relabel_never_keeps_the_true_label():
  labels = np.arange(1000) % NUM_CLASSES
  new = random_label.relabel(labels, NUM_CLASSES, np.random.default_rng(0))
  assert np.all(new != labels)
  assert set(np.unique(new)) == set(range(NUM_CLASSES))


@pytest.fixture(scope="module")
def toy():
  """A small MLP trained a few steps on random data, with 6 forget examples."""
  return make_toy_unlearning(NUM_CLASSES, epochs=3, lr=0.05)


def _forget_loss(state, data, mesh):
  logits = train.predict(state, data.forget, 64, mesh)
  log_probs = jax.nn.log_softmax(logits)
  return float(-np.mean(np.take_along_axis(np.asarray(log_probs),
                                           data.forget["label"][:, None], axis=1)))


def test_grad_ascent_raises_the_forget_loss(toy):
  state, data, config, mesh = toy
  config = config.copy_and_resolve_references()
  config.unlearn.grad_ascent.lr = 0.05
  unlearned, info = methods.get("grad_ascent")(state, data, config, jax.random.key(1))
  assert info["steps"] == config.unlearn.grad_ascent.epochs
  assert _forget_loss(unlearned, data, mesh) > _forget_loss(state, data, mesh)


@pytest.mark.parametrize("name", ["finetune", "random_label", "retrain"])
def test_method_contract(toy, name):
  state, data, config, mesh = toy
  before = jax.device_get(state.params)
  unlearned, info = methods.get(name)(state, data, config, jax.random.key(1))
  assert info["steps"] > 0 and info["wall_s"] >= 0
  assert jax.tree.structure(unlearned.params) == jax.tree.structure(state.params)
  # The original state is left intact (methods start from a copy).
  jax.tree.map(np.testing.assert_array_equal, before, jax.device_get(state.params))
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before,
                         jax.device_get(unlearned.params))
  assert any(jax.tree.leaves(changed))


def test_random_label_lowers_confidence_on_forget(toy):
  state, data, config, mesh = toy
  config = config.copy_and_resolve_references()
  config.unlearn.random_label.epochs = 3
  unlearned, _ = methods.get("random_label")(state, data, config, jax.random.key(1))
  assert _forget_loss(unlearned, data, mesh) > _forget_loss(state, data, mesh)
