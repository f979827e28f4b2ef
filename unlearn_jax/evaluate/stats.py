"""Intervals and paired tests of the per-target residues, pooled over targets and seeds.

A study's residue (docs/design.md §3.6) is one ratio per target, model and seed
(`report/per_target.csv`). Here the unit is a target under one training seed and one SED seed,
(sed_seed, seed, target_id) (rows without `sed_seed` have SED seed 0), and:

* `residue_pooled` and `residue_interval`: a model's mean residue over its units with a defined
  ratio and the bootstrap BCa 95% interval of that mean, [low, high] (the percentile interval
  where BCa is undefined, e.g. all values equal); `residue_ci` is taken: the t half-widths over
  seeds beside `residue`;
* `vs_floor`, `vs_retrain`: the two-sided Wilcoxon signed-rank test of a method's residues
  against those of the floor model (`clean_alt`, whose residue is seed noise: §3.7) or of
  `retrain`, paired over the units both define, with Holm's correction over the study's
  methods (every model but the references), per score and per comparison. `retrain` itself is
  tested against the floor too, alone (its `p_holm` is its `p`): whether the similar samples it
  still trains on leave a residue above seed noise;
* `distinguishable_from_floor`: the scores whose corrected p is below α.

Units of the same seed share a model, so they are not independent; the interval and the test
treat them as if they were, and are read as descriptive across targets.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

# Models that are not unlearning methods: they stay out of the Holm family.
REFERENCES = ("original", "retrain", "clean", "clean_alt", "sisa_original", "sisa_clean")
# Below 6 pairs the two-sided exact signed-rank test cannot reach p < 0.05 (its smallest p is
# 2 / 2**n: 0.0625 at n = 5, 0.03125 at n = 6), so it is not run.
MIN_PAIRS = 6
# scipy < 1.15 calls the bootstrap's generator `random_state`.
_RNG = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
# Bootstrap resamples drawn at once (bounds memory; the interval does not depend on it).
BATCH = 1000
TEST = "wilcoxon signed-rank, two-sided, paired over targets × seeds"
CORRECTION = "holm over methods, per score"
INTERVAL = "bootstrap BCa 95% of the mean over targets × seeds"


def _finite(values: Sequence[Any]) -> np.ndarray:
  array = np.asarray([_as_float(v) for v in values], np.float64)
  return array[np.isfinite(array)]


def _as_float(value: Any) -> float:
  """A number from a row's cell: None, '' (an empty CSV cell) and non-numbers read NaN."""
  if value is None or value == "":
    return float("nan")
  try:
    return float(value)
  except (TypeError, ValueError):
    return float("nan")


MIN_BCA = 10  # values from which the interval is BCa (below: percentile)


def bootstrap_ci(values: Sequence[Any], *, confidence: float = 0.95, resamples: int = 9999,
                 seed: int = 0) -> tuple[float, float]:
  """Bootstrap interval of the mean of the finite values.

  Args:
    values: numbers; NaN, ±inf and None are left out.
    confidence: the interval's coverage.
    resamples: bootstrap resamples.
    seed: seed of `np.random.default_rng`, so the interval is reproducible.

  Returns:
    (low, high) of `scipy.stats.bootstrap`'s BCa interval, or of its percentile interval where
    BCa is undefined (e.g. all values equal) or with fewer than `MIN_BCA` values; (nan, nan)
    with fewer than 2 finite values.
  """
  finite = _finite(values)
  if len(finite) < 2:
    return float("nan"), float("nan")
  # With few values the bootstrap distribution is coarse and BCa's bias correction jumps: with 4
  # values a 1e-6 change of one moved the lower bound by 2e-3. The percentile interval moves
  # with its inputs.
  for method in ("BCa", "percentile") if len(finite) >= MIN_BCA else ("percentile",):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      interval = stats.bootstrap(
          (finite,), np.mean, n_resamples=resamples, batch=BATCH, confidence_level=confidence,
          method=method, **{_RNG: np.random.default_rng(seed)}).confidence_interval
    low, high = float(interval.low), float(interval.high)
    if math.isfinite(low) and math.isfinite(high):
      return low, high
  return float("nan"), float("nan")


def holm(p_values: Mapping[str, Any]) -> dict[str, float]:
  """Holm–Bonferroni adjusted p-values (step-down, monotone in p, capped at 1).

  Args:
    p_values: {name: p}; a NaN (or None) p stays NaN and does not count in the family size m.

  Returns:
    {name: adjusted p}, the same keys.
  """
  out = {name: float("nan") for name in p_values}
  finite = sorted(((p, name) for name, p in ((n, _as_float(v)) for n, v in p_values.items())
                   if math.isfinite(p)), key=lambda pair: pair[0])
  m, running = len(finite), 0.0
  for rank, (p, name) in enumerate(finite):
    running = max(running, min(1.0, (m - rank) * p))
    out[name] = running
  return out


def paired_test(a: Sequence[Any], b: Sequence[Any]) -> dict[str, float]:
  """Two-sided Wilcoxon signed-rank test of a against b over the pairs where both are finite.

  Args:
    a: values of one model, aligned with `b`.
    b: values of the other model.

  Returns:
    {"p", "n" (finite pairs), "median_diff" (median of a - b)}. p is NaN below `MIN_PAIRS`
    pairs and 1.0 when every difference is zero; otherwise `scipy.stats.wilcoxon` (zero
    differences dropped, method 'auto': exact or exhaustive permutation up to 50 pairs).
  """
  a = np.asarray([_as_float(v) for v in a], np.float64)
  b = np.asarray([_as_float(v) for v in b], np.float64)
  if a.shape != b.shape:
    raise ValueError(f"paired_test needs aligned values, got {a.shape} and {b.shape}")
  both = np.isfinite(a) & np.isfinite(b)
  diff = a[both] - b[both]
  n = int(both.sum())
  median = float(np.median(diff)) if n else float("nan")
  if n < MIN_PAIRS:
    p = float("nan")
  elif not np.any(diff != 0):
    p = 1.0
  else:
    p = float(stats.wilcoxon(a[both], b[both], zero_method="wilcox", alternative="two-sided",
                             method="auto").pvalue)
  return {"p": p, "n": n, "median_diff": median}


def _unit(row: Mapping[str, Any]) -> tuple[Any, Any, Any]:
  return (row.get("sed_seed", 0), row["seed"], row["target_id"])


def _residues_by_model(per_target: Sequence[Mapping[str, Any]],
                       column: str) -> dict[str, dict[tuple, float]]:
  """{model: {(sed_seed, seed, target_id): residue}} of the rows with the column."""
  out: dict[str, dict[tuple, float]] = {}
  for row in per_target:
    if column not in row:
      continue
    units = out.setdefault(row["model"], {})
    unit = _unit(row)
    if unit in units:
      raise ValueError(f"two per-target rows of {row['model']} for {unit}")
    units[unit] = _as_float(row[column])
  return out


def _compare(model: Mapping[tuple, float], other: Mapping[tuple, float]) -> dict[str, float]:
  units = [unit for unit in model if unit in other]
  return paired_test([model[u] for u in units], [other[u] for u in units])


def add_residue_statistics(summary: dict[str, Any], per_target: Sequence[Mapping[str, Any]], *,
                           scores: Sequence[str], reference: str = "retrain",
                           floor: str = "clean_alt", alpha: float = 0.05) -> None:
  """Adds residue intervals and paired tests to summary['methods'] (in place).

  For every model of summary['methods'] with per-target rows and every score of `scores` with a
  `residue_<score>` column, sets in the model's record `residue_pooled[score]` (the mean of its
  defined residues over all units) and `residue_interval[score]` ([low, high], `bootstrap_ci`);
  for every method (a model not in `REFERENCES`), `vs_floor[score]` and `vs_retrain[score]`
  ({"p", "p_holm", "n", "median_diff"}: `paired_test` of the method against `floor` or
  `reference`, Holm over the methods per score) and `distinguishable_from_floor` (the scores
  with p_holm < alpha); `reference` also gets `vs_floor` (uncorrected: p_holm = p) and
  `distinguishable_from_floor`. Sets summary['statistics'] (what was done) when any model got
  an interval. Other keys are left as they are.

  Args:
    summary: the study's summary (docs/design.md §6.2), changed in place.
    per_target: rows with `model`, `seed`, `target_id`, optionally `sed_seed` (0 if absent),
      and `residue_<score>` (NaN, None or '' where undefined).
    scores: residue scores to test, e.g. evaluator.RESIDUE_SCORES + EXTRA_RESIDUE_SCORES.
    reference: the model each method is compared with under `vs_retrain`.
    floor: the seed-noise floor model (docs/design.md §3.7).
    alpha: level of `distinguishable_from_floor`.
  """
  methods = summary["methods"]
  tested = [m for m in methods if m not in (*REFERENCES, floor, reference)
            and not m.startswith("clean_alt_")]  # more models of the floor
  done = False
  for score in scores:
    by_model = _residues_by_model(per_target, f"residue_{score}")
    if not by_model:
      continue
    for model, record in methods.items():
      if model not in by_model:
        continue
      values = list(by_model[model].values())
      finite = _finite(values)
      record.setdefault("residue_pooled", {})[score] = (float(finite.mean()) if len(finite)
                                                        else float("nan"))
      record.setdefault("residue_interval", {})[score] = list(bootstrap_ci(values))
      done = True
    for key, other in (("vs_floor", floor), ("vs_retrain", reference)):
      if other not in by_model:
        continue
      results = {m: _compare(by_model[m], by_model[other]) for m in tested if m in by_model}
      adjusted = holm({m: result["p"] for m, result in results.items()})
      for model, result in results.items():
        methods[model].setdefault(key, {})[score] = {**result, "p_holm": adjusted[model]}
    if reference in by_model and floor in by_model and reference in methods:
      result = _compare(by_model[reference], by_model[floor])
      methods[reference].setdefault("vs_floor", {})[score] = {**result, "p_holm": result["p"]}
  for record in methods.values():
    if "vs_floor" in record:
      record["distinguishable_from_floor"] = [
          s for s in scores if s in record["vs_floor"]
          and _as_float(record["vs_floor"][s]["p_holm"]) < alpha]
  if done:
    summary["statistics"] = {"test": TEST, "correction": CORRECTION, "alpha": alpha,
                             "interval": INTERVAL, "min_pairs": MIN_PAIRS, "floor": floor,
                             "reference": reference,
                             "reference_vs_floor": f"{reference} vs {floor}: uncorrected"}
