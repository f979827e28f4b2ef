"""Turns every model's logits into the per-model record and per-target rows of a study.

Input: logits of each model on the training set D (with provenance) and on the test split, and
optionally the LiRA reference models' scores (`LiraReferences`).
Output per model: accuracy, loss, confidence, margin and entropy on target / similar / rest /
test; membership AUC of the threshold attacks (loss for targets and similar samples; also
confidence, entropy and modified entropy for targets) against test samples of the same classes;
the SVC "MIA-efficacy" on the targets; LiRA (online and offline) statistics, AUC and TPR at a
low FPR of targets against held-out candidates; KL to `clean` and to `retrain`; and the influence
residue of every per-target score, as a ratio and in absolute units.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from unlearn_jax.data import sed as sed_lib
from unlearn_jax.evaluate import metrics, mia, residue

SPLITS = ("target", "similar", "rest", "test")
RESIDUE_SCORES = ("loss", "confidence", "margin", "correct")
# Per-target scores whose residue is reported besides RESIDUE_SCORES (when available).
EXTRA_RESIDUE_SCORES = ("kl_to_clean", "lira")


@dataclasses.dataclass(frozen=True)
class LiraReferences:
  """LiRA reference models' logit-scaled confidences on the targets and held-out candidates.

  Attributes:
    target_phi: (K, |T|) φ of each reference model on each target (targets in
      `sed.target_ids` order).
    target_in: (K, |T|) bool, True where the reference model trained on the target (and on its
      similar samples).
    heldout_rows: (H,) rows of the test split used as non-member candidates (no study model
      trained on them; half of the reference models did).
    heldout_phi: (K, H) φ of each reference model on each held-out candidate.
    heldout_in: (K, H) bool, True where the reference model trained on the candidate.
    fix_variance: fit one variance per side over all examples (advised with few references).
    fpr: false-positive rate at which `lira_tpr` is reported.
  """
  target_phi: np.ndarray
  target_in: np.ndarray
  heldout_rows: np.ndarray
  heldout_phi: np.ndarray
  heldout_in: np.ndarray
  fix_variance: bool = True
  fpr: float = 0.05

  def statistics(self, target_phi: np.ndarray, heldout_phi: np.ndarray,
                 online: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """LiRA statistics (higher = member) of one model's φ on the targets and candidates."""
    attack = mia.lira_online if online else mia.lira_offline
    phi = np.concatenate([target_phi, heldout_phi])
    reference = np.concatenate([self.target_phi, self.heldout_phi], axis=1)
    in_mask = np.concatenate([self.target_in, self.heldout_in], axis=1)
    stat = attack(phi, reference, in_mask, fix_variance=self.fix_variance)
    return stat[:len(target_phi)], stat[len(target_phi):]


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
                    min_gap: Mapping[str, float], *, lira: LiraReferences | None = None,
                    svc_max_train: int = 2000) -> tuple[dict[str, dict], list[dict]]:
  """Records for every model, and per-target rows.

  Args:
    logits: {model: {'train': (N_D, C), 'test': (N_test, C)}}; must include 'original' and
      'clean' (residue references) and may include 'retrain' (for kl_to_retrain).
    sed: the SED the logits were computed on.
    min_gap: per-score floor for the residue ratio (keys of RESIDUE_SCORES, EXTRA_RESIDUE_SCORES
      and 'mia'; a missing key means 0).
    lira: the LiRA reference models' scores; None skips LiRA.
    svc_max_train: examples per class for the SVC MIA-efficacy attack (0 skips it).

  Returns:
    ({model: record}, [per-target row dicts]).
  """
  rows = split_rows(sed)
  scores = {name: model_scores(model_logits, sed, rows) for name, model_logits in logits.items()}
  target_labels = sed.train["label"][rows["target"]]
  for name, model_logits in logits.items():  # per-target extra scores
    target = scores[name]["target"]
    if "clean" in logits:
      target["kl_to_clean"] = metrics.kl_divergence(
          model_logits["train"][rows["target"]], logits["clean"]["train"][rows["target"]])
    target["phi"] = mia.logit_scaled_confidence(model_logits["train"][rows["target"]],
                                                target_labels)
    if lira is not None:
      heldout_phi = mia.logit_scaled_confidence(model_logits["test"][lira.heldout_rows],
                                                sed.test["label"][lira.heldout_rows])
      target["lira"], scores[name]["heldout_lira"] = lira.statistics(target["phi"], heldout_phi)
      target["lira_offline"], scores[name]["heldout_lira_offline"] = lira.statistics(
          target["phi"], heldout_phi, online=False)
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
        "entropy": {s: metrics.mean_or_nan(scores[name][s]["entropy"]) for s in SPLITS},
        "mia_auc": {s: attack_auc(name, s) for s in ("target", "similar")},
        "mia_auc_by_score": _threshold_aucs(logits[name], sed, rows, heldout["target"]),
    }
    if svc_max_train:
      retain = np.concatenate([rows["similar"], rows["rest"]])  # D \\ T, members
      record["mia_efficacy"] = {"target": mia.mia_efficacy(
          logits[name]["train"][retain], sed.train["label"][retain],
          logits[name]["test"], test_labels, logits[name]["train"][rows["target"]],
          target_labels, max_train=svc_max_train)}
    if lira is not None:
      target = scores[name]["target"]
      record["lira"] = {"target": metrics.mean_or_nan(target["lira"])}
      record["lira_auc"] = {
          "target": mia.roc_auc(target["lira"], scores[name]["heldout_lira"]),
          "target_offline": mia.roc_auc(target["lira_offline"],
                                        scores[name]["heldout_lira_offline"])}
      record["lira_tpr"] = {"target": mia.tpr_at_fpr(target["lira"],
                                                      scores[name]["heldout_lira"], lira.fpr)}
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


def _threshold_aucs(model_logits, sed, rows, heldout_mask) -> dict[str, float]:
  """AUC of each threshold attack: targets against test samples of the targets' classes."""
  return mia.threshold_attack_aucs(
      model_logits["train"][rows["target"]], sed.train["label"][rows["target"]],
      model_logits["test"][heldout_mask], sed.test["label"][heldout_mask])


def _residue_scores(scores, name) -> tuple[str, ...]:
  target = scores[name]["target"]
  return RESIDUE_SCORES + tuple(s for s in EXTRA_RESIDUE_SCORES
                                if s in target and s in scores["original"]["target"])


def _residues(name, scores, min_gap, attack_auc) -> dict[str, dict]:
  """Residue ratio, absolute residue and number of defined targets for each score."""
  ratios, absolutes, defined = {}, {}, {}
  for score in _residue_scores(scores, name):
    f = {m: scores[m]["target"][score] for m in (name, "original", "clean")}
    per_target = residue.ratio(f[name], f["original"], f["clean"], min_gap.get(score, 0.0))
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
    for score in _residue_scores(scores, name):
      value = scores[name]["target"][score][index]
      entry[score] = float(value)
      entry[f"residue_{score}"] = float(residue.ratio(
          [value], [scores["original"]["target"][score][index]],
          [scores["clean"]["target"][score][index]], min_gap.get(score, 0.0))[0])
    entry["entropy"] = float(scores[name]["target"]["entropy"][index])
    entry["phi"] = float(scores[name]["target"]["phi"][index])
    out.append(entry)
  return out
