"""Selective removal: which candidates to unlearn, by the distributional-unlearning rule.

An alternative to detecting each target's neighbours: treat the targets and their suspected
similar samples as samples of an unwanted distribution and remove the ones that pull the training
distribution away from the retained one. Allouah, Guerraoui and Koyejo, "Distributional Machine
Unlearning via Selective Data Removal" (arXiv 2507.15112; ICLR 2026), estimate the mean μ̂ of the
retained samples, score every sample x_i of the unwanted set by its distance to it,
s_i = ‖x_i − μ̂‖, and remove the f highest-scoring ones. Their analysis (Gaussians sharing a
covariance) shows that removing the samples farthest from the retained mean moves the edited
data's mean toward the retained one faster than random removal: quadratically fewer deletions in
the low-divergence regime. The rule needs only the retained mean, no model.

`distributional_removal` implements that rule in a feature space of the caller's choice
(`features`: raw pixels, or a model's penultimate-layer embedding as the paper does for images
and text). The paper's distance is Euclidean (`metric='euclidean'`, the default). Our one
extension, `metric='standardized'`, divides each feature by the retained samples' standard
deviation (the Mahalanobis distance under a diagonal covariance) for features of very different
scales; it is not in the paper.
"""

from __future__ import annotations

import jax
import numpy as np

from unlearn_jax import train
from unlearn_jax.remedies import detect

FEATURE_KINDS = ("pixel", "embedding")
METRICS = ("euclidean", "standardized")

# 'standardized': a retained standard deviation below this fraction of the mean one (e.g. an
# always-black MNIST border pixel) is raised to it, so constant features do not dominate.
_STD_FLOOR = 1e-3


def features(kind: str, images: np.ndarray, state: train.TrainState | None = None,
             mesh: jax.sharding.Mesh | None = None, batch_size: int = 512) -> np.ndarray:
  """Feature vectors for the distributional rule.

  Args:
    kind: 'pixel' (pixels in [0, 1], flattened) or 'embedding' (the penultimate-layer
      activations of `state`'s model in evaluation mode, as `detect.embeddings`).
    images: (N, H, W, C) uint8 images.
    state: the model; required by 'embedding'.
    mesh: device mesh for 'embedding' (None: the default device).
    batch_size: images per jitted chunk for 'embedding'.

  Returns:
    (N, d) float32 numpy array.

  Raises:
    ValueError: for an unknown kind, a missing state, or images that are not uint8 (N, H, W, C).
  """
  if kind not in FEATURE_KINDS:
    raise ValueError(f"Unknown kind={kind!r}; allowed values: {', '.join(FEATURE_KINDS)}.")
  images = np.asarray(images)
  if images.ndim != 4 or images.dtype != np.uint8:
    raise ValueError(f"images must be uint8 of shape (N, H, W, C); got dtype {images.dtype} and "
                     f"shape {images.shape}.")
  if kind == "pixel":
    return (images.reshape(len(images), -1) / np.float32(255.0)).astype(np.float32)
  if state is None:
    raise ValueError("kind='embedding' needs `state` (the model whose features it uses).")
  return detect.embeddings(state, images, mesh=mesh, batch_size=batch_size)


def removal_scores(features_retained: np.ndarray, features_candidates: np.ndarray, *,
                   metric: str = "euclidean") -> np.ndarray:
  """Each candidate's distance to the retained samples' mean (the rule's score s_i).

  Args:
    features_retained: (M, d) features of the retained samples, M ≥ 1.
    features_candidates: (N, d) features of the candidates for removal.
    metric: 'euclidean' (the paper's ‖x − μ̂‖) or 'standardized' (each feature divided by the
      retained standard deviation, floored at 1e-3 of its mean over features).

  Returns:
    (N,) float64 distances.

  Raises:
    ValueError: for an unknown metric, no retained samples, non-finite features, or feature
      matrices that are not 2-D with one d.
  """
  if metric not in METRICS:
    raise ValueError(f"Unknown metric={metric!r}; allowed values: {', '.join(METRICS)}.")
  retained = np.asarray(features_retained, np.float64)
  candidates = np.asarray(features_candidates, np.float64)
  if retained.ndim != 2 or candidates.ndim != 2 or retained.shape[1] != candidates.shape[1]:
    raise ValueError(f"features must be (M, d) and (N, d) matrices with one d; got "
                     f"{retained.shape} and {candidates.shape}.")
  if len(retained) == 0:
    raise ValueError("features_retained is empty; the rule needs the retained samples' mean.")
  if not (np.isfinite(retained).all() and np.isfinite(candidates).all()):
    raise ValueError("features must be finite.")
  offsets = candidates - retained.mean(axis=0)
  if metric == "standardized":
    std = retained.std(axis=0)
    floor = _STD_FLOOR * std.mean() if std.mean() > 0 else 1.0
    offsets = offsets / np.maximum(std, floor)
  return np.linalg.norm(offsets, axis=1)


def distributional_removal(features_retained: np.ndarray, features_candidates: np.ndarray,
                           budget: int, *, metric: str = "euclidean") -> np.ndarray:
  """The `budget` candidates to remove, in the order the distributional rule removes them.

  The rule of Allouah, Guerraoui and Koyejo (arXiv 2507.15112; ICLR 2026): estimate the mean μ̂
  of the retained samples, score every candidate by s_i = ‖x_i − μ̂‖ and remove the candidates
  with the largest scores first (ties go to the lower index). The paper applies it to the
  samples of an unwanted distribution with the retained distribution as reference; here the
  candidates are whatever the caller may remove (e.g. T ∪ S, or the whole training set) and the
  retained features those of the data that stays. The paper refits its model once on the edited
  data; which unlearning method removes the chosen samples is the caller's choice.

  Args:
    features_retained: (M, d) features of the retained samples (see `features`).
    features_candidates: (N, d) features of the candidates.
    budget: how many candidates to remove, 0 ≤ budget ≤ N.
    metric: 'euclidean' (the paper's) or 'standardized' (see `removal_scores`; our extension).

  Returns:
    (budget,) int64 indices into the candidates, farthest from the retained mean first.

  Raises:
    ValueError: for a budget outside [0, N], or as `removal_scores`.
  """
  distances = removal_scores(features_retained, features_candidates, metric=metric)
  if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or \
      not 0 <= budget <= len(distances):
    raise ValueError(f"budget must be an integer in [0, {len(distances)}] (the number of "
                     f"candidates); got {budget!r}.")
  return np.argsort(-distances, kind="stable")[:budget].astype(np.int64)
