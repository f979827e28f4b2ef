"""Tests for unlearn_jax.evaluate.mia: threshold attacks, SVC efficacy, LiRA, U-LiRA and the ε.

Expected values come from scikit-learn, scipy.stats, brute-force enumerations written here, or
hand computations — never from the code under test. The LiRA acceptance test trains real tiny
MLPs (vmap over models) that memorise random labels.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats
from sklearn import metrics as sk_metrics

from unlearn_jax import models
from unlearn_jax.evaluate import mia

DELTA = 1e-5


# ----------------------------------------------------------------------------------------------
# ROC summaries.


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_sklearn_with_many_ties(seed):
  rng = np.random.default_rng(seed)
  # Few distinct values: most scores are tied, within and across the two sets.
  members = rng.integers(0, 6, 200).astype(float)
  nonmembers = rng.integers(0, 4, 150).astype(float)
  expected = sk_metrics.roc_auc_score(np.r_[np.ones(200), np.zeros(150)],
                                      np.r_[members, nonmembers])
  assert mia.roc_auc(members, nonmembers) == pytest.approx(expected, abs=1e-6)


def brute_force_tpr_at_fpr(members, nonmembers, fpr):
  """Best TPR over every threshold rule "member iff score > t" whose FPR is at most `fpr`."""
  best = 0.0
  for threshold in np.r_[-np.inf, np.unique(np.r_[members, nonmembers])]:
    if np.mean(nonmembers > threshold) <= fpr + 1e-12:
      best = max(best, np.mean(members > threshold))
  return best


@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.05, 0.1, 0.3, 1.0])
def test_tpr_at_fpr_matches_threshold_sweep(fpr):
  rng = np.random.default_rng(1)
  members = np.round(rng.normal(1.0, 1.0, 120), 1)  # Rounded: ties included.
  nonmembers = np.round(rng.normal(0.0, 1.0, 150), 1)
  assert mia.tpr_at_fpr(members, nonmembers, fpr) == pytest.approx(
      brute_force_tpr_at_fpr(members, nonmembers, fpr))


# ----------------------------------------------------------------------------------------------
# Threshold attacks.


def test_modified_entropy_hand_values():
  logits = np.log([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]])
  labels = np.array([0, 1])
  expected = [
      -0.5 * math.log(0.5) - 0.3 * math.log(0.7) - 0.2 * math.log(0.8),
      -0.7 * math.log(0.3) - 0.5 * math.log(0.5) - 0.2 * math.log(0.8),
  ]
  np.testing.assert_allclose(mia.modified_entropy(logits, labels), expected, rtol=1e-12)
  entropy = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
  np.testing.assert_allclose(mia.entropy(logits), [entropy, entropy], rtol=1e-12)


def test_modified_entropy_stable_when_confident():
  # p_0 = 1 − 2e^−50 rounds to 1 in float64, so 1 − p_0 must not be formed by subtraction.
  logits = np.array([[50.0, 0.0, 0.0], [50.0, 0.0, 0.0]])
  mentr = mia.modified_entropy(logits, np.array([0, 1]))
  # Right and confident: Mentr ≈ 0. Wrong and confident: −(1−p_1) log p_1 ≈ 50 plus
  # −p_0 log(1 − p_0) = −log(2e^−50) ≈ 50 − log 2.
  assert 0.0 <= mentr[0] < 1e-40
  assert mentr[1] == pytest.approx(100.0 - math.log(2.0), rel=1e-12)


def test_logit_scaled_confidence_matches_probability_form():
  rng = np.random.default_rng(0)
  logits = rng.normal(0.0, 2.0, (3, 7, 5))
  labels = rng.integers(0, 5, (3, 7))
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  p_true = np.take_along_axis(probs, labels[..., None], -1)[..., 0]
  np.testing.assert_allclose(mia.logit_scaled_confidence(logits, labels),
                             np.log(p_true / (1 - p_true)), rtol=1e-10)
  # Memorised: p rounds to 1 but φ stays exact (z_y − log Σ_others e^z = 60 − log 2).
  assert mia.logit_scaled_confidence(np.array([[60.0, 0.0, 0.0]]), np.array([0]))[0] == (
      pytest.approx(60.0 - math.log(2.0), rel=1e-14))


def test_threshold_attack_aucs_on_constructed_case():
  num_classes, n = 4, 40
  labels = np.arange(n) % num_classes
  onehot = np.eye(num_classes)[labels]
  members = 6.0 * onehot                          # Right and confident.
  wrong = np.eye(num_classes)[(labels + 1) % num_classes]
  nonmembers = 6.0 * wrong                        # Wrong and just as confident.
  aucs = mia.threshold_attack_aucs(members, labels, nonmembers, labels)
  assert set(aucs) == set(mia.THRESHOLD_ATTACKS)
  assert aucs["loss"] == aucs["confidence"] == aucs["modified_entropy"] == 1.0
  # The entropy ignores the label: equally peaked predictions are indistinguishable —
  # the blind spot the modified entropy was designed to remove.
  assert aucs["entropy"] == 0.5
  scores = mia.threshold_scores(members, labels)
  np.testing.assert_allclose(scores["confidence"], math.exp(6) / (math.exp(6) + 3))
  np.testing.assert_allclose(scores["loss"], np.log(scores["confidence"]))


# ----------------------------------------------------------------------------------------------
# SVC MIA-efficacy.


def test_mia_efficacy_separates_seen_from_unseen():
  rng = np.random.default_rng(0)
  num_classes = 5

  def outputs(n, true_logit):
    labels = rng.integers(0, num_classes, n)
    logits = rng.normal(0.0, 0.3, (n, num_classes))
    logits[np.arange(n), labels] += true_logit + rng.normal(0.0, 0.3, n)
    return logits, labels

  retain, test = outputs(300, 6.0), outputs(200, 1.0)
  like_retain, like_test = outputs(100, 6.0), outputs(100, 1.0)
  # Forget outputs that look like training data: the SVC calls them members.
  assert mia.mia_efficacy(*retain, *test, *like_retain, seed=0) < 0.1
  # Forget outputs that look like unseen data: called non-members, efficacy near 1.
  assert mia.mia_efficacy(*retain, *test, *like_test, seed=0) > 0.9
  # Unseen data the model gets wrong (true logit below the others): every feature, the
  # correctness and the full probability vector included, tells it from the retain set.
  wrong_test, like_wrong_test = outputs(200, -3.0), outputs(100, -3.0)
  for feature in mia.SVC_FEATURES:
    seen = mia.mia_efficacy(*retain, *wrong_test, *like_retain, feature=feature, max_train=100)
    unseen = mia.mia_efficacy(*retain, *wrong_test, *like_wrong_test, feature=feature,
                              max_train=100)
    assert seen < 0.05 and unseen > 0.95, (feature, seen, unseen)
  with pytest.raises(ValueError, match="feature"):
    mia.mia_efficacy(*retain, *test, *like_test, feature="margin")


# ----------------------------------------------------------------------------------------------
# LiRA: synthetic Gaussians against scipy.stats.norm.


def synthetic_references(seed=0, num_models=12, num_examples=30):
  rng = np.random.default_rng(seed)
  in_mask = rng.random((num_models, num_examples)) < 0.5
  in_mask[:2, :] = [[True], [False]]  # Every example has at least one IN and one OUT ...
  in_mask[2:4, :] = [[True], [False]]  # ... and at least two of each.
  shift = rng.normal(2.0, 0.5, num_examples)
  phi = rng.normal(0.0, 1.0, (num_models, num_examples)) + np.where(in_mask, shift, 0.0)
  target = rng.normal(1.0, 1.0, num_examples)
  return target, phi, in_mask


def test_lira_online_matches_scipy_norm():
  target, phi, in_mask = synthetic_references()
  expected = np.empty_like(target)
  for n in range(len(target)):
    ins, outs = phi[in_mask[:, n], n], phi[~in_mask[:, n], n]
    expected[n] = (stats.norm.logpdf(target[n], ins.mean(), ins.std())
                   - stats.norm.logpdf(target[n], outs.mean(), outs.std()))
  np.testing.assert_allclose(mia.lira_online(target, phi, in_mask), expected, rtol=1e-9)
  # Global variance: one σ per side, the spread of all IN (OUT) scores.
  sigma_in, sigma_out = phi[in_mask].std(), phi[~in_mask].std()
  expected_fixed = np.array([
      stats.norm.logpdf(target[n], phi[in_mask[:, n], n].mean(), sigma_in)
      - stats.norm.logpdf(target[n], phi[~in_mask[:, n], n].mean(), sigma_out)
      for n in range(len(target))])
  np.testing.assert_allclose(mia.lira_online(target, phi, in_mask, fix_variance=True),
                             expected_fixed, rtol=1e-9)
  median = mia.lira_online(target, phi, in_mask, center="median")
  ins = phi[in_mask[:, 0], 0]
  outs = phi[~in_mask[:, 0], 0]
  assert median[0] == pytest.approx(stats.norm.logpdf(target[0], np.median(ins), ins.std())
                                    - stats.norm.logpdf(target[0], np.median(outs), outs.std()))


def test_lira_offline_is_one_sided_out_test():
  target, phi, in_mask = synthetic_references(seed=1)
  expected = np.array([
      stats.norm.cdf(target[n], phi[~in_mask[:, n], n].mean(), phi[~in_mask[:, n], n].std())
      for n in range(len(target))])
  np.testing.assert_allclose(np.exp(mia.lira_offline(target, phi, in_mask)), expected, rtol=1e-9)


def test_lira_missing_references_give_nan():
  target, phi, in_mask = synthetic_references(seed=2, num_examples=5)
  in_mask[:, 0] = True          # No OUT model for example 0.
  in_mask[:, 1] = False         # No IN model for example 1.
  in_mask[:, 2] = False
  in_mask[5, 2] = True          # A single IN model: no per-example σ, but a global one.
  online = mia.lira_online(target, phi, in_mask)
  assert np.isnan(online[:3]).all() and np.isfinite(online[3:]).all()
  fixed = mia.lira_online(target, phi, in_mask, fix_variance=True)
  assert np.isnan(fixed[:2]).all() and np.isfinite(fixed[2:]).all()
  offline = mia.lira_offline(target, phi, in_mask)
  assert np.isnan(offline[0]) and np.isfinite(offline[1:]).all()
  with pytest.raises(ValueError, match="in_mask"):
    mia.lira_online(target, phi, in_mask[:, :3])


# ----------------------------------------------------------------------------------------------
# LiRA acceptance: tiny MLPs that memorise random labels.

NUM_CLASSES, DIM, POOL, OUTSIDE, NUM_REFERENCES = 10, 32, 128, 64, 16


def train_models(weights, inputs, labels, seed, steps=300):
  """Trains one MLP per row of `weights` (per-example loss weights), vmapped; pool logits."""
  model = models.get("mlp", NUM_CLASSES, hidden=(128,))
  optimizer = optax.adam(1e-2)

  def train_one(key, example_weights):
    params = model.init(key, jnp.zeros((1, DIM)))

    def loss_fn(params):
      losses = optax.softmax_cross_entropy_with_integer_labels(model.apply(params, inputs), labels)
      return jnp.sum(example_weights * losses) / jnp.sum(example_weights)

    def step(carry, _):
      params, opt_state = carry
      updates, opt_state = optimizer.update(jax.grad(loss_fn)(params), opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
    return model.apply(params, inputs[:POOL])

  keys = jax.random.split(jax.random.key(seed), len(weights))
  return np.asarray(jax.jit(jax.vmap(train_one))(keys, jnp.asarray(weights)), np.float64)


def test_lira_detects_memorised_members_and_not_unseen_model():
  rng = np.random.default_rng(0)
  inputs = rng.normal(size=(POOL + OUTSIDE, DIM)).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, POOL + OUTSIDE)  # Random labels: pure memorisation.
  halves = []
  for _ in range(NUM_REFERENCES // 2 + 1):  # Complementary pairs: every candidate is IN 8 times.
    half = np.zeros(POOL, bool)
    half[rng.permutation(POOL)[:POOL // 2]] = True
    halves += [half, ~half]
  in_mask, target_members = np.array(halves[:NUM_REFERENCES]), halves[NUM_REFERENCES]
  weights = np.zeros((NUM_REFERENCES + 2, POOL + OUTSIDE), np.float32)
  weights[:NUM_REFERENCES, :POOL] = in_mask
  weights[NUM_REFERENCES, :POOL] = target_members     # The target: 64 known candidates.
  weights[NUM_REFERENCES + 1, POOL:] = 1.0            # Never saw any candidate.
  logits = train_models(weights, jnp.asarray(inputs), jnp.asarray(labels), seed=0)
  assert np.mean(logits[NUM_REFERENCES].argmax(-1)[target_members]
                 == labels[:POOL][target_members]) == 1.0  # Memorised.
  phi = mia.logit_scaled_confidence(logits, np.broadcast_to(labels[:POOL], logits.shape[:2]))
  references = phi[:NUM_REFERENCES]

  def auc(statistic):
    assert np.isfinite(statistic).all()
    return mia.roc_auc(statistic[target_members], statistic[~target_members])

  # Measured with seed 0: online (global σ) 1.000 and offline 0.998 on the target; on the
  # unseen model 0.567 and 0.541 — an AUC over 64 vs 64 examples has a null σ of ≈ 0.05.
  for attack in (mia.lira_online, mia.lira_offline):
    for fix_variance in (True, False):
      target_auc = auc(attack(phi[NUM_REFERENCES], references, in_mask, fix_variance=fix_variance))
      unseen_auc = auc(attack(phi[NUM_REFERENCES + 1], references, in_mask,
                              fix_variance=fix_variance))
      assert target_auc > 0.95, (attack.__name__, fix_variance, target_auc)
      assert abs(unseen_auc - 0.5) < 0.15, (attack.__name__, fix_variance, unseen_auc)


# ----------------------------------------------------------------------------------------------
# U-LiRA.


def brute_force_u_lira(unlearned, retrained, fix_variance):
  """Refit both Gaussians for every held-out model with numpy/scipy, as the definition says."""
  def fit(values):
    return values.mean(axis=0), (values.std() if fix_variance else values.std(axis=0))

  def called_unlearned(phi, unlearned_pop, retrained_pop):
    (mu_u, sd_u), (mu_r, sd_r) = fit(unlearned_pop), fit(retrained_pop)
    ratio = stats.norm.logpdf(phi, mu_u, sd_u) - stats.norm.logpdf(phi, mu_r, sd_r)
    return np.where(ratio > 0, 1.0, np.where(ratio == 0, 0.5, 0.0))

  right_u = np.mean([called_unlearned(unlearned[k], np.delete(unlearned, k, 0), retrained)
                     for k in range(len(unlearned))], axis=0)
  right_r = np.mean([1.0 - called_unlearned(retrained[k], unlearned, np.delete(retrained, k, 0))
                     for k in range(len(retrained))], axis=0)
  return 0.5 * (right_u + right_r)


@pytest.mark.parametrize("fix_variance", [False, True])
def test_u_lira_leave_one_out_matches_refitting(fix_variance):
  rng = np.random.default_rng(3)
  unlearned = rng.normal(0.6, 1.0, (7, 20)) * rng.uniform(0.5, 2.0, 20)
  retrained = rng.normal(0.0, 1.0, (5, 20))
  result = mia.u_lira(unlearned, retrained, fix_variance=fix_variance, min_models=5)
  expected = brute_force_u_lira(unlearned, retrained, fix_variance)
  np.testing.assert_allclose(result.per_example_accuracy, expected, atol=1e-12)
  assert result.accuracy == pytest.approx(expected.mean())


def test_u_lira_chance_for_same_distribution_and_one_for_separated():
  rng = np.random.default_rng(0)
  same = mia.u_lira(rng.normal(size=(64, 200)), rng.normal(size=(64, 200)))
  # 200 examples × 128 held-out models: the mean accuracy's noise is ≈ 0.01 (measured 0.49–0.51).
  assert abs(same.accuracy - 0.5) < 0.04
  separated = mia.u_lira(rng.normal(size=(16, 50)) + 8.0, rng.normal(size=(16, 50)))
  assert separated.accuracy == 1.0
  with pytest.raises(ValueError, match="at least 3"):
    mia.u_lira(np.zeros((2, 4)), np.zeros((5, 4)), min_models=2)


def test_u_lira_is_na_with_a_warning_below_eight_models_a_population():
  rng = np.random.default_rng(1)
  separated = rng.normal(size=(8, 6)) + 8.0
  # Eight a side: a number (the populations are 8σ apart, so every call is right).
  assert mia.u_lira(separated, rng.normal(size=(8, 6))).accuracy == 1.0
  for unlearned, retrained in ((7, 8), (8, 2), (2, 2)):
    with pytest.warns(UserWarning, match="fewer than 8"):
      result = mia.u_lira(separated[:unlearned], rng.normal(size=(retrained, 6)))
    assert math.isnan(result.accuracy)
    assert result.per_example_accuracy.shape == (6,)
    assert np.isnan(result.per_example_accuracy).all()


def test_u_lira_fits_a_sigma_per_example_by_default():
  # Example 0 varies 100× more than example 1 in both populations, which are 3 of their own
  # σ apart on each. Per-example σ (the default) separates both; one σ per population (the
  # spread of all its scores) is too wide for example 1, which is then called at chance.
  rng = np.random.default_rng(2)
  scale = np.array([100.0, 1.0])
  unlearned = (rng.normal(size=(32, 2)) + 3.0) * scale
  retrained = rng.normal(size=(32, 2)) * scale
  per_example = mia.u_lira(unlearned, retrained).per_example_accuracy
  pooled = mia.u_lira(unlearned, retrained, fix_variance=True).per_example_accuracy
  expected = brute_force_u_lira(unlearned, retrained, fix_variance=False)
  np.testing.assert_allclose(per_example, expected, atol=1e-12)
  assert per_example[1] > 0.85 and abs(pooled[1] - 0.5) < 0.1


# ----------------------------------------------------------------------------------------------
# The challenge's ε.


def brute_force_epsilon(unlearned, retrained, delta=DELTA):
  """ε over every rule of the two families, enumerated at midpoints between the data.

  Rules: "the larger-median sample iff score ≥ t", and "the smaller-range sample iff
  a ≤ score ≤ b" for every interval. Valid as the challenge's grid for data spanning < 2
  units with gaps wider than its 0.01 step, where the grid realises every such rule.
  """
  pos, neg = ((retrained, unlearned) if np.median(retrained) > np.median(unlearned)
              else (unlearned, retrained))
  peaky, other = (neg, pos) if np.ptp(pos) >= np.ptp(neg) else (pos, neg)
  values = np.unique(np.r_[pos, neg])
  cuts = np.r_[-np.inf, (values[1:] + values[:-1]) / 2, np.inf]
  best = -np.inf
  rates = [(np.mean(neg >= t), np.mean(pos < t)) for t in cuts]
  for i, low in enumerate(cuts):
    for high in cuts[i:]:
      inside = lambda v, low=low, high=high: np.mean((v >= low) & (v <= high))
      rates.append((inside(other), 1.0 - inside(peaky)))
  for fpr, fnr in rates:
    if fpr == 0 and fnr == 0:
      return mia.EPSILON_CAP
    if fpr == 0 or fnr == 0:
      continue  # Discarded, as the challenge does.
    candidates = [math.log(1 - delta - fpr) - math.log(fnr) if fpr < 1 - delta else -np.inf,
                  math.log(1 - delta - fnr) - math.log(fpr) if fnr < 1 - delta else -np.inf]
    best = max(best, max(candidates))
  return min(max(best, 0.0), mia.EPSILON_CAP)


def test_epsilon_hand_computed_tiny_case():
  unlearned = np.array([[0.2], [0.4], [0.6], [0.8]])
  retrained = np.array([[0.0], [0.1], [0.3], [0.5]])
  # Unlearned has the larger median. Best rule "unlearned iff score ≥ 0.35": FNR = 1/4
  # (0.2), FPR = 1/4 (0.5), ε = log(1 − δ − 1/4) − log(1/4) = log(3 − 4δ). Rules with one
  # zero rate (e.g. ≥ 0.55: FPR = 0) are discarded. With 4 models the largest resolvable ε is
  # ceil(log 3) = 2: buckets [0,.5) [.5,1) [1,1.5) [1.5,2) score 1, 1/2, 1/4, 1/8.
  estimate = mia.epsilon_estimate(unlearned, retrained)
  assert estimate.epsilons[0] == pytest.approx(math.log(3 - 4 * DELTA), rel=1e-12)
  assert estimate.forgetting_quality == 0.25


def test_epsilon_matches_brute_force_enumeration():
  rng = np.random.default_rng(0)
  grid = np.arange(31) * 0.05  # Values 0.05 apart over 1.5 units.
  unlearned, retrained = np.empty((12, 25)), np.empty((12, 25))
  for example in range(25):
    picked = rng.choice(grid, 24, replace=False)
    order = np.argsort(picked + rng.normal(0.0, 1.0, 24))  # Overlapping, shifted samples.
    unlearned[:, example], retrained[:, example] = picked[order[:12]], picked[order[12:]]
  estimate = mia.epsilon_estimate(unlearned, retrained)
  expected = [brute_force_epsilon(unlearned[:, e], retrained[:, e]) for e in range(25)]
  np.testing.assert_allclose(estimate.epsilons, expected, rtol=1e-12)
  assert len(set(np.round(expected, 6))) > 3  # A varied case, not one value.


def test_epsilon_identical_populations_score_best():
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(32, 10))
  estimate = mia.epsilon_estimate(scores, scores.copy())
  # Every rule then has FPR + FNR = 1, hence ε ≤ 0, clipped to 0: the best bucket everywhere.
  np.testing.assert_array_equal(estimate.epsilons, 0.0)
  assert estimate.forgetting_quality == 1.0


def test_epsilon_separated_or_spiky_populations_hit_the_cap():
  rng = np.random.default_rng(0)
  separated = mia.epsilon_estimate(rng.normal(size=(32, 4)) + 10.0, rng.normal(size=(32, 4)))
  np.testing.assert_array_equal(separated.epsilons, mia.EPSILON_CAP)
  assert separated.forgetting_quality == 0.0
  # Overlapping, but the unlearned sample is a spike (range < 1% of the other's).
  spike = mia.epsilon_estimate(rng.normal(0.0, 1e-4, (32, 2)), rng.normal(size=(32, 2)))
  np.testing.assert_array_equal(spike.epsilons, mia.EPSILON_CAP)
  constant = mia.epsilon_estimate(np.ones((8, 2)), np.r_[np.ones((4, 2)), 2 * np.ones((4, 2))])
  np.testing.assert_array_equal(constant.epsilons, mia.EPSILON_CAP)


def test_epsilon_from_rates_special_cases():
  eps = mia.epsilon_from_rates(np.array([0.0, 0.0, 0.25, 0.5, 0.1]),
                               np.array([0.0, 0.5, 0.25, 0.5, 0.3]), delta=DELTA)
  assert eps[0] == np.inf and np.isnan(eps[1])
  assert eps[2] == pytest.approx(math.log(0.75 - DELTA) - math.log(0.25))
  assert eps[3] == 0.0  # FPR + FNR = 1: a coin flip refutes nothing.
  assert eps[4] == pytest.approx(math.log(0.7 - DELTA) - math.log(0.1))


def test_forgetting_quality_buckets():
  # 512 models: ceil(log 511) = 7, so 14 buckets of width 0.5 score 2^0 … 2^−13.
  epsilons = np.array([0.0, 0.49, 0.5, 1.2, 6.9, 7.0, 50.0, np.nan])
  expected = (1 + 1 + 0.5 + 0.25 + 2.0**-13 + 0 + 0 + 0) / 8
  assert mia.forgetting_quality(epsilons, num_models=512) == pytest.approx(expected)
  assert mia.forgetting_quality(np.zeros(3), num_models=2) == 0.0  # log 1 = 0: no bucket.
  with pytest.raises(ValueError, match="num_models"):
    mia.forgetting_quality(np.zeros(3), num_models=1)


def test_epsilon_counts_the_examples_at_the_cap():
  rng = np.random.default_rng(4)
  # Examples 0-2 separated (cap), 3-5 identical samples (ε = 0).
  unlearned = rng.normal(size=(16, 6))
  retrained = unlearned.copy()
  retrained[:, :3] += 20.0
  estimate = mia.epsilon_estimate(unlearned, retrained)
  np.testing.assert_array_equal(estimate.epsilons, [mia.EPSILON_CAP] * 3 + [0.0] * 3)
  assert estimate.capped == 3
  assert mia.epsilon_estimate(unlearned, unlearned.copy()).capped == 0


def test_epsilon_null_compares_the_two_halves_of_the_retrained_models():
  rng = np.random.default_rng(5)
  retrained = rng.normal(size=(9, 12))
  null = mia.epsilon_null(retrained)
  # The first four models against the next four; the ninth is left out.
  direct = mia.epsilon_estimate(retrained[:4], retrained[4:8])
  np.testing.assert_array_equal(null.epsilons, direct.epsilons)
  assert (null.capped, null.forgetting_quality) == (direct.capped, direct.forgetting_quality)
  # Two halves of one population: the estimate is not 0 (ε reads chance as a signal), which is
  # why it stands beside every ε; a copy of the same models reads 0.
  assert np.nanmean(null.epsilons) > 0.5
  twice = np.concatenate([retrained[:4], retrained[:4]])
  np.testing.assert_array_equal(mia.epsilon_null(twice).epsilons, 0.0)
  with pytest.raises(ValueError, match="N_r >= 4"):
    mia.epsilon_null(retrained[:3])
