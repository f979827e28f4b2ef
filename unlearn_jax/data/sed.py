"""Similarity-entailed datasets (SEDs): targets, their similar samples, and exact provenance.

`build` picks `num_targets` targets from a training split, gives each `similar_per_target`
similar samples and labels every example with `id`, `kind` (target / similar / rest) and `group`
(the id of the target it belongs to, or -1). The similar samples come from a generator: derived
from the target and appended to the training set with fresh ids (the block masking of Xu et al.,
arXiv 2601.06938, exact duplicates, or Gaussian noise), or, with `nearest`, found among the
training rows themselves: the rows of the target's class most similar to it (`sed.similarity`:
SSIM of the images, or the cosine of a probe model's features), relabelled in place (see
`nearest_neighbours`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from unlearn_jax import config as config_lib
from unlearn_jax.evaluate import similarity as similarity_lib

TARGET, SIMILAR, REST = 0, 1, 2
KIND_NAMES = ("target", "similar", "rest")
NEAREST = "nearest"  # the generator whose similar samples are training rows
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
    neighbours: with the `nearest` generator, one entry per similar sample (`NEIGHBOUR_FIELDS`:
      its target's id, its own id, its rank among the target's neighbours, 0 = most similar,
      its position in the target's full ranking of candidates, which exceeds the rank where an
      earlier target took a row, and its similarity to the target); None otherwise.
  """
  train: Arrays
  test: Arrays
  target_ids: np.ndarray
  neighbours: Arrays | None = None


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
  if name == NEAREST:
    raise ValueError("generator 'nearest' derives no image: its similar samples are training "
                     "rows (see nearest_neighbours)")
  raise config_lib.ConfigError(
      f"config.sed.generator={name!r}: must be one of {', '.join(config_lib.GENERATORS)}")


# ----------------------------------------------------------------------------------------------
# Construction.


def check_params(sed_config, num_train: float = math.inf, image_side: float = math.inf) -> None:
  """Raises a ConfigError for SED parameters out of range (for this split, when sizes are given).

  Args:
    sed_config: the `config.sed` section.
    num_train: size of the training split; num_targets may not exceed it, nor (generator
      `nearest`, which takes its similar samples from the split) num_targets × (1 +
      similar_per_target). `build` checks the same per class.
    image_side: the smaller image side in pixels; the block may not exceed it, and SSIM
      (`nearest` with `similarity='ssim'`) needs at least its 11-pixel window.
  """
  c = config_lib
  c.require_number("sed.num_targets", sed_config.num_targets, low=1, high=num_train,
                   integer=True)
  c.require_number("sed.similar_per_target", sed_config.similar_per_target, low=0, integer=True)
  c.require_choice("sed.generator", sed_config.generator, c.GENERATORS)
  c.require_number("sed.block", sed_config.block, low=1, high=image_side, integer=True)
  c.require_number("sed.ratio", sed_config.ratio, low=0, high=1, high_open=True)
  c.require_number("sed.sigma", sed_config.sigma, low=0)
  c.require_choice("sed.similarity", sed_config.similarity, c.SIMILARITIES)
  c.require_choice("sed.selection", sed_config.selection, c.SELECTIONS)
  c.require_number("sed.seed", sed_config.seed, low=0, integer=True)
  if sed_config.generator != NEAREST or sed_config.similar_per_target == 0:
    return
  needed = sed_config.num_targets * (1 + sed_config.similar_per_target)
  c.require(needed <= num_train, "sed.similar_per_target", sed_config.similar_per_target,
            f"generator 'nearest' takes each target's similar samples from the training split: "
            f"{sed_config.num_targets} targets need {needed} training rows, the split has "
            f"{num_train}")
  c.require(sed_config.similarity != "ssim" or image_side >= similarity_lib.WINDOW,
            "sed.similarity", sed_config.similarity,
            f"SSIM needs images of at least {similarity_lib.WINDOW}×{similarity_lib.WINDOW} "
            f"pixels (its Gaussian window); these have a side of {image_side}")


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
  """Whether `build` needs `features`: `nearest` similar samples under `similarity='embedding'`."""
  return (sed_config.generator == NEAREST and sed_config.similarity == "embedding"
          and sed_config.similar_per_target > 0)


def build(splits: Mapping[str, Mapping[str, np.ndarray]], sed_config,
          atypicality: np.ndarray | None = None, features: np.ndarray | None = None) -> SED:
  """Builds the SED from `{'train': ..., 'test': ...}` arrays (image, label, id).

  `atypicality` (one score per training row, NaN for non-candidates) is required by
  `sed_config.selection == 'atypical'` (see `choose_targets`); `features` (one vector per
  training row) by `needs_features(sed_config)`. Deterministic in `sed_config.seed` (and the
  scores and features).

  Synthetic generators: similar samples get fresh ids above every train and test id, in
  (target, copy) order, and the label of their target; D is the split followed by them.
  `nearest`: D is the split itself; the rows `nearest_neighbours` picks for a target (of its
  class) become its similar samples, and `SED.neighbours` records them.
  """
  train, test = splits["train"], splits["test"]
  check_params(sed_config, len(train["label"]), min(train["image"].shape[1:3]))
  rows, rng = _targets(train, sed_config, atypicality)
  num_train, count = len(train["label"]), sed_config.similar_per_target

  kind = np.full(num_train, REST, np.int8)
  kind[rows] = TARGET
  group = np.full(num_train, -1, np.int64)
  group[rows] = train["id"][rows]
  original = {"image": train["image"], "label": train["label"].astype(np.int32),
              "id": train["id"].astype(np.int64), "kind": kind, "group": group}
  test = {key: np.asarray(test[key]) for key in ("image", "label", "id")}
  target_ids = train["id"][rows].astype(np.int64)

  if sed_config.generator == NEAREST:
    if sed_config.similarity == "ssim" or count == 0:
      values = train["image"]
    else:
      values = _check_features(features, num_train)
    chosen = nearest_neighbours(train["label"], rows, count, values, sed_config.similarity)
    kind[chosen["neighbour_row"]] = SIMILAR
    group[chosen["neighbour_row"]] = train["id"][chosen["target_row"]]
    neighbours = {
        "target_id": train["id"][chosen["target_row"]].astype(np.int64),
        "neighbour_id": train["id"][chosen["neighbour_row"]].astype(np.int64),
        **{key: chosen[key] for key in ("rank", "position", "similarity")}}
    return SED(train=original, test=test, target_ids=target_ids, neighbours=neighbours)

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
  merged = {key: np.concatenate([original[key], similar[key]]) for key in original}
  return SED(train=merged, test=test, target_ids=target_ids)


def _check_features(features: np.ndarray | None, num_train: int) -> np.ndarray:
  """`features` as a finite (num_train, d) float array, or a ValueError saying what is wanted."""
  if features is None:
    raise ValueError("sed.similarity='embedding' needs `features`: one vector per training row "
                     "(the study's probe computes them: tasks/image.py neighbour_features)")
  features = np.asarray(features)
  if features.ndim != 2 or len(features) != num_train:
    raise ValueError(f"features must be one vector per training row, shape ({num_train}, d); "
                     f"got {features.shape}")
  if not np.all(np.isfinite(features)):
    raise ValueError("features must be finite")
  return features


# ----------------------------------------------------------------------------------------------
# Nearest neighbours: similar samples that occur in the data.

# Candidates compared with the targets per jitted call. SSIM's peak memory is about
# 6 · 8 · NEAREST_CHUNK · H · W · C float32 values (~300 MB for 28×28 digits).
NEAREST_CHUNK = 2048
# Targets compared at once (a class's targets are padded to a multiple of it).
_QUERY_BLOCK = 8
# Logged progress of a long neighbour search: a line at most this often, in seconds.
_LOG_EVERY_S = 10.0


def similarities(measure: str, queries: np.ndarray, candidates: np.ndarray,
                 chunk: int = NEAREST_CHUNK) -> np.ndarray:
  """Similarity of every candidate to every query, higher = more similar.

  Args:
    measure: 'ssim': SSIM of uint8 (N, H, W, C) images taken to [0, 1], dm-pix's `ssim`
      (Wang et al., IEEE TIP 2004: 11×11 Gaussian window, σ = 1.5) for every pair, as
      `evaluate.similarity.pairwise_ssim` computes it; 'embedding': cosine of (N, d) feature
      vectors (a zero vector has cosine 0 with everything).
    queries: the targets' images or features.
    candidates: the candidates' images or features.
    chunk: candidates per jitted call. Every call compares `_QUERY_BLOCK` queries with `chunk`
      candidates (the last block and chunk padded), so a search compiles once.

  Returns:
    (len(queries), len(candidates)) float32 numpy array.
  """
  num_queries, num_candidates = len(queries), len(candidates)
  if num_queries == 0 or num_candidates == 0:
    return np.zeros((num_queries, num_candidates), np.float32)
  if measure == "ssim":
    compare = lambda block, chunk_: similarity_lib.pairwise_ssim(
        jnp.asarray(block, jnp.float32) / 255.0, jnp.asarray(chunk_, jnp.float32) / 255.0,
        chunk=_QUERY_BLOCK)
  elif measure == "embedding":
    compare = lambda block, chunk_: _cosine(jnp.asarray(block, jnp.float32),
                                            jnp.asarray(chunk_, jnp.float32))
  else:
    raise ValueError(f"unknown similarity {measure!r}; one of "
                     f"{', '.join(config_lib.SIMILARITIES)}")
  blocks = [_padded(queries[i:i + _QUERY_BLOCK], _QUERY_BLOCK)
            for i in range(0, num_queries, _QUERY_BLOCK)]
  columns = []
  for start in range(0, num_candidates, chunk):
    part = _padded(candidates[start:start + chunk], chunk)
    column = np.concatenate([np.asarray(compare(block, part)) for block in blocks])
    columns.append(column[:num_queries, :min(chunk, num_candidates - start)])
  return np.concatenate(columns, axis=1).astype(np.float32)


def _padded(values: np.ndarray, size: int) -> np.ndarray:
  """`values` with zero rows appended up to `size` rows."""
  missing = size - len(values)
  if missing == 0:
    return values
  return np.concatenate([values, np.zeros((missing,) + values.shape[1:], values.dtype)])


def _unit(vectors: jax.Array) -> jax.Array:
  """Rows scaled to unit L2 norm; an all-zero row stays zero."""
  norms = jnp.linalg.norm(vectors, axis=-1, keepdims=True)
  return vectors / jnp.where(norms > 0, norms, 1.0)


@jax.jit
def _cosine(queries: jax.Array, candidates: jax.Array) -> jax.Array:
  return jnp.matmul(_unit(queries), _unit(candidates).T, precision=jax.lax.Precision.HIGHEST)


def nearest_neighbours(labels: np.ndarray, targets: np.ndarray, count: int,
                       values: np.ndarray | None, measure: str,
                       chunk: int = NEAREST_CHUNK) -> Arrays:
  """Each target's `count` most similar training rows: the `nearest` generator's similar samples.

  Candidates of a target are the rows of its class (its label, as a synthetic copy carries its
  target's label) that are not targets. Each row is the neighbour of at most one target: the
  targets choose in selection order, each taking its `count` most similar rows among those no
  earlier target took (greedy). Equal similarities go to the lower row (the split's order), so
  the choice is deterministic. The similarities (`similarities`) are computed once, for the
  targets of each class against that class's rows only.

  Args:
    labels: (N,) labels of the training split.
    targets: target rows in selection order.
    count: neighbours per target (0: none).
    values: (N, ...) what `measure` compares: uint8 images (ssim) or feature vectors
      (embedding); unused when count is 0.
    measure: 'ssim' or 'embedding' (see `similarities`).
    chunk: candidates per jitted call.

  Returns:
    arrays of one entry per neighbour, ordered by target then rank: `target_row`,
    `neighbour_row` (rows of the split), `rank` (0 = the target's most similar neighbour),
    `position` (its 0-based position in the target's ranking of all its candidates: above the
    rank where an earlier target took a more similar row) and `similarity` (float32).

  Raises:
    ConfigError: a class has fewer free rows than its targets need (naming
      sed.similar_per_target).
  """
  targets = np.asarray(targets, np.int64)
  parts: dict[str, list[np.ndarray]] = {
      "target_row": [np.zeros(0, np.int64)], "neighbour_row": [np.zeros(0, np.int64)],
      "rank": [np.zeros(0, np.int64)], "position": [np.zeros(0, np.int64)],
      "similarity": [np.zeros(0, np.float32)]}
  if count == 0 or len(targets) == 0:
    return {key: value[0] for key, value in parts.items()}
  is_target = np.zeros(len(labels), bool)
  is_target[targets] = True
  pools = {}  # class -> (indices into `targets`, candidate rows)
  for label in np.unique(labels[targets]):
    mine = np.flatnonzero(labels[targets] == label)
    pool = np.flatnonzero((labels == label) & ~is_target)
    config_lib.require(
        len(pool) >= len(mine) * count, "sed.similar_per_target", count,
        f"generator 'nearest' needs {len(mine)} × {count} rows of class {label} for its "
        f"{len(mine)} target(s) there; the split has {len(pool)} other rows of that class")
    pools[label] = (mine, pool)
  # One candidate-chunk shape for every class (smaller when no class has `chunk` candidates).
  chunk = min(chunk, max(len(pool) for _, pool in pools.values()))
  rankings = {}  # index into `targets` -> (candidate rows, their similarities), best first
  start = last_log = time.perf_counter()
  for done, (label, (mine, pool)) in enumerate(pools.items(), 1):
    scores = similarities(measure, values[targets[mine]], values[pool], chunk)
    for index, row_scores in zip(mine, scores):
      order = np.lexsort((pool, -row_scores))  # by similarity, then row (last key first)
      rankings[index] = (pool[order], row_scores[order])
    now = time.perf_counter()
    if now - last_log >= _LOG_EVERY_S or done == len(pools):
      logging.info("nearest (%s): %d of %d classes searched (class %s: %d targets x %d "
                   "candidates), %.1f s", measure, done, len(pools), label, len(mine),
                   len(pool), now - start)
      last_log = now
  taken = np.zeros(len(labels), bool)
  for index, row in enumerate(targets):
    ranked_rows, ranked_scores = rankings[index]
    free = np.flatnonzero(~taken[ranked_rows])[:count]
    taken[ranked_rows[free]] = True
    parts["target_row"].append(np.full(count, row, np.int64))
    parts["neighbour_row"].append(ranked_rows[free].astype(np.int64))
    parts["rank"].append(np.arange(count, dtype=np.int64))
    parts["position"].append(free.astype(np.int64))
    parts["similarity"].append(ranked_scores[free].astype(np.float32))
  result = {key: np.concatenate(value) for key, value in parts.items()}
  chosen = result["similarity"]
  logging.info("nearest (%s): %d targets x %d neighbours, similarity mean %.3f (min %.3f, max "
               "%.3f); %d neighbour(s) ranked below a row an earlier target took", measure,
               len(targets), count, chosen.mean(), chosen.min(), chosen.max(),
               int(np.sum(result["position"] > result["rank"])))
  return result


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
  """Writes `sed.neighbours` (generator `nearest`) atomically to `path` (e.g.
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
