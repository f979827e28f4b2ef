"""Correctness (1 if the argmax is the label), per example; its per-split mean is `acc`."""

import numpy as np

from unlearn_jax.evaluate import registry


def correct(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """1.0 where argmax(logits) == label, else 0.0 (float64, (N,))."""
  return (np.asarray(logits, np.float64).argmax(axis=-1) == np.asarray(labels)).astype(
      np.float64)


METRICS = (registry.Metric(
    name="correct", needs="logits", fields=("acc",), order=40, score=correct, min_gap=0.5,
    unit="0/1", label="correctness",
    columns=tuple(registry.Column(f"acc {short}", f"acc.{split}", digits, "behaviour", 10)
                  for short, split, digits in (("T", "target", 2), ("S", "similar", 2),
                                               ("R", "rest", 3), ("test", "test", 3)))),)
