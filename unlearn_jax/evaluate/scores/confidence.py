"""Softmax probability of the true label, per example (docs/design.md §3.5)."""

import numpy as np

from unlearn_jax.evaluate import metrics, registry


def confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """softmax(logits)[label], float64 (N,)."""
  rows = np.arange(len(labels))
  return np.exp(metrics.log_softmax(logits)[rows, np.asarray(labels)])


METRICS = (registry.Metric(
    name="confidence", needs="logits", fields=("confidence",), order=20, score=confidence,
    min_gap=0.02, unit="probability", label="confidence",
    columns=(registry.Column("res conf", "residue.confidence", 2, "behaviour", 30),)),)
