"""Tests for unlearn_jax.evaluate: per-example scores, divergences, MIA, residue, the evaluator.

Expected values are computed by hand (closed forms) or by scikit-learn, never by the code under
test.
"""

import math

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from unlearn_jax.data import sed as sed_lib
from unlearn_jax.evaluate import evaluator, metrics, mia, registry, residue

E = math.e


# ----------------------------------------------------------------------------------------------
# metrics.example_scores.


def test_example_scores_hand_values():
  logits = np.array([[2.0, 0.0, 0.0],    # label 0: right, margin 2
                     [0.0, 1.0, 3.0],    # label 0: wrong, margin 0 - 3
                     [1.0, 3.0, 2.5],    # label 2: wrong, margin 2.5 - 3
                     [0.0, 0.0, 4.0]])   # label 2: right, margin 4
  labels = np.array([0, 0, 2, 2])
  scores = metrics.example_scores(logits, labels)
  confidence = [E**2 / (E**2 + 2), 1 / (1 + E + E**3), E**2.5 / (E + E**3 + E**2.5),
                E**4 / (2 + E**4)]
  np.testing.assert_allclose(scores["confidence"], confidence, rtol=1e-12)
  np.testing.assert_allclose(scores["loss"], -np.log(confidence), rtol=1e-12)
  np.testing.assert_allclose(scores["loss"][:2], [math.log(1 + 2 * E**-2),
                                                  math.log(1 + E + E**3)], rtol=1e-12)
  np.testing.assert_array_equal(scores["margin"], [2.0, -3.0, -0.5, 4.0])
  np.testing.assert_array_equal(scores["correct"], [1.0, 0.0, 0.0, 1.0])
  assert list(scores) == [m.name for m in registry.needing("logits")]
  for name in scores:
    assert scores[name].dtype == np.float64 and scores[name].shape == (4,)


def test_example_scores_do_not_modify_the_logits():
  logits = np.array([[2.0, 0.0, 1.0]])
  metrics.example_scores(logits, np.array([1]))
  np.testing.assert_array_equal(logits, [[2.0, 0.0, 1.0]])


def test_example_scores_stable_for_large_logits():
  logits = np.array([[1000.0, 0.0], [1000.0, 0.0]], np.float32)
  scores = metrics.example_scores(logits, np.array([0, 1]))
  np.testing.assert_allclose(scores["loss"], [0.0, 1000.0], atol=1e-9)
  np.testing.assert_allclose(scores["confidence"], [1.0, 0.0], atol=1e-12)
  np.testing.assert_array_equal(scores["margin"], [1000.0, -1000.0])


def test_example_scores_two_classes_margin_is_logit_difference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(20, 2))
  labels = rng.integers(0, 2, 20)
  scores = metrics.example_scores(logits, labels)
  rows = np.arange(20)
  np.testing.assert_allclose(scores["margin"], logits[rows, labels] - logits[rows, 1 - labels])


# ----------------------------------------------------------------------------------------------
# Divergences.


def test_kl_of_a_distribution_with_itself_is_zero():
  logits = np.random.default_rng(0).normal(size=(8, 5)) * 3
  np.testing.assert_allclose(metrics.kl_divergence(logits, logits), 0.0, atol=1e-12)
  # Shifting the logits does not change the distribution.
  np.testing.assert_allclose(metrics.kl_divergence(logits, logits + 7.0), 0.0, atol=1e-12)


def test_kl_is_non_negative():
  rng = np.random.default_rng(1)
  p, q = rng.normal(size=(200, 4)) * 2, rng.normal(size=(200, 4)) * 2
  kl = metrics.kl_divergence(p, q)
  assert kl.shape == (200,)
  assert np.all(kl >= -1e-12) and np.all(kl > 0)


def test_kl_hand_value_and_direction():
  p = np.log([[0.5, 0.25, 0.25]])
  q = np.log([[1 / 3, 1 / 3, 1 / 3]])
  expected = 0.5 * math.log(1.5) + 2 * 0.25 * math.log(0.75)  # sum p log(p/q)
  reverse = (1 / 3) * math.log(2 / 3) + 2 * (1 / 3) * math.log(4 / 3)  # sum q log(q/p)
  assert abs(expected - reverse) > 1e-3
  np.testing.assert_allclose(metrics.kl_divergence(p, q), [expected], rtol=1e-12)
  np.testing.assert_allclose(metrics.kl_divergence(q, p), [reverse], rtol=1e-12)


def test_js_symmetric_bounded_and_hand_value():
  rng = np.random.default_rng(2)
  p, q = rng.normal(size=(100, 3)) * 4, rng.normal(size=(100, 3)) * 4
  js = metrics.js_divergence(p, q)
  np.testing.assert_allclose(js, metrics.js_divergence(q, p), atol=1e-12)
  assert np.all(js >= -1e-12) and np.all(js <= math.log(2) + 1e-12)
  np.testing.assert_allclose(metrics.js_divergence(p, p), 0.0, atol=1e-12)
  # Nearly disjoint distributions reach ln 2.
  np.testing.assert_allclose(metrics.js_divergence([[40.0, -40.0]], [[-40.0, 40.0]]),
                             [math.log(2)], rtol=1e-9)
  # Hand value: p = (1/2, 1/2), q = (1, 0) -> m = (3/4, 1/4).
  hand = 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)) + 0.5 * math.log(1 / 0.75)
  np.testing.assert_allclose(metrics.js_divergence([[0.0, 0.0]], [[60.0, -60.0]]), [hand],
                             rtol=1e-9)


def test_mean_or_nan():
  assert metrics.mean_or_nan(np.array([1.0, 2.0])) == 1.5
  assert math.isnan(metrics.mean_or_nan(np.array([])))


# ----------------------------------------------------------------------------------------------
# Membership inference.


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_sklearn_with_ties(seed):
  rng = np.random.default_rng(seed)
  members = rng.integers(0, 6, 30)
  nonmembers = rng.integers(0, 5, 41)
  expected = sk_metrics.roc_auc_score(np.r_[np.ones(30), np.zeros(41)], np.r_[members, nonmembers])
  assert mia.roc_auc(members, nonmembers) == pytest.approx(expected, abs=1e-12)


def test_roc_auc_matches_sklearn_continuous():
  rng = np.random.default_rng(7)
  members, nonmembers = rng.normal(0.3, 1, 50), rng.normal(0, 1, 70)
  expected = sk_metrics.roc_auc_score(np.r_[np.ones(50), np.zeros(70)], np.r_[members, nonmembers])
  assert mia.roc_auc(members, nonmembers) == pytest.approx(expected, abs=1e-12)


def test_roc_auc_extremes():
  assert mia.roc_auc([5, 6, 7], [1, 2]) == 1.0
  assert mia.roc_auc([1, 2], [5, 6, 7]) == 0.0
  assert mia.roc_auc([3, 3], [3, 3, 3]) == 0.5
  assert math.isnan(mia.roc_auc([], [1.0]))
  assert math.isnan(mia.roc_auc([1.0], []))


def test_loss_attack_auc_low_loss_means_member():
  assert mia.loss_attack_auc([0.1, 0.2], [1.0, 2.0]) == 1.0
  assert mia.loss_attack_auc([1.0, 2.0], [0.1, 0.2]) == 0.0


def test_tpr_at_fpr_constructed_case():
  nonmembers = np.arange(100.0)  # 0..99
  members = np.array([50.5, 95.5, 98.5, 99.5, 100.0, 200.0])
  # FPR 1%: one non-member (99) may be above the threshold 98 -> members above 98: 4 of 6.
  assert mia.tpr_at_fpr(members, nonmembers, 0.01) == pytest.approx(4 / 6)
  # FPR 5%: threshold 94 -> 5 of 6.
  assert mia.tpr_at_fpr(members, nonmembers, 0.05) == pytest.approx(5 / 6)
  # FPR 0: strictly above every non-member -> 99.5, 100, 200.
  assert mia.tpr_at_fpr(members, nonmembers, 0.0) == pytest.approx(3 / 6)
  assert mia.tpr_at_fpr(members, nonmembers, 1.0) == 1.0
  assert math.isnan(mia.tpr_at_fpr([], nonmembers))


def sklearn_tpr_at_fpr(members, nonmembers, fpr):
  labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
  fprs, tprs, _ = sk_metrics.roc_curve(labels, np.r_[members, nonmembers],
                                       drop_intermediate=False)
  return tprs[fprs <= fpr].max()


@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.1, 0.5])
def test_tpr_at_fpr_matches_sklearn_roc_curve(fpr):
  rng = np.random.default_rng(3)
  members, nonmembers = rng.normal(1.0, 1, 80), rng.normal(0, 1, 100)
  assert mia.tpr_at_fpr(members, nonmembers, fpr) == pytest.approx(
      sklearn_tpr_at_fpr(members, nonmembers, fpr))


def test_tpr_at_fpr_exact_fraction():
  # 29 of 100 non-members (71..99) may score above the threshold 70, so the member at 70.5 counts.
  nonmembers, members = np.arange(100.0), np.array([70.5])
  assert sklearn_tpr_at_fpr(members, nonmembers, 0.29) == 1.0
  assert mia.tpr_at_fpr(members, nonmembers, 0.29) == 1.0


# ----------------------------------------------------------------------------------------------
# Residue.


def test_residue_ratio_references_and_hand_values():
  f_original = np.array([1.0, 0.2, 3.0, 2.0])
  f_clean = np.array([0.2, 1.0, 1.0, 2.01])
  np.testing.assert_array_equal(
      residue.ratio(f_original, f_original, f_clean, 0.05)[:3], [1.0, 1.0, 1.0])
  np.testing.assert_array_equal(residue.ratio(f_clean, f_original, f_clean, 0.05)[:3], 0.0)
  # Hand: (0.7 - 0.2) / (1.0 - 0.2) = 0.625; (0.4 - 1.0) / (0.2 - 1.0) = 0.75; 4/2 = 2 (overshoot).
  result = residue.ratio([0.7, 0.4, 5.0, 2.0], f_original, f_clean, 0.05)
  np.testing.assert_allclose(result[:3], [0.625, 0.75, 2.0], rtol=1e-12)
  # |2.0 - 2.01| < 0.05: undefined.
  assert math.isnan(result[3])


def test_residue_ratio_gap_floor():
  # Gap exactly at the floor is defined; below it, and a zero gap with a zero floor, are not.
  assert residue.ratio([1.25], [1.5], [1.0], 0.5)[0] == 0.5
  assert math.isnan(residue.ratio([1.25], [1.5], [1.0], 0.75)[0])
  assert math.isnan(residue.ratio([3.0], [1.0], [1.0], 0.0)[0])


def test_residue_absolute():
  np.testing.assert_allclose(residue.absolute([3.0, -1.0], [1.0, 1.0]), [2.0, -2.0])


def test_summarize_ignores_nans_and_counts_defined():
  mean, count = residue.summarize(np.array([1.0, np.nan, 0.5, np.nan]))
  assert (mean, count) == (0.75, 2)
  mean, count = residue.summarize(np.array([np.nan, np.nan]))
  assert math.isnan(mean) and count == 0


def test_residue_summaries_one_near_floor_target_carries_the_mean_not_median_or_sums():
  # Five targets with a gap of 4 and a residue of 0.5, 0.5, 0.6, 0.4, 0.5; a sixth whose gap
  # (0.06) is just above min_gap = 0.05 and whose model sits 1.2 above clean: ratio 20.
  f_clean = np.zeros(6)
  f_original = np.array([4.0, 4.0, 4.0, 4.0, 4.0, 0.06])
  f_model = np.array([2.0, 2.0, 2.4, 1.6, 2.0, 1.2])
  undefined_gap = 0.01  # a seventh target below the floor: not in any aggregate
  out = residue.summaries(np.r_[f_model, 5.0], np.r_[f_original, undefined_gap],
                          np.r_[f_clean, 0.0], min_gap=0.05)
  assert out["mean"] == pytest.approx((0.5 + 0.5 + 0.6 + 0.4 + 0.5 + 20.0) / 6)  # ≈ 3.75
  assert out["median"] == pytest.approx(0.5)
  # Σ(f(M) − f(clean)) / Σ(f(original) − f(clean)) over the six defined targets.
  assert out["ratio_of_sums"] == pytest.approx(11.2 / 20.06)  # 0.56
  assert (out["defined"], out["undefined"]) == (6, 1)
  none = residue.summaries([1.0, 2.0], [0.0, 0.0], [0.0, 0.0], min_gap=0.05)
  assert math.isnan(none["mean"]) and math.isnan(none["median"])
  assert math.isnan(none["ratio_of_sums"]) and (none["defined"], none["undefined"]) == (0, 2)


# ----------------------------------------------------------------------------------------------
# evaluator.evaluate_models on a hand-made SED and hand-made logits.

T, S, R = sed_lib.TARGET, sed_lib.SIMILAR, sed_lib.REST
NUM_CLASSES = 3

# Rows of D, deliberately mixed; targets 10 (label 0) and 11 (label 1), requested as [11, 10].
TRAIN = [  # (id, label, kind, group)
    (12, 2, R, -1), (10, 0, T, 10), (20, 0, S, 10), (13, 0, R, -1), (11, 1, T, 11),
    (21, 0, S, 10), (22, 1, S, 11), (14, 1, R, -1), (23, 1, S, 11)]
TARGET_IDS = [11, 10]
TEST_LABELS = [0, 1, 2, 0]
STRONG = 4.0  # logit of the predicted class; all others 0


def make_sed() -> sed_lib.SED:
  ids, labels, kinds, groups = (np.array(column) for column in zip(*TRAIN))
  train = {"image": np.zeros((len(ids), 2, 2, 1), np.uint8), "label": labels.astype(np.int32),
           "id": ids.astype(np.int64), "kind": kinds.astype(np.int8),
           "group": groups.astype(np.int64)}
  test = {"image": np.zeros((4, 2, 2, 1), np.uint8), "label": np.array(TEST_LABELS, np.int32),
          "id": np.arange(100, 104, dtype=np.int64)}
  return sed_lib.SED(train=train, test=test, target_ids=np.array(TARGET_IDS, np.int64))


def one_hot_logits(predictions, strengths) -> np.ndarray:
  logits = np.zeros((len(predictions), NUM_CLASSES))
  logits[np.arange(len(predictions)), predictions] = strengths
  return logits


def model_logits(train_correct: dict[int, bool], target_strength: float, test_predictions):
  """Each D example predicts its label (or label + 1) with logit STRONG (targets: strength)."""
  predictions, strengths = [], []
  for example_id, label, kind, _ in TRAIN:
    correct = train_correct.get(example_id, train_correct.get(kind, True))
    predictions.append(label if correct else (label + 1) % NUM_CLASSES)
    strengths.append(target_strength if kind == T else STRONG)
  return {"train": one_hot_logits(predictions, strengths),
          "test": one_hot_logits(test_predictions, STRONG)}


LOGITS = {
    # Everything in D right; test: right on rows 1 and 3 only.
    "original": model_logits({}, STRONG, [1, 1, 0, 0]),
    # Never saw T nor S: wrong on both; right on R.
    "clean": model_logits({T: False, S: False}, STRONG, [1, 1, 0, 0]),
    # Saw S: right on targets with a smaller margin (1).
    "retrain": model_logits({}, 1.0, [1, 1, 0, 0]),
    # Another clean seed: right on target 10 only; test all right.
    "clean_alt": model_logits({10: True, T: False, S: False}, STRONG, [0, 1, 2, 0]),
}
MIN_GAP = {"loss": 0.05, "confidence": 0.02, "margin": 0.5, "correct": 0.5, "mia": 0.05}


@pytest.fixture(scope="module")
def evaluation():
  return evaluator.evaluate_models(LOGITS, make_sed(), MIN_GAP)


def test_split_rows_follow_target_order():
  rows = evaluator.split_rows(make_sed())
  np.testing.assert_array_equal(rows["target"], [4, 1])  # ids 11, 10 in request order
  np.testing.assert_array_equal(rows["similar"], [2, 5, 6, 8])
  np.testing.assert_array_equal(rows["rest"], [0, 3, 7])
  np.testing.assert_array_equal(rows["test"], [0, 1, 2, 3])


def test_accuracies_equal_hand_counts(evaluation):
  records, _ = evaluation
  expected = {  # (target, similar, rest, test)
      "original": (1.0, 1.0, 1.0, 0.5),
      "clean": (0.0, 0.0, 1.0, 0.5),
      "retrain": (1.0, 1.0, 1.0, 0.5),
      "clean_alt": (0.5, 0.0, 1.0, 1.0),
  }
  assert set(records) == set(expected)
  for model, accuracies in expected.items():
    assert tuple(records[model]["acc"][s] for s in evaluator.SPLITS) == accuracies, model


def test_split_means_of_scores(evaluation):
  records, _ = evaluation
  strong_loss = math.log(1 + 2 * E**-STRONG)  # right with logit 4 vs 0, 0
  wrong_loss = math.log(E**STRONG + 2)        # the true class has logit 0
  assert records["original"]["loss"]["rest"] == pytest.approx(strong_loss)
  assert records["clean"]["loss"]["target"] == pytest.approx(wrong_loss)
  # Test rows: 0 and 2 wrong, 1 and 3 right.
  assert records["original"]["loss"]["test"] == pytest.approx((strong_loss + wrong_loss) / 2)
  assert records["retrain"]["margin"]["target"] == 1.0
  assert records["clean"]["margin"]["target"] == -STRONG
  assert records["clean_alt"]["margin"]["target"] == 0.0  # (4 + -4) / 2
  assert records["original"]["confidence"]["similar"] == pytest.approx(E**4 / (E**4 + 2))


def test_reference_residues_are_one_and_zero(evaluation):
  records, _ = evaluation
  checked = 0
  for score, value in records["original"]["residue"].items():
    if records["original"]["residue_defined"][score]:
      assert value == pytest.approx(1.0), score
      assert records["clean"]["residue"][score] == pytest.approx(0.0, abs=1e-12), score
      checked += 1
  # Every per-example score with a residue (loss, confidence, margin, correct, ...),
  # kl_to_clean and mia: all defined here.
  assert checked == len(evaluator.RESIDUE_SCORES) + 2
  for score in evaluator.RESIDUE_SCORES:
    assert records["original"]["residue_defined"][score] == 2
    assert records["clean"]["residue_abs"][score] == 0.0


def test_residue_of_retrain_and_clean_alt_by_hand(evaluation):
  records, _ = evaluation
  # Margin: original +4, clean -4 on both targets; retrain +1 -> (1 + 4) / 8.
  assert records["retrain"]["residue"]["margin"] == pytest.approx(5 / 8)
  assert records["retrain"]["residue_abs"]["margin"] == pytest.approx(5.0)
  assert records["retrain"]["residue"]["correct"] == 1.0
  # clean_alt: target 10 like original (1), target 11 like clean (0).
  assert records["clean_alt"]["residue"]["correct"] == pytest.approx(0.5)
  assert records["clean_alt"]["residue"]["margin"] == pytest.approx(0.5)


def test_residue_median_ratio_of_sums_and_undefined_counts(evaluation):
  records, _ = evaluation
  # clean_alt's margin: target 10 like original (+4: ratio 1), 11 like clean (−4: ratio 0).
  alt = records["clean_alt"]
  assert alt["residue_median"]["margin"] == pytest.approx(0.5)
  assert alt["residue_ratio_of_sums"]["margin"] == pytest.approx((8 + 0) / (8 + 8))
  assert alt["residue_undefined"]["margin"] == 0
  # retrain's margin is +1 on both targets: (1 + 4) / 8 each, and so for the sums.
  assert records["retrain"]["residue_median"]["margin"] == pytest.approx(5 / 8)
  assert records["retrain"]["residue_ratio_of_sums"]["margin"] == pytest.approx(10 / 16)
  # The set-level membership ratio is its own median and ratio of sums.
  for key in ("residue_median", "residue_ratio_of_sums"):
    assert records["retrain"][key]["mia"] == pytest.approx(records["retrain"]["residue"]["mia"])
  assert records["retrain"]["residue_undefined"]["mia"] == 0


def test_membership_auc_by_hand(evaluation):
  records, _ = evaluation
  # Held-out: test rows with a target label (0 or 1): rows 0 (wrong), 1 (right), 3 (right).
  # original: each target (right) beats row 0 and ties rows 1, 3 -> (1 + 0.5 + 0.5) / 3.
  assert records["original"]["mia_auc"]["target"] == pytest.approx(2 / 3)
  # clean: each target (wrong) ties row 0, loses to rows 1, 3 -> 0.5 / 3.
  assert records["clean"]["mia_auc"]["target"] == pytest.approx(1 / 6)
  assert records["original"]["residue_abs"]["mia"] == pytest.approx(2 / 3 - 1 / 6)


def test_kl_to_references(evaluation):
  records, _ = evaluation
  assert records["clean"]["kl_to_clean"]["target"] == pytest.approx(0.0, abs=1e-12)
  assert records["retrain"]["kl_to_retrain"]["similar"] == pytest.approx(0.0, abs=1e-12)
  assert records["original"]["kl_to_clean"]["target"] > 1.0


def test_per_target_rows(evaluation):
  _, rows = evaluation
  assert len(rows) == len(LOGITS) * len(TARGET_IDS)
  for model in LOGITS:
    mine = [row for row in rows if row["model"] == model]
    assert [row["target_id"] for row in mine] == TARGET_IDS
    assert [row["label"] for row in mine] == [1, 0]
  for row in rows:
    if row["model"] == "original":
      assert all(row[f"residue_{s}"] == pytest.approx(1.0) for s in evaluator.RESIDUE_SCORES)
    if row["model"] == "clean":
      assert all(row[f"residue_{s}"] == 0.0 for s in evaluator.RESIDUE_SCORES)
      assert row["correct"] == 0.0 and row["margin"] == -STRONG
  alt = {row["target_id"]: row for row in rows if row["model"] == "clean_alt"}
  assert alt[10]["residue_correct"] == 1.0 and alt[11]["residue_correct"] == 0.0


def test_undefined_gap_gives_nan_residue_and_zero_count():
  # clean identical to original: no gap on any score -> every ratio undefined.
  logits = {"original": LOGITS["original"], "clean": LOGITS["original"]}
  records, rows = evaluator.evaluate_models(logits, make_sed(), MIN_GAP)
  for score in (*evaluator.RESIDUE_SCORES, "mia"):
    assert math.isnan(records["original"]["residue"][score])
    assert records["original"]["residue_defined"][score] == 0
    assert records["original"]["residue_undefined"][score] == (1 if score == "mia" else 2)
    assert math.isnan(records["original"]["residue_median"][score])
  assert all(math.isnan(row["residue_margin"]) for row in rows)


# ----------------------------------------------------------------------------------------------
# LiRA references: targets and held-out candidates are fitted as two populations.


def two_population_references(num_models=8, num_targets=200, num_heldout=200, seed=0):
  """Targets: IN = OUT + 6, spread 3 (many near-copies); candidates: IN = OUT + 1, spread 0.5.

  The candidates are the targets scaled by 1/6 (means and spreads alike), so a calibrated test
  gives both the same null distribution; complementary IN/OUT pairs, as the study trains them.
  """
  rng = np.random.default_rng(seed)

  def population(count, shift, spread):
    in_mask = np.zeros((num_models, count), bool)
    for pair in range(num_models // 2):
      in_mask[2 * pair, rng.permutation(count)[:count // 2]] = True
      in_mask[2 * pair + 1] = ~in_mask[2 * pair]
    out_mean = rng.normal(0.0, 0.2 * spread, count)
    phi = out_mean + np.where(in_mask, shift, 0.0) + rng.normal(0.0, spread, in_mask.shape)
    unseen = out_mean + rng.normal(0.0, spread, count)  # a model that never saw them
    return phi, in_mask, unseen

  target_phi, target_in, target_unseen = population(num_targets, 6.0, 3.0)
  heldout_phi, heldout_in, heldout_unseen = population(num_heldout, 1.0, 0.5)
  references = evaluator.LiraReferences(
      target_phi=target_phi, target_in=target_in, heldout_rows=np.arange(num_heldout),
      heldout_phi=heldout_phi, heldout_in=heldout_in)
  return references, target_unseen, heldout_unseen


def test_lira_fits_targets_and_candidates_apart_so_an_unseen_model_scores_chance():
  references, target_unseen, heldout_unseen = two_population_references()
  # One σ per side pooled over both populations (around their common mean) is miscalibrated:
  # a model that saw neither scores the targets far below the candidates.
  pooled = mia.lira_online(
      np.r_[target_unseen, heldout_unseen],
      np.concatenate([references.target_phi, references.heldout_phi], axis=1),
      np.concatenate([references.target_in, references.heldout_in], axis=1), fix_variance=True)
  pooled_auc = mia.roc_auc(pooled[:len(target_unseen)], pooled[len(target_unseen):])
  assert pooled_auc < 0.35, pooled_auc
  # Fitted apart, both populations share one null: AUC at chance (null σ of the AUC ≈ 0.03).
  for online in (True, False):
    target_stat, heldout_stat = references.statistics(target_unseen, heldout_unseen, online)
    assert abs(mia.roc_auc(target_stat, heldout_stat) - 0.5) < 0.1, online
  assert references.fixed_variance(references.target_in)  # 4 a side < 32


def test_lira_per_example_variance_with_enough_references():
  references, target_unseen, heldout_unseen = two_population_references(num_models=8)
  many = evaluator.LiraReferences(**{**references.__dict__, "per_example_min": 4})
  assert not many.fixed_variance(many.target_in) and many.num_models == 8
  target_stat, heldout_stat = many.statistics(target_unseen, heldout_unseen)
  np.testing.assert_array_equal(target_stat, mia.lira_online(
      target_unseen, many.target_phi, many.target_in, fix_variance=False))
  np.testing.assert_array_equal(heldout_stat, mia.lira_online(
      heldout_unseen, many.heldout_phi, many.heldout_in, fix_variance=False))
  fixed = mia.lira_online(target_unseen, references.target_phi, references.target_in,
                          fix_variance=True)
  np.testing.assert_array_equal(references.statistics(target_unseen, heldout_unseen)[0], fixed)
  always = evaluator.LiraReferences(**{**references.__dict__, "fix_variance": False})
  assert not always.fixed_variance(always.target_in)
