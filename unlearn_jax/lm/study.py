"""One language-model study: QA SED -> tokenizer -> references -> LM unlearning -> residue.

The text counterpart of unlearn_jax/study.py (docs/design.md §2.3): targets are question–answer
facts, their similar samples paraphrases of them, and the question is whether an unlearned model
still answers a target — when asked its question, and when asked it in words it never saw (held-out
paraphrases: the probes). The references are the image track's: `original` (D), `retrain` (D \\ T),
`clean` (R) and `clean_alt` (R, another seed: the noise floor). Every model is scored on each split
by answer log-likelihood and perplexity, by greedy generation (exact match and ROUGE-L recall of the
target answer) and by loss, zlib and Min-k% membership attacks of the targets against held-out QA
pairs; residues per target follow docs/design.md §3.6.

The workdir holds what the image track writes (config.json, data/provenance.npz and qa.jsonl,
data/tokenizer.model, checkpoints/<model>/seed_<s>, metrics.jsonl, report/{summary.json,
results.csv, per_target.csv, report.md}), plus report/generations.jsonl with every greedy answer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from unlearn_jax import config as config_lib
from unlearn_jax import methods as methods_lib
from unlearn_jax import models, parallel, preemption, study, utils
from unlearn_jax import workdir as workdir_lib
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.evaluate import evaluator, mia, residue
from unlearn_jax.lm import data as qa_data
from unlearn_jax.lm import defaults as lm_defaults
from unlearn_jax.lm import methods as lm_methods
from unlearn_jax.lm import metrics as lm_metrics
from unlearn_jax.lm import steps
from unlearn_jax.lm import tokenizer as tokenizer_lib
from unlearn_jax.report import tables

SPLITS = ("target", "similar", "rest", "test")
# Rows of R whose generations measure utility (answering unrelated facts still works).
UTILITY_SAMPLE = 100
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


@dataclasses.dataclass
class Context:
  """What every stage of an LM study needs."""
  config: ml_collections.ConfigDict
  workdir: str
  sed: qa_data.QASED
  tokenizer: tokenizer_lib.Tokenizer
  encoded: dict[str, dict[str, np.ndarray]]  # train / test (tokens, loss_mask)
  prompts: dict[str, tuple[np.ndarray, np.ndarray]]  # target / probe / rest: (tokens, lengths)
  target_rows: np.ndarray  # rows of the targets in D (ordered by target id)
  utility_rows: np.ndarray  # rows of R whose answers are generated
  model: Any
  mesh: jax.sharding.Mesh
  writer: utils.MetricWriter
  models_done: int = 0
  models_total: int = 0
  started: float = dataclasses.field(default_factory=time.perf_counter)

  def progress(self) -> str:
    """'model 3 of 7, study ETA 2m10s' for the stage lines."""
    return study.progress_line(self.models_done, self.models_total, self.started)

  def init_state(self, rng: jax.Array):
    return steps.create_state(self.model, rng, int(self.config.tokenizer.max_len))


def is_lm_config(config: ml_collections.ConfigDict) -> bool:
  """True for a language-model study config (`track = 'lm'`)."""
  return config.get("track", "") == lm_defaults.TRACK


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) the LM study; returns its summary (also written to report/).

  Raises:
    config_lib.ConfigError: an invalid config, before anything is written.
    preemption.Preempted: after SIGTERM, once the running model is checkpointed.
  """
  utils.quiet_library_logs()
  preemption.install()
  lm_defaults.validate(config)
  workdir = os.path.abspath(workdir)
  workdir_lib.prepare(config, workdir)
  context = build_context(config, workdir)
  names = config_lib.as_tuple(config.methods)
  seeds = [int(s) for s in config_lib.as_tuple(config.seeds)]
  context.models_total = len(seeds) * (4 + len([n for n in names if n != "retrain"]))
  records: dict[int, dict[str, dict]] = {}
  per_target: list[dict] = []
  generations: list[dict] = []
  status: dict[str, str] = {}
  for seed in seeds:
    records[seed], rows, texts = run_seed(context, seed, status)
    per_target.extend({"seed": seed, **row} for row in rows)
    generations.extend({"seed": seed, **row} for row in texts)
  logging.info("stage: report")
  summary = build_summary(config, context, records, status)
  text = markdown_report(summary)
  if utils.is_main_process():
    report_dir = os.path.join(workdir, "report")
    utils.write_json(os.path.join(report_dir, "summary.json"), summary)
    utils.write_text(os.path.join(report_dir, "results.csv"),
                     tables.to_csv(tables.results_rows(records)))
    utils.write_text(os.path.join(report_dir, "per_target.csv"), tables.to_csv(per_target))
    utils.write_text(os.path.join(report_dir, "generations.jsonl"),
                     "".join(json.dumps(row) + "\n" for row in generations))
    utils.write_text(os.path.join(report_dir, "report.md"), text)
  logging.info("report written to %s", os.path.join(workdir, "report"))
  if utils.is_main_process():  # one copy of the report, not one per process
    print(text, flush=True)
  return summary


def load_sed(config: ml_collections.ConfigDict) -> qa_data.QASED:
  """The QA SED named by `config.dataset` (offline generator, JSONL file, or tfds)."""
  q = config.qa
  if config.dataset == "offline":
    return qa_data.build_offline(
        num_targets=int(q.num_targets), similar_per_target=int(q.similar_per_target),
        num_rest=int(q.num_rest), num_test=int(q.num_test),
        probes_per_target=int(q.probes_per_target), seed=int(q.seed))
  if config.dataset.startswith("jsonl:"):
    records = qa_data.load_jsonl(config.dataset[len("jsonl:"):])
    return qa_data.build_from_records(records, probes_per_target=int(q.probes_per_target),
                                      seed=int(q.seed))
  return qa_data.build_tfds(
      config.dataset, config.data_dir or None, num_targets=int(q.num_targets),
      similar_per_target=int(q.similar_per_target), num_rest=int(q.num_rest),
      num_test=int(q.num_test), probes_per_target=int(q.probes_per_target), seed=int(q.seed))


def build_context(config: ml_collections.ConfigDict, workdir: str) -> Context:
  """Builds the SED and saves its provenance, trains the tokenizer, encodes, makes the model."""
  logging.info("stage: data (%s)", config.dataset)
  sed = load_sed(config)
  data_dir = os.path.join(workdir, "data")
  if utils.is_main_process():
    qa_data.save_provenance(sed, os.path.join(data_dir, "provenance.npz"))
  texts = [str(t) for part in (sed.train, sed.test, sed.probes)
           for key in ("question", "answer") for t in part[key]]
  tokenizer = tokenizer_lib.Tokenizer.train(texts, data_dir, int(config.tokenizer.vocab_size))
  max_len = int(config.tokenizer.max_len)
  encoded = {}
  for split, part in (("train", sed.train), ("test", sed.test)):
    arrays, truncated = _encode(tokenizer, part, max_len)
    if truncated:
      logging.warning("%d %s question(s) longer than tokenizer.max_len=%d were cut from the left",
                      truncated, split, max_len)
    encoded[split] = {**arrays, **{key: part[key] for key in ("id", "kind", "group")}}
  target_ids = np.sort(sed.train["id"][sed.train["kind"] == sed_lib.TARGET])
  position = {int(i): row for row, i in enumerate(sed.train["id"])}
  target_rows = np.asarray([position[int(t)] for t in target_ids], np.int64)
  rest_rows = np.flatnonzero(sed.train["kind"] == sed_lib.REST)
  rng = np.random.default_rng([int(config.qa.seed), 21])
  utility_rows = np.sort(rng.permutation(rest_rows)[:UTILITY_SAMPLE])
  prompts = {
      "target": tokenizer.encode_prompts(list(sed.train["question"][target_rows]), max_len),
      "probe": tokenizer.encode_prompts(list(sed.probes["question"]), max_len),
      "rest": tokenizer.encode_prompts(list(sed.train["question"][utility_rows]), max_len),
  }
  kwargs = dict(config.model_kwargs.to_dict(), max_len=max_len)
  model = models.get(config.model, tokenizer.vocab_size, **kwargs)
  mesh = parallel.make_mesh()
  counts = {name: int(np.sum(sed.train["kind"] == kind))
            for kind, name in enumerate(sed_lib.KIND_NAMES)}
  logging.info("QA SED: |D|=%d (%s), |test|=%d, %d probes; vocabulary %d, max_len %d",
               len(sed.train["id"]), counts, len(sed.test["id"]), len(sed.probes["id"]),
               tokenizer.vocab_size, max_len)
  writer = utils.MetricWriter(os.path.join(workdir, "metrics.jsonl"))
  return Context(config, workdir, sed, tokenizer, encoded, prompts, target_rows, utility_rows,
                 model, mesh, writer)


def _encode(tokenizer, part, max_len):
  """(tokens and loss_mask of the QA pairs of `part`, how many questions were cut)."""
  arrays = tokenizer.encode_pairs(list(part["question"]), list(part["answer"]), max_len)
  return {"tokens": arrays["tokens"], "loss_mask": arrays["loss_mask"]}, int(arrays["truncated"])


def run_seed(context: Context, seed: int, status: dict[str, str]
             ) -> tuple[dict[str, dict], list[dict], list[dict]]:
  """References and methods of one seed; returns records, per-target rows and generations."""
  config, train_enc = context.config, context.encoded["train"]
  kind = train_enc["kind"]
  data = {"original": (_take(train_enc, np.ones(len(kind), bool)), seed),
          "retrain": (_take(train_enc, kind != sed_lib.TARGET), seed),
          "clean": (_take(train_enc, kind == sed_lib.REST), seed),
          "clean_alt": (_take(train_enc, kind == sed_lib.REST), seed + config.floor_seed_offset)}
  states, times = {}, {}
  for name, (arrays, model_seed) in data.items():
    directory = _checkpoint_dir(context, name, seed)
    logging.info("stage: reference %s/seed_%d (%d QA pairs; %s)", name, seed,
                 len(arrays["tokens"]), context.progress())
    start = time.perf_counter()
    states[name], info = steps.train_from_scratch(
        context.init_state(jax.random.fold_in(jax.random.key(model_seed), 1)), arrays,
        config.train, model_seed, name=f"{name}/seed_{seed}", mesh=context.mesh,
        checkpoint_dir=directory, writer=context.writer)
    times[name] = workdir_lib.record_time(directory, info, time.perf_counter() - start)
    context.models_done += 1

  forget, retain = _take(train_enc, kind == sed_lib.TARGET), data["retrain"][0]
  for name in config_lib.as_tuple(config.methods):
    key = f"{name}/seed_{seed}"
    if name == "retrain":
      status[key] = "ok"
      continue
    directory = _checkpoint_dir(context, name, seed)
    unlearn_data = methods_lib.UnlearnData(
        forget=forget, retain=retain, mesh=context.mesh, seed=seed,
        num_classes=context.tokenizer.vocab_size, init_state=context.init_state,
        checkpoint_dir=directory, writer=context.writer, val=context.encoded["test"])
    logging.info("stage: method %s/seed_%d (|forget|=%d, |retain|=%d; %s)", name, seed,
                 len(forget["tokens"]), len(retain["tokens"]), context.progress())
    start = time.perf_counter()
    with study.method_status(status, key):
      states[name], info = lm_methods.get(name)(states["original"], unlearn_data, config,
                                                jax.random.fold_in(jax.random.key(seed), 2))
      times[name] = workdir_lib.record_time(directory, info, time.perf_counter() - start)
    context.models_done += 1

  logging.info("stage: evaluate seed_%d (%d models)", seed, len(states))
  scores = {name: model_scores(context, state) for name, state in states.items()}
  records, rows = evaluate(context, scores)
  for name in records:
    records[name]["time_s"] = times[name]
  texts = [{"model": name, "question": q, "answer": a, "split": split}
           for name, score in scores.items()
           for split in ("target", "probe")
           for q, a in zip(score["questions"][split], score["generated"][split])]
  return records, rows, texts


def model_scores(context: Context, state) -> dict[str, Any]:
  """Per-example scores of one model: likelihoods, membership scores and generations."""
  config, sed = context.config, context.sed
  batch_size = int(config.eval.batch_size)
  out: dict[str, Any] = {"questions": {}, "generated": {}}
  for which in ("train", "test"):
    arrays = context.encoded[which]
    result = steps.score(state, {"tokens": arrays["tokens"], "loss_mask": arrays["loss_mask"]},
                         batch_size, context.mesh)
    part = sed.train if which == "train" else sed.test
    # The likelihood covers the answer tokens: zlib entropy of the same text, per token.
    result["loss_score"] = lm_metrics.loss_score(result["nll"])
    result["zlib_score"] = lm_metrics.zlib_score(
        result["logprob_sum"], [str(a) for a in part["answer"]], num_tokens=result["num_tokens"])
    result["min_k_score"] = lm_metrics.min_k_score(
        result["token_logprobs"], arrays["loss_mask"][:, 1:], float(config.eval.min_k))
    out[which] = result
  answers = {"target": sed.train["answer"][context.target_rows],
             "probe": sed.probes["answer"],
             "rest": sed.train["answer"][context.utility_rows]}
  questions = {"target": sed.train["question"][context.target_rows],
               "probe": sed.probes["question"],
               "rest": sed.train["question"][context.utility_rows]}
  for split, (prompt, lengths) in context.prompts.items():
    tokens = steps.generate(state, prompt, lengths, int(config.eval.max_new_tokens),
                            context.tokenizer.eos_id, batch_size, context.mesh)
    generated = [context.tokenizer.decode([int(t) for t in row]) for row in tokens]
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


def evaluate(context: Context, scores: dict[str, dict]) -> tuple[dict[str, dict], list[dict]]:
  """Records of every model (means per split, attacks, residues) and per-target rows."""
  config, sed = context.config, context.sed
  kind = sed.train["kind"]
  rows = {"target": context.target_rows, "similar": np.flatnonzero(kind == sed_lib.SIMILAR),
          "rest": np.flatnonzero(kind == sed_lib.REST)}
  probe_group = sed.probes["group"]
  target_ids = sed.train["id"][context.target_rows]
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


def build_summary(config, context: Context, records, status) -> dict[str, Any]:
  """summary.json: the image track's schema with the LM's scores."""
  summary = {
      "track": "lm", "dataset": config.dataset, "model": config.model,
      "seeds": list(records.keys()),
      "sed": {"num_targets": int(np.sum(context.sed.train["kind"] == sed_lib.TARGET)),
              "similar_per_target": int(config.qa.similar_per_target),
              "generator": "paraphrase" if config.dataset == "offline" else config.dataset,
              "num_rest": int(np.sum(context.sed.train["kind"] == sed_lib.REST)),
              "probes_per_target": int(config.qa.probes_per_target)},
      "tokenizer": {"vocab_size": context.tokenizer.vocab_size,
                    "max_len": int(config.tokenizer.max_len)},
      "train": {key: config.train[key] for key in config.train.keys()},
      "methods": tables.summarize_methods(records, status),
      "status": status,
  }
  tables.add_floor(summary)
  return summary


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
  failures = [f"- {k}: {v}" for k, v in summary.get("status", {}).items() if v != "ok"]
  if failures:
    lines += ["", "Failures:", *failures]
  return "\n".join(lines) + "\n"


def _checkpoint_dir(context: Context, name: str, seed: int) -> str:
  return os.path.join(context.workdir, "checkpoints", name, f"seed_{seed}")


def _take(arrays: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
  return {key: value[mask] for key, value in arrays.items()}
