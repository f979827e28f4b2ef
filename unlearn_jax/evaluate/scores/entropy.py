"""Entropy of the predictive distribution (nats), per example; no residue."""

import numpy as np

from unlearn_jax.evaluate import metrics, registry


def entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """−Σ p log p over the classes, float64 (N,); the labels are not used."""
  del labels
  log_probs = metrics.log_softmax(logits)
  return -np.sum(np.exp(log_probs) * log_probs, axis=-1)


METRICS = (registry.Metric(name="entropy", needs="logits", fields=("entropy",), order=50,
                           score=entropy, unit="nats", label="entropy"),)
