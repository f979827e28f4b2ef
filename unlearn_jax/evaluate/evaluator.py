"""Turns every model's logits into the per-model record and per-target rows of a study.

Input: logits of each model on the training set D (with provenance) and on the test split.
Output per model: accuracy, loss, confidence and margin on target / similar / rest / test;
membership AUC of the loss attack (targets, and similar samples, against test samples of the
same classes); KL to `clean` and to `retrain` on targets and similar samples; and the influence
residue of every score, as a ratio and in absolute units.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from unlearn_jax.data import sed as sed_lib
from unlearn_jax.evaluate import metrics, mia, residue

SPLITS = ("target", "similar", "rest", "test")
RESIDUE_SCORES = ("loss", "confidence", "margin", "correct")


def split_rows(sed: sed_lib.SED) -> dict[str, np.ndarray]:
  """Row indices of each split: target/similar/rest into D, test into the test split.

  Targets are ordered as `sed.target_ids`, so per-target arrays line up across models.
  """
  kind, ids = sed.train["kind"], sed.train["id"]
  position = {int(i): row for row, i in enumerate(ids)}
  return {
      "target": np.asarray([position[int(t)] for t in sed.target_ids], np.int64),
      "similar": np.flatnonzero(kind == sed_lib.SIMILAR),
      "rest": np.flatnonzero(kind == sed_lib.REST),
      "test": np.arange(len(sed.test["label"])),
  }


def model_scores(logits: Mapping[str, np.ndarray], sed: sed_lib.SED,
                 rows: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
  """Per-example scores of one model, per split ({split: {score: array}})."""
  result = {}
  for split in SPLITS:
    source = sed.test if split == "test" else sed.train
    which = "test" if split == "test" else "train"
    result[split] = metrics.example_scores(logits[which][rows[split]],
                                           source["label"][rows[split]])
  return result


def evaluate_models(logits: Mapping[str, Mapping[str, np.ndarray]], sed: sed_lib.SED,
                    min_gap: Mapping[str, float]) -> tuple[dict[str, dict], list[dict]]:
  """Records for every model, and per-target rows.

  Args:
    logits: {model: {'train': (N_D, C), 'test': (N_test, C)}}; must include 'original' and
      'clean' (residue references) and may include 'retrain' (for kl_to_retrain).
    sed: the SED the logits were computed on.
    min_gap: per-score floor for the residue ratio (keys of RESIDUE_SCORES and 'mia').

  Returns:
    ({model: record}, [per-target row dicts]).
  """
  rows = split_rows(sed)
  scores = {name: model_scores(model_logits, sed, rows) for name, model_logits in logits.items()}
  target_labels = sed.train["label"][rows["target"]]
  similar_labels = sed.train["label"][rows["similar"]]
  test_labels = sed.test["label"]
  heldout = {"target": np.isin(test_labels, target_labels),
             "similar": np.isin(test_labels, similar_labels)}

  def attack_auc(name: str, split: str) -> float:
    return mia.loss_attack_auc(scores[name][split]["loss"],
                               scores[name]["test"]["loss"][heldout[split]])

  records, per_target = {}, []
  for name in logits:
    record = {
        "acc": {s: metrics.mean_or_nan(scores[name][s]["correct"]) for s in SPLITS},
        "loss": {s: metrics.mean_or_nan(scores[name][s]["loss"]) for s in SPLITS},
        "confidence": {s: metrics.mean_or_nan(scores[name][s]["confidence"]) for s in SPLITS},
        "margin": {s: metrics.mean_or_nan(scores[name][s]["margin"]) for s in SPLITS},
        "mia_auc": {s: attack_auc(name, s) for s in ("target", "similar")},
    }
    for reference in ("clean", "retrain"):
      if reference in logits:
        record[f"kl_to_{reference}"] = {
            s: metrics.mean_or_nan(metrics.kl_divergence(
                logits[name]["train"][rows[s]], logits[reference]["train"][rows[s]]))
            for s in ("target", "similar")}
    record.update(_residues(name, scores, min_gap, attack_auc))
    records[name] = record
    per_target.extend(_target_rows(name, scores, sed, rows, min_gap))
  return records, per_target


def _residues(name, scores, min_gap, attack_auc) -> dict[str, dict]:
  """Residue ratio, absolute residue and number of defined targets for each score."""
  ratios, absolutes, defined = {}, {}, {}
  for score in RESIDUE_SCORES:
    f = {m: scores[m]["target"][score] for m in (name, "original", "clean")}
    per_target = residue.ratio(f[name], f["original"], f["clean"], min_gap[score])
    ratios[score], defined[score] = residue.summarize(per_target)
    absolutes[score] = metrics.mean_or_nan(residue.absolute(f[name], f["clean"]))
  # Membership is a set-level score: one ratio of AUCs, defined when the AUC gap is large enough.
  auc = {m: attack_auc(m, "target") for m in (name, "original", "clean")}
  mia_ratio = residue.ratio([auc[name]], [auc["original"]], [auc["clean"]], min_gap["mia"])
  ratios["mia"], defined["mia"] = residue.summarize(mia_ratio)
  absolutes["mia"] = auc[name] - auc["clean"]
  return {"residue": ratios, "residue_abs": absolutes, "residue_defined": defined}


def _target_rows(name, scores, sed, rows, min_gap) -> list[dict]:
  """One row per target with its raw scores and residue ratios under model `name`."""
  out = []
  for index, row in enumerate(rows["target"]):
    entry = {"model": name, "target_id": int(sed.train["id"][row]),
             "label": int(sed.train["label"][row])}
    for score in RESIDUE_SCORES:
      value = scores[name]["target"][score][index]
      entry[score] = float(value)
      entry[f"residue_{score}"] = float(residue.ratio(
          [value], [scores["original"]["target"][score][index]],
          [scores["clean"]["target"][score][index]], min_gap[score])[0])
    out.append(entry)
  return out
