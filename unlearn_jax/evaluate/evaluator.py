"""Turns every model's logits into the per-model record and per-target rows of a study.

Input: logits of each model on the training set D (with provenance) and on the test split, and
optionally the LiRA reference models' scores (`LiraReferences`).
Output per model: accuracy, loss, confidence, margin and entropy on target / similar / rest /
test; membership AUC of the threshold attacks (loss for targets and similar samples; also
confidence, entropy and modified entropy for targets) against test samples of the same classes;
the SVC "MIA-efficacy" on the targets; LiRA (online and offline) statistics, AUC and TPR at a
low FPR of targets against held-out candidates (each population fitted on its own); KL to `clean`
and to `retrain`; and the influence residue of every per-target score, as a ratio (mean, median
and ratio of sums over the targets, with the counts of defined and undefined targets) and in
absolute units.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from unlearn_jax.data import sed as sed_lib
from unlearn_jax.evaluate import metrics, mia, registry, residue

SPLITS = ("target", "similar", "rest", "test")
# Per-example scores of the logits with a residue (loss, confidence, margin, correct, ...).
RESIDUE_SCORES = registry.residue_scores("logits")
# Per-target scores whose residue is reported besides RESIDUE_SCORES (when available).
EXTRA_RESIDUE_SCORES = registry.residue_scores("reference", "lira")


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
    fix_variance: one σ per side and population while an example has fewer than
      `per_example_min` IN or OUT references; False: per-example σ always.
    fpr: false-positive rate at which `lira_tpr` is reported.
    per_example_min: references per side from which each example gets its own σ.
  """
  target_phi: np.ndarray
  target_in: np.ndarray
  heldout_rows: np.ndarray
  heldout_phi: np.ndarray
  heldout_in: np.ndarray
  fix_variance: bool = True
  fpr: float = 0.05
  per_example_min: int = mia.LIRA_PER_EXAMPLE_MIN

  @property
  def num_models(self) -> int:
    return int(self.target_phi.shape[0])

  def fixed_variance(self, in_mask: np.ndarray) -> bool:
    """Whether a population with this (K, N) IN mask gets one σ per side (too few references)."""
    fewest = min(int(in_mask.sum(axis=0).min()), int((~in_mask).sum(axis=0).min()))
    return bool(self.fix_variance) and fewest < self.per_example_min

  def statistics(self, target_phi: np.ndarray, heldout_phi: np.ndarray,
                 online: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """LiRA statistics (higher = member) of one model's φ on the targets and candidates.

    Targets (IN with their ~|S(t)| near-copies) and held-out candidates (IN as a single copy)
    are two populations with different IN (and OUT) spreads, so each is fitted on its own: a
    σ pooled over both (around their common mean) is too wide for one and too narrow for the
    other, and a model that saw neither no longer scores as a non-member of both. Carlini et
    al.'s fixed variance (tensorflow/privacy research/mi_lira_2021/plot.py, `generate_ours`:
    `np.std` of all IN scores) is taken over one homogeneous population, as here per population.
    """
    attack = mia.lira_online if online else mia.lira_offline
    return tuple(  # type: ignore[return-value]
        attack(phi, reference, in_mask, fix_variance=self.fixed_variance(in_mask))
        for phi, reference, in_mask in ((target_phi, self.target_phi, self.target_in),
                                        (heldout_phi, self.heldout_phi, self.heldout_in)))


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
                    svc_max_train: int = 2000,
                    references: Mapping[str, tuple[str, str]] | None = None
                    ) -> tuple[dict[str, dict], list[dict]]:
  """Records for every model, and per-target rows.

  Args:
    logits: {model: {'train': (N_D, C), 'test': (N_test, C)}}; must include 'original' and
      'clean' (residue references) and may include 'retrain' (for kl_to_retrain).
    sed: the SED the logits were computed on.
    min_gap: per-score floor for the residue ratio (keys of RESIDUE_SCORES, EXTRA_RESIDUE_SCORES
      and 'mia'; a missing key means 0).
    lira: the LiRA reference models' scores; None skips LiRA.
    svc_max_train: examples per class for the SVC MIA-efficacy attack (0 skips it).
    references: {model: (its original, its clean)} for models scored against other residue
      references than 'original' and 'clean' (SISA's ensembles against `sisa_original` and
      `sisa_clean`, see methods/sisa.py): their residues, `kl_to_clean` and the `kl_to_clean`
      residue use those models.

  Returns:
    ({model: record}, [per-target row dicts]).
  """
  references = dict(references or {})
  reference_of = lambda name: references.get(name, ("original", "clean"))
  rows = split_rows(sed)
  scores = {name: model_scores(model_logits, sed, rows) for name, model_logits in logits.items()}
  target_labels = sed.train["label"][rows["target"]]
  for name in logits:
    _add_target_scores(scores[name], name, logits, sed, rows, reference_of(name)[1], lira)
  similar_labels = sed.train["label"][rows["similar"]]
  test_labels = sed.test["label"]
  heldout = {"target": np.isin(test_labels, target_labels),
             "similar": np.isin(test_labels, similar_labels)}

  def attack_auc(name: str, split: str) -> float:
    return mia.loss_attack_auc(scores[name][split]["loss"],
                               scores[name]["test"]["loss"][heldout[split]])

  records, per_target = {}, []
  for name in logits:
    record = {  # the per-split means of every per-example score (`acc` for `correct`)
        field: {s: metrics.mean_or_nan(scores[name][s][metric.name]) for s in SPLITS}
        for metric in registry.needing("logits") for field in metric.fields}
    record["mia_auc"] = {s: attack_auc(name, s) for s in ("target", "similar")}
    record["mia_auc_by_score"] = _threshold_aucs(logits[name], sed, rows, heldout["target"])
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
    original, clean = reference_of(name)
    for reference, model in (("clean", clean), ("retrain", "retrain")):
      if model in logits:
        record[f"kl_to_{reference}"] = {
            s: metrics.mean_or_nan(metrics.kl_divergence(
                logits[name]["train"][rows[s]], logits[model]["train"][rows[s]]))
            for s in ("target", "similar")}
    # The residue functions read the references as 'original' and 'clean'.
    view = {**scores, "original": scores[original], "clean": scores[clean]}
    alias = {"original": original, "clean": clean}
    view_auc = lambda m, split: attack_auc(alias.get(m, m), split)
    record.update(_residues(name, view, min_gap, view_auc))
    records[name] = record
    per_target.extend(_target_rows(name, view, sed, rows, min_gap))
  return records, per_target


def _add_target_scores(own_scores, name, logits, sed, rows, clean, lira) -> None:
  """Adds the per-target scores that need more than the model's logits (in place).

  `kl_to_clean` (against the model's clean reference), LiRA's φ and, with `lira`, the online
  and offline LiRA statistics of the targets and of the held-out candidates.
  """
  model_logits, target = logits[name], own_scores["target"]
  if clean in logits:
    target["kl_to_clean"] = metrics.kl_divergence(
        model_logits["train"][rows["target"]], logits[clean]["train"][rows["target"]])
  target["phi"] = mia.logit_scaled_confidence(model_logits["train"][rows["target"]],
                                              sed.train["label"][rows["target"]])
  if lira is not None:
    heldout_phi = mia.logit_scaled_confidence(model_logits["test"][lira.heldout_rows],
                                              sed.test["label"][lira.heldout_rows])
    target["lira"], own_scores["heldout_lira"] = lira.statistics(target["phi"], heldout_phi)
    target["lira_offline"], own_scores["heldout_lira_offline"] = lira.statistics(
        target["phi"], heldout_phi, online=False)


def _threshold_aucs(model_logits, sed, rows, heldout_mask) -> dict[str, float]:
  """AUC of each threshold attack: targets against test samples of the targets' classes."""
  return mia.threshold_attack_aucs(
      model_logits["train"][rows["target"]], sed.train["label"][rows["target"]],
      model_logits["test"][heldout_mask], sed.test["label"][heldout_mask])


def _residue_scores(scores, name) -> tuple[str, ...]:
  target = scores[name]["target"]
  return RESIDUE_SCORES + tuple(s for s in EXTRA_RESIDUE_SCORES
                                if s in target and s in scores["original"]["target"])


# Record keys of `residue.summaries`' aggregates (`residue` is the mean: docs/design.md §6.3).
RESIDUE_AGGREGATES = {"residue": "mean", "residue_median": "median",
                      "residue_ratio_of_sums": "ratio_of_sums", "residue_defined": "defined",
                      "residue_undefined": "undefined"}


def _residues(name, scores, min_gap, attack_auc) -> dict[str, dict]:
  """Per score: residue mean, median, ratio of sums, defined/undefined counts, absolute."""
  out = {key: {} for key in RESIDUE_AGGREGATES}
  absolutes = {}
  for score in _residue_scores(scores, name):
    f = {m: scores[m]["target"][score] for m in (name, "original", "clean")}
    aggregates = residue.summaries(f[name], f["original"], f["clean"], min_gap.get(score, 0.0))
    for key, field in RESIDUE_AGGREGATES.items():
      out[key][score] = aggregates[field]
    absolutes[score] = metrics.mean_or_nan(residue.absolute(f[name], f["clean"]))
  # Membership is a set-level score: one ratio of AUCs, defined when the AUC gap is large enough.
  auc = {m: attack_auc(m, "target") for m in (name, "original", "clean")}
  aggregates = residue.summaries([auc[name]], [auc["original"]], [auc["clean"]], min_gap["mia"])
  for key, field in RESIDUE_AGGREGATES.items():
    out[key]["mia"] = aggregates[field]
  absolutes["mia"] = auc[name] - auc["clean"]
  return {**out, "residue_abs": absolutes}


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
    for metric in registry.needing("logits"):  # the per-example scores without a residue
      if not metric.has_residue:
        entry[metric.name] = float(scores[name]["target"][metric.name][index])
    entry["phi"] = float(scores[name]["target"]["phi"][index])
    out.append(entry)
  return out
