"""Shared fixtures: a tfds data dir with the embedded mnist_subset prepared once per session."""

import contextlib
import os
import pathlib
import sys
from unittest import mock

import pytest

# The repo root on sys.path lets tests import `configs/*.py` helpers and run from a checkout.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# Wall-time fields of a study summary: they differ between otherwise identical runs.
TIME_KEYS = ("time_s", "time_vs_retrain", "time_s_ci")


def without_times(tree):
  """A summary (nested dicts and lists) without its wall-time fields (`TIME_KEYS`)."""
  if isinstance(tree, dict):
    return {k: without_times(v) for k, v in tree.items() if k not in TIME_KEYS}
  if isinstance(tree, list):
    return [without_times(v) for v in tree]
  return tree


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory) -> str:
  """A data dir holding the prepared mnist_subset (prepared on first load)."""
  from unlearn_jax.data import sources  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  sources.load("mnist_subset", data_dir=data_dir)
  return data_dir


METADATA_DIR = pathlib.Path(__file__).parent / "testdata" / "tfds_metadata"


def _fixed_mock_getitems(record_keys, generator, serialized=False):
  """tfds's mock sets `__getitems__` on a MagicMock instance, where it gets no `self`, so bulk
  reads fail with a TypeError; this replacement takes the arguments it is really called with."""
  del serialized  # The data source deserialises with a mocked identity function.
  return [generator[key] for key in record_keys]


@contextlib.contextmanager
def mocked_tfds_data(num_examples: int):
  """Random examples for real tfds names (mnist, fashion_mnist, cifar10), offline.

  Uses the dataset_info.json metadata vendored in tests/testdata (the tfds wheel ships none).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.testing import mocking  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=num_examples,
                              policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=str(METADATA_DIR)), mock.patch.object(
                                  mocking, "_getitems", _fixed_mock_getitems):
    yield


def make_toy_unlearning(num_classes: int = 3, epochs: int = 3, lr: float = 0.05):
  """A small MLP trained on 60 random 6×6 images, and a RunContext with the first 6 as T.

  Returns (trained state, RunContext, study config whose train recipe was used and is the
  run's recipe, mesh).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from unlearn_jax import defaults, methods, models, parallel, train  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  data = {"image": rng.integers(0, 256, (60, 6, 6, 1), dtype=np.uint8),
          "label": rng.integers(0, num_classes, 60).astype(np.int32), "id": np.arange(60)}
  forget = {k: v[:6] for k, v in data.items()}
  retain = {k: v[6:] for k, v in data.items()}
  model = models.get("mlp", num_classes, hidden=(16,))
  mesh = parallel.make_mesh()
  init = lambda key: train.create_state(model, key, (6, 6, 1))
  config = defaults.base_config()
  config.train.epochs, config.train.batch_size, config.train.lr = epochs, 20, lr
  config.train.log_every = 1000
  state, _ = train.train_from_scratch(init(jax.random.key(0)), data, config.train, 0,
                                      name="toy", mesh=mesh)
  run = methods.RunContext(forget=forget, retain=retain, mesh=mesh, seed=0,
                           num_classes=num_classes, init_state=init, recipe=config.train)
  return state, run, config, mesh
