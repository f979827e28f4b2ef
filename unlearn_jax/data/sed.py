"""Similarity-entailed datasets (SEDs): targets, their similar samples, and exact provenance.

`build` picks `num_targets` targets from a training split, gives each `similar_per_target`
similar samples and labels every example with `id`, `kind` (target / similar / rest) and `group`
(the id of the target it belongs to, or -1). The similar samples come from the generator named by
`sed.generator`, one module of `unlearn_jax/data/generators/` each: either derived from the
target and appended to the training set with fresh ids (e.g. the block masking of Xu et al.,
arXiv 2601.06938, exact duplicates, or Gaussian noise), or, like `nearest`, selected among the
training rows themselves and relabelled in place (`generators/nearest.py`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Mapping

import numpy as np
from absl import logging

from unlearn_jax import config as config_lib
from unlearn_jax.data import generators

TARGET, SIMILAR, REST = 0, 1, 2
KIND_NAMES = ("target", "similar", "rest")
# The arrays of `SED.neighbours` and WORKDIR/data/neighbours.npz.
NEIGHBOUR_FIELDS = ("target_id", "neighbour_id", "rank", "position", "similarity")
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
    neighbours: with a generator that selects rows (`nearest`), one entry per similar sample
      (`NEIGHBOUR_FIELDS`: its target's id, its own id, its rank among the target's neighbours,
      0 = most similar, its position in the target's full ranking of candidates, which exceeds
      the rank where an earlier target took a row, and its similarity to the target); None
      otherwise.
  """
  train: Arrays
  test: Arrays
  target_ids: np.ndarray
  neighbours: Arrays | None = None


# ----------------------------------------------------------------------------------------------
# Construction.


def check_params(sed_config, num_train: float = math.inf, image_side: float = math.inf) -> None:
  """Raises a ConfigError for SED parameters out of range (for this split, when sizes are given).

  Args:
    sed_config: the `config.sed` section.
    num_train: size of the training split; num_targets may not exceed it, nor what the
      generator's own `check` refuses (`nearest`, which takes its similar samples from the
      split: num_targets × (1 + similar_per_target); `build` checks the same per class).
    image_side: the smaller image side in pixels; the block may not exceed it, nor the
      generator's own limit (SSIM of `nearest` with `similarity='ssim'` needs at least its
      11-pixel window).
  """
  c = config_lib
  c.require_number("sed.num_targets", sed_config.num_targets, low=1, high=num_train,
                   integer=True)
  c.require_number("sed.similar_per_target", sed_config.similar_per_target, low=0, integer=True)
  c.require_choice("sed.generator", sed_config.generator, generators.names())
  c.require_number("sed.block", sed_config.block, low=1, high=image_side, integer=True)
  c.require_number("sed.ratio", sed_config.ratio, low=0, high=1, high_open=True)
  c.require_number("sed.sigma", sed_config.sigma, low=0)
  c.require_choice("sed.similarity", sed_config.similarity, c.SIMILARITIES)
  c.require_choice("sed.selection", sed_config.selection, c.SELECTIONS)
  c.require_number("sed.seed", sed_config.seed, low=0, integer=True)
  generators.get(sed_config.generator).check(sed_config, num_train, image_side)


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


def target_rows(train: Mapping[str, np.ndarray], sed_config,
                atypicality: np.ndarray | None = None) -> np.ndarray:
  """The rows of `train` that `build(..., sed_config, atypicality)` makes its targets, in
  selection order (for code that needs them before the SED: the probe of `similarity=
  'embedding'` must not train on them)."""
  check_params(sed_config, len(train["label"]), min(train["image"].shape[1:3]))
  return _targets(train, sed_config, atypicality)[0]


def _targets(train: Mapping[str, np.ndarray], sed_config,
             atypicality: np.ndarray | None) -> tuple[np.ndarray, np.random.Generator]:
  """The target rows, and the generator (seeded by `sed.seed`) the synthetic copies continue."""
  rng = np.random.default_rng(sed_config.seed)
  rows = choose_targets(train["label"], sed_config.num_targets, sed_config.selection, rng,
                        atypicality)
  return rows, rng


def needs_features(sed_config) -> bool:
  """Whether `build` needs `features`: the generator's `needs_features` (`nearest` similar
  samples under `similarity='embedding'`)."""
  return generators.get(sed_config.generator).needs_features(sed_config)


def build(splits: Mapping[str, Mapping[str, np.ndarray]], sed_config,
          atypicality: np.ndarray | None = None, features: np.ndarray | None = None) -> SED:
  """Builds the SED from `{'train': ..., 'test': ...}` arrays (image, label, id).

  `atypicality` (one score per training row, NaN for non-candidates) is required by
  `sed_config.selection == 'atypical'` (see `choose_targets`); `features` (one vector per
  training row) by `needs_features(sed_config)`. Deterministic in `sed_config.seed` (and the
  scores and features).

  A generator that derives its similar samples (`Generator.derive`): they get fresh ids above
  every train and test id, in (target, copy) order, and the label of their target; D is the
  split followed by them. One that selects rows (`Generator.select`, e.g. `nearest`): D is the
  split itself; the rows it picks for a target become its similar samples (kind and group
  relabelled), and `SED.neighbours` records them.
  """
  train, test = splits["train"], splits["test"]
  check_params(sed_config, len(train["label"]), min(train["image"].shape[1:3]))
  rows, rng = _targets(train, sed_config, atypicality)
  num_train = len(train["label"])

  kind = np.full(num_train, REST, np.int8)
  kind[rows] = TARGET
  group = np.full(num_train, -1, np.int64)
  group[rows] = train["id"][rows]
  original = {"image": train["image"], "label": train["label"].astype(np.int32),
              "id": train["id"].astype(np.int64), "kind": kind, "group": group}
  test = {key: np.asarray(test[key]) for key in ("image", "label", "id")}
  target_ids = train["id"][rows].astype(np.int64)
  generator = generators.get(sed_config.generator)
  if generator.selects_rows:
    chosen = generator.select(train, rows, sed_config, features)
    return SED(train=original, test=test, target_ids=target_ids,
               neighbours=_relabel(original, chosen))
  similar = _derived(train, rows, sed_config, generator, rng, next_id=_next_id(train, test))
  merged = {key: np.concatenate([original[key], similar[key]]) for key in original}
  return SED(train=merged, test=test, target_ids=target_ids)


def _relabel(original: Arrays, chosen: Arrays) -> Arrays:
  """Makes the rows a generator selected (`generators.SELECTED_FIELDS`) similar samples of
  their targets, in place in `original`; returns their `NEIGHBOUR_FIELDS` record."""
  original["kind"][chosen["neighbour_row"]] = SIMILAR
  original["group"][chosen["neighbour_row"]] = original["id"][chosen["target_row"]]
  return {"target_id": original["id"][chosen["target_row"]].astype(np.int64),
          "neighbour_id": original["id"][chosen["neighbour_row"]].astype(np.int64),
          **{key: chosen[key] for key in generators.SELECTED_FIELDS[2:]}}


def _next_id(train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray]) -> int:
  """Above every train and test id, so ids stay unique across the whole provenance file."""
  return int(max(train["id"].max(), np.max(test["id"], initial=-1))) + 1


def _derived(train: Mapping[str, np.ndarray], rows: np.ndarray, sed_config,
             generator: generators.Generator, rng: np.random.Generator, next_id: int) -> Arrays:
  """The similar samples `generator.derive` makes of the targets `rows`, in (target, copy)
  order, with ids from `next_id` on; `rng` continues the stream that chose the targets."""
  count = sed_config.similar_per_target
  images = [generator.derive(train["image"][row], count, rng, sed_config) for row in rows]
  return {
      "image": np.concatenate(images) if images else train["image"][:0],
      "label": np.repeat(train["label"][rows], count).astype(np.int32),
      "id": np.arange(next_id, next_id + len(rows) * count, dtype=np.int64),
      "kind": np.full(len(rows) * count, SIMILAR, np.int8),
      "group": np.repeat(train["id"][rows], count).astype(np.int64),
  }


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


def save_neighbours(sed: SED, path: str, measure: str) -> None:
  """Writes `sed.neighbours` (a generator that selects rows: `nearest`) atomically to `path` (e.g.
  WORKDIR/data/neighbours.npz, beside the provenance); nothing for other generators.

  The file holds `NEIGHBOUR_FIELDS`, one entry per similar sample (target id, its id, its rank
  among the target's neighbours, 0 = most similar, its position in the target's ranking of all
  candidates, its similarity to the target), and `measure`, the similarity's name.
  """
  if sed.neighbours is None:
    return
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez_compressed(tmp, **sed.neighbours, measure=np.asarray(measure))
  os.replace(tmp, path)


def load_neighbours(path: str) -> dict[str, np.ndarray]:
  """Reads a file written by `save_neighbours`."""
  with np.load(path) as data:
    return {key: data[key] for key in data.files}
