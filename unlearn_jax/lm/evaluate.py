"""Scores of the language-model track (docs/design.md §2.3, §3.6): every model's answer
likelihood and perplexity per split, its greedy answers to the target questions, to held-out
paraphrases of them (the probes) and to unrelated training questions (ROUGE-L recall, exact
match, fact recall), the loss, zlib and Min-k% membership attacks of the targets against
held-out QA pairs, and the residue per target of each score.

`model_scores(task, state)` computes one model's per-example scores, `evaluate(task, scores)`
turns the scores of a seed's models into records and per-target rows (`tasks/lm.py` calls both;
so does `lm/select_lr.py`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unlearn_jax.data import sed as sed_lib
from unlearn_jax.evaluate import evaluator, mia, residue
from unlearn_jax.lm import defaults as lm_defaults
from unlearn_jax.lm import metrics as lm_metrics
from unlearn_jax.lm import steps

SPLITS = ("target", "similar", "rest", "test")


def model_scores(task, state) -> dict[str, Any]:
  """Per-example scores of one model: likelihoods, membership scores and generations."""
  config, sed = task.config, task.sed
  batch_size = int(config.eval.batch_size)
  out: dict[str, Any] = {"questions": {}, "generated": {}}
  for which in ("train", "test"):
    arrays = task.encoded[which]
    result = steps.score(state, {"tokens": arrays["tokens"], "loss_mask": arrays["loss_mask"]},
                         batch_size, task.mesh)
    part = sed.train if which == "train" else sed.test
    # The likelihood covers the answer tokens: zlib entropy of the same text, per token.
    result["loss_score"] = lm_metrics.loss_score(result["nll"])
    result["zlib_score"] = lm_metrics.zlib_score(
        result["logprob_sum"], [str(a) for a in part["answer"]], num_tokens=result["num_tokens"])
    result["min_k_score"] = lm_metrics.min_k_score(
        result["token_logprobs"], arrays["loss_mask"][:, 1:], float(config.eval.min_k))
    out[which] = result
  answers = {"target": sed.train["answer"][task.target_rows],
             "probe": sed.probes["answer"],
             "rest": sed.train["answer"][task.utility_rows]}
  questions = {"target": sed.train["question"][task.target_rows],
               "probe": sed.probes["question"],
               "rest": sed.train["question"][task.utility_rows]}
  for split, (prompt, lengths) in task.prompts.items():
    tokens = steps.generate(state, prompt, lengths, int(config.eval.max_new_tokens),
                            task.tokenizer.eos_id, batch_size, task.mesh)
    generated = [task.tokenizer.decode([int(t) for t in row]) for row in tokens]
    out["generated"][split] = generated
    out["questions"][split] = [str(q) for q in questions[split]]
    out[f"rouge_{split}"] = np.asarray([lm_metrics.rouge_l(str(ref), gen)["recall"]
                                        for ref, gen in zip(answers[split], generated)])
    out[f"exact_{split}"] = np.asarray([float(lm_metrics.exact_match(str(ref), gen))
                                        for ref, gen in zip(answers[split], generated)])
    out[f"fact_{split}"] = np.asarray([
        lm_metrics.fact_recall(str(q), str(ref), gen)
        for q, ref, gen in zip(questions[split], answers[split], generated)])
  return out


def evaluate(task, scores: dict[str, dict]) -> tuple[dict[str, dict], list[dict]]:
  """Records of every model (means per split, attacks, residues) and per-target rows."""
  config, sed = task.config, task.sed
  kind = sed.train["kind"]
  rows = {"target": task.target_rows, "similar": np.flatnonzero(kind == sed_lib.SIMILAR),
          "rest": np.flatnonzero(kind == sed_lib.REST)}
  probe_group = sed.probes["group"]
  target_ids = sed.train["id"][task.target_rows]
  per_target = {}
  for name, s in scores.items():
    probe_mean = lambda key: np.asarray([_nanmean(s[key][probe_group == t])
                                         for t in target_ids])
    per_target[name] = {
        "nll": s["train"]["nll"][rows["target"]],
        "rouge_l": s["rouge_target"],
        "rouge_l_probe": probe_mean("rouge_probe"),
        "fact": s["fact_target"],
        "fact_probe": probe_mean("fact_probe"),
        # Min-k% is a membership score (higher = member); residue compares its level.
        "min_k": s["train"]["min_k_score"][rows["target"]],
    }
  records, out_rows = {}, []
  min_gap = config.eval.min_gap
  for name, s in scores.items():
    def split_values(key):
      return {**{split: s["train"][key][r] for split, r in rows.items()},
              "test": s["test"][key]}
    nll = split_values("nll")
    tokens = split_values("num_tokens")
    record = {
        "nll": {k: float(np.mean(v)) for k, v in nll.items()},
        "ppl": {k: float(np.exp(np.sum(nll[k] * tokens[k]) / max(np.sum(tokens[k]), 1)))
                for k in nll},
        "rouge_l": {split: float(np.mean(s[f"rouge_{split}"]))
                    for split in ("target", "probe", "rest")},
        "exact": {split: float(np.mean(s[f"exact_{split}"]))
                  for split in ("target", "probe", "rest")},
        "fact": {split: _nanmean(s[f"fact_{split}"]) for split in ("target", "probe", "rest")},
    }
    # Membership of the targets (and of the similar samples) against held-out QA pairs.
    record["mia_auc"] = {
        attack: float(mia.roc_auc(s["train"][f"{attack}_score"][rows["target"]],
                                  s["test"][f"{attack}_score"]))
        for attack in ("loss", "zlib", "min_k")}
    record["mia_auc_similar"] = {
        attack: float(mia.roc_auc(s["train"][f"{attack}_score"][rows["similar"]],
                                  s["test"][f"{attack}_score"]))
        for attack in ("loss", "zlib", "min_k")} if len(rows["similar"]) else {}
    # The image track's residue keys (evaluator.RESIDUE_AGGREGATES): `residue` (the mean over
    # targets), `residue_median`, `residue_ratio_of_sums`, `residue_defined`, `residue_undefined`.
    aggregates, absolutes = {key: {} for key in evaluator.RESIDUE_AGGREGATES}, {}
    for score in lm_defaults.RESIDUE_SCORES:
      f = {m: per_target[m][score] for m in (name, "original", "clean")}
      found = residue.summaries(f[name], f["original"], f["clean"], float(min_gap[score]))
      for key, field in evaluator.RESIDUE_AGGREGATES.items():
        aggregates[key][score] = found[field]
      absolutes[score] = float(np.mean(residue.absolute(f[name], f["clean"])))
    auc = {m: float(mia.roc_auc(scores[m]["train"]["loss_score"][rows["target"]],
                                scores[m]["test"]["loss_score"])) for m in (name, "original",
                                                                            "clean")}
    found = residue.summaries([auc[name]], [auc["original"]], [auc["clean"]], 0.05)
    for key, field in evaluator.RESIDUE_AGGREGATES.items():
      aggregates[key]["mia"] = found[field]
    absolutes["mia"] = auc[name] - auc["clean"]
    record.update(aggregates, residue_abs=absolutes)
    records[name] = record
    for index, target_id in enumerate(target_ids):
      row = {"model": name, "target_id": int(target_id)}
      for score in lm_defaults.RESIDUE_SCORES:
        value = per_target[name][score][index]
        row[score] = float(value)
        row[f"residue_{score}"] = float(residue.ratio(
            [value], [per_target["original"][score][index]],
            [per_target["clean"][score][index]], float(min_gap[score]))[0])
      out_rows.append(row)
  return records, out_rows


def _nanmean(values: np.ndarray) -> float:
  """Mean ignoring NaN (an undefined score); NaN when no value is finite."""
  values = np.asarray(values, np.float64)
  return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
