"""Tests for the model registry and the mlp, cnn and resnet18 models.

Random initialisers compile slowly on XLA:CPU (seconds per small kernel
shape), so numeric tests fill parameters with numpy instead of running
`model.init`; `init` itself is traced through `jax.eval_shape`, which checks
structure, shapes and dtypes without compiling anything.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax import models
from unlearn_jax.models import cnn

# Small configs keep the whole file fast on CPU.
_TINY_KWARGS = {
    "mlp": {"hidden": (16,)},
    "cnn": {"features": (4, 8), "dense": 16},
    "resnet18": {"width": 4},
}
_SHAPES = {"mnist": (3, 28, 28, 1), "cifar": (2, 32, 32, 3)}


def _uniform_images(shape, seed=0):
  # numpy, not jax.random: see the module docstring.
  return jnp.asarray(np.random.default_rng(seed).uniform(size=shape),
                     jnp.float32)


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _abstract_variables(model, images_shape):
  images = jax.ShapeDtypeStruct(images_shape, jnp.float32)
  return jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), images)


def _numpy_variables(model, images_shape, seed=0):
  """Variables shaped like `model.init`'s, filled cheaply with numpy."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    if "kernel" in name:  # Fan-in scaling keeps activations O(1).
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in),
                         leaf.dtype)
    if "scale" in name or "var" in name:
      return jnp.ones(leaf.shape, leaf.dtype)
    return jnp.zeros(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(
      fill, _abstract_variables(model, images_shape))


def test_available_lists_all_models():
  assert set(models.available()) >= {"mlp", "cnn", "resnet18"}
  assert all(not name.startswith("_") for name in models.available())


def test_get_returns_configured_module():
  model = models.get("cnn", 7, features=[3], dense=5)
  assert isinstance(model, cnn.CNN)
  assert (model.num_classes, model.features, model.dense) == (7, (3,), 5)


def test_unknown_model_names_field_value_and_choices():
  with pytest.raises(ValueError) as err:
    models.get("resnet81", 10)
  message = str(err.value)
  assert "model" in message and "resnet81" in message
  for name in ("mlp", "cnn", "resnet18"):
    assert name in message


def test_unknown_kwarg_is_named():
  with pytest.raises(ValueError, match="hiden") as err:
    models.get("mlp", 10, hiden=(8,))
  assert "hidden" in str(err.value)  # The accepted fields are listed.


def test_has_batch_stats():
  assert not models.has_batch_stats({"params": {}})
  assert not models.has_batch_stats({"params": {}, "batch_stats": {}})
  assert models.has_batch_stats({"params": {}, "batch_stats": {"a": 1}})


@pytest.mark.parametrize("dataset", sorted(_SHAPES))
@pytest.mark.parametrize("name", sorted(_TINY_KWARGS))
def test_output_shape_and_dtype(name, dataset):
  model = models.get(name, 10, **_TINY_KWARGS[name])
  variables = _abstract_variables(model, _SHAPES[dataset])
  assert set(variables) == ({"params", "batch_stats"} if name == "resnet18"
                            else {"params"})
  assert models.has_batch_stats(variables) == (name == "resnet18")
  images = jax.ShapeDtypeStruct(_SHAPES[dataset], jnp.float32)
  logits = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), variables, images)
  assert logits.shape == (_SHAPES[dataset][0], 10)
  assert logits.dtype == jnp.float32


@pytest.mark.parametrize("name", sorted(_TINY_KWARGS))
def test_logits_finite_in_train_and_eval(name):
  model = models.get(name, 10, **_TINY_KWARGS[name])
  variables = _numpy_variables(model, (2, 28, 28, 1))
  images = _uniform_images((2, 28, 28, 1))
  mutable = ["batch_stats"] if models.has_batch_stats(variables) else False

  @jax.jit
  def forward(variables, images):
    train_out = model.apply(variables, images, train=True, mutable=mutable)
    train_logits = train_out[0] if mutable else train_out
    return train_logits, model.apply(variables, images, train=False)

  for logits in forward(variables, images):
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 9, 2)])
def test_max_pool_2x2_matches_nn_max_pool(shape):
  # Continuous random values: ties have probability zero, so gradients agree.
  def reference(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")

  @jax.jit
  def values_and_grads(x, cotangent):
    ours, ours_vjp = jax.vjp(cnn.max_pool_2x2, x)
    ref, ref_vjp = jax.vjp(reference, x)
    return ours, ref, ours_vjp(cotangent)[0], ref_vjp(cotangent)[0]

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  pooled_shape = (shape[0], shape[1] // 2, shape[2] // 2, shape[3])
  cotangent = jnp.asarray(rng.normal(size=pooled_shape), jnp.float32)
  ours, ref, grad_ours, grad_ref = values_and_grads(x, cotangent)
  assert ours.shape == pooled_shape
  np.testing.assert_array_equal(ours, ref)
  np.testing.assert_array_equal(grad_ours, grad_ref)


@pytest.fixture(scope="module")
def tiny_resnet():
  model = models.get("resnet18", 5, width=4)
  variables = _numpy_variables(model, (4, 8, 8, 3))
  images = _uniform_images((4, 8, 8, 3))
  return model, variables, images


def test_resnet18_train_mode_updates_batch_stats(tiny_resnet):
  model, variables, images = tiny_resnet
  logits, updates = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=["batch_stats"]))(variables, images)
  assert logits.shape == (4, 5)
  old = jax.tree_util.tree_leaves(variables["batch_stats"])
  new = jax.tree_util.tree_leaves(updates["batch_stats"])
  assert len(old) == len(new) == 2 * (1 + 8 * 2 + 3)  # mean+var per BN.
  assert all(not np.allclose(a, b) for a, b in zip(old, new))


def test_resnet18_eval_mode_uses_running_stats(tiny_resnet):
  model, variables, images = tiny_resnet

  @jax.jit
  def evaluate(variables, images):
    # mutable is allowed so a (wrong) stats update would be visible.
    return model.apply(variables, images, train=False,
                       mutable=["batch_stats"])

  first, updates = evaluate(variables, images)
  again, _ = evaluate(variables, images)
  np.testing.assert_array_equal(first, again)
  jax.tree_util.tree_map(np.testing.assert_array_equal,
                         updates["batch_stats"], variables["batch_stats"])
  # Running statistics make each example's logits independent of the batch.
  single, _ = evaluate(variables, images[:1])
  np.testing.assert_allclose(single, first[:1], rtol=1e-5, atol=1e-6)


def test_resnet18_parameter_count_matches_standard():
  model = models.get("resnet18", 10)  # width=64
  variables = _abstract_variables(model, (1, 32, 32, 3))
  # The standard CIFAR ResNet-18 (e.g. kuangliu/pytorch-cifar) has exactly
  # this many trainable parameters.
  assert _count(variables["params"]) == 11_173_962
