"""summary.json and report.md of a language-model study (docs/design.md §2.3, §4.2), with the
tuned settings when the study tuned its methods (tune.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from unlearn_jax.data import sed as sed_lib
from unlearn_jax.report import protocol, tables

TABLE_COLUMNS = (
    ("time s", "time_s", 1), ("NLL T", "nll.target", 2), ("NLL S", "nll.similar", 2),
    ("NLL R", "nll.rest", 2), ("ppl test", "ppl.test", 1),
    ("ROUGE-L T", "rouge_l.target", 2), ("ROUGE-L probe", "rouge_l.probe", 2),
    ("ROUGE-L R", "rouge_l.rest", 2), ("fact T", "fact.target", 2),
    ("fact probe", "fact.probe", 2), ("fact R", "fact.rest", 2), ("EM T", "exact.target", 2),
)
RESIDUE_COLUMNS = (
    ("res NLL", "residue.nll", 2), ("res ROUGE T", "residue.rouge_l", 2),
    ("res ROUGE probe", "residue.rouge_l_probe", 2), ("res fact", "residue.fact", 2),
    ("res fact probe", "residue.fact_probe", 2),
    ("res fact probe median", "residue_median.fact_probe", 2),
    ("res fact probe Σ/Σ", "residue_ratio_of_sums.fact_probe", 2),
    ("fact probe undef T", "residue_undefined.fact_probe", 0),
    ("res Min-k", "residue.min_k", 2),
    ("MIA loss", "mia_auc.loss", 2), ("MIA zlib", "mia_auc.zlib", 2),
    ("MIA Min-k", "mia_auc.min_k", 2), ("res MIA", "residue.mia", 2),
)


def build_summary(config, task, records, status) -> dict[str, Any]:
  """summary.json: the image track's schema with the LM's scores; a tuned method's choice
  (`task.tuned`, tune.py) under `methods.<m>.tuning`, and every `config.tune` field under
  `tuning`, as the image track writes them."""
  summary = {
      "track": "lm", "dataset": config.dataset, "model": config.model,
      "seeds": list(records.keys()),
      "sed": {"num_targets": int(np.sum(task.sed.train["kind"] == sed_lib.TARGET)),
              "similar_per_target": int(config.qa.similar_per_target),
              "generator": "paraphrase" if config.dataset == "offline" else config.dataset,
              "num_rest": int(np.sum(task.sed.train["kind"] == sed_lib.REST)),
              "probes_per_target": int(config.qa.probes_per_target)},
      "tokenizer": {"vocab_size": task.tokenizer.vocab_size,
                    "max_len": int(config.tokenizer.max_len)},
      "train": {key: config.train[key] for key in config.train.keys()},
      "methods": tables.summarize_methods(records, status),
      "status": status,
  }
  tables.add_floor(summary)
  tuned = getattr(task, "tuned", {})
  for name, chosen in tuned.items():
    if name in summary["methods"]:
      summary["methods"][name]["tuning"] = chosen
  if tuned:
    summary["tuning"] = {key: config.tune[key] for key in config.tune.keys()}
  return summary


def tuning_markdown(summary: dict[str, Any]) -> str:
  """The tuned settings: the image track's table (`protocol.tuning_markdown`), read with the
  LM track's objective and constraint; '' when nothing was tuned."""
  text = protocol.tuning_markdown(summary)
  if not text:
    return ""
  heading, table = text.split("\n\n")[:2]  # the image track's reading of the table follows
  setting = summary["tuning"]
  objective = " + ".join(f"|res {s}|" for s in setting["objective"])
  tuned_on = ("the evaluated targets themselves (oracle: an upper bound, not a fair comparison)"
              if setting["mode"] == "oracle" else
              f"a tuning SED (the QA SED of qa.seed {setting['sed_seed']}: other targets, never "
              "the evaluated ones, with its own original and clean under tuning/)")
  return "\n".join([
      heading, "", table, "",
      f"Each method was tuned with {setting['trials']} {setting['sampler']} trials (seed "
      f"{setting['seed']}) on {tuned_on}, minimising {objective} over its targets among the "
      f"trials whose utility (ROUGE-L recall of the answers to unrelated training questions, "
      f"`ROUGE-L R`) stayed within {setting['max_test_drop']} of its original's and whose "
      f"time stayed under {setting['cost_cap']} × its clean model's training time (`feasible`; "
      "without any, the trial with the smallest utility drop). Every trial: tuning.csv (its "
      "`acc_test` column is this utility); trade-offs: plots/tuning_<method>.png."]) + "\n"


def markdown_report(summary: dict[str, Any]) -> str:
  """report.md of an LM study."""
  sed = summary["sed"]
  floor = summary.get("floor", {}).get("residue", {})
  lines = [
      f"# Language-model study: {summary['dataset']} / {summary['model']}", "",
      f"QA SED: {sed['num_targets']} targets × {sed['similar_per_target']} paraphrases "
      f"({sed['generator']}), {sed['num_rest']} unrelated QA pairs, {sed['probes_per_target']} "
      f"held-out paraphrased questions per target; seeds {summary['seeds']}.", "",
      "## Likelihood and generation", "", tables.markdown_table(summary, TABLE_COLUMNS), "",
      "NLL: mean answer-token negative log-likelihood per split (T targets, S paraphrases, R "
      "rest); ppl: answer perplexity on held-out QA. ROUGE-L: recall of the reference answer in "
      "the greedy answer to the target question (T), to held-out paraphrases of it (probe: "
      "leakage through the similar samples), and to unrelated training questions (R: utility). "
      "fact: share of the answer's fact words (not in the question, not function words) that "
      "the greedy answer says — the fact itself, not its template. EM: exact match (T).", "",
      "## Residue and membership", "", tables.markdown_table(summary, RESIDUE_COLUMNS), "",
      "`res X` is the mean over targets of (f(M) - f(clean)) / (f(original) - f(clean)) (1: "
      "nothing forgotten, 0: like the model that never saw T nor its paraphrases), over the "
      "targets where |f(original) - f(clean)| ≥ `eval.min_gap` (`undef T`: how many are not); a "
      "target whose gap is just above that floor can carry the mean alone, so the headline "
      "fact-probe residue also has its median and its ratio of sums Σ(f(M) - f(clean)) / "
      "Σ(f(original) - f(clean)) over the same targets (Σ/Σ; every score's are in summary.json). "
      "MIA: AUC of "
      "the loss, zlib (Carlini et al., USENIX Security 2021) and Min-k% (Shi et al., ICLR 2024) "
      "attacks, targets against held-out QA pairs. Generations: generations.jsonl.",
  ]
  if floor:
    parts = ", ".join(f"{k} {v:.2f}" for k, v in floor.items()
                      if isinstance(v, float) and np.isfinite(v))
    lines += ["", f"Noise floor (clean_alt residue): {parts}."]
  tuning = tuning_markdown(summary)
  if tuning:
    lines += ["", tuning.rstrip("\n")]
  failures = [f"- {k}: {v}" for k, v in summary.get("status", {}).items() if v != "ok"]
  if failures:
    lines += ["", "Failures:", *failures]
  return "\n".join(lines) + "\n"
