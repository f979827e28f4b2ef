"""Specificity: does a method forget the targets, or damage the model? (docs/design.md §3.9)

A target's residue falls when a method moves the model on that target, and also when it moves
the model everywhere. To tell them apart each target t is matched with non-targets the method
should leave alone: the retained sample (R, not a similar sample) of t's class whose margin under
`original` is closest to t's, and the test sample of t's class closest in the same way (each
used once). For a score f and model M the *drop* of an example x is measured in units of the
target's own gap, so target and non-targets read on one scale:

    drop(x) = (f(original, x) − f(M, x)) / (f(original, t) − f(clean, t)),

over the targets where that gap is at least `eval.min_gap` (as for the residue; drop(t) = 1 −
residue(t)). `methods.<m>.specificity.<score>` holds the mean drop of the targets (`target`), of
the matched retained samples (`retained`) and of the matched test samples (`test`), and
`ratio` = drop(test) / drop(target): near 0 a method forgot what it was asked to, near 1 and
above it moved unrelated examples as much (`report/protocol.py` marks a method `damaged` on a
score when ratio ≥ its `DAMAGE_RATIO` with a target drop of at least its `MIN_DROP`).
"""

from __future__ import annotations

import numpy as np

from unlearn_jax.data import sed as sed_lib
from unlearn_jax.evaluate import evaluator, metrics, registry
from unlearn_jax.tasks import base

SCORES = ("margin", "loss", "confidence")


def match(values: np.ndarray, pool: np.ndarray, pool_values: np.ndarray,
          rng: np.random.Generator) -> np.ndarray:
  """For each value, the row of `pool` whose value is closest, each row used once (targets in a
  random order; -1 when the pool is exhausted)."""
  chosen = np.full(len(values), -1, np.int64)
  free = np.ones(len(pool), bool)
  for index in rng.permutation(len(values)):
    if not free.any():
      break
    candidates = np.flatnonzero(free)
    best = candidates[np.argmin(np.abs(pool_values[candidates] - values[index]))]
    chosen[index], free[best] = pool[best], False
  return chosen


def matched_rows(sed: sed_lib.SED, original_logits: dict[str, np.ndarray],
                 seed: int) -> dict[str, np.ndarray]:
  """{'target', 'retained', 'test'}: rows of the targets (in D), their matched retained rows
  (in D) and matched test rows (in the test split), aligned by target."""
  margin = registry.get("margin").score
  train_margin = margin(original_logits["train"], sed.train["label"])
  test_margin = margin(original_logits["test"], sed.test["label"])
  targets = evaluator.split_rows(sed)["target"]
  rng = np.random.default_rng([int(seed), 31])
  retained = np.full(len(targets), -1, np.int64)
  test = np.full(len(targets), -1, np.int64)
  for label in np.unique(sed.train["label"][targets]):
    mine = np.flatnonzero(sed.train["label"][targets] == label)
    pool = np.flatnonzero((sed.train["kind"] == sed_lib.REST) & (sed.train["label"] == label))
    retained[mine] = match(train_margin[targets[mine]], pool, train_margin[pool], rng)
    pool = np.flatnonzero(sed.test["label"] == label)
    test[mine] = match(train_margin[targets[mine]], pool, test_margin[pool], rng)
  return {"target": targets, "retained": retained, "test": test}


def drops(logits: dict[str, dict[str, np.ndarray]], sed: sed_lib.SED,
          rows: dict[str, np.ndarray], name: str, score: str, min_gap: float) -> dict[str, float]:
  """Mean drop of `name` on the targets and on their matched non-targets (module docstring)."""
  fn = registry.get(score).score

  def values(model: str, split: str) -> np.ndarray:
    source = sed.test if split == "test" else sed.train
    part = "test" if split == "test" else "train"
    picked = rows[split]
    out = np.full(len(picked), np.nan)
    ok = picked >= 0
    out[ok] = fn(logits[model][part][picked[ok]], source["label"][picked[ok]])
    return out
  gap = values("original", "target") - values("clean", "target")
  defined = np.abs(gap) >= min_gap
  out = {}
  for split in ("target", "retained", "test"):
    change = values("original", split) - values(name, split)
    ratio = np.where(defined, change / np.where(defined, gap, 1.0), np.nan)
    out[split] = metrics.mean_or_nan(ratio[np.isfinite(ratio)])
  out["ratio"] = (out["test"] / out["target"]
                  if np.isfinite(out["target"]) and out["target"] != 0 else float("nan"))
  return out


class Specificity(base.Plugin):
  """Adds `specificity` to every method's record (`eval.specificity`)."""

  def extend(self, task: base.Task, run: base.SeedRun) -> None:
    if not task.config.eval.specificity:
      return
    logits = run.extra["logits"]
    rows = matched_rows(task.sed, logits["original"], run.seed)
    for name, record in run.records.items():
      if name in ("original", "clean") or name in run.references or name not in logits:
        continue
      min_gap = task.config.eval.min_gap
      record["specificity"] = {
          score: drops(logits, task.sed, rows, name, score, float(min_gap[score]))
          for score in SCORES}

