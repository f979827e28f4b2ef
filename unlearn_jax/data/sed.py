"""Similarity-entailed datasets (SEDs): targets, their similar samples, and exact provenance.

`build` picks `num_targets` targets from a training split, derives `similar_per_target` similar
samples from each with a generator (the block masking of Xu et al., arXiv 2601.06938, exact
duplicates, or Gaussian noise), appends them to the training set and labels every example with
`id`, `kind` (target / similar / rest) and `group` (the id of the target it derives from, or -1).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Mapping

import numpy as np
from absl import logging

from unlearn_jax import config as config_lib

TARGET, SIMILAR, REST = 0, 1, 2
KIND_NAMES = ("target", "similar", "rest")
Arrays = dict[str, np.ndarray]


class ProvenanceSplits:
  """T, D \\ T and R of a training set `self.train` whose examples carry `kind`.

  The sets and their provenance: docs/design.md §3.1.

  Shared by the image SED and the language-model track's QASED.
  """
  train: Arrays

  def select(self, *kinds: int) -> Arrays:
    """Returns the training examples whose kind is in `kinds` (order preserved)."""
    keep = np.isin(self.train["kind"], kinds)
    return {key: value[keep] for key, value in self.train.items()}

  @property
  def forget(self) -> Arrays:
    """T: the targets (the unlearning request)."""
    return self.select(TARGET)

  @property
  def retain(self) -> Arrays:
    """D \\ T: what `retrain` trains on."""
    return self.select(SIMILAR, REST)

  @property
  def rest(self) -> Arrays:
    """R = D \\ (T ∪ S): what `clean` trains on."""
    return self.select(REST)


@dataclasses.dataclass(frozen=True)
class SED(ProvenanceSplits):
  """A training set D with provenance, and the held-out test split.

  Attributes:
    train: D as arrays `image` uint8 (N,H,W,C), `label` int32, `id` int64, `kind` int8 (TARGET,
      SIMILAR or REST) and `group` int64 (target id, or -1).
    test: the test split with `image`, `label`, `id`.
    target_ids: ids of T in selection order.
  """
  train: Arrays
  test: Arrays
  target_ids: np.ndarray


# ----------------------------------------------------------------------------------------------
# Similar-sample generators. Each maps one uint8 image and a numpy Generator to `count` copies.


def block_mask(image: np.ndarray, count: int, rng: np.random.Generator, *, block: int,
               ratio: float) -> tuple[np.ndarray, np.ndarray]:
  """Zeroes a fraction `ratio` of the image's block×block blocks, a fresh choice per copy.

  The image is tiled by ceil(H/block) × ceil(W/block) blocks (edge blocks may be smaller);
  exactly floor(ratio × number of blocks + 1/2) of them are zeroed in each copy.

  Returns:
    copies uint8 (count, H, W, C) and the block masks bool (count, rows, cols), True = zeroed.
  """
  height, width = image.shape[:2]
  rows, cols = -(-height // block), -(-width // block)
  num_masked = int(math.floor(ratio * rows * cols + 0.5))  # half up, not to even
  scores = rng.random((count, rows * cols))
  chosen = np.argsort(scores, axis=1)[:, :num_masked]
  masks = np.zeros((count, rows * cols), bool)
  np.put_along_axis(masks, chosen, True, axis=1)
  masks = masks.reshape(count, rows, cols)
  pixel_masks = masks.repeat(block, axis=1).repeat(block, axis=2)[:, :height, :width]
  copies = np.where(pixel_masks[..., None], 0, image[None]).astype(np.uint8)
  return copies, masks


def duplicate(image: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
  """Exact copies of the image."""
  del rng
  return np.repeat(image[None], count, axis=0)


def gaussian_noise(image: np.ndarray, count: int, rng: np.random.Generator, *,
                   sigma: float) -> np.ndarray:
  """Adds N(0, sigma²) noise in [0, 1] intensity units, then rounds and clips to uint8."""
  noise = rng.normal(0.0, sigma * 255.0, size=(count,) + image.shape)
  return np.clip(np.rint(image[None].astype(np.float64) + noise), 0, 255).astype(np.uint8)


def generate(image: np.ndarray, count: int, rng: np.random.Generator, sed_config) -> np.ndarray:
  """Applies the generator named by `sed_config.generator` to one image."""
  name = sed_config.generator
  if name == "block_mask":
    return block_mask(image, count, rng, block=sed_config.block, ratio=sed_config.ratio)[0]
  if name == "duplicate":
    return duplicate(image, count, rng)
  if name == "gaussian_noise":
    return gaussian_noise(image, count, rng, sigma=sed_config.sigma)
  raise config_lib.ConfigError(
      f"config.sed.generator={name!r}: must be one of {', '.join(config_lib.GENERATORS)}")


# ----------------------------------------------------------------------------------------------
# Construction.


def check_params(sed_config, num_train: float = math.inf, image_side: float = math.inf) -> None:
  """Raises a ConfigError for SED parameters out of range (for this split, when sizes are given).

  Args:
    sed_config: the `config.sed` section.
    num_train: size of the training split; num_targets may not exceed it.
    image_side: the smaller image side in pixels; the block may not exceed it.
  """
  c = config_lib
  c.require_number("sed.num_targets", sed_config.num_targets, low=1, high=num_train,
                   integer=True)
  c.require_number("sed.similar_per_target", sed_config.similar_per_target, low=0, integer=True)
  c.require_choice("sed.generator", sed_config.generator, c.GENERATORS)
  c.require_number("sed.block", sed_config.block, low=1, high=image_side, integer=True)
  c.require_number("sed.ratio", sed_config.ratio, low=0, high=1, high_open=True)
  c.require_number("sed.sigma", sed_config.sigma, low=0)
  c.require_choice("sed.selection", sed_config.selection, c.SELECTIONS)
  c.require_number("sed.seed", sed_config.seed, low=0, integer=True)


def choose_targets(labels: np.ndarray, num_targets: int, selection: str,
                   rng: np.random.Generator, atypicality: np.ndarray | None = None) -> np.ndarray:
  """Returns the row indices of the targets.

  `random`: uniformly at random; `class_balanced`: round-robin over the classes; `atypical`:
  the `num_targets` rows with the lowest `atypicality` score (a margin from a model that did
  not train on them; NaN marks rows that are not candidates), ties broken at random.
  """
  if selection == "atypical":
    if atypicality is None or len(atypicality) != len(labels):
      raise ValueError("sed.selection='atypical' needs one atypicality score per training row")
    candidates = np.flatnonzero(np.isfinite(atypicality))
    if len(candidates) < num_targets:
      raise ValueError(f"sed.selection='atypical': {len(candidates)} candidates for "
                       f"{num_targets} targets")
    shuffled = rng.permutation(candidates)
    order = np.argsort(atypicality[shuffled], kind="stable")
    return shuffled[order[:num_targets]]
  if selection == "random":
    return rng.choice(len(labels), size=num_targets, replace=False)
  classes = np.unique(labels)
  per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
  order = [rows[i] for i in range(max(map(len, per_class))) for rows in per_class
           if i < len(rows)]
  return np.asarray(order[:num_targets])


def build(splits: Mapping[str, Mapping[str, np.ndarray]], sed_config,
          atypicality: np.ndarray | None = None) -> SED:
  """Builds the SED from `{'train': ..., 'test': ...}` arrays (image, label, id).

  `atypicality` (one score per training row, NaN for non-candidates) is required by
  `sed_config.selection == 'atypical'` (see `choose_targets`). Deterministic in
  `sed_config.seed` (and the scores). Similar samples get fresh ids above every train and test
  id, in (target, copy) order, and the label of their target.
  """
  train, test = splits["train"], splits["test"]
  check_params(sed_config, len(train["label"]), min(train["image"].shape[1:3]))
  rng = np.random.default_rng(sed_config.seed)
  rows = choose_targets(train["label"], sed_config.num_targets, sed_config.selection, rng,
                        atypicality)
  num_train, count = len(train["label"]), sed_config.similar_per_target

  kind = np.full(num_train, REST, np.int8)
  kind[rows] = TARGET
  group = np.full(num_train, -1, np.int64)
  group[rows] = train["id"][rows]

  images = [generate(train["image"][row], count, rng, sed_config) for row in rows]
  # Above every train and test id, so ids stay unique across the whole provenance file.
  next_id = int(max(train["id"].max(), np.max(test["id"], initial=-1))) + 1
  similar = {
      "image": np.concatenate(images) if images else train["image"][:0],
      "label": np.repeat(train["label"][rows], count).astype(np.int32),
      "id": np.arange(next_id, next_id + len(rows) * count, dtype=np.int64),
      "kind": np.full(len(rows) * count, SIMILAR, np.int8),
      "group": np.repeat(train["id"][rows], count).astype(np.int64),
  }
  original = {"image": train["image"], "label": train["label"].astype(np.int32),
              "id": train["id"].astype(np.int64), "kind": kind, "group": group}
  merged = {key: np.concatenate([original[key], similar[key]]) for key in original}
  test = {key: np.asarray(test[key]) for key in ("image", "label", "id")}
  return SED(train=merged, test=test, target_ids=train["id"][rows].astype(np.int64))


def stratified_subset(split: Mapping[str, np.ndarray], size: int, seed: int) -> Arrays:
  """Draws `size` examples with class proportions kept (0 or >= len keeps everything)."""
  num = len(split["label"])
  if size <= 0 or size >= num:
    return dict(split)
  rng = np.random.default_rng(seed)
  labels = split["label"]
  classes, counts = np.unique(labels, return_counts=True)
  quota = np.floor(counts / num * size).astype(int)
  # Hand the rounding remainder to the classes with the largest fractional parts.
  remainder = size - quota.sum()
  quota[np.argsort(-(counts / num * size - quota))[:remainder]] += 1
  keep = np.concatenate([rng.choice(np.flatnonzero(labels == c), q, replace=False)
                         for c, q in zip(classes, quota)])
  keep.sort()
  return {key: value[keep] for key, value in split.items()}


# ----------------------------------------------------------------------------------------------
# Provenance on disk.


def provenance(sed: SED) -> dict[str, np.ndarray]:
  """The provenance arrays saved to WORKDIR/data/provenance.npz."""
  num_train, num_test = len(sed.train["id"]), len(sed.test["id"])
  return {
      "id": np.concatenate([sed.train["id"], sed.test["id"]]),
      "label": np.concatenate([sed.train["label"], sed.test["label"]]),
      "kind": np.concatenate([sed.train["kind"], np.full(num_test, -1, np.int8)]),
      "group": np.concatenate([sed.train["group"], np.full(num_test, -1, np.int64)]),
      "split": np.concatenate([np.zeros(num_train, np.int8), np.ones(num_test, np.int8)]),
      "kind_names": np.asarray(KIND_NAMES),
      "split_names": np.asarray(("train", "test")),
  }


def save_provenance(sed: SED, path: str) -> None:
  """Writes provenance atomically; an existing file must match exactly (same SED)."""
  arrays = provenance(sed)
  if os.path.exists(path):
    try:
      saved = load_provenance(path)
    except Exception as error:  # pylint: disable=broad-except  (zip, pickle and OS errors)
      # The SED is a deterministic function of the config, so rewriting it loses nothing.
      logging.warning("provenance file %s is unreadable (%s: %s); rebuilding it from the config",
                      path, type(error).__name__, error)
      os.remove(path)
      return save_provenance(sed, path)
    if saved.keys() != arrays.keys() or any(
        not np.array_equal(saved[k], arrays[k]) for k in arrays):
      raise RuntimeError(
          f"{path} describes a different SED than this config builds; use a new workdir")
    return
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez_compressed(tmp, **arrays)
  os.replace(tmp, path)


def load_provenance(path: str) -> dict[str, np.ndarray]:
  """Reads a provenance file written by `save_provenance`."""
  with np.load(path) as data:
    return {key: data[key] for key in data.files}
