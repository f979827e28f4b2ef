"""Membership inference: threshold attacks, SVC MIA-efficacy, LiRA, U-LiRA and the challenge's ε.

"Forgotten" has to be measured as influence, and membership inference is the sharpest probe of it.
The attacks here go from cheap to strong:

- Threshold attacks on one model (Yeom et al., CSF 2018; Song & Mittal, USENIX Security 2021):
  one global threshold on loss, confidence, entropy or modified entropy. Cheap, population-level.
- SVC "MIA-efficacy" (Jia et al., NeurIPS 2023; Fan et al., SalUn, ICLR 2024): the number most
  unlearning papers report, kept for comparability with them.
- LiRA (Carlini et al., IEEE S&P 2022): per-example Gaussians of the logit-scaled confidence
  fitted on reference models that did / did not train on the example.
- U-LiRA (Hayes et al., 2024): the same per-example test between unlearned and retrained models.
- The per-example ε of the NeurIPS 2023 unlearning challenge (Triantafillou et al., 2024): how
  distinguishable unlearned models are from retrained ones, read as a differential-privacy ε.

Conventions: every function works in float64 numpy on host (evaluation arrays are small, exactness
matters more than speed); per-example attack scores are oriented so that higher means "member"
(or "unlearned" for U-LiRA); shapes are given as N examples, C classes, K models.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
from scipy import special

from unlearn_jax.evaluate import metrics

THRESHOLD_ATTACKS = ("loss", "confidence", "entropy", "modified_entropy")
SVC_FEATURES = ("confidence", "entropy", "modified_entropy", "correctness", "prob")
# The challenge's constants (google-deepmind/unlearning_evaluation, metric.py).
DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLDS_PER_UNIT = 100
_WINDOW = 2.0            # Half-width of the double-threshold search window, in score units.
_PEAKY_RATIO = 0.01      # Range ratio below which one population counts as a spike: ε = cap.
_BUCKET = 0.5            # Width of the ε buckets of the forgetting-quality score.
_SIGMA_FLOOR = 1e-30     # Added to Gaussian σ (as in the LiRA code) so σ = 0 stays finite.
# LiRA: with fewer IN (or OUT) references per example than this, the per-example σ is too noisy
# and one σ per side is fitted instead; Carlini et al. (S&P 2022, §VI) advise the fixed
# variance below 64 reference models, i.e. 32 a side.
LIRA_PER_EXAMPLE_MIN = 32
# U-LiRA: fewest models per population for a per-example σ worth reporting (below: n/a).
ULIRA_MIN_MODELS = 8


# ------------------------------------------------------------------------------------------------
# ROC summaries.


def roc_auc(scores_members: np.ndarray, scores_nonmembers: np.ndarray) -> float:
  """Area under the ROC curve of a threshold on the score (ties count one half).

  Equals the probability that a random member scores above a random non-member
  (Mann–Whitney U / (n·m)). NaN when either set is empty.
  """
  members = np.asarray(scores_members, np.float64)
  nonmembers = np.asarray(scores_nonmembers, np.float64)
  if len(members) == 0 or len(nonmembers) == 0:
    return float("nan")
  scores = np.concatenate([members, nonmembers])
  order = np.argsort(scores, kind="mergesort")
  ranks = np.empty(len(scores), np.float64)
  sorted_scores = scores[order]
  # Average ranks over ties so a tie contributes 1/2.
  _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
  average = first + (counts - 1) / 2.0 + 1.0
  ranks[order] = np.repeat(average, counts)
  rank_sum = ranks[:len(members)].sum()
  u_stat = rank_sum - len(members) * (len(members) + 1) / 2.0
  return float(u_stat / (len(members) * len(nonmembers)))


def tpr_at_fpr(scores_members: np.ndarray, scores_nonmembers: np.ndarray,
               fpr: float = 0.01) -> float:
  """True-positive rate at the threshold whose false-positive rate is at most `fpr`."""
  members = np.asarray(scores_members, np.float64)
  nonmembers = np.sort(np.asarray(scores_nonmembers, np.float64))[::-1]
  if len(members) == 0 or len(nonmembers) == 0:
    return float("nan")
  # The epsilon keeps e.g. 0.29 * 100 = 28.999999999999996 from losing one false positive.
  allowed = int(np.floor(fpr * len(nonmembers) + 1e-9))
  # Threshold strictly above the (allowed+1)-th highest non-member score.
  threshold = nonmembers[allowed] if allowed < len(nonmembers) else -np.inf
  return float(np.mean(members > threshold))


def loss_attack_auc(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> float:
  """AUC of the loss-threshold attack (members have lower loss)."""
  return roc_auc(-np.asarray(member_loss), -np.asarray(nonmember_loss))


# ------------------------------------------------------------------------------------------------
# Per-example quantities from logits.


def _true_class(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """values[..., labels] for (..., C) values and (...) integer labels."""
  return np.take_along_axis(values, np.asarray(labels)[..., None], axis=-1)[..., 0]


def _logsumexp_without(logits: np.ndarray, index: np.ndarray) -> np.ndarray:
  """log Σ_{j ≠ index} exp(logits_j) over the last axis, for (...) integer `index`."""
  masked = logits.copy()
  np.put_along_axis(masked, np.asarray(index)[..., None], -np.inf, axis=-1)
  return special.logsumexp(masked, axis=-1)


def logit_scaled_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """LiRA's φ(p) = log(p_y / (1 − p_y)), computed as z_y − logsumexp_{j≠y} z_j.

  The logit form stays exact when p_y rounds to 1 (memorised examples), where the
  probability form would give +inf (Carlini et al., IEEE S&P 2022, §IV-B).

  Args:
    logits: (..., C) logits, e.g. (N, C) for one model or (K, N, C) for K models.
    labels: (...) integer labels.

  Returns:
    (...) float64 φ.
  """
  logits = np.asarray(logits, np.float64)
  return _true_class(logits, labels) - _logsumexp_without(logits, labels)


def entropy(logits: np.ndarray) -> np.ndarray:
  """Shannon entropy −Σ_i p_i log p_i (nats) of softmax(logits): (..., C) -> (...)."""
  log_probs = metrics.log_softmax(logits)
  return -np.sum(np.exp(log_probs) * log_probs, axis=-1)


def _log_one_minus_probs(logits: np.ndarray) -> np.ndarray:
  """log(1 − p_i) for every class, exact also where p_i rounds to 1."""
  log_probs = metrics.log_softmax(logits)
  # Every class but the arg-max has p_i ≤ 1/2, where log1p(−p_i) is exact; for the arg-max,
  # 1 − p_i is the softmax mass of the other classes.
  with np.errstate(divide="ignore"):  # The arg-max entry may be log(0); it is replaced below.
    out = np.log1p(-np.exp(log_probs))
  top = logits.argmax(axis=-1)
  top_value = _logsumexp_without(logits, top) - special.logsumexp(logits, axis=-1)
  np.put_along_axis(out, top[..., None], top_value[..., None], axis=-1)
  return out


def modified_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Song & Mittal's modified entropy (USENIX Security 2021, Eq. 2), (..., C) -> (...).

  Mentr(p, y) = −(1 − p_y) log p_y − Σ_{i≠y} p_i log(1 − p_i). Unlike the entropy it
  is monotone in the true-class probability: 0 for a confident correct prediction,
  large for a confident wrong one. Computed in log space, so it is not clipped at
  −log(1e-30) as in the authors' probability-space code.
  """
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels)
  log_probs = metrics.log_softmax(logits)
  log_true = _true_class(log_probs, labels)
  terms = np.exp(log_probs) * _log_one_minus_probs(logits)
  np.put_along_axis(terms, labels[..., None], 0.0, axis=-1)
  return -(1.0 - np.exp(log_true)) * log_true - terms.sum(axis=-1)


# ------------------------------------------------------------------------------------------------
# Threshold attacks (one global threshold on one model's outputs).


def threshold_scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
  """Per-example scores of the threshold attacks, each oriented so higher means "member".

  Args:
    logits: (N, C) logits of the attacked model.
    labels: (N,) integer labels.

  Returns:
    {name: (N,) float64} for the names in THRESHOLD_ATTACKS: "loss" is −loss (Yeom et al.,
    CSF 2018), "confidence" the softmax probability of the label, "entropy" −entropy and
    "modified_entropy" −Mentr (Song & Mittal, USENIX Security 2021). Song & Mittal fit
    class-dependent thresholds on shadow models; these scores serve one global threshold
    sweep (ROC AUC), which needs no shadow models.
  """
  logits = np.asarray(logits, np.float64)
  log_true = _true_class(metrics.log_softmax(logits), labels)
  return {
      "loss": log_true,
      "confidence": np.exp(log_true),
      "entropy": -entropy(logits),
      "modified_entropy": -modified_entropy(logits, labels),
  }


def threshold_attack_aucs(member_logits: np.ndarray, member_labels: np.ndarray,
                          nonmember_logits: np.ndarray,
                          nonmember_labels: np.ndarray) -> dict[str, float]:
  """ROC AUC of each threshold attack, members against non-members.

  Args:
    member_logits, nonmember_logits: (N_m, C) and (N_n, C) logits of the attacked model.
    member_labels, nonmember_labels: (N_m,) and (N_n,) integer labels.

  Returns:
    {name: AUC} for the names in THRESHOLD_ATTACKS; 0.5 is chance, NaN if a set is empty.
  """
  members = threshold_scores(member_logits, member_labels)
  nonmembers = threshold_scores(nonmember_logits, nonmember_labels)
  return {name: roc_auc(members[name], nonmembers[name]) for name in THRESHOLD_ATTACKS}


# ------------------------------------------------------------------------------------------------
# SVC MIA-efficacy (Jia et al., NeurIPS 2023; Fan et al., ICLR 2024).


def svc_features(logits: np.ndarray, labels: np.ndarray, feature: str) -> np.ndarray:
  """(N, F) attack features: one column, or the full probability vector for "prob"."""
  logits = np.asarray(logits, np.float64)
  if feature == "confidence":
    column = np.exp(_true_class(metrics.log_softmax(logits), labels))
  elif feature == "entropy":
    column = entropy(logits)
  elif feature == "modified_entropy":
    column = modified_entropy(logits, labels)
  elif feature == "correctness":
    column = (logits.argmax(axis=-1) == np.asarray(labels)).astype(np.float64)
  elif feature == "prob":
    return np.exp(metrics.log_softmax(logits))
  else:
    raise ValueError(f"Unknown feature={feature!r}; allowed values: {', '.join(SVC_FEATURES)}.")
  return column[:, None]


def mia_efficacy(retain_logits: np.ndarray, retain_labels: np.ndarray,
                 test_logits: np.ndarray, test_labels: np.ndarray,
                 forget_logits: np.ndarray, forget_labels: np.ndarray, *,
                 feature: str = "confidence", seed: int = 0,
                 max_train: int | None = 5000) -> float:
  """MIA-efficacy of the unlearning literature: share of forget examples an SVC calls unseen.

  Procedure of the authors' `SVC_MIA` (OPTML-Group/Unlearn-Sparse, evaluation/SVC_MIA.py),
  whose "confidence" entry SalUn reports as MIA: an SVC (RBF kernel, C=3, gamma="auto") learns
  retain (label 1, member) against test (label 0, non-member) from one model's outputs, on
  equally many examples of each; efficacy = 1 − mean(SVC prediction on the forget set). Higher
  means more of the forget set looks unseen. Differences from that code: the balanced retain
  and test subsets are a seeded random sample of min(len(retain), len(test), max_train) each
  (the code takes the first len(test) retain examples and all of test), and "modified_entropy"
  is Song & Mittal's formula (the code's `m_entropy` indexes whole columns by label).

  Args:
    retain_logits, test_logits, forget_logits: (N_r, C), (N_t, C), (N_f, C) logits of the
      evaluated model on the retain, test and forget sets.
    retain_labels, test_labels, forget_labels: matching (N,) integer labels.
    feature: one of SVC_FEATURES.
    seed: seed of the balanced subsampling.
    max_train: cap on the examples per class used to fit the SVC (its cost grows
      quadratically); None for no cap.

  Returns:
    Efficacy in [0, 1]; NaN when the forget set, retain set or test set is empty.

  Raises:
    ValueError: for an unknown feature.
    ImportError: when scikit-learn is not installed.
  """
  if feature not in SVC_FEATURES:
    raise ValueError(f"Unknown feature={feature!r}; allowed values: {', '.join(SVC_FEATURES)}.")
  try:
    from sklearn import svm  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError(
        "mia_efficacy needs scikit-learn: pip install 'scikit-learn>=1.4'.") from error
  num_retain, num_test = len(retain_labels), len(test_labels)
  if min(num_retain, num_test, len(forget_labels)) == 0:
    return float("nan")
  per_class = min(num_retain, num_test, max_train or num_retain)
  rng = np.random.default_rng(seed)
  retain_pick = rng.choice(num_retain, per_class, replace=False)
  test_pick = rng.choice(num_test, per_class, replace=False)
  shadow = np.concatenate([
      svc_features(np.asarray(retain_logits)[retain_pick], np.asarray(retain_labels)[retain_pick],
                   feature),
      svc_features(np.asarray(test_logits)[test_pick], np.asarray(test_labels)[test_pick],
                   feature)])
  membership = np.concatenate([np.ones(per_class), np.zeros(per_class)])
  classifier = svm.SVC(C=3, gamma="auto", kernel="rbf").fit(shadow, membership)
  predicted = classifier.predict(svc_features(forget_logits, forget_labels, feature))
  return float(1.0 - np.mean(predicted))


# ------------------------------------------------------------------------------------------------
# LiRA (Carlini, Chien, Nasr, Song, Terzis, Tramèr, IEEE S&P 2022).


def _gaussian_logpdf(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
  z = (x - mean) / std
  return -0.5 * z * z - np.log(std) - 0.5 * math.log(2 * math.pi)


def _fit_gaussians(phi: np.ndarray, mask: np.ndarray, fix_variance: bool,
                   center: str) -> tuple[np.ndarray, np.ndarray]:
  """Per-example (mean, σ) of phi[k, n] over the k with mask[k, n]; NaN where too few.

  σ is the spread around the mean (population σ, as in the LiRA code). With
  `fix_variance` it is one σ for all examples: the spread of all masked entries
  around their common mean, as the LiRA code's global variance.
  """
  count = mask.sum(axis=0)
  masked = np.where(mask, phi, np.nan)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = np.where(mask, phi, 0.0).sum(axis=0) / count
    if center == "median":
      location = np.full(phi.shape[1], np.nan)
      if (count > 0).any():
        location[count > 0] = np.nanmedian(masked[:, count > 0], axis=0)
    elif center == "mean":
      location = mean
    else:
      raise ValueError(f"Unknown center={center!r}; allowed values: mean, median.")
    if fix_variance:
      values = phi[mask]
      spread = np.std(values) if len(values) >= 2 else np.nan
      std = np.where(count >= 1, spread, np.nan)
    else:
      spread = np.sqrt(np.where(mask, (phi - mean) ** 2, 0.0).sum(axis=0) / count)
      std = np.where(count >= 2, spread, np.nan)
  return np.where(np.isnan(std), np.nan, location), std + _SIGMA_FLOOR


def _check_lira_inputs(target_phi, reference_phi, in_mask):
  target_phi = np.asarray(target_phi, np.float64)
  reference_phi = np.asarray(reference_phi, np.float64)
  in_mask = np.asarray(in_mask, bool)
  if target_phi.ndim != 1 or reference_phi.shape != in_mask.shape or (
      reference_phi.ndim != 2 or reference_phi.shape[1] != target_phi.shape[0]):
    raise ValueError(
        f"Expected target_phi (N,), reference_phi and in_mask (K, N); got target_phi "
        f"{target_phi.shape}, reference_phi {reference_phi.shape}, in_mask {in_mask.shape}.")
  return target_phi, reference_phi, in_mask


def lira_online(target_phi: np.ndarray, reference_phi: np.ndarray, in_mask: np.ndarray, *,
                fix_variance: bool = False, center: str = "mean") -> np.ndarray:
  """Online LiRA: log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²) per example.

  Gaussians are fitted per example to the reference models that trained on it (IN) and those
  that did not (OUT). The paper recommends `fix_variance` (one σ_in and one σ_out for all
  examples) with few (< 64) reference models; the LiRA code's global σ is the spread of all IN
  (resp. OUT) scores, which it then, by a slip, uses for both — here each keeps its own.

  Args:
    target_phi: (N,) logit-scaled confidence of the attacked model (`logit_scaled_confidence`).
    reference_phi: (K, N) the same for K reference models.
    in_mask: (K, N) bool, True where reference model k trained on example n.
    fix_variance: one σ per side for all examples instead of one per example.
    center: "mean" (the paper's Algorithm 1) or "median" (the LiRA code) for μ.

  Returns:
    (N,) log likelihood ratio, higher = member. NaN where an example has no IN or no OUT
    reference (or fewer than 2 on a side with per-example variance, whose σ is then undefined).

  Raises:
    ValueError: on inconsistent shapes or an unknown center.
  """
  target_phi, reference_phi, in_mask = _check_lira_inputs(target_phi, reference_phi, in_mask)
  mean_in, std_in = _fit_gaussians(reference_phi, in_mask, fix_variance, center)
  mean_out, std_out = _fit_gaussians(reference_phi, ~in_mask, fix_variance, center)
  return (_gaussian_logpdf(target_phi, mean_in, std_in)
          - _gaussian_logpdf(target_phi, mean_out, std_out))


def lira_offline(target_phi: np.ndarray, reference_phi: np.ndarray, in_mask: np.ndarray, *,
                 fix_variance: bool = False, center: str = "mean") -> np.ndarray:
  """Offline LiRA: the one-sided test log Φ((φ − μ_out) / σ_out) per example.

  Only OUT reference models are needed (they can be trained before the examples to attack are
  known); the paper's Λ = 1 − Pr[Z > φ], Z ~ N(μ_out, σ_out²), is returned in log space so that
  strongly memorised examples do not all tie at Λ = 1. (The LiRA code scores the two-sided OUT
  likelihood instead.) Arguments as `lira_online`; `in_mask` only selects the OUT models.

  Returns:
    (N,) log Λ, higher = member. NaN where an example has no OUT reference (or fewer than 2
    with per-example variance).
  """
  target_phi, reference_phi, in_mask = _check_lira_inputs(target_phi, reference_phi, in_mask)
  mean_out, std_out = _fit_gaussians(reference_phi, ~in_mask, fix_variance, center)
  return special.log_ndtr((target_phi - mean_out) / std_out)


# ------------------------------------------------------------------------------------------------
# U-LiRA (Hayes, Shumailov, Triantafillou, Khalifa, Papernot, 2024).


class ULiraResult(NamedTuple):
  """Attack accuracy of U-LiRA; 0.5 = unlearned models indistinguishable from retrained ones."""
  per_example_accuracy: np.ndarray  # (N,) balanced accuracy per example (NaN: n/a).
  accuracy: float                   # Mean over examples (NaN: too few models, n/a).


def _leave_one_out_fits(phi: np.ndarray, fix_variance: bool
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Gaussian fits of phi (K, N), all models and each model left out.

  Returns (mean (N,), std (N,) or (), mean_without (K, N), std_without (K, N) or (K, 1)), where
  the "without" fits omit model k entirely; closed forms of the centred sums keep it O(K·N).
  """
  num_models, num_examples = phi.shape
  mean = phi.mean(axis=0)
  deviation = phi - mean
  mean_without = mean - deviation / (num_models - 1)
  if fix_variance:
    # One σ over all (model, example) entries around their common mean, as in `lira_online`.
    centred = phi - phi.mean()
    total = num_models * num_examples
    var = np.mean(centred ** 2)
    row_sum, row_square = centred.sum(axis=1), (centred ** 2).sum(axis=1)
    rest = total - num_examples
    shift = row_sum / rest
    var_without = ((centred ** 2).sum() - row_square) / rest - shift ** 2
    var_without = var_without[:, None]
  else:
    squares = (deviation ** 2).sum(axis=0)
    var = squares / num_models
    var_without = (squares - deviation ** 2) / (num_models - 1) - (
        deviation / (num_models - 1)) ** 2
  std = np.sqrt(np.maximum(var, 0.0)) + _SIGMA_FLOOR
  std_without = np.sqrt(np.maximum(var_without, 0.0)) + _SIGMA_FLOOR
  return mean, std, mean_without, std_without


def u_lira(unlearned_phi: np.ndarray, retrained_phi: np.ndarray, *,
           fix_variance: bool = False, min_models: int = ULIRA_MIN_MODELS) -> ULiraResult:
  """U-LiRA: per example, tell models that trained on it and unlearned it from retrained ones.

  For each example, Gaussians are fitted to its logit-scaled confidence under the population of
  unlearned models (trained with it, then unlearned) and of retrained models (trained without
  it); a held-out model is called "unlearned" when its likelihood under the unlearned Gaussian
  is the larger (likelihood ratio > 1; ties count one half). Hayes et al. fit on shadow models
  and attack separate target models; here every model is attacked once with Gaussians fitted
  on all the other models (leave-one-out), so the attacked model is never in the fit and all
  models serve as targets. The per-example accuracy is balanced — the mean of the accuracy on
  unlearned and on retrained models — so 0.5 is chance even for unequal population sizes.

  Args:
    unlearned_phi: (K_u, N) φ (`logit_scaled_confidence`) of N examples under K_u models that
      trained on them and then unlearned them.
    retrained_phi: (K_r, N) φ of the same N examples (same column order) under K_r models
      retrained without them.
    fix_variance: one σ per population for all examples (spread of all its scores) instead of
      one per example. Hayes et al. fit per-example Gaussians, the default here.
    min_models: fewest models per population; below it the result is n/a (NaN) with a
      warning. A per-example σ from a handful of seeds is noise, and Hayes et al. ("Inexact
      Unlearning Needs More Careful Evaluations to Avoid a False Sense of Privacy", 2024)
      train many unlearned and retrained models per example; the default, 8, is the fewest
      this project reports.

  Returns:
    ULiraResult(per_example_accuracy (N,), accuracy); NaN everywhere with too few models.

  Raises:
    ValueError: on mismatched shapes, or (with `min_models` lowered) fewer than 3 models per
      population (2 with `fix_variance`), which leave-one-out needs to fit a σ.
  """
  unlearned_phi = np.asarray(unlearned_phi, np.float64)
  retrained_phi = np.asarray(retrained_phi, np.float64)
  if unlearned_phi.ndim != 2 or retrained_phi.ndim != 2 or (
      unlearned_phi.shape[1] != retrained_phi.shape[1]):
    raise ValueError(f"Expected unlearned_phi (K_u, N) and retrained_phi (K_r, N); got "
                     f"{unlearned_phi.shape} and {retrained_phi.shape}.")
  if min(len(unlearned_phi), len(retrained_phi)) < min_models:
    warnings.warn(f"u_lira: {len(unlearned_phi)} unlearned and {len(retrained_phi)} retrained "
                  f"models, fewer than {min_models} per population; reported as n/a",
                  stacklevel=2)
    return ULiraResult(np.full(unlearned_phi.shape[1], np.nan), math.nan)
  fewest = 2 if fix_variance else 3
  if min(len(unlearned_phi), len(retrained_phi)) < fewest:
    raise ValueError(f"u_lira needs at least {fewest} unlearned and {fewest} retrained models "
                     f"(fix_variance={fix_variance}); got {len(unlearned_phi)} and "
                     f"{len(retrained_phi)}.")
  u_mean, u_std, u_mean_loo, u_std_loo = _leave_one_out_fits(unlearned_phi, fix_variance)
  r_mean, r_std, r_mean_loo, r_std_loo = _leave_one_out_fits(retrained_phi, fix_variance)
  # Held-out unlearned model k: the unlearned fit omits it; the retrained fit uses all.
  ratio_u = (_gaussian_logpdf(unlearned_phi, u_mean_loo, u_std_loo)
             - _gaussian_logpdf(unlearned_phi, r_mean, r_std))
  ratio_r = (_gaussian_logpdf(retrained_phi, u_mean, u_std)
             - _gaussian_logpdf(retrained_phi, r_mean_loo, r_std_loo))
  correct_u = np.where(ratio_u > 0, 1.0, np.where(ratio_u == 0, 0.5, 0.0)).mean(axis=0)
  correct_r = np.where(ratio_r < 0, 1.0, np.where(ratio_r == 0, 0.5, 0.0)).mean(axis=0)
  per_example = 0.5 * (correct_u + correct_r)
  return ULiraResult(per_example, float(per_example.mean()) if per_example.size else math.nan)


# ------------------------------------------------------------------------------------------------
# The NeurIPS 2023 unlearning challenge's ε (Triantafillou et al., 2024).


class EpsilonEstimate(NamedTuple):
  """Per-example ε and the challenge's aggregate over the forget set."""
  epsilons: np.ndarray      # (E,) in [0, EPSILON_CAP]; NaN where no decision rule was usable.
  forgetting_quality: float  # Mean bucket score in [0, 1]; 1 = indistinguishable everywhere.
  capped: int = 0           # Examples whose ε is the cap (a mean over ε averages these in).


def epsilon_from_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float = DELTA) -> np.ndarray:
  """ε of each decision rule from its error rates, as the challenge computes it.

  ε = max(log(1 − δ − FPR) − log FNR, log(1 − δ − FNR) − log FPR), clipped below at 0 (the
  (ε, δ)-DP bound that the rates refute, after Kairouz et al., ICML 2015). FPR = FNR = 0
  (perfect separation) gives +inf; exactly one of them 0 gives NaN (the rule is discarded: with
  finitely many models a zero rate says more about the sample size than about ε).
  """
  fpr = np.asarray(fpr, np.float64)
  fnr = np.asarray(fnr, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    bound = np.fmax(np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr))
  bound = np.clip(bound, 0.0, None)
  bound = np.where((fpr == 0) != (fnr == 0), np.nan, bound)
  return np.where((fpr == 0) & (fnr == 0), np.inf, bound)


def _count_in(sorted_values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
  """How many sorted values v satisfy low ≤ v ≤ high (0 for empty intervals)."""
  counts = (np.searchsorted(sorted_values, high, side="right")
            - np.searchsorted(sorted_values, low, side="left"))
  return np.maximum(counts, 0)


def _double_threshold_rates(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(FPR, FNR) of the rules "the peakier population iff l ≤ score ≤ r" on the challenge's grid."""
  pos_range, neg_range = np.ptp(pos), np.ptp(neg)
  # The peakier population (the smaller range; the other one on a tie) is the one predicted
  # inside the interval; the ε formula is symmetric in which class is called positive.
  peaky, other = (neg, pos) if pos_range >= neg_range else (pos, neg)
  width = min(pos_range, neg_range)
  low, high = peaky.min() + width - _WINDOW, peaky.max() + _WINDOW
  right = np.linspace(low, high, int(np.ceil((high - low) * THRESHOLDS_PER_UNIT)))
  num_left = int(np.ceil(2 * _WINDOW * THRESHOLDS_PER_UNIT))
  left = np.linspace(right - width - _WINDOW, right - width + _WINDOW, num_left, axis=1)
  right = np.broadcast_to(right[:, None], left.shape)
  tpr = _count_in(np.sort(peaky), left, right).ravel() / len(peaky)
  fpr = _count_in(np.sort(other), left, right).ravel() / len(other)
  return fpr, 1.0 - tpr


def _single_threshold_rates(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(FPR, FNR) of the rules "positive iff score ≥ t" on the challenge's grid."""
  both = np.concatenate([pos, neg])
  low, high = both.min(), both.max()
  thresholds = np.linspace(low, high, int(np.ceil((high - low) * THRESHOLDS_PER_UNIT)))
  at_least = lambda values: len(values) - np.searchsorted(np.sort(values), thresholds, "left")
  return at_least(neg) / len(neg), 1.0 - at_least(pos) / len(pos)


def _example_epsilon(pos: np.ndarray, neg: np.ndarray, delta: float) -> float:
  """ε of one example; `pos` is the population with the larger median."""
  largest, smallest = max(np.ptp(pos), np.ptp(neg)), min(np.ptp(pos), np.ptp(neg))
  if largest == 0:  # Both populations constant (the challenge's code fails here).
    return 0.0 if pos[0] == neg[0] else EPSILON_CAP
  if smallest / largest < _PEAKY_RATIO:
    # One population is a spike: the grid cannot resolve it, and such a spike is itself a
    # tell-tale of unlearning, so the challenge assigns the cap.
    return EPSILON_CAP
  fpr_d, fnr_d = _double_threshold_rates(pos, neg)
  fpr_s, fnr_s = _single_threshold_rates(pos, neg)
  per_rule = epsilon_from_rates(np.concatenate([fpr_d, fpr_s]), np.concatenate([fnr_d, fnr_s]),
                                delta)
  if np.isnan(per_rule).all():
    return math.nan
  return float(np.clip(np.nanmax(per_rule), 0.0, EPSILON_CAP))


def forgetting_quality(epsilons: np.ndarray, num_models: int) -> float:
  """The challenge's aggregate: mean over examples of 2^−b, b the ε bucket of width 0.5.

  Bucket b = floor(ε / 0.5) earns 2^−b points while its upper end 0.5(b+1) is at most
  ceil(log(num_models − 1)), the largest ε that num_models models per side can resolve; a
  larger ε (or NaN) earns 0. So ε < 0.5 scores 1, ε in [0.5, 1) scores 1/2, and so on.

  Args:
    epsilons: (E,) per-example ε.
    num_models: the number of unlearned models (the challenge sizes the buckets by it).

  Raises:
    ValueError: if num_models < 2.
  """
  if num_models < 2:
    raise ValueError(f"forgetting_quality needs num_models >= 2; got {num_models}.")
  epsilons = np.asarray(epsilons, np.float64)
  if epsilons.size == 0:
    return math.nan
  num_buckets = 2 * math.ceil(math.log(num_models - 1))
  with np.errstate(invalid="ignore"):
    bucket = np.floor(np.nan_to_num(epsilons, nan=np.inf) / _BUCKET)
  points = np.where(bucket < num_buckets, 2.0 ** -np.minimum(bucket, 1e3), 0.0)
  return float(points.mean())


def epsilon_estimate(unlearned_scores: np.ndarray, retrained_scores: np.ndarray,
                     delta: float = DELTA) -> EpsilonEstimate:
  """Per-example ε of the NeurIPS 2023 unlearning challenge, and its forgetting quality.

  For each forget example, its scores (the logit-scaled confidence) under N_u unlearned and N_r
  retrained models form two samples; the one with the larger median is "positive". Every
  decision rule of two families — "positive iff score ≥ t" on a grid over the pooled range,
  and "the peakier sample iff l ≤ score ≤ r" on a grid around the peakier sample, 100
  thresholds per score unit — gets (FPR, FNR) and an ε by `epsilon_from_rates` with
  δ = 1e-5; the example's ε is the largest, clipped to the cap 50 (perfect separation, FPR =
  FNR = 0, gives the cap). When the smaller range of the two samples is under 1% of the larger,
  ε is the cap outright. Procedure and constants of the challenge's metric code
  (google-deepmind/unlearning_evaluation, metric.py); described in Triantafillou et al., "Are
  we making progress in unlearning? Findings from the first NeurIPS unlearning competition"
  (2024). Differences: rates are counted exactly in float64, two constant samples give ε = 0
  if equal (else the cap), and an example where every rule is discarded gets ε = NaN (the
  code asserts).

  Resolution: rates are multiples of 1/N, so the largest finite ε that N_u = N_r = N models can
  show is log(N − 1 − Nδ) ≈ log(N − 1) (log 511 ≈ 6.2 for the challenge's 512); anything more
  separated reads as the cap. The smallest nonzero value is about log(1 + (1 − Nδ)/(N − 2)) ≈
  1/N, but ε is a maximum over many rules and the rules in the tails compare small counts (5
  against 1 model gives log 5 ≈ 1.6 whatever N is), so two independent samples of one
  distribution do not read as 0: measured median ε ≈ 1.6 and forgetting quality ≈ 0.16–0.19 for
  N = 16…512 Gaussian draws. Only identical samples give ε = 0.

  Args:
    unlearned_scores: (N_u, E) scores of E forget examples under N_u unlearned models.
    retrained_scores: (N_r, E) scores of the same examples under N_r retrained models.
    delta: the δ of the (ε, δ) bound.

  Returns:
    EpsilonEstimate(epsilons (E,), forgetting_quality, capped), forgetting_quality by
    `forgetting_quality` with num_models = N_u, capped the number of examples at the cap
    (perfect separation, a spike, or a rule beyond it): a mean over the ε averages them in,
    so report it beside any mean.

  Raises:
    ValueError: on mismatched shapes or fewer than 2 models on a side.
  """
  unlearned_scores = np.asarray(unlearned_scores, np.float64)
  retrained_scores = np.asarray(retrained_scores, np.float64)
  if unlearned_scores.ndim != 2 or retrained_scores.ndim != 2 or (
      unlearned_scores.shape[1] != retrained_scores.shape[1]):
    raise ValueError(f"Expected unlearned_scores (N_u, E) and retrained_scores (N_r, E); got "
                     f"{unlearned_scores.shape} and {retrained_scores.shape}.")
  if min(len(unlearned_scores), len(retrained_scores)) < 2:
    raise ValueError(f"epsilon_estimate needs at least 2 unlearned and 2 retrained models; got "
                     f"{len(unlearned_scores)} and {len(retrained_scores)}.")
  epsilons = np.empty(unlearned_scores.shape[1])
  for example in range(len(epsilons)):
    unlearned, retrained = unlearned_scores[:, example], retrained_scores[:, example]
    retrain_is_positive = np.median(retrained) > np.median(unlearned)
    pos, neg = (retrained, unlearned) if retrain_is_positive else (unlearned, retrained)
    epsilons[example] = _example_epsilon(pos, neg, delta)
  return EpsilonEstimate(epsilons, forgetting_quality(epsilons, len(unlearned_scores)),
                         int(np.sum(epsilons >= EPSILON_CAP)))


def epsilon_null(retrained_scores: np.ndarray, delta: float = DELTA) -> EpsilonEstimate:
  """The same estimate for retrain against retrain: the null an ε is read against.

  The N_r retrained models are split into their first and second halves (N_r // 2 each; the
  last model is left out when N_r is odd), which are compared by `epsilon_estimate`. Both halves
  come from one distribution, so whatever ε they show is what the estimator reads from chance
  at that sample size (half the models of the estimate it stands beside, so a coarser grid:
  compare the two with that in mind).

  Raises:
    ValueError: with fewer than 4 retrained models (2 a half).
  """
  retrained_scores = np.asarray(retrained_scores, np.float64)
  half = len(retrained_scores) // 2
  if retrained_scores.ndim != 2 or half < 2:
    raise ValueError(f"epsilon_null needs retrained_scores (N_r, E) with N_r >= 4; got "
                     f"{retrained_scores.shape}.")
  return epsilon_estimate(retrained_scores[:half], retrained_scores[half:2 * half], delta)
