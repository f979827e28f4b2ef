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
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

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
    task.sed = sed = load_sed(config)
    data_dir = os.path.join(workdir, "data")
    if utils.is_main_process():
      qa_data.save_provenance(sed, os.path.join(data_dir, "provenance.npz"))
    texts = [str(t) for part in (sed.train, sed.test, sed.probes)
             for key in ("question", "answer") for t in part[key]]
    task.tokenizer = tokenizer_lib.Tokenizer.train(texts, data_dir,
                                                   int(config.tokenizer.vocab_size))
    max_len = int(config.tokenizer.max_len)
    task.encoded = {split: encode(task.tokenizer, part, max_len, split)
                    for split, part in (("train", sed.train), ("test", sed.test))}
    target_ids = np.sort(sed.train["id"][sed.train["kind"] == sed_lib.TARGET])
    position = {int(i): row for row, i in enumerate(sed.train["id"])}
    task.target_rows = np.asarray([position[int(t)] for t in target_ids], np.int64)
    rest_rows = np.flatnonzero(sed.train["kind"] == sed_lib.REST)
    rng = np.random.default_rng([int(config.qa.seed), 21])
    task.utility_rows = np.sort(rng.permutation(rest_rows)[:UTILITY_SAMPLE])
    questions = {"target": sed.train["question"][task.target_rows],
                 "probe": sed.probes["question"],
                 "rest": sed.train["question"][task.utility_rows]}
    task.prompts = {split: task.tokenizer.encode_prompts(list(text), max_len)
                    for split, text in questions.items()}
    task.model = models.get(config.model, task.tokenizer.vocab_size,
                            **dict(config.model_kwargs.to_dict(), max_len=max_len))
    train_enc, kind = task.encoded["train"], task.encoded["train"]["kind"]
    task.train, task.val = train_enc, task.encoded["test"]
    task.forget = {key: value[kind == sed_lib.TARGET] for key, value in train_enc.items()}
    task.retain = {key: value[kind != sed_lib.TARGET] for key, value in train_enc.items()}
    task.num_classes = task.tokenizer.vocab_size
    counts = {name: int(np.sum(kind == k)) for k, name in enumerate(sed_lib.KIND_NAMES)}
    logging.info("QA SED: |D|=%d (%s), |test|=%d, %d probes; vocabulary %d, max_len %d",
                 len(sed.train["id"]), counts, len(sed.test["id"]), len(sed.probes["id"]),
                 task.tokenizer.vocab_size, max_len)
    return task

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


def encode(tokenizer: tokenizer_lib.Tokenizer, part: dict[str, np.ndarray], max_len: int,
           split: str) -> dict[str, np.ndarray]:
  """Tokens and loss_mask of the QA pairs of `part`, with its id, kind and group columns."""
  arrays = tokenizer.encode_pairs(list(part["question"]), list(part["answer"]), max_len)
  if int(arrays["truncated"]):
    logging.warning("%d %s question(s) longer than tokenizer.max_len=%d were cut from the left",
                    int(arrays["truncated"]), split, max_len)
  return {"tokens": arrays["tokens"], "loss_mask": arrays["loss_mask"],
          **{key: part[key] for key in ("id", "kind", "group")}}
