"""Membership inference: ROC AUC and TPR at low FPR for score-threshold attacks.

A higher attack score means "member". The loss attack uses score = -loss (Yeom et al., CSF 2018).
"""

from __future__ import annotations

import numpy as np


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
