"""Cross-entropy of the true label (nats), per example (docs/design.md §3.5)."""

import numpy as np

from unlearn_jax.evaluate import metrics, registry


def loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """−log softmax(logits)[label], float64 (N,)."""
  rows = np.arange(len(labels))
  return -metrics.log_softmax(logits)[rows, np.asarray(labels)]


METRICS = (registry.Metric(
    name="loss", needs="logits", fields=("loss",), order=10, score=loss, min_gap=0.05,
    unit="nats", label="loss",
    columns=(registry.Column("res loss", "residue.loss", 2, "behaviour", 40),)),)
