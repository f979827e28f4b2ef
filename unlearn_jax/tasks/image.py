"""The image-classification task of a study (docs/design.md §2.2).

Data: a classification dataset (`data/sources.py`), subsampled per class to `train_size` /
`test_size`, and its SED (`data/sed.py`); targets chosen by `sed.selection` (`atypical` ranks
candidates with a probe model trained on the other half of the data), similar samples made by
`sed.generator` (`nearest` with `sed.similarity='embedding'` compares the features of a probe
trained without the targets, `neighbour_features`). Models: `config.model`
trained by `train.train_from_scratch`. Scores: the metric registry (`evaluate/registry.py`):
per-example scores of the logits on every split, LiRA against reference models trained once
per study (`before_seeds`), metrics of the trained models (parameter distance, relearning),
and across the seeds the ε estimate and U-LiRA (`evaluate/across_seeds.py`). Plugged in:
SISA's ensemble references, the remedies (`remedy_track.py`) and training-data reconstruction
(`recon_track.py`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from unlearn_jax import defaults, models, recipe, recon_track, remedy_track, train
from unlearn_jax import config as config_lib
from unlearn_jax import utils
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.data import sources
from unlearn_jax.evaluate import across_seeds, evaluator, registry, stats
from unlearn_jax.remedies import detect
from unlearn_jax.report import protocol, tables
from unlearn_jax.tasks import (base, control, lira_references, sisa_references, specificity,
                               stream)


class ImageTask(base.Task):
  """Image classification: SED of a classification dataset, a CNN/MLP, the metric registry."""
  track = "image"
  sed: sed_lib.SED
  lira: evaluator.LiraReferences | None = None

  @staticmethod
  def validate(config: ml_collections.ConfigDict) -> None:
    defaults.validate(config)

  @classmethod
  def build(cls, config: ml_collections.ConfigDict, workdir: str) -> "ImageTask":
    """Loads the dataset, builds and saves the SED, and creates the model and the mesh."""
    task = cls(config, workdir)
    logging.info("stage: data")
    data_dir = config.data_dir or None
    splits = sources.load(config.dataset, data_dir)
    splits = {
        "train": sed_lib.stratified_subset(splits["train"], config.train_size, config.sed.seed),
        "test": sed_lib.stratified_subset(splits["test"], config.test_size, config.sed.seed),
    }
    task.num_classes = sources.num_classes(config.dataset, data_dir)
    task.model = models.get(config.model, task.num_classes, **config.model_kwargs.to_dict())
    logging.info("mesh: %d device(s) of %s, %d process(es)", task.mesh.devices.size,
                 jax.devices()[0].platform, jax.process_count())
    atypicality = None
    if config.sed.selection == "atypical":
      atypicality = probe_margins(config, workdir, splits["train"], task.model, task.mesh,
                                  task.writer)
    task.atypicality = atypicality
    features = neighbour_features(config, config.sed, workdir, splits["train"], atypicality,
                                  task.model, task.mesh, task.writer)
    task.set_sed(sed_lib.build(splits, config.sed, atypicality, features))
    if utils.is_main_process():
      sed_lib.save_provenance(task.sed, os.path.join(workdir, "data", "provenance.npz"))
      sed_lib.save_neighbours(task.sed, os.path.join(workdir, "data", "neighbours.npz"),
                              config.sed.similarity)
    counts = {name: int(np.sum(task.sed.train["kind"] == kind))
              for kind, name in enumerate(sed_lib.KIND_NAMES)}
    logging.info("SED: |D|=%d (%s), |test|=%d", len(task.sed.train["id"]), counts,
                 len(task.sed.test["id"]))
    return task

  def set_sed(self, sed: sed_lib.SED) -> None:
    self.sed = sed
    self.train, self.forget, self.retain, self.val = sed.train, sed.forget, sed.retain, sed.test

  def tuning_task(self) -> "ImageTask":
    """The tuning SED (tune.py, `tuning_sed`): targets drawn with `tune.sed_seed` from R, their
    own similar samples, the same test split; or, with `tune.mode='oracle'`, the evaluated SED
    itself. Its embedding probe (`nearest` neighbours by embedding) trains under
    WORKDIR/tuning."""
    tuner = ImageTask(self.config, os.path.join(self.workdir, "tuning"))
    tuner.model, tuner.num_classes, tuner.atypicality = self.model, self.num_classes, None
    if self.config.tune.mode == "oracle":
      tuner.set_sed(self.sed)
    else:
      embed = lambda split, sed_config, scores: neighbour_features(
          self.config, sed_config, tuner.workdir, split, scores, self.model, self.mesh,
          self.writer)
      tuner.set_sed(tuning_sed(self.sed, self.config, self.atypicality, embed))
    if utils.is_main_process():
      sed_lib.save_provenance(tuner.sed, os.path.join(tuner.workdir, "data", "provenance.npz"))
      sed_lib.save_neighbours(tuner.sed, os.path.join(tuner.workdir, "data", "neighbours.npz"),
                              self.config.sed.similarity)
    return tuner

  def tuning_scores(self, original: train.TrainState, clean: train.TrainState,
                    state: train.TrainState) -> tuple[dict[str, float], float]:
    """Mean residues of `tune.objective` on this SED's targets, and test accuracy."""
    if not hasattr(self, "_reference_logits"):
      self._reference_logits = {name: {"train": self.predict(s, self.sed.train),
                                       "test": self.predict(s, self.sed.test)}
                                for name, s in (("original", original), ("clean", clean))}
    logits = {**self._reference_logits, "trial": {"train": self.predict(state, self.sed.train),
                                                  "test": self.predict(state, self.sed.test)}}
    records, _ = evaluator.evaluate_models(logits, self.sed, self.config.eval.min_gap,
                                           svc_max_train=0)
    record = records["trial"]
    parts = {score: float(record["residue"][score])
             for score in config_lib.as_tuple(self.config.tune.objective)}
    return parts, float(record["acc"]["test"])

  def init_state(self, rng: jax.Array) -> train.TrainState:
    return train.create_state(self.model, rng, self.sed.train["image"].shape[1:])

  def trainer(self):
    return train.train_from_scratch

  def plugins(self) -> list[base.Plugin]:
    return [sisa_references.SisaReferences(), remedy_track.RemedyPlugin(),
            recon_track.ReconPlugin(), control.Control(), specificity.Specificity(),
            stream.Stream()]

  def predict(self, state: train.TrainState, data: dict) -> np.ndarray:
    """Logits of `state` on every example of `data`."""
    return train.predict(state, data, self.config.eval.batch_size, self.mesh)

  def models_before_seeds(self) -> int:
    return int(self.config.eval.lira.num_models)

  def before_seeds(self) -> None:
    self.lira = lira_references.train(self)

  def evaluate(self, run: base.SeedRun) -> None:
    """Scores of the logits (and LiRA) on every split, then the metrics of the trained models."""
    sed, eval_config = self.sed, self.config.eval
    logits = {name: {"train": self.predict(state, sed.train),
                     "test": self.predict(state, sed.test)}
              for name, state in run.states.items()}
    run.extra["logits"] = logits  # for the plugins that score examples (specificity)
    run.records, run.rows = evaluator.evaluate_models(
        logits, sed, eval_config.min_gap, lira=self.lira,
        svc_max_train=eval_config.svc_max_train, references=run.references)
    for name, record in run.records.items():
      record["acc_same_class"] = remedy_track.same_class_accuracy(logits[name], sed)
      record.update(run.extra_records.get(name, {}))
    model_inputs = registry.ModelInputs(
        states=run.states, forget=sed.forget, eval_config=eval_config, mesh=self.mesh,
        ensembles=run.references, train_step=train.jit_train_step,
        relearn_optimizer=train.make_optimizer("sgd", float(eval_config.relearn.lr), 1,
                                               momentum=0.0))
    for name, record in run.records.items():
      if name not in run.residue_only:
        for metric in registry.needing("model"):  # parameter distance, relearn steps, ...
          record.update(metric.compute(name, model_inputs))

  def summarize(self, runs: dict[int, base.SeedRun],
                status: dict[str, str]) -> dict[str, Any]:
    """summary.json: per-method means and intervals over seeds, the floor, the attacks across
    seeds; runs scored on residue only (a remedy's sweep) are left to their plugin."""
    records = {seed: {name: record for name, record in run.records.items()
                      if name not in run.residue_only} for seed, run in runs.items()}
    hidden = set().union(*(run.residue_only for run in runs.values()))
    summary = tables.build_summary(self.config, records, {
        key: text for key, text in status.items()
        if key.rsplit("/", 1)[0] not in hidden and "/" not in key.rsplit("/", 1)[0]})
    summary["status"] = status  # every run's (the residue-only runs report elsewhere)
    references = {name: {"original": pair[0], "clean": pair[1]}
                  for run in runs.values() for name, pair in run.references.items()
                  if name in summary["methods"]}
    if references:  # models scored against other residue references (SISA's ensembles)
      summary["residue_references"] = references
    per_target = [{"seed": seed, **row} for seed, run in runs.items() for row in run.rows]
    across_seeds.add(summary, per_target, self.config.eval.epsilon_min_seeds)
    stats.add_residue_statistics(
        summary, per_target,
        scores=evaluator.RESIDUE_SCORES + evaluator.EXTRA_RESIDUE_SCORES + ("recon_ssim",))
    protocol.add_damaged(summary)
    for name, chosen in self.tuned.items():
      if name in summary["methods"]:
        summary["methods"][name]["tuning"] = chosen
    if self.tuned:
      summary["tuning"] = {key: self.config.tune[key] for key in self.config.tune.keys()}
    return summary

  def write_report(self, summary: dict[str, Any], runs: dict[int, base.SeedRun]) -> str:
    records = {seed: {name: record for name, record in run.records.items()
                      if name not in run.residue_only} for seed, run in runs.items()}
    per_target = [{"seed": seed, **row} for seed, run in runs.items() for row in run.rows]
    return tables.write(self.workdir, summary, records, per_target)


def tuning_sed(sed: sed_lib.SED, config: ml_collections.ConfigDict,
               atypicality: np.ndarray | None,
               embed: Callable[[dict, ml_collections.ConfigDict, np.ndarray | None],
                               np.ndarray | None] | None = None) -> sed_lib.SED:
  """The tuning SED of a study whose SED is `sed`: `config.sed` with seed `tune.sed_seed`, built
  on R (D's rows that are neither evaluated targets nor their similar samples), so no id of the
  tuning SED's targets or similar samples is one of the evaluated SED's T ∪ S.

  Similar samples a synthetic generator appends get ids above every id of `sed`; the `nearest`
  generator's are rows of R and keep their ids (its tuning targets and neighbours come from R,
  S is not in it). `embed(split, sed_config, scores)` gives the features `sed_lib.build` needs
  for `nearest` neighbours by embedding (`neighbour_features`), for R and the tuning SED's
  own targets.
  """
  base_rows = np.flatnonzero(sed.train["kind"] == sed_lib.REST)  # D's rows, minus T (and S)
  base = {key: sed.train[key][base_rows] for key in ("image", "label", "id")}
  sed_config = ml_collections.ConfigDict(config.sed.to_dict())
  sed_config.seed = int(config.tune.sed_seed)
  scores = None if atypicality is None else atypicality[base_rows]
  features = None
  if sed_lib.needs_features(sed_config):
    if embed is None:
      raise ValueError("the tuning SED of sed.similarity='embedding' needs `embed`")
    features = embed(base, sed_config, scores)
  tuning = sed_lib.build({"train": base, "test": sed.test}, sed_config, scores, features)
  # Only the similar samples `build` appended have new ids; rows of R keep theirs.
  appended = ~np.isin(tuning.train["id"], base["id"])
  shift = int(max(sed.train["id"].max(), sed.test["id"].max())) + 1 - int(
      tuning.train["id"][appended].min(initial=0))
  ids = tuning.train["id"].copy()
  ids[appended] += max(shift, 0)
  return dataclasses.replace(tuning, train={**tuning.train, "id": ids})


def neighbour_features(config: ml_collections.ConfigDict, sed_config: ml_collections.ConfigDict,
                       workdir: str, train_split: dict, atypicality: np.ndarray | None,
                       model: Any, mesh: jax.sharding.Mesh,
                       writer: utils.MetricWriter) -> np.ndarray | None:
  """Features of every training row that rank the `nearest` generator's candidates under
  `sed.similarity='embedding'` (None when `sed_config` needs none: `sed_lib.needs_features`).

  The probe (`recipe.neighbour_probe`) trains with the study's recipe (`config.train`) on the
  training split without the targets that `sed_config` picks (`sed_lib.target_rows`), and is
  checkpointed under checkpoints/neighbours/seed_<sed.seed> of `workdir`, so a rerun restores
  it. The features are its penultimate-layer activations in evaluation mode (the input of its
  last Dense layer, `remedies.detect.embeddings`).

  Why not the selection probe of `sed.selection='atypical'`, which exists anyway: it trains on
  a random half of the split. Under random or class-balanced selection that half may hold a
  target, whose features would then carry what the probe fitted of that very example, so
  similarity to t would be measured through t's own influence, the quantity the study
  measures. And under any selection it saw half of the candidates and not the other half, which
  a trained network embeds differently (seen examples sit tighter in their class). This probe
  saw no target and every candidate.
  """
  if not sed_lib.needs_features(sed_config):
    return None
  targets = sed_lib.target_rows(train_split, sed_config, atypicality)
  probe = recipe.neighbour_probe(sed_config, train_split, targets)
  logging.info("stage: neighbour probe (%d examples, the training split without its %d "
               "targets; its features rank the nearest neighbours)", len(probe.data["label"]),
               len(targets))
  state, _ = recipe.fit(
      probe, lambda key: train.create_state(model, key, train_split["image"].shape[1:]),
      config.train, mesh=mesh, workdir=workdir, writer=writer)
  return detect.embeddings(state, train_split["image"], mesh=mesh,
                           batch_size=int(config.eval.batch_size))


def probe_margins(config: ml_collections.ConfigDict, workdir: str, train_split: dict,
                  model: Any, mesh: jax.sharding.Mesh,
                  writer: utils.MetricWriter) -> np.ndarray:
  """Margins of a probe model on the half of the training split it did not train on.

  The probe trains with the study's recipe on a random half (seeded by `sed.seed`); the other
  half are the candidates for `sed.selection='atypical'` and get the probe's logit margin
  (low = atypical: the probe, which never saw them, finds them hard). Rows the probe trained on
  get NaN. The probe (`recipe.selection_probe`) is checkpointed under checkpoints/selection/.
  """
  probe, candidate_rows = recipe.selection_probe(config, train_split)
  logging.info("stage: selection probe (%d examples; scores %d candidates for atypical "
               "targets)", len(probe.data["label"]), len(candidate_rows))
  state, _ = recipe.fit(
      probe, lambda key: train.create_state(model, key, train_split["image"].shape[1:]),
      config.train, mesh=mesh, workdir=workdir, writer=writer)
  candidates = {key: train_split[key][candidate_rows] for key in ("image", "label")}
  logits = train.predict(state, candidates, config.eval.batch_size, mesh)
  margins = np.full(len(train_split["label"]), np.nan)
  margins[candidate_rows] = registry.get("margin").score(
      logits, train_split["label"][candidate_rows])
  return margins
