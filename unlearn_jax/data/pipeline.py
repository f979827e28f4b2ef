"""Deterministic batching over in-memory arrays: the batch of a step is a function of the step.

Training batches come from a per-epoch permutation seeded by (seed, epoch), so a resumed run
sees exactly the batches an uninterrupted one would. Every batch has the same shape (one compile):
the last batch of an epoch is filled up with examples from the start of the permutation carrying
weight 0, so each example counts exactly once per epoch.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import numpy as np

Arrays = dict[str, np.ndarray]
BATCH_KEYS = ("image", "label")


@dataclasses.dataclass(frozen=True)
class EpochSampler:
  """Shuffled fixed-size batches over `data`, addressable by global step.

  Attributes:
    data: arrays with at least the fields in `keys`, all of one length.
    batch_size: examples per batch (the global batch).
    seed: shuffling seed; epoch e uses the permutation of default_rng([seed, e]).
    weight: per-example loss weight given to real examples (e.g. -1 for gradient ascent).
    keys: the fields a batch carries (images: image and label; the language-model track:
      tokens and loss_mask).

  When `data` has a `sample_weight` field, each example's weight is `weight * sample_weight`
  (partial removal in the weighted neighbourhood remedy, see remedy_track.py).
  """
  data: Arrays
  batch_size: int
  seed: int
  weight: float = 1.0
  keys: tuple[str, ...] = BATCH_KEYS

  def __post_init__(self):
    missing = [key for key in self.keys if key not in self.data]
    if missing:
      raise ValueError(f"EpochSampler: the data lacks the fields {missing} (has "
                       f"{sorted(self.data)})")
    if len(self.data[self.keys[0]]) == 0:
      raise ValueError("EpochSampler: the data set is empty")

  @property
  def num_examples(self) -> int:
    return len(self.data[self.keys[0]])

  @property
  def steps_per_epoch(self) -> int:
    return -(-self.num_examples // self.batch_size)

  def steps_for(self, epochs: float) -> int:
    """Steps in `epochs` passes (fractions allowed, e.g. 0.5), at least one."""
    return max(1, int(round(float(epochs) * self.steps_per_epoch)))

  def batch(self, step: int) -> Arrays:
    """The batch for global step `step`: the `keys` fields and weight (0 for filler rows)."""
    epoch, index = divmod(step, self.steps_per_epoch)
    order = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
    start = index * self.batch_size
    rows = order[start:start + self.batch_size]
    weight = np.full(self.batch_size, self.weight, np.float32)
    if len(rows) < self.batch_size:
      weight[len(rows):] = 0.0
      filler = np.resize(order, self.batch_size - len(rows))
      rows = np.concatenate([rows, filler])
    batch = {key: self.data[key][rows] for key in self.keys}
    if "sample_weight" in self.data:
      weight = weight * self.data["sample_weight"][rows].astype(np.float32)
    batch["weight"] = weight
    return batch


def eval_batches(data: Arrays, batch_size: int) -> Iterator[tuple[Arrays, int]]:
  """Yields (batch, num_real) over `data` in order; the last batch is padded to full size."""
  num = len(data["label"])
  for start in range(0, num, batch_size):
    rows = np.arange(start, min(start + batch_size, num))
    real = len(rows)
    if real < batch_size:
      rows = np.concatenate([rows, np.full(batch_size - real, rows[-1])])
    yield {"image": data["image"][rows]}, real


def concat(*parts: Arrays) -> Arrays:
  """Concatenates batches key by key (e.g. a retain batch and a forget batch)."""
  return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def weight_fields(batch: Arrays) -> list[str]:
  """The per-row loss weights of a batch: `weight` and any field named `*_weight`."""
  return [key for key in batch if key == "weight" or key.endswith("_weight")]


def pad_rows(batch: Arrays, size: int, axis: int = 0) -> Arrays:
  """`batch` with `size` rows along `axis`: the rows as given, then copies of them with every
  weight 0 (`axis=1` for an ensemble's stacked (members, batch, ...) batches).

  Copies of real rows (rather than zeros) keep the filler rows' losses finite, so that
  0 · loss is exactly 0. A batch of `size` rows or more is returned unchanged.

  Raises:
    ValueError: the batch must grow but has no weight field (its filler rows would count).
  """
  num = next(iter(batch.values())).shape[axis]
  if num >= size:
    return batch
  weights = weight_fields(batch)
  if not weights:
    raise ValueError(f"cannot pad a batch of {num} rows to {size}: it has no 'weight' field to "
                     f"mask the filler rows (fields: {sorted(batch)})")
  rows = np.resize(np.arange(num), size)
  padded = {key: np.take(value, rows, axis=axis) for key, value in batch.items()}
  for key in weights:
    padded[key][(slice(None),) * axis + (slice(num, None),)] = 0
  return padded


def mesh_batches(batch_fn: Callable[[int], Arrays], mesh,
                 axis: int = 0) -> Callable[[int], Arrays]:
  """`batch_fn` whose batches are padded (`pad_rows`) to a multiple of the mesh's device count.

  Every step then keeps the real rows it has on one device, so results do not depend on the
  number of devices (a batch of 10 on 8 devices is 10 real rows and 6 rows of weight 0).
  `train.fit` applies it to every batch it is given.
  """
  devices = mesh.devices.size
  if devices == 1:
    return batch_fn

  def padded(step: int) -> Arrays:
    batch = batch_fn(step)
    rows = next(iter(batch.values())).shape[axis]
    return pad_rows(batch, -(-rows // devices) * devices, axis)

  return padded
