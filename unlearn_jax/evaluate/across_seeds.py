"""Attacks across a model's training seeds: the ε estimate and U-LiRA of every model against
`retrain`'s and `clean`'s seeds (docs/design.md §3.5; declared in evaluate/scores/across_seeds.py,
computed with evaluate/mia.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from unlearn_jax.evaluate import mia


def add(summary: dict[str, Any], per_target: list[dict], epsilon_min_seeds: int) -> None:
  """ε estimate and U-LiRA of every model against `retrain` and `clean`, over the seeds.

  The populations are the study's own models: for model M, its N seeds are the "unlearned"
  population and the N seeds of `retrain` (or `clean`) the other, scored by the logit-scaled
  confidence on each target. U-LiRA fits a σ per example and population, leaving one model out
  at a time; below `mia.ULIRA_MIN_MODELS` seeds it is n/a (NaN, with a warning). ε is reported
  from `epsilon_min_seeds` on, because with few models its rules separate two samples of one
  distribution by chance (N models resolve ε only up to about log(N - 1), or the cap); beside
  it stand the number of targets at the cap (`epsilon_capped`) and, in
  `summary['across_seeds']['epsilon_null']`, the same estimate for the two halves of retrain's
  seeds against each other (`mia.epsilon_null`): what chance alone reads.

  Models scored against other residue references (`summary['residue_references']`: SISA's
  shard ensembles, see methods/sisa.py) are compared with their own clean reference's seeds
  (`sisa_clean`, an ensemble with the same shards trained on R) as `vs_clean`, so that both
  populations are ensembles on one scale; they have no `vs_retrain` entry (n/a), since no
  ensemble is retrained on D \\ T alone. `summary['across_seeds']['clean_reference']` names
  the population each such model was compared with.
  """
  phi: dict[str, dict[int, dict[int, float]]] = {}
  for row in per_target:
    phi.setdefault(row["model"], {}).setdefault(row["seed"], {})[row["target_id"]] = row["phi"]
  seeds = summary["seeds"]
  if len(seeds) < 2:
    return
  targets = sorted(next(iter(phi.values()))[seeds[0]])

  def population(model: str) -> np.ndarray | None:
    if model not in phi or any(s not in phi[model] for s in seeds):
      return None
    return np.asarray([[phi[model][s][t] for t in targets] for s in seeds], np.float64)

  own_references = {name: pair["clean"]
                    for name, pair in summary.get("residue_references", {}).items()}
  for name, record in summary["methods"].items():
    unlearned = population(name)
    if unlearned is None:
      continue
    # (record key, model whose seeds are the other population)
    comparisons = ((("clean", own_references[name]),) if name in own_references
                   else (("retrain", "retrain"), ("clean", "clean")))
    for reference, model in comparisons:
      other = population(model)
      if other is None or model == name:
        continue
      if len(seeds) >= epsilon_min_seeds:
        estimate = mia.epsilon_estimate(unlearned, other)
        record.setdefault("epsilon", {})[f"vs_{reference}"] = float(np.nanmean(
            estimate.epsilons))
        record.setdefault("epsilon_capped", {})[f"vs_{reference}"] = estimate.capped
        record.setdefault("forgetting_quality", {})[f"vs_{reference}"] = float(
            estimate.forgetting_quality)
      attack = mia.u_lira(unlearned, other)
      record.setdefault("ulira_acc", {})[f"vs_{reference}"] = float(attack.accuracy)
  summary["across_seeds"] = {"num_models": len(seeds), "delta": mia.DELTA,
                             "epsilon_cap": mia.EPSILON_CAP,
                             "epsilon_min_seeds": epsilon_min_seeds,
                             "ulira_min_models": mia.ULIRA_MIN_MODELS,
                             "num_targets": len(targets)}
  if own_references:
    summary["across_seeds"]["clean_reference"] = own_references
  retrained = population("retrain")
  if len(seeds) >= epsilon_min_seeds and retrained is not None and len(seeds) >= 4:
    null = mia.epsilon_null(retrained)
    summary["across_seeds"]["epsilon_null"] = {
        "epsilon": float(np.nanmean(null.epsilons)), "capped": null.capped,
        "forgetting_quality": float(null.forgetting_quality),
        "num_models": len(seeds) // 2}
