"""Nearest rows: the `sed.similar_per_target` training rows of the target's class most like it.

S(t) is not derived from t but found in the data (docs/design.md §3.1): the rows of t's class
that are not targets, ranked by `sed.similarity` (SSIM of the images, or the cosine of a probe
model's features), each row the neighbour of one target at most (`nearest_neighbours`). The
chosen rows keep their ids and are relabelled in place by `data/sed.py:build`.
"""

from __future__ import annotations

import time
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from unlearn_jax import config as config_lib
from unlearn_jax.data import generators
from unlearn_jax.evaluate import similarity as similarity_lib

Arrays = dict[str, np.ndarray]
# Candidates compared with the targets per jitted call. SSIM's peak memory is about
# 6 · 8 · NEAREST_CHUNK · H · W · C float32 values (~300 MB for 28×28 digits).
NEAREST_CHUNK = 2048
# Targets compared at once (a class's targets are padded to a multiple of it).
_QUERY_BLOCK = 8
# Logged progress of a long neighbour search: a line at most this often, in seconds.
_LOG_EVERY_S = 10.0


def select(train: Mapping[str, np.ndarray], targets: np.ndarray, sed_config,
           features: np.ndarray | None) -> Arrays:
  """The `Generator.select` of `nearest`: `nearest_neighbours` under `sed.similarity`."""
  count = sed_config.similar_per_target
  if sed_config.similarity == "ssim" or count == 0:
    values = train["image"]
  else:
    values = _check_features(features, len(train["label"]))
  return nearest_neighbours(train["label"], targets, count, values, sed_config.similarity)


def check(sed_config, num_train: float, image_side: float) -> None:
  """Refuses more targets and neighbours than the split has rows, and SSIM of small images."""
  if sed_config.similar_per_target == 0:
    return
  c = config_lib
  needed = sed_config.num_targets * (1 + sed_config.similar_per_target)
  c.require(needed <= num_train, "sed.similar_per_target", sed_config.similar_per_target,
            f"generator 'nearest' takes each target's similar samples from the training split: "
            f"{sed_config.num_targets} targets need {needed} training rows, the split has "
            f"{num_train}")
  c.require(sed_config.similarity != "ssim" or image_side >= similarity_lib.WINDOW,
            "sed.similarity", sed_config.similarity,
            f"SSIM needs images of at least {similarity_lib.WINDOW}×{similarity_lib.WINDOW} "
            f"pixels (its Gaussian window); these have a side of {image_side}")


def needs_features(sed_config) -> bool:
  """Similar samples ranked by `similarity='embedding'` need the probe's features."""
  return sed_config.similarity == "embedding" and sed_config.similar_per_target > 0


GENERATOR = generators.Generator(name="nearest", fields=("similarity",), select=select,
                                 check=check, needs_features=needs_features)


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
# Similarities.


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
    prepare = lambda values: jnp.asarray(values, jnp.float32) / 255.0
    compare = lambda block, part: similarity_lib.pairwise_ssim(block, part, chunk=_QUERY_BLOCK)
  elif measure == "embedding":
    prepare = lambda values: jnp.asarray(values, jnp.float32)
    compare = _cosine
  else:
    raise ValueError(f"unknown similarity {measure!r}; one of "
                     f"{', '.join(config_lib.SIMILARITIES)}")
  # Each query block and each candidate chunk goes to the device once.
  blocks = [prepare(_padded(queries[i:i + _QUERY_BLOCK], _QUERY_BLOCK))
            for i in range(0, num_queries, _QUERY_BLOCK)]
  columns = []
  for start in range(0, num_candidates, chunk):
    part = prepare(_padded(candidates[start:start + chunk], chunk))
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


# ----------------------------------------------------------------------------------------------
# The neighbour search.


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
    `generators.SELECTED_FIELDS` arrays of one entry per neighbour, ordered by target then
    rank: `target_row`, `neighbour_row` (rows of the split), `rank` (0 = the target's most
    similar neighbour), `position` (its 0-based position in the target's ranking of all its
    candidates: above the rank where an earlier target took a more similar row) and
    `similarity` (float32).

  Raises:
    ConfigError: a class has fewer free rows than its targets need (naming
      sed.similar_per_target).
  """
  targets = np.asarray(targets, np.int64)
  if count == 0 or len(targets) == 0:
    return _assign({}, targets[:0], count, len(labels))
  pools = _pools(labels, targets, count)
  # One candidate-chunk shape for every class (smaller when no class has `chunk` candidates).
  chunk = min(chunk, max(len(pool) for _, pool in pools.values()))
  rankings = _rankings(pools, targets, values, measure, chunk)
  result = _assign(rankings, targets, count, len(labels))
  chosen = result["similarity"]
  logging.info("nearest (%s): %d targets x %d neighbours, similarity mean %.3f (min %.3f, max "
               "%.3f); %d neighbour(s) ranked below a row an earlier target took", measure,
               len(targets), count, chosen.mean(), chosen.min(), chosen.max(),
               int(np.sum(result["position"] > result["rank"])))
  return result


def _pools(labels: np.ndarray, targets: np.ndarray,
           count: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
  """{class: (indices into `targets` of its targets, its candidate rows)}; a ConfigError when a
  class has fewer candidates than its targets need."""
  is_target = np.zeros(len(labels), bool)
  is_target[targets] = True
  pools = {}
  for label in np.unique(labels[targets]):
    mine = np.flatnonzero(labels[targets] == label)
    pool = np.flatnonzero((labels == label) & ~is_target)
    config_lib.require(
        len(pool) >= len(mine) * count, "sed.similar_per_target", count,
        f"generator 'nearest' needs {len(mine)} × {count} rows of class {label} for its "
        f"{len(mine)} target(s) there; the split has {len(pool)} other rows of that class")
    pools[label] = (mine, pool)
  return pools


def _rankings(pools: dict[int, tuple[np.ndarray, np.ndarray]], targets: np.ndarray,
              values: np.ndarray, measure: str,
              chunk: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
  """{index into `targets`: (its candidate rows, their similarities)}, most similar first
  (equal similarities: lower row first), one class at a time with logged progress."""
  rankings = {}
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
  return rankings


def _assign(rankings: dict[int, tuple[np.ndarray, np.ndarray]], targets: np.ndarray,
            count: int, num_rows: int) -> Arrays:
  """The greedy choice: each target in order takes its `count` best rows no earlier one took."""
  parts: dict[str, list[np.ndarray]] = {key: [] for key in generators.SELECTED_FIELDS}
  taken = np.zeros(num_rows, bool)
  for index, row in enumerate(targets):
    ranked_rows, ranked_scores = rankings[index]
    free = np.flatnonzero(~taken[ranked_rows])[:count]
    taken[ranked_rows[free]] = True
    parts["target_row"].append(np.full(count, row))
    parts["neighbour_row"].append(ranked_rows[free])
    parts["rank"].append(np.arange(count))
    parts["position"].append(free)
    parts["similarity"].append(ranked_scores[free])
  dtypes = generators.SELECTED_DTYPES
  return {key: np.concatenate(value, dtype=dtypes[key]) if value else np.zeros(0, dtypes[key])
          for key, value in parts.items()}
