"""report.md sections of the comparison protocol: the tuned settings, the control (residue with
and without similar samples) and specificity (docs/design.md §3.8, §3.9, §4.2)."""

from __future__ import annotations

import math
from typing import Any, Mapping

from unlearn_jax.evaluate import stats

REFERENCES = stats.REFERENCES
CONTROL_SCORES = ("margin", "loss", "mia")
# Specificity flags (tasks/specificity.py): the test drop at least this share of the target's.
DAMAGE_RATIO = 0.5
MIN_DROP = 0.2


def _num(value: Any, digits: int = 2) -> str:
  if isinstance(value, (int, float)) and math.isfinite(value):
    return f"{value:.{digits}f}"
  return "n/a"


def _value(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.3g}"
  return str(value)


def tuning_markdown(summary: Mapping[str, Any]) -> str:
  """The chosen setting of every tuned method, with its trials and objective."""
  tuned = {name: record["tuning"] for name, record in summary.get("methods", {}).items()
           if isinstance(record.get("tuning"), Mapping)}
  if not tuned:
    return ""
  setting = summary.get("tuning", {})
  lines = ["## Tuned settings", "",
           "| method | chosen parameters | objective | feasible | trials | tuned on |",
           "|---|---|---|---|---|---|"]
  for name, found in tuned.items():
    # A study of several SEDs tunes each on its own tuning SED (replicates.py).
    entries = (((f"{name} (SED seed {k})", one) for k, one in found["per_sed_seed"].items())
               if "per_sed_seed" in found else ((name, found),))
    for label, one in entries:
      params = ", ".join(f"{k}={_value(v)}" for k, v in sorted(one["params"].items()))
      lines.append(f"| {label} | {params} | {_num(one.get('objective'), 3)} | "
                   f"{'yes' if one.get('feasible') else 'no'} | {one.get('trials')} | "
                   f"{one.get('mode', '')} |")
  objective = " + ".join(f"|res {s}|" for s in setting.get("objective", ()))
  lines += ["", f"Each method was tuned with {setting.get('trials')} {setting.get('sampler')} "
            f"trials (seed {setting.get('seed')}) on a tuning SED (SED seed "
            f"{setting.get('sed_seed')}: other targets, never the evaluated ones) minimising "
            f"{objective} on its targets, among the trials whose test accuracy stayed within "
            f"{setting.get('max_test_drop')} of its original and whose time stayed under "
            f"{setting.get('cost_cap')} × retraining's (`feasible`; without any, the trial with "
            "the smallest accuracy drop). Every trial: tuning.csv; trade-offs: "
            "plots/tuning_<method>.png."]
  return "\n".join(lines) + "\n"


def control_markdown(summary: Mapping[str, Any]) -> str:
  """Each method's residue with its targets' similar samples in D (the study) and without
  them (the control): the paper's effect is the difference."""
  rows = {name: record for name, record in summary.get("methods", {}).items()
          if isinstance(record.get("control"), Mapping)}
  if not rows:
    return ""
  header = " | ".join(f"res {s} with S | without S" for s in CONTROL_SCORES)
  lines = ["## With and without similar samples (control)", "", f"| model | {header} |",
           "|---|" + "---|---|" * len(CONTROL_SCORES)]
  for name, record in rows.items():
    cells = []
    for score in CONTROL_SCORES:
      without = record["control"].get("residue", {}).get(score)
      cells += [_num(record.get("residue", {}).get(score)),
                "diverged" if record["control"].get("diverged") and without is None
                else _num(without)]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", "`with S`: the study (D holds each target's similar samples); `without S`: the "
            "control, the same targets and rest with no similar sample in D, the method run "
            "from a model trained on T ∪ R and scored against it and clean. A method whose "
            "residue is higher with S than without leaves the targets' influence in the model "
            "through their similar samples. `diverged`: the method's setting diverged on the "
            "control (its status says at which step)."]
  return "\n".join(lines) + "\n"


def is_method(name: str) -> bool:
  """Whether model `name` is a method run, not a reference or a floor model."""
  return name not in REFERENCES and not name.startswith("clean_alt_")


def add_damaged(summary: Mapping[str, Any]) -> None:
  """Sets `damaged` on every method record that has specificity results."""
  for name, record in summary["methods"].items():
    if "specificity" in record and is_method(name):
      record["damaged"] = damaged(record)


def damaged(record: Mapping[str, Any]) -> list[str]:
  """Scores on which a method's target drop is matched on held-out samples of the class."""
  out = []
  for score, found in record.get("specificity", {}).items():
    if not isinstance(found, Mapping):
      continue
    ratio, target = found.get("ratio"), found.get("target")
    if (isinstance(ratio, float) and math.isfinite(ratio) and ratio >= DAMAGE_RATIO
        and isinstance(target, float) and target >= MIN_DROP):
      out.append(score)
  return out


def specificity_markdown(summary: Mapping[str, Any]) -> str:
  """Each method's drop on its targets and on matched non-targets."""
  rows = {name: record for name, record in summary.get("methods", {}).items()
          if isinstance(record.get("specificity"), Mapping) and is_method(name)}
  if not rows:
    return ""
  lines = ["## Specificity: forgetting or damage?", "",
           "| method | margin drop T | retained | test | ratio | loss drop T | test | ratio | "
           "damaged |", "|---|---|---|---|---|---|---|---|---|"]
  for name, record in rows.items():
    margin, loss = record["specificity"].get("margin", {}), record["specificity"].get("loss", {})
    flagged = damaged(record)
    lines.append(f"| {name} | {_num(margin.get('target'))} | {_num(margin.get('retained'))} | "
                 f"{_num(margin.get('test'))} | {_num(margin.get('ratio'))} | "
                 f"{_num(loss.get('target'))} | {_num(loss.get('test'))} | "
                 f"{_num(loss.get('ratio'))} | {', '.join(flagged) if flagged else '-'} |")
  lines += ["", "drop: how far the method moved an example's score from the original model, in "
            "units of the target's own gap (f(original) − f(clean)); 1 on a target is full "
            "forgetting. retained / test: the non-targets matched to each target (same class, "
            "closest original margin) in R and in the test split. ratio = test drop / target "
            f"drop; `damaged` marks a score with ratio ≥ {DAMAGE_RATIO} and a target drop ≥ "
            f"{MIN_DROP}: the method moved unrelated examples of the class as much as the "
            "targets, so its low residue reads damage, not forgetting."]
  return "\n".join(lines) + "\n"
