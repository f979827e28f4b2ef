"""Per-example behavioural scores from logits, and divergences between two models.

Scores (DESIGN.md §2): cross-entropy `loss`, `confidence` (softmax probability of the true
label), logit `margin` (true-class logit minus the largest other logit, informative when loss and
confidence saturate) and `correct`. Computed in float64 numpy on host: evaluation sets are small
and exactness matters more than speed here.
"""

from __future__ import annotations

import numpy as np

SCORES = ("loss", "confidence", "margin", "correct")


def log_softmax(logits: np.ndarray) -> np.ndarray:
  """Numerically stable log-softmax over the last axis."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def example_scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
  """Per-example loss, confidence, margin and correctness (float64 arrays of shape (N,))."""
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels)
  rows = np.arange(len(labels))
  log_probs = log_softmax(logits)
  true_logit = logits[rows, labels]
  others = logits.copy()
  others[rows, labels] = -np.inf
  return {
      "loss": -log_probs[rows, labels],
      "confidence": np.exp(log_probs[rows, labels]),
      "margin": true_logit - others.max(axis=-1),
      "correct": (logits.argmax(axis=-1) == labels).astype(np.float64),
  }


def kl_divergence(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
  """Per-example KL(p ‖ q) between the predictive distributions of two models (nats)."""
  log_p, log_q = log_softmax(p_logits), log_softmax(q_logits)
  return np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)


def js_divergence(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
  """Per-example Jensen–Shannon divergence (nats, in [0, ln 2])."""
  log_p, log_q = log_softmax(p_logits), log_softmax(q_logits)
  p, q = np.exp(log_p), np.exp(log_q)
  log_m = np.log(0.5 * (p + q))
  return 0.5 * np.sum(p * (log_p - log_m), axis=-1) + 0.5 * np.sum(q * (log_q - log_m), axis=-1)


def mean_or_nan(values: np.ndarray) -> float:
  """Mean of an array, NaN (reported as undefined) when it is empty."""
  return float(np.mean(values)) if len(values) else float("nan")
