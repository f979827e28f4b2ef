"""Logit margin: the true-class logit minus the largest other logit (docs/design.md §3.5).

Informative where loss and confidence saturate (a target at confidence ≈ 1 under both original
and clean has no loss or confidence gap, but its margins still differ).
"""

import numpy as np

from unlearn_jax.evaluate import registry


def margin(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """logits[label] − max of the other logits, float64 (N,)."""
  logits = np.asarray(logits, np.float64)
  rows, labels = np.arange(len(labels)), np.asarray(labels)
  others = logits.copy()
  others[rows, labels] = -np.inf
  return logits[rows, labels] - others.max(axis=-1)


METRICS = (registry.Metric(
    name="margin", needs="logits", fields=("margin",), order=30, score=margin, min_gap=0.5,
    unit="logits", label="margin",
    columns=(registry.Column("margin T", "margin.target", 2, "behaviour", 20),
             registry.Column("res margin", "residue.margin", 2, "behaviour", 20),
             registry.Column("res margin median", "residue_median.margin", 2, "behaviour", 20),
             registry.Column("res margin Σ/Σ", "residue_ratio_of_sums.margin", 2, "behaviour",
                             20),
             registry.Column("margin undef T", "residue_undefined.margin", 0, "behaviour", 20),
             registry.Column("res margin abs", "residue_abs.margin", 2, "behaviour", 20))),)
