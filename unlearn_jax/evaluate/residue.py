"""Influence residue: how much of the targets' influence a model still carries.

For a behavioural score f (docs/design.md §3.6):

    residue_f(M) = (f(M) - f(clean)) / (f(original) - f(clean))        per target,

1 = nothing forgotten, 0 = behaves like the model that never saw the targets nor their similar
samples. A ratio of two small numbers is noise, so a target's ratio is undefined (NaN) when
|f(original) - f(clean)| < min_gap; the absolute residue f(M) - f(clean) is reported beside it.

Aggregates over targets (`summaries`): a target whose gap is just above min_gap can have a ratio
of ±10 and carry the mean on its own, so the mean comes with the median and the ratio of sums
Σ(f(M) − f(clean)) / Σ(f(original) − f(clean)) over the defined targets (each target weighted by
its gap), and with the counts of defined and undefined targets.
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


def summaries(f_model: np.ndarray, f_original: np.ndarray, f_clean: np.ndarray,
              min_gap: float) -> dict[str, float | int]:
  """Aggregates of the per-target residue over the targets whose ratio is defined.

  Args:
    f_model, f_original, f_clean: (T,) the score of each target under the model, `original`
      and `clean`.
    min_gap: the floor of `ratio`.

  Returns:
    {"mean": mean of the defined ratios, "median": their median, "ratio_of_sums":
    Σ(f(M) − f(clean)) / Σ(f(original) − f(clean)) over the defined targets, "defined": their
    count, "undefined": the count of the others}; the three aggregates are NaN when no target is
    defined (or the summed gap is 0).
  """
  per_target = ratio(f_model, f_original, f_clean, min_gap)
  defined = np.isfinite(per_target)
  mean, count = summarize(per_target)
  if count:
    gap_sum = float(np.sum(np.asarray(f_original, np.float64)[defined]
                           - np.asarray(f_clean, np.float64)[defined]))
    residue_sum = float(np.sum(absolute(f_model, f_clean)[defined]))
    median = float(np.median(per_target[defined]))
    ratio_of_sums = residue_sum / gap_sum if gap_sum != 0 else float("nan")
  else:
    median = ratio_of_sums = float("nan")
  return {"mean": mean, "median": median, "ratio_of_sums": ratio_of_sums, "defined": count,
          "undefined": int(len(per_target) - count)}
