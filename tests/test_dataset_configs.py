"""The configs of the paper's image datasets (MNIST, Fashion-MNIST, CIFAR-10 with ResNet-18):
each validates and builds its SED from mocked tfds data, and the sweep config accepts each.
Nothing trains here (XLA:CPU takes ~70 s to compile ResNet-18)."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import mocked_tfds_data
from unlearn_jax import defaults, models, study, sweep
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.tasks import image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# config file -> (tfds name, image shape, model)
CONFIGS = {"sed_mnist_full": ("mnist", (28, 28, 1), "cnn"),
           "sed_fashion_mnist": ("fashion_mnist", (28, 28, 1), "cnn"),
           "sed_cifar10": ("cifar10", (32, 32, 3), "resnet18")}
NUM_MOCK_EXAMPLES = 60


def load_config(name: str, arg: str):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs",
                                                                   f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def masked_blocks(similar: np.ndarray, target: np.ndarray, block: int) -> int:
  """Blocks that are all zero in the similar image but not in its target."""
  count = 0
  for row in range(0, target.shape[0], block):
    for col in range(0, target.shape[1], block):
      part = (slice(row, row + block), slice(col, col + block))
      count += int(not similar[part].any() and target[part].any())
  return count


@pytest.mark.parametrize("variant", ["", "runlocal"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_validates_and_builds_its_sed(name, variant, tmp_path):
  dataset, shape, model = CONFIGS[name]
  config = load_config(name, variant)
  assert (config.dataset, config.model) == (dataset, model)
  config.data_dir = str(tmp_path / "tfds")
  with mocked_tfds_data(NUM_MOCK_EXAMPLES):
    defaults.validate(config)
    context = image.ImageTask.build(config, str(tmp_path / "study"))
  sed = context.sed
  num_targets, per_target = config.sed.num_targets, config.sed.similar_per_target
  assert sed.train["image"].shape[1:] == shape and sed.test["image"].shape[1:] == shape
  kinds = np.bincount(sed.train["kind"], minlength=3)
  assert kinds[sed_lib.TARGET] == num_targets
  assert kinds[sed_lib.SIMILAR] == num_targets * per_target
  assert kinds[sed_lib.REST] == min(NUM_MOCK_EXAMPLES, config.train_size or np.inf) - num_targets
  # Block masking: every similar sample keeps its target's pixels except round(r × blocks)
  # zeroed b×b blocks (random mocked pixels are almost never zero over a whole block).
  block, ratio = config.sed.block, config.sed.ratio
  blocks = -(-shape[0] // block) * -(-shape[1] // block)
  image_of = dict(zip(sed.train["id"].tolist(), sed.train["image"]))
  for row in np.flatnonzero(sed.train["kind"] == sed_lib.SIMILAR)[::per_target]:
    similar, target = sed.train["image"][row], image_of[int(sed.train["group"][row])]
    kept = similar != 0
    np.testing.assert_array_equal(similar[kept], target[kept])
    assert masked_blocks(similar, target, block) == int(np.floor(ratio * blocks + 0.5))
  assert os.path.exists(tmp_path / "study" / "data" / "provenance.npz")


def test_cifar10_model_is_resnet18():
  config = load_config("sed_cifar10", "")
  model = models.get(config.model, 10, **config.model_kwargs.to_dict())
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables["params"]))
  assert count == 11_173_962  # CIFAR ResNet-18 (3×3 stem, no max-pool), 10 classes


@pytest.mark.parametrize("variant", ["dataset=mnist", "dataset=fashion_mnist",
                                     "dataset=cifar10", "dataset=cifar10,runlocal"])
def test_sweep_config_accepts_every_dataset(variant, tmp_path):
  from configs import sweep_similarity  # pylint: disable=g-import-not-at-top
  config = sweep_similarity.get_config(variant)
  config.study.data_dir = str(tmp_path)
  with mocked_tfds_data(NUM_MOCK_EXAMPLES):
    points = sweep.validate(config)
  assert {p.config.dataset for p in points} == {variant.split("=")[1].split(",")[0]}
  similar = {p.values["sed.similar_per_target"] for p in points}
  assert similar == ({0, 5, 20} if "runlocal" in variant else {0, 1, 5, 20, 50})
