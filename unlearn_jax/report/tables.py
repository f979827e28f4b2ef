"""Aggregates per-seed records over seeds and writes the study's report files.

Files (docs/design.md §6): `report/summary.json` (stable keys; means over seeds, with the 95%
t-interval half-widths when there are several seeds both under `ci95` and beside each metric as
`<metric>_ci`), `report/results.csv` (one row per model and seed),
`report/per_target.csv` (raw scores and residue of every target) and `report/report.md`.
"""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from unlearn_jax import utils
from unlearn_jax.data import sources
from unlearn_jax.evaluate import mia, registry
from unlearn_jax.report import protocol
from unlearn_jax.report import stream as stream_report

REFERENCES = ("original", "retrain", "clean", "clean_alt")
# Residue aggregates copied from clean_alt's record into summary["floor"] (docs/design.md §3.7).
FLOOR_KEYS = ("residue", "residue_abs", "residue_defined", "residue_median",
              "residue_ratio_of_sums", "residue_undefined")


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
  """Flattens nested dicts to {'acc.target': value}."""
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(_leaves(value, path + "."))
    else:
      flat[path] = value
  return flat


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Inverse of `_leaves`."""
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split(".")
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return tree


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
  """Mean and half-width of the 95% Student-t interval over the finite values (NaN if n<2)."""
  finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
  if len(finite) == 0:
    return float("nan"), float("nan")
  if len(finite) < 2:
    return float(finite.mean()), float("nan")
  half = stats.t.ppf(0.975, len(finite) - 1) * finite.std(ddof=1) / math.sqrt(len(finite))
  return float(finite.mean()), float(half)


def aggregate(records: Mapping[int, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict]:
  """{seed: {model: record}} -> {model: record of means, plus 'ci95' of the same shape}."""
  models: list[str] = []
  for per_model in records.values():
    models.extend(m for m in per_model if m not in models)
  out = {}
  for model in models:
    flats = [_leaves(per_model[model]) for per_model in records.values() if model in per_model]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    means, halves = {}, {}
    for key in keys:
      means[key], halves[key] = mean_ci95([flat.get(key, float("nan")) for flat in flats])
    record = _nest(means)
    record["ci95"] = _nest(halves)
    # The same half-widths beside each metric: `acc_ci` mirrors `acc`, `time_s_ci` `time_s`.
    for key, value in _nest(halves).items():
      record[f"{key}_ci"] = value
    record["num_seeds"] = len(flats)
    out[model] = record
  return out


def build_summary(config, records, per_seed_status) -> dict[str, Any]:
  """The summary.json content (docs/design.md §6.2 and §6.3)."""
  summary = {
      "dataset": config.dataset,
      # Where the data came from: for an idx folder its files and their sha256.
      "data_source": sources.describe(config.dataset, config.data_dir or None),
      "model": config.model,
      "seeds": list(records.keys()),
      "sed": {key: config.sed[key] for key in config.sed.keys()},
      "train": {key: config.train[key] for key in config.train.keys()},
      "methods": summarize_methods(records, per_seed_status),
      "status": per_seed_status,
  }
  lira = lira_setting(config)
  if lira:
    summary["lira"] = lira
  add_floor(summary)
  return summary


def lira_setting(config) -> dict[str, Any]:
  """summary['lira']: how many reference models LiRA had and which σ it fitted ({} if none).

  With K reference models every example is IN for K/2 of them (complementary pairs), so a TPR
  at FPR f over H held-out candidates moves in steps of 1/|T| and its threshold rests on
  f·H candidates: the count tells a reader how coarse `lira_tpr` is.
  """
  if "lira" not in config.get("eval", {}) or not config.eval.lira.num_models:
    return {}
  cfg = config.eval.lira
  per_example_min = cfg.get("per_example_min", mia.LIRA_PER_EXAMPLE_MIN)
  fixed = bool(cfg.fix_variance) and cfg.num_models // 2 < per_example_min
  return {"num_models": int(cfg.num_models), "per_side": int(cfg.num_models // 2),
          "fpr": float(cfg.fpr), "variance": "fixed per population" if fixed else "per example"}


def summarize_methods(records: Mapping[int, Mapping[str, Mapping[str, Any]]],
                      per_seed_status: Mapping[str, str]) -> dict[str, dict]:
  """summary['methods'] of either track: per-model means over seeds with their status.

  Args:
    records: {seed: {model: record}}.
    per_seed_status: {'<model>/seed_<s>': 'ok' | 'diverged ...' | 'failed ...'}.

  Returns:
    `aggregate(records)` with `add_status` applied and, where `retrain` has a training time,
    `time_vs_retrain` (the model's mean time over retrain's) for every model with a time.
  """
  methods = aggregate(records)
  add_status(methods, per_seed_status)
  retrain_time = methods.get("retrain", {}).get("time_s")
  for record in methods.values():
    if retrain_time and record.get("time_s") is not None:
      record["time_vs_retrain"] = record["time_s"] / retrain_time
  return methods


def add_floor(summary: dict[str, Any]) -> None:
  """Sets summary['floor'] to clean_alt's residues (the seed-noise floor), if it has a record.

  `clean_alt` trains on what `clean` trains on with another seed, so its residue is what seed
  noise alone gives (docs/design.md §3.7).
  """
  clean_alt = summary["methods"].get("clean_alt")
  if clean_alt is not None:
    summary["floor"] = {key: clean_alt[key] for key in FLOOR_KEYS if key in clean_alt}
  floors = [name for name in summary["methods"]
            if name == "clean_alt" or name.startswith("clean_alt_")]
  if len(floors) > 1:  # eval.floor_seeds > 1: the floor's spread over its models
    spread = {}
    for score in summary["floor"].get("residue", {}):
      values = [summary["methods"][name].get("residue", {}).get(score) for name in floors]
      values = [v for v in values if isinstance(v, float) and math.isfinite(v)]
      if values:
        spread[score] = {"mean": float(np.mean(values)), "min": float(min(values)),
                         "max": float(max(values)), "std": float(np.std(values, ddof=1))
                         if len(values) > 1 else float("nan")}
    summary["floor_spread"] = {"models": floors, "residue": spread}


def add_status(methods: dict[str, dict], per_seed_status: Mapping[str, str]) -> None:
  """Sets methods[name]['status'] to 'ok', 'diverged' or 'failed' (the worst over seeds) and
  keeps each non-ok seed's reason under 'errors'; a method with no result still gets an entry."""
  rank = {"ok": 0, "diverged": 1, "failed": 2}
  for key, text in per_seed_status.items():
    name, _, seed = key.rpartition("/")
    kind = text.split(" ", 1)[0].rstrip(":")
    entry = methods.setdefault(name, {})
    if rank.get(kind, 2) >= rank.get(entry.get("status", "ok"), 0):
      entry["status"] = kind if kind in rank else "failed"
    if kind != "ok":
      entry.setdefault("errors", {})[seed] = text
  for entry in methods.values():
    entry.setdefault("status", "ok")


def results_rows(records) -> list[dict[str, Any]]:
  """One flat row per (model, seed)."""
  rows = []
  for seed, per_model in records.items():
    for model, record in per_model.items():
      rows.append({"method": model, "seed": seed, **_leaves(record)})
  return rows


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
  """CSV text with the union of the rows' keys as columns (empty cell = undefined)."""
  columns = list(dict.fromkeys(key for row in rows for key in row))
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=columns)
  writer.writeheader()
  for row in rows:
    writer.writerow({k: _cell(row.get(k)) for k in columns})
  return buffer.getvalue()


def _cell(value: Any) -> Any:
  if isinstance(value, float):
    return "" if not math.isfinite(value) else f"{value:.6g}"
  return "" if value is None else value


# ----------------------------------------------------------------------------------------------
# The human table.

# (header, record key, digits). The training time leads; every other column is a metric's
# declaration (evaluate/registry.py, evaluate/scores/).
TIME_COLUMNS = (("time s", "time_s", 1), ("× retrain", "time_vs_retrain", 2))
TABLE_COLUMNS = TIME_COLUMNS + registry.columns("behaviour")
# Membership and influence: attacks on the targets, residues of their scores, relearn time.
ATTACK_COLUMNS = registry.columns("attack")


def _format(mean: Any, half: Any, digits: int) -> str:
  if mean is None or (isinstance(mean, float) and not math.isfinite(mean)):
    return "n/a"
  text = f"{mean:.{digits}f}"
  if isinstance(half, float) and math.isfinite(half):
    text += f" ± {half:.{digits}f}"
  return text


def markdown_table(summary: Mapping[str, Any], columns=TABLE_COLUMNS) -> str:
  """The methods × metrics table (mean ± 95% CI half-width when several seeds)."""
  header = "| model | " + " | ".join(name for name, _, _ in columns) + " |"
  lines = [header, "|" + "---|" * (len(columns) + 1)]
  lira = summary.get("lira", {})
  for model, record in summary["methods"].items():
    flat, halves = _leaves(record), _leaves(record.get("ci95", {}))
    if lira and "lira_tpr.target" in flat:  # the reference count beside its TPR
      flat["lira_num_models"] = lira["num_models"]
    cells = [_format(flat.get(key), halves.get(key), digits) for _, key, digits in columns]
    status = record.get("status", "ok")
    label = model if status == "ok" else f"{model} ({status})"
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def markdown_report(summary: Mapping[str, Any]) -> str:
  """report.md: the setting, the table and how to read it."""
  sed = summary["sed"]
  floor = summary.get("floor", {}).get("residue", {})
  lines = [
      f"# Study: {summary['dataset']} / {summary['model']}",
      "",
      f"SED: {sed['num_targets']} targets × {sed['similar_per_target']} similar samples "
      f"({sed['generator']}, block {sed['block']}, ratio {sed['ratio']}, sigma {sed['sigma']}); "
      f"seeds {summary['seeds']}.",
      "",
      "## Behaviour and residue",
      "",
      markdown_table(summary),
      "",
      "T = targets, S = similar samples, R = unrelated rest. `res X` is the mean over targets of "
      "(f(M) - f(clean)) / (f(original) - f(clean)) for score X (1: nothing forgotten, 0: like "
      "the clean model that never saw T nor S), over the targets where |f(original) - "
      "f(clean)| reaches `eval.min_gap` (`undef T`: how many do not); a target just above that "
      "floor can carry the mean, so the margin's median and ratio of sums Σ(f(M) - f(clean)) / "
      "Σ(f(original) - f(clean)) stand beside it; `abs` is f(M) - f(clean) in logits. "
      "`clean_alt` is a clean model with another seed: its residue is the noise floor.",
      "",
      "## Membership and influence",
      "",
      markdown_table(summary, ATTACK_COLUMNS),
      "",
      "MIA AUC: loss-threshold attack, targets against test samples of their classes (0.5: "
      "chance). LiRA: online likelihood-ratio attack with the study's reference models (`LiRA "
      "refs`, half of them IN for each example), targets against held-out candidates, each "
      "population fitted on its own" + _lira_note(summary.get("lira")) + ". MIA-eff: share of "
      "targets an SVC trained on retain-vs-test outputs calls unseen (higher: looks "
      "forgotten). relearn steps: SGD steps on T until its mean loss is at most "
      "`eval.relearn.target_loss` (0: already there; cap + 1 = never). ε and U-LiRA "
      "accuracy compare the model's seeds with those of retrain/clean" + _across_seeds_note(
          summary.get("across_seeds")),
  ]
  if floor:
    parts = ", ".join(f"{k} {v:.2f}" for k, v in floor.items()
                      if isinstance(v, float) and math.isfinite(v))
    lines += ["", f"Noise floor (clean_alt residue): {parts}."]
  spread = summary.get("floor_spread")
  if spread:
    parts = ", ".join(f"{k} {v['min']:.2f} to {v['max']:.2f}" for k, v in spread["residue"].items())
    lines.append(f"Over its {len(spread['models'])} models ({', '.join(spread['models'])}, one "
                 f"seed each): {parts}.")
  ensembles = [name for name, pair in summary.get("residue_references", {}).items()
               if pair.get("original") == "sisa_original"]
  if ensembles:
    lines += ["", f"{', '.join(ensembles)}: SISA's shard ensembles (log of the mean shard "
              "softmax) are scored against ensembles with the same shards, `sisa_original` "
              "(trained on D) and `sisa_clean` (on R), in place of original and clean "
              "(residues, KL→clean); their parameter distances are n/a; ε and U-LiRA compare "
              "their seeds with `sisa_clean`'s (vs retrain: n/a). `sisa_clean`'s time is its "
              "training beyond `sisa_original`."]
  statistics = statistics_markdown(summary)
  if statistics:
    lines.append(statistics.rstrip("\n"))
  for section in (protocol.tuning_markdown(summary), protocol.control_markdown(summary),
                  protocol.specificity_markdown(summary)):
    if section:
      lines += ["", section.rstrip("\n")]
  remedy = remedy_markdown(summary)
  if remedy:
    lines.append(remedy.rstrip("\n"))
  status = [f"- {k}: {v}" for k, v in summary.get("status", {}).items() if v != "ok"]
  if status:
    lines += ["", "Failures:", *status]
  stream = stream_report.markdown(summary)
  if stream:
    lines += ["", stream.rstrip("\n")]
  return "\n".join(lines) + "\n"


def remedy_markdown(summary: Mapping[str, Any]) -> str:
  """The report.md section: detection table and trade-off table ('' without remedies)."""
  lines = []
  detection = summary.get("detection")
  if detection:
    lines += ["", "## Detection of similar samples", "",
              "Neighbours of each target under each measure, scored against provenance "
              f"(rule: {summary.get('remedy', {}).get('rule', '?')}); AUC ranks a target's similar "
              "samples above all other candidates (threshold-free).", "",
              "| measure | precision | recall | pooled precision | pooled recall | "
              "selected / target | AUC |", "|---|---|---|---|---|---|---|"]
    for measure, scores in detection.items():
      lines.append(f"| {measure} | {_fmt(scores, 'precision')} | {_fmt(scores, 'recall')} | "
                   f"{_fmt(scores, 'precision_pooled')} | {_fmt(scores, 'recall_pooled')} | "
                   f"{_fmt(scores, 'selected_per_target', 1)} | {_fmt(scores, 'auc')} |")
  points = summary.get("remedy", {}).get("tradeoff")
  if points:
    lines += ["", "## Remedy trade-off", "",
              "Residue of the targets against collateral damage; k = neighbours per target "
              "(top-k of the detection measure), k = 0 the method alone, blank k the study's "
              "own rule. ![trade-off](plots/remedy_tradeoff.png)", "",
              "| model | removed | margin residue | LiRA residue | acc test | acc rest | "
              "acc same-class test | acc same-class rest |", "|---|---|---|---|---|---|---|---|"]
    for p in points:
      lines.append(
          f"| {p['model']} | {_num(p.get('removed'), 0)} | {_pm(p, 'residue_margin')} | "
          f"{_pm(p, 'residue_lira')} | {_pm(p, 'acc_test')} | {_pm(p, 'acc_rest')} | "
          f"{_pm(p, 'acc_same_class_test')} | {_pm(p, 'acc_same_class_rest')} |")
  return "\n".join(lines) + ("\n" if lines else "")


# Residue scores of the report's statistics table, those of the study shown in this order.
STATISTICS_SCORES = ("margin", "lira", "loss")


def statistics_markdown(summary: Mapping[str, Any], scores=STATISTICS_SCORES) -> str:
  """The report.md section of evaluate/stats.py's results ('' without summary['statistics']).

  One row per model with an interval: per score, the pooled residue with its interval and the
  Holm-adjusted p against the floor and against retrain; then which methods differ from the
  floor.
  """
  info = summary.get("statistics")
  if not info:
    return ""
  methods = summary["methods"]
  shown = [s for s in scores if any(s in r.get("residue_interval", {}) for r in methods.values())]
  floor, reference = info.get("floor", "clean_alt"), info.get("reference", "retrain")
  header = "".join(f" res {s} [95% CI] | {s} p vs floor | {s} p vs {reference} |"
                   for s in shown)
  lines = ["", "## Statistics", "", "| model |" + header, "|" + "---|" * (3 * len(shown) + 1)]
  for model, record in methods.items():
    if not any(s in record.get("residue_interval", {}) for s in shown):
      continue
    cells = []
    for s in shown:
      low, high = record.get("residue_interval", {}).get(s, (None, None))
      mean = record.get("residue_pooled", {}).get(s)
      text = f"{mean:.2f}" if _finite(mean) else "n/a"
      if _finite(mean) and _finite(low) and _finite(high):
        text += f" [{low:.2f}, {high:.2f}]"
      cells += [text, _p(record.get("vs_floor", {}).get(s)),
                _p(record.get("vs_retrain", {}).get(s))]
    lines.append(f"| {model} | " + " | ".join(cells) + " |")
  alpha = info.get("alpha", 0.05)
  lines += ["", "`res X [95% CI]`: the mean of the defined per-target residues of score X, "
            "pooled over targets × seeds (so not quite the per-seed mean above), with its 95% "
            "bootstrap BCa interval. p: two-sided Wilcoxon signed-rank test paired over "
            f"(SED seed, seed, target) against `{floor}` (the floor) and `{reference}`, "
            f"Holm-adjusted over the methods per score (`{reference}` against the floor: "
            f"unadjusted); n/a below {info.get('min_pairs', '?')} pairs with both residues "
            "defined. Targets of one seed share a model, yet both read them as independent "
            "draws.", "", _distinguishable(summary, alpha, reference)]
  return "\n".join(lines) + "\n"


def _distinguishable(summary: Mapping[str, Any], alpha: float, reference: str) -> str:
  """One sentence: the methods (and retrain) whose residue differs from the floor's."""
  def side(test):
    diff = test.get("median_diff")
    return "differs" if not _finite(diff) or diff == 0 else ("above" if diff > 0 else "below")

  def scores_of(record):
    return ", ".join(f"{s} {side(record['vs_floor'][s])}"
                     for s in record.get("distinguishable_from_floor", []))

  found, not_found = [], []
  for model, record in summary["methods"].items():
    if "distinguishable_from_floor" not in record or model == reference:
      continue
    if record["distinguishable_from_floor"]:
      found.append(f"{model} ({scores_of(record)})")
    else:
      not_found.append(model)
  text = f"Distinguishable from the floor (Holm-adjusted p < {alpha:g} on a tested score): "
  text += ", ".join(found) if found else "no method"
  if not_found:
    text += f"; not: {', '.join(not_found)}"
  record = summary["methods"].get(reference, {})
  if "distinguishable_from_floor" in record:
    text += (f"; {reference}: " + (scores_of(record) if record["distinguishable_from_floor"]
                                   else "none") + " (unadjusted)")
  return text + "."


def _finite(value: Any) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value)


def _p(test: Mapping[str, Any] | None) -> str:
  if not test or not _finite(test.get("p_holm")):
    return "n/a"
  return "<0.001" if test["p_holm"] < 0.001 else f"{test['p_holm']:.3f}"


def _num(value, digits: int = 2) -> str:
  return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _fmt(stats: Mapping[str, Any], key: str, digits: int = 2) -> str:
  text = _num(stats.get(key), digits)
  half = stats.get(f"{key}_ci")
  return text if half is None or not math.isfinite(half) else f"{text} ± {half:.{digits}f}"


def _pm(point: Mapping[str, Any], key: str) -> str:
  return _fmt(point, key)


def _lira_note(lira: Mapping[str, Any] | None) -> str:
  if not lira:
    return ""
  return (f" (TPR at FPR {lira['fpr']:g}; {lira['num_models']} reference models, σ "
          f"{lira['variance']})")


def _across_seeds_note(across: Mapping[str, Any] | None) -> str:
  if not across:
    return " (over several seeds; U-LiRA needs 8)."
  note = f" (N = {across['num_models']} models a side"
  minimum = across.get("ulira_min_models", 2)
  if across["num_models"] < minimum:
    note += f"; U-LiRA is n/a below {minimum} seeds"
  if across["num_models"] < across["epsilon_min_seeds"]:
    return note + f"; ε is reported from {across['epsilon_min_seeds']} seeds on)."
  note += (f"; ε with δ = {across['delta']:g}, cap {across['epsilon_cap']:g}, its mean taken "
           "over every target, those at the cap included: `capped` counts them")
  null = across.get("epsilon_null")
  if null:
    note += (f"; the null, retrain's seeds split in two halves of {null['num_models']}, reads "
             f"ε = {_num(null['epsilon'])} with {null['capped']} of "
             f"{across.get('num_targets', '?')} targets capped")
  return note + ")."


def write(workdir: str, summary: Mapping[str, Any], records, per_target_rows) -> str:
  """Writes every report file under WORKDIR/report (process 0 only); returns report.md text."""
  text = markdown_report(summary)
  if not utils.is_main_process():
    return text
  report_dir = os.path.join(workdir, "report")
  utils.write_json(os.path.join(report_dir, "summary.json"), summary)
  utils.write_text(os.path.join(report_dir, "results.csv"), to_csv(results_rows(records)))
  utils.write_text(os.path.join(report_dir, "per_target.csv"), to_csv(per_target_rows))
  utils.write_text(os.path.join(report_dir, "report.md"), text)
  return text
