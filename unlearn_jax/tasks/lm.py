"""The language-model task of a study: a QA SED and a small decoder (docs/design.md §2.3).

Targets are question–answer facts, their similar samples paraphrases of them, and the question
is whether an unlearned model still answers a target — when asked its question, and when asked
it in words it never saw (held-out paraphrases: the probes). The references are the image
track's (`recipe.reference` on the encoded D); the methods are the registry's track 'lm'
(`unlearn_jax/lm/methods/`). Every model is scored by `lm/evaluate.py` (likelihood, greedy
generation, membership attacks, residues per target) and reported by `lm/report.py`.

The workdir holds what the image track writes (config.json, data/provenance.npz,
checkpoints/<model>/seed_<s>, metrics.jsonl, report/{summary.json, results.csv, per_target.csv,
report.md}), plus data/tokenizer.model and report/generations.jsonl with every greedy answer.

With `tune.enabled`, tune.py tunes every method on the tuning SED (`tuning_task`: the QA SED of
`qa.seed = tune.sed_seed`, other targets) in WORKDIR/tuning, scored by `tuning_scores`: the
mean residues of `tune.objective` (answer NLL and the loss-attack AUC by default) on its
targets, under a utility budget (ROUGE-L recall on unrelated training questions at most
`tune.max_test_drop` below its original's).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from unlearn_jax import config as config_lib
from unlearn_jax import models, utils
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.lm import data as qa_data
from unlearn_jax.lm import defaults as lm_defaults
from unlearn_jax.lm import evaluate as lm_evaluate
from unlearn_jax.lm import report as lm_report
from unlearn_jax.lm import steps
from unlearn_jax.lm import tokenizer as tokenizer_lib
from unlearn_jax.report import tables
from unlearn_jax.tasks import base

# Rows of R whose generations measure utility (answering unrelated facts still works).
UTILITY_SAMPLE = 100


class LMTask(base.Task):
  """Question answering: a QA SED, a tokenizer trained on it, a small decoder."""
  track = lm_defaults.TRACK
  sed: qa_data.QASED
  tokenizer: tokenizer_lib.Tokenizer
  encoded: dict[str, dict[str, np.ndarray]]  # train / test (tokens, loss_mask, id, kind, group)
  prompts: dict[str, tuple[np.ndarray, np.ndarray]]  # target / probe / rest: (tokens, lengths)
  target_rows: np.ndarray  # rows of the targets in D (ordered by target id)
  utility_rows: np.ndarray  # rows of R whose answers are generated

  @staticmethod
  def validate(config: ml_collections.ConfigDict) -> None:
    lm_defaults.validate(config)

  @classmethod
  def build(cls, config: ml_collections.ConfigDict, workdir: str) -> "LMTask":
    """Builds the SED and saves its provenance, trains the tokenizer, encodes, makes the model."""
    task = cls(config, workdir)
    logging.info("stage: data (%s)", config.dataset)
    task.set_sed(load_sed(config))
    return task

  def set_sed(self, sed: qa_data.QASED) -> None:
    """Makes `sed` this task's data: saves its provenance (and data/qa.jsonl) in the workdir,
    trains (or loads) the tokenizer there, encodes D and the test split, picks the utility rows
    and the prompts, and creates the model."""
    config = self.config
    self.sed = sed
    data_dir = os.path.join(self.workdir, "data")
    if utils.is_main_process():
      qa_data.save_provenance(sed, os.path.join(data_dir, "provenance.npz"))
    texts = [str(t) for part in (sed.train, sed.test, sed.probes)
             for key in ("question", "answer") for t in part[key]]
    self.tokenizer = tokenizer_lib.Tokenizer.train(texts, data_dir,
                                                   int(config.tokenizer.vocab_size))
    max_len = int(config.tokenizer.max_len)
    self.encoded = {split: encode(self.tokenizer, part, max_len, split)
                    for split, part in (("train", sed.train), ("test", sed.test))}
    target_ids = np.sort(sed.train["id"][sed.train["kind"] == sed_lib.TARGET])
    position = {int(i): row for row, i in enumerate(sed.train["id"])}
    self.target_rows = np.asarray([position[int(t)] for t in target_ids], np.int64)
    rest_rows = np.flatnonzero(sed.train["kind"] == sed_lib.REST)
    rng = np.random.default_rng([int(config.qa.seed), 21])
    self.utility_rows = np.sort(rng.permutation(rest_rows)[:UTILITY_SAMPLE])
    questions = {"target": sed.train["question"][self.target_rows],
                 "probe": sed.probes["question"],
                 "rest": sed.train["question"][self.utility_rows]}
    self.prompts = {split: self.tokenizer.encode_prompts(list(text), max_len)
                    for split, text in questions.items()}
    self.model = models.get(config.model, self.tokenizer.vocab_size,
                            **dict(config.model_kwargs.to_dict(), max_len=max_len))
    train_enc, kind = self.encoded["train"], self.encoded["train"]["kind"]
    self.train, self.val = train_enc, self.encoded["test"]
    self.forget = {key: value[kind == sed_lib.TARGET] for key, value in train_enc.items()}
    self.retain = {key: value[kind != sed_lib.TARGET] for key, value in train_enc.items()}
    self.num_classes = self.tokenizer.vocab_size
    counts = {name: int(np.sum(kind == k)) for k, name in enumerate(sed_lib.KIND_NAMES)}
    logging.info("QA SED: |D|=%d (%s), |test|=%d, %d probes; vocabulary %d, max_len %d",
                 len(sed.train["id"]), counts, len(sed.test["id"]), len(sed.probes["id"]),
                 self.tokenizer.vocab_size, max_len)

  def tuning_task(self) -> "LMTask":
    """The task of the tuning SED (tune.py) in WORKDIR/tuning, with its own tokenizer, encoded
    data and model: the QA SED of `qa.seed = tune.sed_seed` (`tuning_sed`: for the offline
    generator another fictitious world, for a tfds dataset other pairs), without any example
    that asks an evaluated target's question, its ids above every evaluated id; or, with
    `tune.mode='oracle'`, the evaluated SED itself. A `jsonl:` dataset fixes its targets, so it
    tunes only in oracle mode (`lm.defaults.check_tune` refuses the rest before any work).
    Provenance: WORKDIR/tuning/data/{provenance.npz, qa.jsonl}."""
    workdir = os.path.join(self.workdir, "tuning")
    if self.config.tune.mode == "oracle":
      tuner = LMTask(self.config, workdir)
      tuner.set_sed(self.sed)
      return tuner
    config = copy.deepcopy(self.config)
    config.qa.seed = int(self.config.tune.sed_seed)
    tuner = LMTask(config, workdir)
    logging.info("stage: tuning data (%s, qa.seed %d)", config.dataset, config.qa.seed)
    tuner.set_sed(tuning_sed(self.sed, config))
    return tuner

  def tuning_scores(self, original, clean, state) -> tuple[dict[str, float], float]:
    """Mean residues of `tune.objective` on this SED's targets (`lm/evaluate.py`, against this
    task's `original` and `clean`, whose scores are computed once), and the utility that stands
    for the image track's test accuracy: ROUGE-L recall of the answers to unrelated training
    questions (`rouge_l.rest`)."""
    if not hasattr(self, "_reference_scores"):
      self._reference_scores = {name: lm_evaluate.model_scores(self, s)
                                for name, s in (("original", original), ("clean", clean))}
    scores = {**self._reference_scores, "trial": lm_evaluate.model_scores(self, state)}
    records, _ = lm_evaluate.evaluate(self, scores)
    record = records["trial"]
    parts = {score: float(record["residue"][score])
             for score in config_lib.as_tuple(self.config.tune.objective)}
    return parts, float(record["rouge_l"]["rest"])

  def init_state(self, rng: jax.Array):
    return steps.create_state(self.model, rng, int(self.config.tokenizer.max_len))

  def trainer(self):
    return steps.train_from_scratch

  def evaluate(self, run: base.SeedRun) -> None:
    """Likelihoods, generations and membership scores of every model; residues per target."""
    scores = {name: lm_evaluate.model_scores(self, state) for name, state in run.states.items()}
    run.records, run.rows = lm_evaluate.evaluate(self, scores)
    run.extra["generations"] = [
        {"model": name, "question": q, "answer": a, "split": split}
        for name, score in scores.items() for split in ("target", "probe")
        for q, a in zip(score["questions"][split], score["generated"][split])]

  def summarize(self, runs: dict[int, base.SeedRun],
                status: dict[str, str]) -> dict[str, Any]:
    """summary.json (`lm_report.build_summary`), with the tuned choices (`methods.<m>.tuning`,
    `tuning`) when methods were tuned."""
    records = {seed: run.records for seed, run in runs.items()}
    return lm_report.build_summary(self.config, self, records, status)

  def write_report(self, summary: dict[str, Any], runs: dict[int, base.SeedRun]) -> str:
    text = lm_report.markdown_report(summary)
    if utils.is_main_process():
      report_dir = os.path.join(self.workdir, "report")
      per_target = [{"seed": seed, **row} for seed, run in runs.items() for row in run.rows]
      generations = [{"seed": seed, **row} for seed, run in runs.items()
                     for row in run.extra["generations"]]
      utils.write_json(os.path.join(report_dir, "summary.json"), summary)
      utils.write_text(os.path.join(report_dir, "results.csv"), tables.to_csv(
          tables.results_rows({seed: run.records for seed, run in runs.items()})))
      utils.write_text(os.path.join(report_dir, "per_target.csv"), tables.to_csv(per_target))
      utils.write_text(os.path.join(report_dir, "generations.jsonl"),
                       "".join(json.dumps(row) + "\n" for row in generations))
      utils.write_text(os.path.join(report_dir, "report.md"), text)
    return text


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


def tuning_sed(sed: qa_data.QASED, config: ml_collections.ConfigDict) -> qa_data.QASED:
  """The tuning SED of a study whose SED is `sed`, for `config` with `qa.seed = tune.sed_seed`.

  The QA SED that `config` names (`load_sed`), made disjoint from `sed`: every example whose
  question is one of `sed`'s target, similar or probe questions is left out (a target so left
  out takes its paraphrases and probes along), and every id and group is shifted above the
  largest id of `sed`, so no id of the tuning SED is an evaluated one.

  Raises:
    config_lib.ConfigError: no target is left (naming `tune.sed_seed`).
  """
  return disjoint_from(load_sed(config), sed, int(config.qa.seed), int(config.tune.sed_seed))


def disjoint_from(drawn: qa_data.QASED, sed: qa_data.QASED, seed: int,
                  sed_seed: int) -> qa_data.QASED:
  """`drawn` without the examples that ask `sed`'s target, similar or probe questions, its ids
  above every id of `sed` (`tuning_sed`); `seed` orders D (`qa_data.build_from_records`)."""
  evaluated = {str(q) for q in sed.train["question"][sed.train["kind"] != sed_lib.REST]}
  evaluated |= {str(q) for q in sed.probes["question"]}
  records = qa_data.qa_records(drawn)
  dropped = {r["id"] for r in records if r["kind"] == "target" and r["question"] in evaluated}
  kept = [r for r in records if r["question"] not in evaluated and r["group"] not in dropped]
  left = sum(r["kind"] == "target" for r in kept)
  config_lib.require(left > 0, "tune.sed_seed", sed_seed,
                     "draws only targets that ask the evaluated targets' questions; choose "
                     "another tuning seed")
  if len(kept) < len(records):
    logging.warning("tuning SED: left out %d example(s) asking an evaluated target's, "
                    "paraphrase's or probe's question (%d tuning targets among them); %d "
                    "targets remain", len(records) - len(kept), len(dropped), left)
  # Every source numbers its examples from 0: above the largest evaluated id, none is shared.
  shift = 1 + max(int(part["id"].max(initial=-1)) for part in (sed.train, sed.test, sed.probes))
  for record in kept:
    record["id"] += shift
    if record["group"] >= 0:
      record["group"] += shift
  return qa_data.build_from_records(kept, probes_per_target=0, seed=seed)


def encode(tokenizer: tokenizer_lib.Tokenizer, part: dict[str, np.ndarray], max_len: int,
           split: str) -> dict[str, np.ndarray]:
  """Tokens and loss_mask of the QA pairs of `part`, with its id, kind and group columns."""
  arrays = tokenizer.encode_pairs(list(part["question"]), list(part["answer"]), max_len)
  if int(arrays["truncated"]):
    logging.warning("%d %s question(s) longer than tokenizer.max_len=%d were cut from the left",
                    int(arrays["truncated"]), split, max_len)
  return {"tokens": arrays["tokens"], "loss_mask": arrays["loss_mask"],
          **{key: part[key] for key in ("id", "kind", "group")}}
