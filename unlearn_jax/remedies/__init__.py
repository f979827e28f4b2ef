"""Remedies for similar samples: find what carries a target's influence, choose what to remove.

Xu et al. (arXiv 2601.06938, 2026) show that unlearning the targets alone leaves their influence
in the training samples similar to them. The remedy of issue 7 unlearns each target together with
its detected neighbours (`+nbr`), or with neighbours weighted by their similarity (`+wnbr`); the
distributional-unlearning rule of Allouah, Guerraoui and Koyejo (ICLR 2026) is the baseline way
to choose what to remove (`+dist`).

* `detect`: similarity of every candidate to every target (SSIM, pixel cosine, penultimate-layer
  embedding cosine, per-example gradient cosine), jitted and chunked; neighbour rules (τ or
  top-k); precision and recall against provenance; per-candidate weights.
* `select`: the distributional rule (remove the candidates farthest from the retained mean
  first) and the pixel / embedding features it runs on.

`remedies.select` names that module, so the neighbour rule `detect.select` is re-exported here as
`select_neighbours`.
"""

from unlearn_jax.remedies import detect, select
from unlearn_jax.remedies.detect import (GRADIENT_PARAMS, MEASURES, embeddings,
                                         neighbour_weights, precision_recall, scores)
from unlearn_jax.remedies.select import (FEATURE_KINDS, METRICS, distributional_removal,
                                         features, removal_scores)

select_neighbours = detect.select

__all__ = [
    "detect", "select", "GRADIENT_PARAMS", "MEASURES", "embeddings", "neighbour_weights",
    "precision_recall", "scores", "select_neighbours", "FEATURE_KINDS", "METRICS",
    "distributional_removal", "features", "removal_scores",
]
