"""Tests for unlearn_jax.evaluate.stats: bootstrap intervals, Holm, paired tests, the summary."""

import copy
import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from unlearn_jax import defaults, utils
from unlearn_jax.evaluate import stats
from unlearn_jax.report import tables

NAN = float("nan")
VALUES = [0.3, 1.2, -0.4, 0.9, 2.5, 0.1, 0.7, 1.6, -1.1, 0.45, 0.8, 1.9, 0.05]


# ----------------------------------------------------------------------------------------------
# bootstrap_ci.


@pytest.mark.parametrize("seed", [0, 3])
def test_bootstrap_ci_equals_scipy_bca_with_the_same_seed(seed):
  expected = scipy_stats.bootstrap((np.asarray(VALUES),), np.mean, n_resamples=9999,
                                   confidence_level=0.95, method="BCa",
                                   rng=np.random.default_rng(seed)).confidence_interval
  low, high = stats.bootstrap_ci(VALUES, seed=seed)
  assert (low, high) == pytest.approx((expected.low, expected.high), rel=1e-12)
  assert low < np.mean(VALUES) < high
  assert stats.bootstrap_ci(VALUES, seed=seed) == (low, high)


def test_bootstrap_ci_ignores_nan_inf_and_none():
  assert stats.bootstrap_ci([NAN, *VALUES[:6], None, float("inf"), *VALUES[6:], ""]) == \
      stats.bootstrap_ci(VALUES)


def test_bootstrap_ci_needs_two_finite_values():
  for values in ([], [1.0], [1.0, NAN, None]):
    low, high = stats.bootstrap_ci(values)
    assert math.isnan(low) and math.isnan(high)


def test_bootstrap_ci_falls_back_to_percentile_when_bca_is_undefined():
  assert stats.bootstrap_ci([1.0] * 7) == (1.0, 1.0)


def test_bootstrap_ci_confidence_widens_the_interval():
  low90, high90 = stats.bootstrap_ci(VALUES, confidence=0.9)
  low99, high99 = stats.bootstrap_ci(VALUES, confidence=0.99)
  assert low99 < low90 < high90 < high99


# ----------------------------------------------------------------------------------------------
# holm.


def test_holm_hand_computed():
  # Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> max(0.06, 0.04).
  out = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
  assert out == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02}, rel=1e-12)


def test_holm_is_monotone_capped_and_at_least_p():
  rng = np.random.default_rng(0)
  p = {f"m{i}": float(v) for i, v in enumerate(rng.uniform(0, 0.5, 12))}
  out = stats.holm(p)
  order = sorted(p, key=p.get)
  adjusted = [out[name] for name in order]
  assert adjusted == sorted(adjusted)
  assert all(out[name] >= p[name] and out[name] <= 1.0 for name in p)
  assert max(adjusted) == 1.0  # 0.5-ish p-values times a large m hit the cap


def test_holm_leaves_nan_out_of_m():
  out = stats.holm({"a": 0.01, "b": NAN, "c": 0.04, "d": None})
  assert out["a"] == pytest.approx(0.02) and out["c"] == pytest.approx(0.04)
  assert math.isnan(out["b"]) and math.isnan(out["d"])
  assert stats.holm({}) == {}
  assert stats.holm({"a": 0.2}) == {"a": 0.2}


# ----------------------------------------------------------------------------------------------
# paired_test.


A = np.asarray([1.8, 0.4, 2.2, 1.1, 0.9, 1.6, 2.9, 0.3, 1.2, 2.05])
B = np.asarray([1.0, 0.5, 1.3, 0.2, 1.05, 0.35, 1.6, 0.25, 0.5, 0.6])


def test_paired_test_equals_scipy_wilcoxon():
  out = stats.paired_test(A, B)
  expected = scipy_stats.wilcoxon(A, B, zero_method="wilcox", alternative="two-sided")
  assert out["p"] == pytest.approx(expected.pvalue, rel=1e-12)
  assert out["n"] == 10 and out["median_diff"] == pytest.approx(np.median(A - B))


def test_paired_test_uses_only_pairs_with_both_values():
  a, b = [*A, NAN, 5.0, None], [*B, 1.0, NAN, 2.0]
  out = stats.paired_test(a, b)
  assert out == stats.paired_test(A, B)


def test_paired_test_minimum_pairs_and_all_zero_differences():
  n = stats.MIN_PAIRS
  assert 2 / 2 ** (n - 1) > 0.05 >= 2 / 2 ** n  # the smallest reachable two-sided p
  below = stats.paired_test(A[:n - 1], B[:n - 1])
  assert math.isnan(below["p"]) and below["n"] == n - 1
  assert math.isfinite(stats.paired_test(A[:n], B[:n])["p"])
  same = stats.paired_test(A, A)
  assert same["p"] == 1.0 and same["median_diff"] == 0.0
  empty = stats.paired_test([], [])
  assert math.isnan(empty["p"]) and empty["n"] == 0 and math.isnan(empty["median_diff"])
  with pytest.raises(ValueError, match="aligned"):
    stats.paired_test(A, B[:3])


# ----------------------------------------------------------------------------------------------
# add_residue_statistics.


SCORES = ("loss", "margin", "lira")


def _study():
  """Two seeds × ten targets: clean_alt noise, a copy of it, a method far from it."""
  rng = np.random.default_rng(1)
  residues = {"original": np.ones((2, 10)), "clean": np.zeros((2, 10)),
              "clean_alt": rng.normal(0.0, 0.3, (2, 10))}
  residues["retrain"] = residues["clean_alt"] + 0.9 + rng.normal(0.0, 0.1, (2, 10))
  residues["same"] = residues["clean_alt"].copy()
  residues["far"] = residues["clean_alt"] + 2.0 + rng.normal(0.0, 0.1, (2, 10))
  rows = []
  for model, values in residues.items():
    for seed in range(2):
      for target in range(10):
        margin = values[seed, target] if target != 3 else NAN  # one undefined target
        rows.append({"seed": seed, "model": model, "target_id": 100 + target, "label": 1,
                     "margin": 0.5, "residue_margin": margin, "residue_loss": NAN})
  records = {seed: {model: {"residue": {"margin": float(np.nanmean(v[seed]))}}
                    for model, v in residues.items()} for seed in range(2)}
  summary = tables.build_summary(defaults.base_config(), records,
                                 {"failed_method/seed_0": "failed: ValueError: boom"})
  return summary, rows


def test_add_residue_statistics_tests_methods_against_the_floor_and_retrain():
  summary, rows = _study()
  stats.add_residue_statistics(summary, rows, scores=SCORES)
  methods = summary["methods"]
  same, far = methods["same"], methods["far"]
  assert same["vs_floor"]["margin"]["p"] == 1.0 and same["vs_floor"]["margin"]["n"] == 18
  assert same["vs_floor"]["margin"]["p_holm"] == 1.0
  assert same["distinguishable_from_floor"] == []
  # 18 pairs all above the floor: the exact two-sided p is 2 / 2**18, doubled by Holm (m = 2).
  assert far["vs_floor"]["margin"]["p"] == pytest.approx(2 / 2 ** 18)
  assert far["vs_floor"]["margin"]["p_holm"] == pytest.approx(2 * 2 / 2 ** 18)
  assert far["vs_floor"]["margin"]["median_diff"] == pytest.approx(2.0, abs=0.2)
  assert far["distinguishable_from_floor"] == ["margin"]
  assert far["vs_retrain"]["margin"]["p_holm"] < 0.05
  assert far["vs_retrain"]["margin"]["median_diff"] == pytest.approx(1.1, abs=0.2)
  # retrain against the floor, alone: unadjusted.
  assert methods["retrain"]["vs_floor"]["margin"]["p_holm"] == \
      methods["retrain"]["vs_floor"]["margin"]["p"] < 0.05
  assert methods["retrain"]["distinguishable_from_floor"] == ["margin"]
  for reference in ("original", "clean", "clean_alt"):
    assert "vs_floor" not in methods[reference] and "vs_retrain" not in methods[reference]
    assert "distinguishable_from_floor" not in methods[reference]
  # Every model with rows gets an interval of its pooled mean; the references' are degenerate.
  assert methods["original"]["residue_interval"]["margin"] == [1.0, 1.0]
  assert methods["clean"]["residue_interval"]["margin"] == [0.0, 0.0]
  values = [r["residue_margin"] for r in rows if r["model"] == "far"]
  assert far["residue_interval"]["margin"] == list(stats.bootstrap_ci(values))
  assert far["residue_pooled"]["margin"] == pytest.approx(np.nanmean(values))
  low, high = far["residue_interval"]["margin"]
  assert low < far["residue_pooled"]["margin"] < high
  # An all-undefined score: NaN interval and no p; a score without a column: nothing.
  assert all(math.isnan(v) for v in far["residue_interval"]["loss"])
  assert math.isnan(far["vs_floor"]["loss"]["p_holm"]) and far["vs_floor"]["loss"]["n"] == 0
  assert "lira" not in far["residue_interval"] and "lira" not in far["vs_floor"]
  # A model without rows (a failed run) gets nothing.
  assert methods["failed_method"] == {"status": "failed",
                                      "errors": {"seed_0": "failed: ValueError: boom"}}
  assert summary["statistics"] == {
      "test": "wilcoxon signed-rank, two-sided, paired over targets × seeds",
      "correction": "holm over methods, per score", "alpha": 0.05,
      "interval": "bootstrap BCa 95% of the mean over targets × seeds",
      "min_pairs": stats.MIN_PAIRS, "floor": "clean_alt", "reference": "retrain",
      "reference_vs_floor": "retrain vs clean_alt: uncorrected"}
  json.dumps(utils.to_jsonable(summary), allow_nan=False)


def test_add_residue_statistics_leaves_other_keys_alone():
  summary, rows = _study()
  assert "residue_ci" in summary["methods"]["far"]  # the t half-widths beside `residue`
  before = copy.deepcopy(summary)
  stats.add_residue_statistics(summary, rows, scores=SCORES)
  added = {"residue_interval", "residue_pooled", "vs_floor", "vs_retrain",
           "distinguishable_from_floor"}
  assert set(summary) == set(before) | {"statistics"}
  for model, record in summary["methods"].items():
    kept = {k: v for k, v in record.items() if k not in added}
    assert json.dumps(utils.to_jsonable(kept)) == \
        json.dumps(utils.to_jsonable(before["methods"][model]))


def test_add_residue_statistics_reads_csv_rows_and_pairs_sed_seeds():
  summary, rows = _study()
  as_csv = [{k: "" if isinstance(v, float) and math.isnan(v) else str(v) for k, v in r.items()}
            for r in rows]
  from_csv = copy.deepcopy(summary)
  stats.add_residue_statistics(summary, rows, scores=SCORES)
  stats.add_residue_statistics(from_csv, as_csv, scores=SCORES)
  assert json.dumps(utils.to_jsonable(from_csv)) == json.dumps(utils.to_jsonable(summary))
  # A second SED seed with the same seeds and target ids: more units, not duplicates.
  both = [*rows, *({**r, "sed_seed": 1} for r in rows)]
  stats.add_residue_statistics(summary, both, scores=SCORES)
  assert summary["methods"]["far"]["vs_floor"]["margin"]["n"] == 36
  with pytest.raises(ValueError, match="two per-target rows of original"):
    stats.add_residue_statistics(summary, rows + rows[:1], scores=SCORES)


def test_add_residue_statistics_without_floor_or_retrain_rows():
  summary, rows = _study()
  rows = [r for r in rows if r["model"] not in ("clean_alt", "retrain")]
  stats.add_residue_statistics(summary, rows, scores=SCORES)
  far = summary["methods"]["far"]
  assert "margin" in far["residue_interval"]
  assert "vs_floor" not in far and "vs_retrain" not in far
  assert "distinguishable_from_floor" not in far
  summary, rows = _study()
  stats.add_residue_statistics(summary, rows, scores=("lira",))
  assert "statistics" not in summary


# ----------------------------------------------------------------------------------------------
# report.md.


def test_report_statistics_section_only_with_statistics():
  summary, rows = _study()
  before = tables.markdown_report(summary)
  assert "## Statistics" not in before
  assert tables.statistics_markdown(summary) == ""
  stats.add_residue_statistics(summary, rows, scores=SCORES)
  report = tables.markdown_report(summary)
  assert "## Statistics" in report
  section = tables.statistics_markdown(summary)
  assert report.replace(section.rstrip("\n") + "\n", "", 1) == before
  table = section.split("## Statistics\n\n", 1)[1].split("\n\n", 1)[0]
  header = [c.strip() for c in table.splitlines()[0].split("|")[1:-1]]
  assert header == ["model", "res margin [95% CI]", "margin p vs floor", "margin p vs retrain",
                    "res loss [95% CI]", "loss p vs floor", "loss p vs retrain"]
  cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
           for line in table.splitlines()[2:]}
  assert set(cells) == {"original", "retrain", "clean", "clean_alt", "same", "far"}
  far = summary["methods"]["far"]
  low, high = far["residue_interval"]["margin"]
  assert cells["far"][:3] == [f"{far['residue_pooled']['margin']:.2f} [{low:.2f}, {high:.2f}]",
                              "<0.001", "<0.001"]
  assert far["vs_retrain"]["margin"]["p_holm"] < 0.001
  assert cells["same"][1] == "1.000"
  assert cells["clean_alt"][1:3] == ["n/a", "n/a"]
  assert cells["far"][3:] == ["n/a", "n/a", "n/a"]
  assert ("Distinguishable from the floor (Holm-adjusted p < 0.05 on a tested score): "
          "far (margin above); not: same; retrain: margin above (unadjusted).") in section
