"""Remedies in a study: detect each target's similar samples, unlearn the neighbourhood, and
measure what it costs.

Retraining without the targets leaves their influence in the model because the similar samples
stay (docs/design.md §1). The remedy this module runs widens the forget set: every target's
*neighbours* — the training samples most similar to it under a chosen measure
(`remedies.detect`) — are unlearned with it. Because our SEDs know which samples derive from which
target, detection is scored against that provenance, and the price is measured on what the
neighbourhood also removes: accuracy on the rest, on held-out data, and on the non-target
samples of the targets' own classes.

A remedy is a suffix on any method's name:

* `<method>+nbr` — forget T ∪ N, retain D \\ (T ∪ N), N the detected neighbours;
* `<method>+wnbr` — forget T ∪ N with per-example weight w (1 for targets, the neighbour's
  similarity scaled to (0, 1] for neighbours) and keep each neighbour in the retained data with
  weight 1 − w, so a doubtful neighbour is only partly removed; the methods whose losses use the
  batch weights honour it (retrain, finetune, grad_ascent, random_label, neggrad_plus, ...);
* `<method>+dist` — forget T and as many samples as +nbr removes, chosen by the selection rule of
  Allouah, Guerraoui and Koyejo, "Distributional Unlearning" (ICLR 2026): the candidates
  farthest from the retained distribution go first (`remedies.select`).

`retrain+nbr` retrains exactly as the `clean` reference does (same initialisation and batch
order), so with ground-truth detection it *is* the clean model.

With `remedy.enabled` the study also reports `detection` (precision and recall of every measure
against provenance) and a trade-off sweep: `remedy.sweep_methods` with the top-k neighbours for
each k in `remedy.sweep_top_k`, whose residue and collateral damage go to summary
`remedy.tradeoff`, report.md and `report/plots/remedy_tradeoff.png`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
from absl import logging

from unlearn_jax import config as config_lib
from unlearn_jax import methods, recipe, runner, train, utils
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.remedies import detect
from unlearn_jax.remedies import select as select_lib
from unlearn_jax.report import tables
from unlearn_jax.tasks import base

SWEEP_MARK = "@k="
# Residue scores shown in the trade-off (residue.<score> of evaluator records).
TRADEOFF_RESIDUES = ("margin", "lira", "loss")
TRADEOFF_ACCURACY = (("acc", "test"), ("acc", "rest"), ("acc_same_class", "test"),
                     ("acc_same_class", "rest"))


@dataclasses.dataclass(frozen=True)
class Detection:
  """Similarity of every candidate to every target, for one seed's original model.

  Attributes:
    target_rows: rows of the targets in D (ordered as `sed.target_ids`).
    candidate_rows: rows of D that may be neighbours (every non-target sample).
    scores: {measure: (T, N) similarity}, N = len(candidate_rows).
    truth: (T, N) bool, candidate is a similar sample of that target (provenance).
  """
  target_rows: np.ndarray
  candidate_rows: np.ndarray
  scores: dict[str, np.ndarray]
  truth: np.ndarray


def study_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Remedy runs the study adds to `config.methods` when `remedy.enabled` (+nbr, +wnbr, +dist)."""
  if not config.remedy.enabled:
    return ()
  return tuple(f"{name}+{suffix}" for name in config_lib.as_tuple(config.remedy.methods)
               for suffix in methods.REMEDY_SUFFIXES)


def sweep_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Names of the trade-off sweep's runs, e.g. 'finetune+nbr@k=10' (none unless enabled)."""
  if not config.remedy.enabled:
    return ()
  return tuple(f"{name}+nbr{SWEEP_MARK}{int(k)}"
               for name in config_lib.as_tuple(config.remedy.sweep_methods)
               for k in config_lib.as_tuple(config.remedy.sweep_top_k))


def parse(name: str) -> tuple[str, str, int | None]:
  """('finetune', 'nbr', 10) for 'finetune+nbr@k=10'; (base, suffix, None) otherwise."""
  k = None
  if SWEEP_MARK in name:
    name, _, k_text = name.partition(SWEEP_MARK)
    k = int(k_text)
  base, suffix = methods.split_remedy(name)
  return base, suffix, k


def is_sweep(name: str) -> bool:
  return SWEEP_MARK in name


class RemedyPlugin(base.Plugin):
  """The remedy runs of an image study (`<method>+nbr|+wnbr|+dist`, maybe `@k=K`), the
  detection report of every seed and the trade-off sweep."""

  def __init__(self):
    self.detection: Detection | None = None  # the running seed's
    self.reports: dict[int, dict] = {}  # {seed: detection report} with remedy.enabled

  def names(self, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    return study_names(config) + sweep_names(config)

  def owns(self, name: str) -> bool:
    return bool(parse(name)[1])

  def start_seed(self, task: base.Task, run: base.SeedRun) -> None:
    """Scores every candidate against every target with the seed's original model."""
    config = task.config
    run.residue_only.update(name for name in run.names if is_sweep(name))
    self.detection = None
    if not (any(self.owns(name) for name in run.names) or config.remedy.enabled):
      return
    measures = config_lib.as_tuple(config.remedy.measures) if config.remedy.enabled else ()
    measures = tuple(dict.fromkeys(measures + (config.remedy.measure,)))
    self.detection = detect_all(config, task.sed, run.states["original"], task.mesh, measures)
    if config.remedy.enabled:
      self.reports[run.seed] = detection_report(config, self.detection)

  def run(self, task: base.Task, run: base.SeedRun, name: str) -> tuple[Any, float]:
    """Runs a remedy from the original model; what it removed (count, and precision/recall of
    the removed set against provenance) goes to the run's record as `remedy`.

    `retrain+...` trains like the `clean` reference (same initialisation and batch order), so
    with ground-truth neighbours it reproduces it exactly.
    """
    config, sed = task.config, task.sed
    base, suffix, k = parse(name)
    rows, weights = neighbours(config, self.detection, top_k=k)
    if suffix == "dist":
      rows = distributional_rows(sed, self.detection, len(rows), run.states["original"],
                                 task.mesh)
      weights = np.ones(len(rows), np.float32)
    forget, retain = unlearn_sets(sed, suffix, rows, weights)
    similar = sed.train["kind"][rows] == sed_lib.SIMILAR
    num_similar = int(np.sum(sed.train["kind"] == sed_lib.SIMILAR))
    removed = {"removed": float(len(rows)),
               "precision": float(similar.mean()) if len(rows) else float("nan"),
               "recall": float(similar.sum() / num_similar) if num_similar else float("nan")}
    run.extra_records[name] = {"remedy": removed}
    logging.info("stage: remedy %s/seed_%d (%d neighbours, precision %.2f, recall %.2f)", name,
                 run.seed, len(rows), removed["precision"], removed["recall"])
    if methods.spec(base).reference:  # the `clean` reference's recipe, seed and folder
      state, info = task.fit(recipe.retrained(name, retain, run.seed))
      return state, info["time_s"]
    return runner.run_method(task, name, run, forget, retain, base=base)

  def finish(self, task: base.Task, summary: dict[str, Any], runs: dict[int, base.SeedRun],
             status: dict[str, str]) -> None:
    """summary['detection'] (mean ± CI over seeds), summary['remedy'] with the trade-off
    points, and report/plots/remedy_tradeoff.png."""
    config = task.config
    if not config.remedy.enabled:
      return
    summary["detection"] = {
        measure: _mean_ci([self.reports[s][measure] for s in self.reports])
        for measure in config_lib.as_tuple(config.remedy.measures)}
    chosen = set(config_lib.as_tuple(config.remedy.sweep_methods)) | set(
        study_names(config)) | {"original", "clean"}
    per_seed = {seed: {name: record for name, record in run.records.items()
                       if name in chosen or name in run.residue_only}
                for seed, run in runs.items()}
    aggregated = tables.aggregate(per_seed)
    points = tradeoff_points(aggregated, config)
    summary["remedy"] = {
        "measure": "ground_truth" if config.remedy.ground_truth else config.remedy.measure,
        "rule": (f"top_k={config.remedy.top_k}" if config.remedy.rule == "top_k"
                 else f"tau={config.remedy.tau}"),
        "tradeoff": points}
    if utils.is_main_process() and points:
      reference = {name: {"acc_test": aggregated[name]["acc"]["test"],
                          "acc_same_class_rest": aggregated[name]["acc_same_class"]["rest"]}
                   for name in ("original", "clean") if name in aggregated}
      save_tradeoff_plot(points, reference,
                         os.path.join(task.workdir, "report", "plots", "remedy_tradeoff.png"))


def _mean_ci(reports: list[dict[str, float]]) -> dict[str, float]:
  """{key: mean, key_ci: 95% half-width} over the seeds' detection reports of one measure."""
  stats = {}
  for key in reports[0]:
    stats[key], stats[f"{key}_ci"] = tables.mean_ci95([report[key] for report in reports])
  return stats


def detect_all(config: ml_collections.ConfigDict, sed: sed_lib.SED, state: train.TrainState,
               mesh: jax.sharding.Mesh, measures) -> Detection:
  """Scores every non-target training sample against every target under each measure."""
  rows = _target_rows(sed)
  candidates = np.setdiff1d(np.arange(len(sed.train["id"])), rows)
  truth = ((sed.train["group"][candidates][None, :] == sed.train["id"][rows][:, None])
           & (sed.train["kind"][candidates][None, :] == sed_lib.SIMILAR))
  scores = {}
  for measure in measures:
    logging.info("remedy: detection by %s (%d targets x %d candidates)", measure, len(rows),
                 len(candidates))
    scores[measure] = np.asarray(detect.scores(
        measure, sed.train["image"][rows], sed.train["image"][candidates], state=state,
        target_labels=sed.train["label"][rows], candidate_labels=sed.train["label"][candidates],
        mesh=mesh, batch_size=int(config.remedy.batch_size)), np.float32)
  return Detection(rows, candidates, scores, truth)


def detection_report(config: ml_collections.ConfigDict, detection: Detection
                     ) -> dict[str, dict[str, float]]:
  """Precision and recall (per target mean and pooled) and ranking AUC of every measure."""
  from unlearn_jax.evaluate import mia  # pylint: disable=g-import-not-at-top
  report = {}
  target_ids = np.arange(len(detection.target_rows))
  # `precision_recall` compares each candidate's group with the target ids; the truth matrix
  # already encodes provenance, so give each candidate its target index (or -1).
  group = np.where(detection.truth.any(0), detection.truth.argmax(0), -1)
  for measure, scores in detection.scores.items():
    selected = _select(config, scores, config.remedy.rule)
    stats = detect.precision_recall(selected, group, target_ids)
    positive, negative = scores[detection.truth], scores[~detection.truth]
    report[measure] = {
        "precision": stats["mean_precision"], "recall": stats["mean_recall"],
        "precision_pooled": stats["micro_precision"], "recall_pooled": stats["micro_recall"],
        "empty_selections": float(stats["num_empty_selections"]),
        "selected_per_target": float(selected.sum(1).mean()),
        # Threshold-free: how well the measure ranks a target's similar samples above the rest.
        "auc": float(mia.roc_auc(positive, negative)) if len(positive) and len(negative)
               else float("nan"),
    }
  return report


def neighbours(config: ml_collections.ConfigDict, detection: Detection, *,
               top_k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Rows of D of the detected neighbours and their weights in (0, 1].

  `top_k` overrides the configured rule (the trade-off sweep); `remedy.ground_truth` replaces
  detection by provenance (weights 1).
  """
  remedy = config.remedy
  if remedy.ground_truth:
    chosen = detection.truth.any(0)
    return detection.candidate_rows[chosen], np.ones(int(chosen.sum()), np.float32)
  scores = detection.scores[remedy.measure]
  selected = _select(config, scores, "top_k" if top_k else remedy.rule, top_k)
  weights = np.asarray(detect.neighbour_weights(scores, selected), np.float32)
  chosen = selected.any(0)
  return detection.candidate_rows[chosen], np.clip(weights[chosen], 1e-6, 1.0)


def distributional_rows(sed: sed_lib.SED, detection: Detection, budget: int,
                        state: train.TrainState, mesh: jax.sharding.Mesh,
                        feature_kind: str = "embedding") -> np.ndarray:
  """`budget` rows of D chosen by the distributional-unlearning rule (`remedies.select`).

  The rule needs no per-target similarity: the candidates are the non-target samples of the
  targets' classes (where a target's influence can live), the reference is the mean of every
  non-target sample (what conventional unlearning keeps), and the candidates farthest from it
  in the original model's embedding go first.
  """
  if budget == 0:
    return np.zeros(0, np.int64)
  images, labels = sed.train["image"], sed.train["label"]
  classes = np.unique(labels[detection.target_rows])
  pool = detection.candidate_rows[np.isin(labels[detection.candidate_rows], classes)]
  retained = select_lib.features(feature_kind, images[detection.candidate_rows], state=state,
                                 mesh=mesh)
  candidates = retained[np.isin(labels[detection.candidate_rows], classes)]
  order = select_lib.distributional_removal(retained, candidates, min(budget, len(pool)))
  return pool[order]


def unlearn_sets(sed: sed_lib.SED, suffix: str, rows: np.ndarray, weights: np.ndarray
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(forget, retain) of a remedy run whose extra removed rows are `rows`.

  For +wnbr both sets carry `sample_weight` (see data/pipeline.EpochSampler): targets 1 in the
  forget set, neighbours w there and 1 − w in the retained set.
  """
  train_split = sed.train
  target = np.isin(train_split["id"], sed.target_ids)
  removed = target.copy()
  removed[rows] = True
  if suffix != "wnbr":
    return _take(train_split, removed), _take(train_split, ~removed)
  weight = np.zeros(len(target), np.float32)
  weight[rows] = weights
  weight[target] = 1.0
  forget = _take(train_split, removed)
  forget["sample_weight"] = weight[removed]
  keep = ~target & (weight < 1.0)
  retain = _take(train_split, keep)
  retain["sample_weight"] = 1.0 - weight[keep]
  return forget, retain


def same_class_accuracy(logits: Mapping[str, np.ndarray], sed: sed_lib.SED) -> dict[str, float]:
  """Accuracy on the non-target samples of the targets' classes: rest (in D) and test.

  The collateral damage a neighbourhood causes falls first on these: they look most like what
  was removed.
  """
  target = np.isin(sed.train["id"], sed.target_ids)
  classes = np.unique(sed.train["label"][target])
  out = {}
  for split, source, mask in (
      ("rest", sed.train, (sed.train["kind"] == sed_lib.REST)),
      ("test", sed.test, np.ones(len(sed.test["label"]), bool))):
    mask = mask & np.isin(source["label"], classes)
    which = "train" if split == "rest" else "test"
    correct = np.argmax(logits[which][mask], -1) == source["label"][mask]
    out[split] = float(correct.mean()) if mask.any() else float("nan")
  return out


def tradeoff_points(aggregated: Mapping[str, Mapping[str, Any]],
                    config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """Rows of the trade-off table: one per (method, k) from the sweep, plus k = 0 (the method
  itself) and the +nbr/+wnbr/+dist runs of the study when present.

  Args:
    aggregated: {model: record averaged over seeds (tables.aggregate)}, sweep runs included.
  """
  points = []
  for name, record in aggregated.items():
    base, suffix, k = parse(name)
    if k is None and not suffix:
      if base not in config_lib.as_tuple(config.remedy.sweep_methods) or base in (
          "original", "clean", "clean_alt"):
        continue
      k = 0
    elif k is None:
      k = None  # a study remedy run (its own rule), plotted as a marker
    point = {"model": name, "method": base, "variant": suffix or "none", "k": k}
    for score in TRADEOFF_RESIDUES:
      point[f"residue_{score}"] = _get(record, ("residue", score))
      point[f"residue_{score}_ci"] = _get(record, ("ci95", "residue", score))
    for path in TRADEOFF_ACCURACY:
      point["_".join(path)] = _get(record, path)
      point["_".join(path) + "_ci"] = _get(record, ("ci95",) + path)
    point["removed"] = _get(record, ("remedy", "removed"))
    points.append(point)
  points.sort(key=lambda p: (p["method"], p["variant"], -1 if p["k"] is None else p["k"]))
  return points


def save_tradeoff_plot(points: list[dict[str, Any]], reference: Mapping[str, Any],
                       path: str, residue: str = "margin") -> None:
  """Residue against collateral damage (test accuracy), one line per method over k.

  `reference` holds the clean model's test accuracy and the original's, drawn as guides.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  markers = {"nbr": "o", "wnbr": "s", "dist": "^"}
  for ax, acc_key, label in ((axes[0], "acc_test", "test accuracy"),
                             (axes[1], "acc_same_class_rest",
                              "accuracy on R of the targets' classes")):
    for method in sorted({p["method"] for p in points}):
      line = sorted([p for p in points if p["method"] == method and p["k"] is not None],
                    key=lambda p: p["k"])
      if line:
        xs = [p[acc_key] for p in line]
        ys = [p[f"residue_{residue}"] for p in line]
        handle = ax.plot(xs, ys, "-o", label=f"{method}+nbr (top-k)")[0]
        for p, x, y in zip(line, xs, ys):
          ax.annotate(f"k={p['k']}", (x, y), textcoords="offset points", xytext=(4, 4),
                      fontsize=7)
        color = handle.get_color()
      else:
        color = None
      for p in points:
        if p["method"] == method and p["k"] is None:
          ax.plot(p[acc_key], p[f"residue_{residue}"], markers.get(p["variant"], "x"),
                  color=color, markersize=9, markerfacecolor="none",
                  label=f"{method}+{p['variant']} ({'study rule'})")
    for name, style in (("clean", ":"), ("original", "--")):
      value = reference.get(name, {}).get(acc_key)
      if value is not None and np.isfinite(value):
        ax.axvline(value, color="grey", linestyle=style, linewidth=1, label=f"{name}")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel(f"{label} (higher = less collateral damage)")
    ax.set_ylabel(f"{residue} residue (0 = as if never seen)")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7, loc="best")
  fig.suptitle("Neighbourhood unlearning: residue of the targets vs utility")
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


# ----------------------------------------------------------------------------------------------
# Helpers.


def _target_rows(sed: sed_lib.SED) -> np.ndarray:
  position = {int(i): row for row, i in enumerate(sed.train["id"])}
  return np.asarray([position[int(t)] for t in sed.target_ids], np.int64)


def _select(config, scores: np.ndarray, rule: str, top_k: int | None = None) -> np.ndarray:
  if rule == "top_k":
    return detect.select(scores, top_k=int(top_k or config.remedy.top_k))
  return detect.select(scores, tau=float(config.remedy.tau))


def _take(split: Mapping[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
  return {key: value[mask] for key, value in split.items()}


def _get(record: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
  node: Any = record
  for key in path:
    if not isinstance(node, Mapping) or key not in node:
      return None
    node = node[key]
  return None if node is None else float(node)
