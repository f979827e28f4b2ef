"""Detecting each target's similar samples: similarity scores, neighbour rules, and their quality.

The remedy of issue 7 unlearns a target together with the training samples that still carry its
influence. Provenance tells the study which samples those are, a deployed system has to find them:
`scores` rates every candidate against every target under one of four similarities, `select` turns
the scores into neighbours (threshold τ or top-k), `precision_recall` checks the neighbours against
provenance, and `neighbour_weights` gives the weighted variant one weight per candidate.

The measures (higher = more similar, all but SSIM are cosines in [-1, 1]):

* `ssim`: structural similarity of the images (`evaluate.similarity.pairwise_ssim`, Wang et al.,
  IEEE TIP 2004), in [-1, 1]; needs images of at least 11×11 pixels.
* `pixel_cosine`: cosine of the pixel vectors in [0, 1] after subtracting each image's own mean
  intensity (`centre_pixels=True`, the default), i.e. the Pearson correlation of the two images'
  pixels. Raw pixels of MNIST-like digits are all non-negative, so every pair has a raw cosine
  above 0 and the background-free strokes of any two digits overlap; centring makes a dark pixel
  where the target is dark count as agreement too. `centre_pixels=False` gives the raw cosine.
* `embedding`: cosine of the penultimate-layer activations of `state`'s model in evaluation mode
  (BatchNorm with its running statistics): the input of the model's last `flax.linen.Dense`
  layer, captured with `flax.linen.intercept_methods`, so it works for any Flax model whose
  classifier head is a Dense layer.
* `gradient`: cosine between the per-example gradients of the cross-entropy of each candidate
  (with its label) and of each target (with its label), the similarity behind gradient-based
  influence estimates (Pruthi, Liu, Kale and Sundararajan, "Estimating Training Data Influence
  by Tracing Gradient Descent", NeurIPS 2020, take inner products of such gradients).
  `gradient_params="last"` (default) restricts the gradient to the last Dense layer: with input
  h, bias and logits z, ∇_W ce = h ⊗ e and ∇_b ce = e where e = softmax(z) − onehot(y), so
  <g, g'> = (h·h' + 1)(e·e') and the cosine is cos([h, 1], [h', 1]) · cos(e, e'): exact, and
  never materialises the d × classes gradient. `gradient_params="all"` takes the gradient with
  respect to every parameter (vmap of grad over chunks sized so a chunk of flattened gradients
  stays near 128 MiB); use it for small models only.

Every measure runs batched with fixed chunk shapes under `jax.jit` (one compile per measure and
shape): candidates go through in chunks of `batch_size` (the last one padded), each chunk's
unit-norm feature vectors are multiplied with the targets' as matrices, and the (T, N) result
comes back to the host. With a `mesh`, chunks are split along its data axis and the model's
variables replicated.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from unlearn_jax import parallel, train
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.evaluate import similarity
from unlearn_jax.methods import common

MEASURES = ("ssim", "pixel_cosine", "embedding", "gradient")
GRADIENT_PARAMS = ("last", "all")
_MODEL_MEASURES = ("embedding", "gradient")

# Float32 values of flattened per-example gradients held at once by gradient_params='all'.
_GRADIENT_CHUNK_ELEMENTS = 1 << 25
_HIGHEST = jax.lax.Precision.HIGHEST  # Accelerators would otherwise multiply in bfloat16.


# ----------------------------------------------------------------------------------------------
# Features: unit-norm factors whose inner products multiply to the similarity.


def _unit(vectors: jax.Array) -> jax.Array:
  """Rows scaled to unit L2 norm; an all-zero row stays zero (cosine 0 with everything)."""
  norms = jnp.linalg.norm(vectors, axis=-1, keepdims=True)
  return vectors / jnp.where(norms > 0, norms, 1.0)


def _last_dense(apply_fn: Callable, variables: dict,
                images: jax.Array) -> tuple[jax.Array, jax.Array, bool, jax.Array]:
  """Evaluation-mode logits, and the input, output and use_bias of the last Dense layer called."""
  calls = []

  def interceptor(next_fun, args, kwargs, context):
    output = next_fun(*args, **kwargs)
    if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
      inputs = args[0] if args else kwargs["inputs"]
      calls.append((inputs, output, context.module.use_bias))
    return output

  with nn.intercept_methods(interceptor):
    logits = apply_fn(variables, images, train=False)
  if not calls:
    raise ValueError("the model calls no flax.linen.Dense layer; the embedding and gradient "
                     "measures read the input of the last Dense layer (the classifier head)")
  inputs, output, use_bias = calls[-1]
  return logits, inputs.reshape(inputs.shape[0], -1), use_bias, output


def _last_layer_factors(apply_fn: Callable, variables: dict, images: jax.Array,
                        labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Unit [h, 1] and unit e = softmax(z) − onehot(y): cos(∇ce, ∇'ce) = their cosines' product."""
  logits, hidden, use_bias, output = _last_dense(apply_fn, variables, images)
  if output is not logits:
    raise ValueError("gradient_params='last' needs a model whose logits are the output of its "
                     "last Dense layer; use gradient_params='all' for this model")
  if use_bias:
    hidden = jnp.concatenate([hidden, jnp.ones((hidden.shape[0], 1), hidden.dtype)], axis=1)
  error = jax.nn.softmax(logits) - jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  return _unit(hidden), _unit(error)


def _all_params_gradients(apply_fn: Callable, variables: dict, images: jax.Array,
                          labels: jax.Array) -> jax.Array:
  """(B, P) flattened per-example gradients of the cross-entropy w.r.t. every parameter."""
  others = {key: value for key, value in variables.items() if key != "params"}

  def one(image, label):
    grads = jax.grad(lambda params: common.example_loss(
        apply_fn, {**others, "params": params}, image, label))(variables["params"])
    return ravel_pytree(grads)[0]

  return jax.vmap(one)(images, labels)


def _features_impl(measure: str, apply_fn: Callable | None, gradient_params: str,
                   centre_pixels: bool, mesh: jax.sharding.Mesh | None, variables: Any,
                   images: jax.Array, labels: jax.Array) -> tuple[jax.Array, ...]:
  """The unit-norm factors of a chunk of uint8 images (see `_similarity_block`).

  Features are per example, so on a mesh each device computes those of its own rows
  (`shard_map`) rather than leaving the partitioning to XLA: with jax 0.10 on CPU, XLA's
  partitioning of vmap(grad) through a convolution with a batch-sharded input returned wrong
  gradients for every row outside the first device's shard.
  """
  compute = functools.partial(_example_features, measure, apply_fn, gradient_params,
                              centre_pixels)
  return _per_device(compute, mesh, variables, images, labels)


def _per_device(compute: Callable, mesh: jax.sharding.Mesh | None, variables: Any,
                *rows: jax.Array) -> Any:
  """compute(variables, *rows), on a mesh run by each device on its shard of the rows."""
  if mesh is None:
    return compute(variables, *rows)
  split = jax.sharding.PartitionSpec(parallel.DATA_AXIS)
  return jax.shard_map(compute, mesh=mesh,
                       in_specs=(jax.sharding.PartitionSpec(),) + (split,) * len(rows),
                       out_specs=split, check_vma=False)(variables, *rows)


def _example_features(measure: str, apply_fn: Callable | None, gradient_params: str,
                      centre_pixels: bool, variables: Any, images: jax.Array,
                      labels: jax.Array) -> tuple[jax.Array, ...]:
  if measure == "pixel_cosine":
    pixels = train.to_float(images).reshape(images.shape[0], -1)
    if centre_pixels:
      pixels = pixels - pixels.mean(axis=1, keepdims=True)
    return (_unit(pixels),)
  if measure == "embedding":
    return (_unit(_last_dense(apply_fn, variables, train.to_float(images))[1]),)
  if gradient_params == "last":
    return _last_layer_factors(apply_fn, variables, train.to_float(images), labels)
  return (_unit(_all_params_gradients(apply_fn, variables, images, labels)),)


_STATIC = ("measure", "apply_fn", "gradient_params", "centre_pixels", "mesh")
_features = jax.jit(_features_impl, static_argnames=_STATIC)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _similarity_block(measure: str, apply_fn: Callable | None, gradient_params: str,
                      centre_pixels: bool, mesh: jax.sharding.Mesh | None, variables: Any,
                      target_factors: tuple[jax.Array, ...], images: jax.Array,
                      labels: jax.Array) -> jax.Array:
  """(T, B) similarity of a chunk: the product over factors k of target_k @ candidate_kᵀ."""
  candidate_factors = _features_impl(measure, apply_fn, gradient_params, centre_pixels, mesh,
                                     variables, images, labels)
  block = None
  for target_factor, candidate_factor in zip(target_factors, candidate_factors):
    product = jnp.matmul(target_factor, candidate_factor.T, precision=_HIGHEST)
    block = product if block is None else block * product
  return block


# ----------------------------------------------------------------------------------------------
# Chunking.


def _chunks(images: np.ndarray, labels: np.ndarray, size: int
            ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
  """Fixed-size chunks (images, labels, number of real rows); the last one padded with zeros."""
  for start in range(0, len(images), size):
    stop = min(start + size, len(images))
    chunk_images, chunk_labels = images[start:stop], labels[start:stop]
    pad = size - (stop - start)
    if pad:
      chunk_images = np.concatenate(
          [chunk_images, np.zeros((pad,) + images.shape[1:], images.dtype)])
      chunk_labels = np.concatenate([chunk_labels, np.zeros(pad, labels.dtype)])
    yield chunk_images, chunk_labels, stop - start


def _put(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh | None) -> dict[str, jax.Array]:
  return jax.device_put(batch) if mesh is None else parallel.global_batch(batch, mesh)


def _chunk_size(batch_size: int, num: int, mesh: jax.sharding.Mesh | None,
                limit: int | None = None) -> int:
  """Rows per chunk: batch_size (or `limit`), no more than needed, a multiple of the mesh size."""
  size = min(batch_size, limit or batch_size, max(num, 1))
  return size if mesh is None else parallel.round_up(size, mesh)


# ----------------------------------------------------------------------------------------------
# Public API.


def _check_images(images: Any, name: str) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.dtype != np.uint8:
    raise ValueError(f"{name} must be uint8 images of shape (N, H, W, C); got dtype "
                     f"{images.dtype} and shape {images.shape}.")
  return images


def _check_labels(labels: Any, num: int, name: str, measure: str) -> np.ndarray:
  if labels is None:
    if measure == "gradient":
      raise ValueError(f"measure='gradient' needs {name} (the loss gradient of an example "
                       "depends on its label).")
    return np.zeros(num, np.int32)
  labels = np.asarray(labels)
  if labels.shape != (num,) or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{name} must be {num} integer labels; got dtype {labels.dtype} and shape "
                     f"{labels.shape}.")
  return labels.astype(np.int32)


def scores(measure: str, targets: np.ndarray, candidates: np.ndarray, *,
           state: train.TrainState | None = None, target_labels: np.ndarray | None = None,
           candidate_labels: np.ndarray | None = None, mesh: jax.sharding.Mesh | None = None,
           batch_size: int = 512, gradient_params: str = "last",
           centre_pixels: bool = True) -> np.ndarray:
  """Similarity of every candidate to every target under `measure` (see the module docstring).

  Args:
    measure: one of MEASURES: 'ssim', 'pixel_cosine', 'embedding' or 'gradient'.
    targets: (T, H, W, C) uint8 images.
    candidates: (N, H, W, C) uint8 images of the same H, W, C (e.g. the whole training set).
    state: the model whose features 'embedding' and 'gradient' use (evaluation mode).
    target_labels: (T,) int labels; required by 'gradient'.
    candidate_labels: (N,) int labels; required by 'gradient'.
    mesh: device mesh to split candidate chunks over (None: the default device).
    batch_size: candidates per jitted chunk (rounded up to a multiple of the mesh size); peak
      memory grows with it ('ssim': about 6 · 8 · batch_size · H · W · C float32 values).
    gradient_params: 'last' (the last Dense layer's kernel and bias) or 'all' parameters.
    centre_pixels: 'pixel_cosine' on pixels minus each image's mean (True) or raw pixels.

  Returns:
    (T, N) float32 numpy array; entry [t, n] is the similarity of candidates[n] to targets[t],
    higher = more similar (cosines and SSIM lie in [-1, 1]).

  Raises:
    ValueError: for an unknown measure or gradient_params (naming the allowed ones), a missing
      state or labels, images that are not uint8 (N, H, W, C) of one shape, batch_size < 1, or
      (ssim) images smaller than 11×11.
  """
  if measure not in MEASURES:
    raise ValueError(f"Unknown measure={measure!r}; allowed values: {', '.join(MEASURES)}.")
  if gradient_params not in GRADIENT_PARAMS:
    raise ValueError(f"Unknown gradient_params={gradient_params!r}; allowed values: "
                     f"{', '.join(GRADIENT_PARAMS)}.")
  if measure in _MODEL_MEASURES and state is None:
    raise ValueError(f"measure={measure!r} needs `state` (the model whose features it uses).")
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
  targets, candidates = _check_images(targets, "targets"), _check_images(candidates, "candidates")
  if targets.shape[1:] != candidates.shape[1:]:
    raise ValueError(f"targets and candidates must have the same (H, W, C); got "
                     f"{targets.shape[1:]} and {candidates.shape[1:]}.")
  target_labels = _check_labels(target_labels, len(targets), "target_labels", measure)
  candidate_labels = _check_labels(candidate_labels, len(candidates), "candidate_labels",
                                   measure)
  if len(targets) == 0 or len(candidates) == 0:
    return np.zeros((len(targets), len(candidates)), np.float32)
  if measure == "ssim":
    return _ssim_scores(targets, candidates, mesh, batch_size)

  apply_fn = state.apply_fn if measure in _MODEL_MEASURES else None
  variables = state.variables() if measure in _MODEL_MEASURES else None
  if variables is not None and mesh is not None:
    variables = parallel.replicate(variables, mesh)
  limit = None
  if measure == "gradient" and gradient_params == "all":
    num_params = sum(leaf.size for leaf in jax.tree.leaves(state.params))
    limit = max(1, _GRADIENT_CHUNK_ELEMENTS // max(num_params, 1))
  size = _chunk_size(batch_size, max(len(targets), len(candidates)), mesh, limit)
  static = dict(measure=measure, apply_fn=apply_fn, gradient_params=gradient_params,
                centre_pixels=centre_pixels, mesh=mesh)

  target_parts = []
  for images, labels, real in _chunks(targets, target_labels, size):
    batch = _put({"image": images, "label": labels}, mesh)
    factors = _features(variables=variables, images=batch["image"], labels=batch["label"],
                        **static)
    target_parts.append(tuple(factor[:real] for factor in factors))
  target_factors = tuple(jnp.concatenate(parts) for parts in zip(*target_parts))

  blocks = []
  for images, labels, real in _chunks(candidates, candidate_labels, size):
    batch = _put({"image": images, "label": labels}, mesh)
    block = _similarity_block(variables=variables, target_factors=target_factors,
                              images=batch["image"], labels=batch["label"], **static)
    blocks.append((block, real))  # Stays on device: the next chunk is dispatched meanwhile.
  # Blocks split over the mesh are gathered from every process (all processes take part).
  return np.concatenate([parallel.to_host(block)[:, :real] for block, real in blocks],
                        axis=1).astype(np.float32)


def _ssim_scores(targets: np.ndarray, candidates: np.ndarray, mesh: jax.sharding.Mesh | None,
                 batch_size: int) -> np.ndarray:
  """(T, N) SSIM through `similarity.pairwise_ssim`, candidates in fixed-size chunks."""
  size = _chunk_size(batch_size, len(candidates), mesh)
  target_images = targets.astype(np.float32) / 255.0
  labels = np.zeros(len(candidates), np.int32)
  blocks = []
  for images, _, real in _chunks(candidates, labels, size):
    images = _put({"image": images.astype(np.float32) / 255.0}, mesh)["image"]
    blocks.append(similarity.pairwise_ssim(target_images, images, chunk=8)[:, :real])
  return np.concatenate(blocks, axis=1).astype(np.float32)


def embeddings(state: train.TrainState, images: np.ndarray, *,
               mesh: jax.sharding.Mesh | None = None, batch_size: int = 512) -> np.ndarray:
  """Penultimate-layer activations (the input of the last Dense layer), evaluation mode.

  Args:
    state: the model.
    images: (N, H, W, C) uint8 images.
    mesh: device mesh to split chunks over (None: the default device).
    batch_size: images per jitted chunk.

  Returns:
    (N, d) float32 numpy array, not normalised.

  Raises:
    ValueError: for images that are not uint8 (N, H, W, C), or a model without a Dense layer.
  """
  images = _check_images(images, "images")
  size = _chunk_size(batch_size, len(images), mesh)
  variables = state.variables()
  if mesh is not None:
    variables = parallel.replicate(variables, mesh)
  parts = []
  for chunk, _, real in _chunks(images, np.zeros(len(images), np.int32), size):
    hidden = _embed(state.apply_fn, mesh, variables, _put({"image": chunk}, mesh)["image"])
    parts.append((hidden, real))
  if not parts:
    return np.zeros((0, 0), np.float32)
  return np.concatenate([parallel.to_host(h)[:real] for h, real in parts])


@functools.partial(jax.jit, static_argnums=(0, 1))
def _embed(apply_fn: Callable, mesh: jax.sharding.Mesh | None, variables: dict,
           images: jax.Array) -> jax.Array:
  return _per_device(lambda v, x: _last_dense(apply_fn, v, train.to_float(x))[1], mesh,
                     variables, images)


def select(scores: np.ndarray, *, tau: float | None = None, top_k: int | None = None,
           exclude: np.ndarray | None = None) -> np.ndarray:
  """Each target's neighbours: candidates scoring at least τ, or its k highest-scoring ones.

  Args:
    scores: (T, N) similarities (higher = more similar), e.g. from `scores`.
    tau: threshold; candidate n is a neighbour of target t when scores[t, n] >= tau.
    top_k: number of neighbours per target: the k highest scores of the row (ties go to the
      lower candidate index); fewer when fewer candidates are eligible.
    exclude: bool mask of candidates that are never neighbours, (N,) for every target or (T, N)
      per target (e.g. the targets themselves when they are among the candidates).

  Exactly one of `tau` and `top_k` must be given. NaN scores are never selected.

  Returns:
    (T, N) bool array, True where candidate n is a neighbour of target t.

  Raises:
    ValueError: unless exactly one rule is given, for a non-finite tau, a negative or
      non-integer top_k, scores that are not 2-D, or an exclude mask of another shape.
  """
  scores = np.asarray(scores)
  if scores.ndim != 2:
    raise ValueError(f"scores must be a (targets, candidates) matrix; got shape {scores.shape}.")
  if (tau is None) == (top_k is None):
    raise ValueError("give exactly one of tau (threshold) and top_k (neighbours per target); "
                     f"got tau={tau!r}, top_k={top_k!r}.")
  eligible = ~np.isnan(scores)
  if exclude is not None:
    exclude = np.asarray(exclude, bool)
    if exclude.shape not in (scores.shape[1:], scores.shape):
      raise ValueError(f"exclude must have shape {scores.shape[1:]} or {scores.shape}; got "
                       f"{exclude.shape}.")
    eligible &= ~exclude
  if tau is not None:
    if not isinstance(tau, (int, float, np.number)) or not math.isfinite(tau):
      raise ValueError(f"tau must be a finite number; got {tau!r}.")
    return eligible & (np.where(eligible, scores, -np.inf) >= tau)
  if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
    raise ValueError(f"top_k must be a non-negative integer; got {top_k!r}.")
  ranked = np.where(eligible, scores.astype(np.float64), -np.inf)
  order = np.argsort(-ranked, axis=1, kind="stable")[:, :top_k]
  selected = np.zeros(scores.shape, bool)
  np.put_along_axis(selected, order, True, axis=1)
  return selected & eligible


def precision_recall(selected: np.ndarray, candidate_group: np.ndarray, target_ids: np.ndarray,
                     candidate_kind: np.ndarray | None = None) -> dict[str, Any]:
  """Precision and recall of each target's neighbours against provenance.

  A neighbour of target t is correct when the candidate's `group` is t's id (and, with
  `candidate_kind`, its kind is SIMILAR: a target's own group is its id, so pass the kinds, or
  exclude the targets from the candidates, to keep a target from counting as its own similar
  sample).

  Per target: precision = correct / selected, recall = correct / similar samples of t among the
  candidates. The precision of an empty selection is undefined (NaN, counted in
  `num_empty_selections`), as is the recall of a target without similar candidates (NaN, counted
  in `num_without_similar`); the means skip undefined values (NaN when all are). The micro
  (pooled) values divide the totals over all targets instead.

  Args:
    selected: (T, N) bool, e.g. from `select`.
    candidate_group: (N,) the `group` of every candidate (target id, or -1).
    target_ids: (T,) ids of the targets, in the row order of `selected`.
    candidate_kind: optional (N,) kinds (sed.TARGET / SIMILAR / REST).

  Returns:
    dict with per-target arrays `precision`, `recall` (float64, NaN where undefined),
    `num_selected`, `num_correct`, `num_similar` (int64); floats `mean_precision`,
    `mean_recall`, `micro_precision`, `micro_recall`; ints `num_empty_selections`,
    `num_without_similar`.

  Raises:
    ValueError: for shapes that do not match.
  """
  selected = np.asarray(selected, bool)
  candidate_group, target_ids = np.asarray(candidate_group), np.asarray(target_ids)
  if selected.ndim != 2 or candidate_group.shape != selected.shape[1:] or \
      target_ids.shape != selected.shape[:1]:
    raise ValueError(f"selected must be (T, N) with candidate_group (N,) and target_ids (T,); got "
                     f"{selected.shape}, {candidate_group.shape} and {target_ids.shape}.")
  truth = candidate_group[None, :] == target_ids[:, None]
  if candidate_kind is not None:
    candidate_kind = np.asarray(candidate_kind)
    if candidate_kind.shape != candidate_group.shape:
      raise ValueError(f"candidate_kind must have shape {candidate_group.shape}; got "
                       f"{candidate_kind.shape}.")
    truth &= (candidate_kind == sed_lib.SIMILAR)[None, :]
  num_selected = selected.sum(axis=1).astype(np.int64)
  num_similar = truth.sum(axis=1).astype(np.int64)
  num_correct = (selected & truth).sum(axis=1).astype(np.int64)
  with np.errstate(divide="ignore", invalid="ignore"):
    precision = np.where(num_selected > 0, num_correct / np.maximum(num_selected, 1), np.nan)
    recall = np.where(num_similar > 0, num_correct / np.maximum(num_similar, 1), np.nan)
  return {
      "precision": precision, "recall": recall,
      "num_selected": num_selected, "num_correct": num_correct, "num_similar": num_similar,
      "mean_precision": _nanmean(precision), "mean_recall": _nanmean(recall),
      "micro_precision": _ratio(num_correct.sum(), num_selected.sum()),
      "micro_recall": _ratio(num_correct.sum(), num_similar.sum()),
      "num_empty_selections": int(np.sum(num_selected == 0)),
      "num_without_similar": int(np.sum(num_similar == 0)),
  }


def _nanmean(values: np.ndarray) -> float:
  defined = values[~np.isnan(values)]
  return float(defined.mean()) if len(defined) else float("nan")


def _ratio(numerator: int, denominator: int) -> float:
  return float(numerator / denominator) if denominator else float("nan")


def neighbour_weights(scores: np.ndarray, selected: np.ndarray) -> np.ndarray:
  """Per-candidate unlearning weights of the weighted neighbourhood variant.

  A selected candidate's raw weight is its highest similarity among the targets that selected
  it, clipped at 0; raw weights are divided by the largest one, so the most similar neighbour
  has weight 1 and the others are proportional to their similarity. Unselected candidates get 0.
  When no selected candidate has a positive similarity (e.g. top-k over unrelated images) the
  similarities say nothing, and every selected candidate gets weight 1 (the unweighted variant).

  Args:
    scores: (T, N) similarities.
    selected: (T, N) bool neighbours, e.g. from `select`.

  Returns:
    (N,) float32 weights in [0, 1].

  Raises:
    ValueError: if the shapes differ or are not 2-D.
  """
  scores, selected = np.asarray(scores, np.float64), np.asarray(selected, bool)
  if scores.ndim != 2 or scores.shape != selected.shape:
    raise ValueError(f"scores and selected must be (T, N) of one shape; got {scores.shape} and "
                     f"{selected.shape}.")
  chosen = np.where(selected & ~np.isnan(scores), scores, -np.inf)
  best = chosen.max(axis=0, initial=-np.inf)
  is_neighbour = np.isfinite(best)
  raw = np.where(is_neighbour, np.maximum(best, 0.0), 0.0)
  top = raw.max(initial=0.0)
  if top <= 0:
    return is_neighbour.astype(np.float32)
  return (raw / top).astype(np.float32)
