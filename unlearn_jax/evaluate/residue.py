"""Influence residue: how much of the targets' influence a model still carries.

For a behavioural score f (DESIGN.md §2):

    residue_f(M) = (f(M) - f(clean)) / (f(original) - f(clean))        per target,

1 = nothing forgotten, 0 = behaves like the model that never saw the targets nor their similar
samples. A ratio of two small numbers is noise, so a target's ratio is undefined (NaN) when
|f(original) - f(clean)| < min_gap; the absolute residue f(M) - f(clean) is reported beside it.
"""

from __future__ import annotations

import numpy as np


def ratio(f_model: np.ndarray, f_original: np.ndarray, f_clean: np.ndarray,
          min_gap: float) -> np.ndarray:
  """Per-target residue ratio; NaN where |f(original) - f(clean)| < min_gap."""
  f_model, f_original, f_clean = (np.asarray(a, np.float64) for a in
                                  (f_model, f_original, f_clean))
  gap = f_original - f_clean
  defined = np.abs(gap) >= max(min_gap, 1e-12)
  safe_gap = np.where(defined, gap, 1.0)
  return np.where(defined, (f_model - f_clean) / safe_gap, np.nan)


def absolute(f_model: np.ndarray, f_clean: np.ndarray) -> np.ndarray:
  """Per-target absolute residue f(M) - f(clean), in the score's own unit."""
  return np.asarray(f_model, np.float64) - np.asarray(f_clean, np.float64)


def summarize(per_target: np.ndarray) -> tuple[float, int]:
  """Mean of the defined per-target ratios and how many were defined (NaN if none)."""
  defined = per_target[np.isfinite(per_target)]
  return (float(defined.mean()) if len(defined) else float("nan")), int(len(defined))
