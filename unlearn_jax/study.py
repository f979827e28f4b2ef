"""One study: data -> reference models -> unlearning methods -> evaluation -> report.

`run(config, workdir)` builds the SED, trains `original` (D), `retrain` (D \\ T), `clean` (R)
and `clean_alt` (R, another seed: the noise floor) for every seed, runs each configured method
from `original`, evaluates every model on target / similar / rest / test, and writes the report
files. Every model is checkpointed, so rerunning the same command resumes where it stopped and
skips what is complete. A method that fails is recorded and the others go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import traceback
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
from absl import logging

from unlearn_jax import config as config_lib
from unlearn_jax import defaults, ensemble, methods, models, parallel, preemption, recipe
from unlearn_jax import recon_track, remedy_track, train, utils
from unlearn_jax import workdir as workdir_lib
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.data import sources
from unlearn_jax.evaluate import evaluator, mia, registry
from unlearn_jax.methods import sisa
from unlearn_jax.report import tables

@dataclasses.dataclass
class Context:
  """What every stage of a study needs."""
  config: ml_collections.ConfigDict
  workdir: str
  sed: sed_lib.SED
  model: Any
  num_classes: int
  mesh: jax.sharding.Mesh
  writer: utils.MetricWriter
  models_done: int = 0  # reference and unlearned models finished (for the progress line)
  models_total: int = 0
  recon_failures: dict = dataclasses.field(default_factory=dict)  # reconstruction-track errors
  detection: dict = dataclasses.field(default_factory=dict)  # {seed: remedy detection report}
  started: float = dataclasses.field(default_factory=time.perf_counter)

  def progress(self) -> str:
    """'model 3 of 7, study ETA 2m10s' for the stage lines."""
    return progress_line(self.models_done, self.models_total, self.started)

  def checkpoint_dir(self, name: str, seed: int) -> str:
    return workdir_lib.checkpoint_dir(self.workdir, name, seed)

  def init_state(self, rng: jax.Array) -> train.TrainState:
    return train.create_state(self.model, rng, self.sed.train["image"].shape[1:])


def progress_line(done: int, total: int, started: float) -> str:
  """'model 3 of 7, study ETA 2m10s': the progress part of a study's stage lines.

  Args:
    done: models finished so far.
    total: models the study trains or unlearns in all.
    started: `time.perf_counter()` when the study began.

  Returns:
    The line; the ETA (mean time per finished model times those left) from the first model on.
  """
  elapsed = time.perf_counter() - started
  eta = f", study ETA {utils.format_seconds(elapsed / done * (total - done))}" if done else ""
  return f"model {done + 1} of {total}{eta}"


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) the study and returns its summary (also written to report/).

  Raises:
    config_lib.ConfigError: for an invalid config, before anything is written.
    preemption.Preempted: after SIGTERM, once the running model is checkpointed.
  """
  utils.quiet_library_logs()
  preemption.install()
  defaults.validate(config)
  workdir = os.path.abspath(workdir)
  workdir_lib.prepare(config, workdir)
  context = build_context(config, workdir)
  names = method_names(config)
  context.models_total = config.eval.lira.num_models + len(config_lib.as_tuple(config.seeds)) * (
      4 + len([n for n in names if n != "retrain"])
      + (len(sisa.REFERENCE_NAMES) if sisa_runs(names) else 0))
  lira = train_lira_references(context)
  records: dict[int, dict[str, dict]] = {}
  per_target: list[dict] = []
  status: dict[str, str] = {}
  for seed in (int(s) for s in config_lib.as_tuple(config.seeds)):
    records[seed], rows = run_seed(context, seed, status, lira)
    per_target.extend({"seed": seed, **row} for row in rows)
  logging.info("stage: report")
  sweeps = {seed: {name: records[seed].pop(name) for name in list(records[seed])
                   if remedy_track.is_sweep(name)} for seed in records}
  summary = tables.build_summary(config, records, {
      key: text for key, text in status.items() if not remedy_track.is_sweep(key)})
  summary["status"] = status  # the sweep's runs too (their results are under `remedy`)
  if any("sisa_original" in per_model for per_model in records.values()):
    pair = dict(zip(("original", "clean"), sisa.REFERENCE_NAMES))
    summary["residue_references"] = {  # models scored against other residue references
        name: pair for name in summary["methods"]
        if name in sisa_runs([name]) or name in sisa.REFERENCE_NAMES}
  add_across_seed_attacks(summary, per_target, config.eval.epsilon_min_seeds)
  add_remedy_results(context, summary, records, sweeps)
  if context.recon_failures:
    summary["recon_failures"] = context.recon_failures
  report = tables.write(workdir, summary, records, per_target)
  logging.info("report written to %s", os.path.join(workdir, "report"))
  if utils.is_main_process():  # one copy of the report, not one per process
    print(report, flush=True)
  return summary


def build_context(config: ml_collections.ConfigDict, workdir: str) -> Context:
  """Loads the dataset, builds and saves the SED, and creates the model and the mesh."""
  logging.info("stage: data")
  data_dir = config.data_dir or None
  splits = sources.load(config.dataset, data_dir)
  splits = {
      "train": sed_lib.stratified_subset(splits["train"], config.train_size, config.sed.seed),
      "test": sed_lib.stratified_subset(splits["test"], config.test_size, config.sed.seed),
  }
  num_classes = sources.num_classes(config.dataset, data_dir)
  model = models.get(config.model, num_classes, **config.model_kwargs.to_dict())
  mesh = parallel.make_mesh()
  logging.info("mesh: %d device(s) of %s, %d process(es)", mesh.devices.size,
               jax.devices()[0].platform, jax.process_count())
  writer = utils.MetricWriter(os.path.join(workdir, "metrics.jsonl"))
  atypicality = None
  if config.sed.selection == "atypical":
    atypicality = probe_margins(config, workdir, splits["train"], model, mesh, writer)
  sed = sed_lib.build(splits, config.sed, atypicality)
  if utils.is_main_process():
    sed_lib.save_provenance(sed, os.path.join(workdir, "data", "provenance.npz"))
  counts = {name: int(np.sum(sed.train["kind"] == kind))
            for kind, name in enumerate(sed_lib.KIND_NAMES)}
  logging.info("SED: |D|=%d (%s), |test|=%d", len(sed.train["id"]), counts,
               len(sed.test["id"]))
  return Context(config, workdir, sed, model, num_classes, mesh, writer)


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


@contextlib.contextmanager
def method_status(status: dict[str, str], key: str) -> Iterator[None]:
  """Runs the block of one method's run and records how it ended in `status[key]`.

  'ok'; 'diverged at step N: ...' for a FloatingPointError (train.DivergedError, or a method's
  own check); 'failed: Type: message' for any other exception, logged with its traceback and
  not raised: a failed method must not cost the others their results.
  """
  try:
    yield
    status[key] = "ok"
  except FloatingPointError as error:
    status[key] = f"diverged at step {getattr(error, 'step', '?')}: {error}"
    logging.error("%s diverged: %s", key, error)
  except Exception as error:  # pylint: disable=broad-except
    status[key] = f"failed: {type(error).__name__}: {error}"
    logging.error("%s failed:\n%s", key, traceback.format_exc())


def run_seed(context: Context, seed: int, status: dict[str, str],
             lira: evaluator.LiraReferences | None = None
             ) -> tuple[dict[str, dict], list[dict]]:
  """Trains the references and runs the methods for one seed; returns records and rows."""
  config, sed = context.config, context.sed
  states, times = {}, {}
  for name in recipe.NAMES:
    states[name], times[name] = train_reference(context, name, seed)
    context.models_done += 1

  names = method_names(config)
  detection, removed = None, {}
  if any(remedy_track.parse(name)[1] for name in names) or config.remedy.enabled:
    measures = config_lib.as_tuple(config.remedy.measures) if config.remedy.enabled else ()
    measures = tuple(dict.fromkeys(measures + (config.remedy.measure,)))
    detection = remedy_track.detect_all(config, sed, states["original"], context.mesh, measures)
    if config.remedy.enabled:
      context.detection[seed] = remedy_track.detection_report(config, detection)
  for name in names:
    key = f"{name}/seed_{seed}"
    if name == "retrain":  # exact unlearning is the retrain reference itself
      status[key] = "ok"
      continue
    with method_status(status, key):
      if remedy_track.parse(name)[1]:
        states[name], times[name], removed[name] = run_remedy(context, name, states, seed,
                                                              detection)
      else:
        states[name], times[name] = run_method(context, name, states["original"], seed)
    context.models_done += 1
  ensembles = add_sisa_references(context, seed, names, states, times, status)

  logging.info("stage: evaluate seed_%d", seed)
  logits = {name: {"train": predict(context, state, sed.train),
                   "test": predict(context, state, sed.test)}
            for name, state in states.items()}
  eval_config = context.config.eval
  records, rows = evaluator.evaluate_models(logits, sed, eval_config.min_gap, lira=lira,
                                            svc_max_train=eval_config.svc_max_train,
                                            references=ensembles)
  for name, record in records.items():
    record["acc_same_class"] = remedy_track.same_class_accuracy(logits[name], sed)
    if name in removed:
      record["remedy"] = removed[name]
  if context.config.recon.enabled:
    failures: dict[str, str] = {}
    track_records, track_rows = recon_track.run(
        context.config, context.workdir, sed, seed,
        [n for n in names if not remedy_track.parse(n)[1]], context.mesh, failures)
    recon_track.merge(records, rows, track_records, track_rows)
    for name, error in failures.items():
      context.recon_failures[f"{name}/seed_{seed}"] = error
  model_inputs = registry.ModelInputs(
      states=states, forget=sed.forget, eval_config=eval_config, mesh=context.mesh,
      ensembles=ensembles, train_step=train.jit_train_step,
      relearn_optimizer=train.make_optimizer("sgd", float(eval_config.relearn.lr), 1,
                                             momentum=0.0))
  for name, record in records.items():
    record["time_s"] = times[name]
    if remedy_track.is_sweep(name):
      continue  # the trade-off sweep reports residue and utility only
    for metric in registry.needing("model"):  # parameter distance, relearn steps, ...
      record.update(metric.compute(name, model_inputs))
  return records, rows


def sisa_runs(names) -> list[str]:
  """The runs whose model is SISA's shard ensemble: `sisa` and its remedies (`sisa+nbr`, ...)."""
  return [name for name in names if remedy_track.parse(name)[0] == "sisa"]


def add_sisa_references(context: Context, seed: int, names, states: dict, times: dict,
                        status: dict[str, str]) -> dict[str, tuple[str, str]]:
  """Adds SISA's own references to `states`/`times` when a SISA run succeeded.

  SISA's model is an ensemble of shard models (log of the mean softmax), so its residue is
  measured against ensembles with the same shards, initialisations and seeds
  (`sisa.references`): `sisa_original` on D (the ensemble the first SISA run trained, restored
  from that run's slice checkpoints; its time is that run's `train_s`) and `sisa_clean` on R
  (the shards without T ∪ S, checkpointed beside them; its time is this extra training, kept in
  checkpoints/sisa_clean/seed_<s>/info.json). When they cannot be built, the SISA runs are
  marked failed rather than scored against single models.

  Returns:
    {model: (its original, its clean)} for the SISA runs and the two references (empty without
    a successful SISA run).
  """
  runs = [name for name in sisa_runs(names) if name in states]
  if not runs:
    return {}
  sed, store = context.sed, context.checkpoint_dir(runs[0], seed)
  logging.info("stage: SISA references %s/seed_%d (%s)", " and ".join(sisa.REFERENCE_NAMES),
               seed, context.progress())
  outcome: dict[str, str] = {}
  with method_status(outcome, "references"):
    built = recipe.sisa_references(
        sed, context.config, seed, init_state=context.init_state,
        num_classes=context.num_classes, mesh=context.mesh, store=store, writer=context.writer)
  if outcome["references"] != "ok":
    for name in runs:
      states.pop(name)
      status[f"{name}/seed_{seed}"] = f"{outcome['references']} (building the SISA references)"
    return {}
  (original, original_info), (clean, clean_info) = (built[n] for n in sisa.REFERENCE_NAMES)
  run_info = os.path.join(store, "info.json")
  states["sisa_original"], times["sisa_original"] = original, float(
      utils.read_json(run_info)["train_s"] if os.path.exists(run_info)
      else original_info["wall_s"])
  states["sisa_clean"] = clean
  times["sisa_clean"] = workdir_lib.record_time(context.checkpoint_dir("sisa_clean", seed),
                                                clean_info, clean_info["wall_s"])
  context.models_done += len(sisa.REFERENCE_NAMES)
  pair = tuple(sisa.REFERENCE_NAMES)
  return {name: pair for name in runs + list(sisa.REFERENCE_NAMES)}


def method_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Every method run of a seed: `config.methods`, then the remedy runs and their sweep."""
  names = methods.resolve(config_lib.as_tuple(config.methods))
  extra = remedy_track.study_names(config) + remedy_track.sweep_names(config)
  return names + tuple(name for name in extra if name not in names)


def run_remedy(context: Context, name: str, states: dict[str, train.TrainState], seed: int,
               detection: remedy_track.Detection
               ) -> tuple[train.TrainState, float, dict[str, float]]:
  """Runs a remedy (`<method>+nbr|+wnbr|+dist`, maybe `@k=K`) from the original model.

  `retrain+...` trains like the `clean` reference (same initialisation and batch order), so
  with ground-truth neighbours it reproduces it exactly. Returns the state, the time and what
  was removed (count, and precision/recall of the removed set against provenance).
  """
  config, sed = context.config, context.sed
  base, suffix, k = remedy_track.parse(name)
  rows, weights = remedy_track.neighbours(config, detection, top_k=k)
  if suffix == "dist":
    rows = remedy_track.distributional_rows(sed, detection, len(rows), states["original"],
                                            context.mesh)
    weights = np.ones(len(rows), np.float32)
  forget, retain = remedy_track.unlearn_sets(sed, suffix, rows, weights)
  similar = sed.train["kind"][rows] == sed_lib.SIMILAR
  num_similar = int(np.sum(sed.train["kind"] == sed_lib.SIMILAR))
  removed = {"removed": float(len(rows)),
             "precision": float(similar.mean()) if len(rows) else float("nan"),
             "recall": float(similar.sum() / num_similar) if num_similar else float("nan")}
  directory = context.checkpoint_dir(name, seed)
  logging.info("stage: remedy %s/seed_%d (%d neighbours, precision %.2f, recall %.2f; "
               "|forget|=%d, |retain|=%d; %s)", name, seed, len(rows), removed["precision"],
               removed["recall"], len(forget["label"]), len(retain["label"]), context.progress())
  if base == "retrain":  # the `clean` reference's recipe, seed and checkpoint layout
    state, info = fit_reference(context, recipe.retrained(name, retain, seed))
    return state, info["time_s"], removed
  start = time.perf_counter()
  data = methods.UnlearnData(
      forget=forget, retain=retain, mesh=context.mesh, seed=seed,
      num_classes=context.num_classes, init_state=context.init_state,
      checkpoint_dir=directory, writer=context.writer, val=sed.test)
  state, info = methods.call(base, states["original"], data, config, recipe.method_rng(seed))
  elapsed = time.perf_counter() - start - float(info.get("train_s", 0.0))
  return state, workdir_lib.record_time(directory, info, elapsed), removed


def add_remedy_results(context: Context, summary: dict[str, Any],
                       records: dict[int, dict[str, dict]],
                       sweeps: dict[int, dict[str, dict]]) -> None:
  """summary['detection'] (mean ± CI over seeds), summary['remedy'] with the trade-off points,
  and report/plots/remedy_tradeoff.png."""
  config = context.config
  if not config.remedy.enabled:
    return
  detection = {}
  for measure in config_lib.as_tuple(config.remedy.measures):
    stats = {}
    for key in next(iter(context.detection.values()))[measure]:
      mean, half = tables.mean_ci95([context.detection[s][measure][key]
                                     for s in context.detection])
      stats[key], stats[f"{key}_ci"] = mean, half
    detection[measure] = stats
  summary["detection"] = detection
  chosen = set(config_lib.as_tuple(config.remedy.sweep_methods)) | set(
      remedy_track.study_names(config)) | {"original", "clean"}
  per_seed = {seed: {**{name: record for name, record in records[seed].items()
                        if name in chosen}, **sweeps[seed]} for seed in records}
  aggregated = tables.aggregate(per_seed)
  points = remedy_track.tradeoff_points(aggregated, config)
  summary["remedy"] = {
      "measure": "ground_truth" if config.remedy.ground_truth else config.remedy.measure,
      "rule": (f"top_k={config.remedy.top_k}" if config.remedy.rule == "top_k"
               else f"tau={config.remedy.tau}"),
      "tradeoff": points}
  if utils.is_main_process() and points:
    reference = {name: {"acc_test": aggregated[name]["acc"]["test"],
                        "acc_same_class_rest": aggregated[name]["acc_same_class"]["rest"]}
                 for name in ("original", "clean") if name in aggregated}
    remedy_track.save_tradeoff_plot(
        points, reference, os.path.join(context.workdir, "report", "plots",
                                        "remedy_tradeoff.png"))


def train_lira_references(context: Context) -> evaluator.LiraReferences | None:
  """Trains (or restores) the LiRA reference models and scores the targets and candidates.

  The members (`recipe.lira`) come in complementary pairs, so every target is IN for exactly
  half of them; they are trained at once (`ensemble.train_ensemble`).
  """
  cfg, sed = context.config.eval.lira, context.sed
  if cfg.num_models == 0:
    return None
  plan = recipe.lira(sed, context.config)
  heldout, target_in, heldout_in = plan.heldout_rows, plan.target_in, plan.heldout_in
  logging.info("stage: LiRA references (%d models on R + half the target groups and %d "
               "held-out candidates; %s)", cfg.num_models, len(heldout), context.progress())
  states, _ = ensemble.train_ensemble(
      context.model, plan.members, context.config.train,
      image_shape=sed.train["image"].shape[1:], mesh=context.mesh, name="lira",
      checkpoint_dir=os.path.join(context.workdir, "checkpoints", plan.folder),
      writer=context.writer)
  context.models_done += cfg.num_models
  batch_size = context.config.eval.batch_size
  target_rows = evaluator.split_rows(sed)["target"]
  targets = {"image": sed.train["image"][target_rows], "label": sed.train["label"][target_rows]}
  candidates = {"image": sed.test["image"][heldout], "label": sed.test["label"][heldout]}
  target_logits = ensemble.predict(states, targets, batch_size, context.mesh)
  heldout_logits = ensemble.predict(states, candidates, batch_size, context.mesh)
  return evaluator.LiraReferences(
      target_phi=mia.logit_scaled_confidence(target_logits, targets["label"][None]),
      target_in=target_in, heldout_rows=heldout,
      heldout_phi=mia.logit_scaled_confidence(heldout_logits, candidates["label"][None]),
      heldout_in=heldout_in, fix_variance=bool(cfg.fix_variance), fpr=float(cfg.fpr),
      per_example_min=int(cfg.get("per_example_min", mia.LIRA_PER_EXAMPLE_MIN)))


def add_across_seed_attacks(summary: dict[str, Any], per_target: list[dict],
                            epsilon_min_seeds: int) -> None:
  """ε estimate and U-LiRA of every model against `retrain` and `clean`, over the seeds.

  The populations are the study's own models: for model M, its N seeds are the "unlearned"
  population and the N seeds of `retrain` (or `clean`) the other, scored by the logit-scaled
  confidence on each target. U-LiRA fits a σ per example and population, leaving one model out
  at a time; below `mia.ULIRA_MIN_MODELS` seeds it is n/a (NaN, with a warning). ε is reported
  from `epsilon_min_seeds` on, because with few models its rules separate two samples of one
  distribution by chance (N models resolve ε only up to about log(N - 1), or the cap); beside
  it stand the number of targets at the cap (`epsilon_capped`) and, in
  `summary['across_seeds']['epsilon_null']`, the same estimate for the two halves of retrain's
  seeds against each other (`mia.epsilon_null`): what chance alone reads.

  Models scored against other residue references (`summary['residue_references']`: SISA's
  shard ensembles, see methods/sisa.py) are compared with their own clean reference's seeds
  (`sisa_clean`, an ensemble with the same shards trained on R) as `vs_clean`, so that both
  populations are ensembles on one scale; they have no `vs_retrain` entry (n/a), since no
  ensemble is retrained on D \\ T alone. `summary['across_seeds']['clean_reference']` names
  the population each such model was compared with.
  """
  phi: dict[str, dict[int, dict[int, float]]] = {}
  for row in per_target:
    phi.setdefault(row["model"], {}).setdefault(row["seed"], {})[row["target_id"]] = row["phi"]
  seeds = summary["seeds"]
  if len(seeds) < 2:
    return
  targets = sorted(next(iter(phi.values()))[seeds[0]])

  def population(model: str) -> np.ndarray | None:
    if model not in phi or any(s not in phi[model] for s in seeds):
      return None
    return np.asarray([[phi[model][s][t] for t in targets] for s in seeds], np.float64)

  own_references = {name: pair["clean"]
                    for name, pair in summary.get("residue_references", {}).items()}
  for name, record in summary["methods"].items():
    unlearned = population(name)
    if unlearned is None:
      continue
    # (record key, model whose seeds are the other population)
    comparisons = ((("clean", own_references[name]),) if name in own_references
                   else (("retrain", "retrain"), ("clean", "clean")))
    for reference, model in comparisons:
      other = population(model)
      if other is None or model == name:
        continue
      if len(seeds) >= epsilon_min_seeds:
        estimate = mia.epsilon_estimate(unlearned, other)
        record.setdefault("epsilon", {})[f"vs_{reference}"] = float(np.nanmean(
            estimate.epsilons))
        record.setdefault("epsilon_capped", {})[f"vs_{reference}"] = estimate.capped
        record.setdefault("forgetting_quality", {})[f"vs_{reference}"] = float(
            estimate.forgetting_quality)
      attack = mia.u_lira(unlearned, other)
      record.setdefault("ulira_acc", {})[f"vs_{reference}"] = float(attack.accuracy)
  summary["across_seeds"] = {"num_models": len(seeds), "delta": mia.DELTA,
                             "epsilon_cap": mia.EPSILON_CAP,
                             "epsilon_min_seeds": epsilon_min_seeds,
                             "ulira_min_models": mia.ULIRA_MIN_MODELS,
                             "num_targets": len(targets)}
  if own_references:
    summary["across_seeds"]["clean_reference"] = own_references
  retrained = population("retrain")
  if len(seeds) >= epsilon_min_seeds and retrained is not None and len(seeds) >= 4:
    null = mia.epsilon_null(retrained)
    summary["across_seeds"]["epsilon_null"] = {
        "epsilon": float(np.nanmean(null.epsilons)), "capped": null.capped,
        "forgetting_quality": float(null.forgetting_quality),
        "num_models": len(seeds) // 2}


def predict(context: Context, state: train.TrainState, data: dict) -> np.ndarray:
  """Logits of `state` on every example of `data`."""
  return train.predict(state, data, context.config.eval.batch_size, context.mesh)


def train_reference(context: Context, name: str,
                    seed: int) -> tuple[train.TrainState, float]:
  """Trains (or restores) reference `name` (one of `recipe.NAMES`) of seed `seed`; returns it
  and its training time in seconds."""
  state, info = fit_reference(context, recipe.reference(context.sed.train, context.config,
                                                        name, seed))
  return state, info["time_s"]


def fit_reference(context: Context,
                  reference: recipe.Recipe) -> tuple[train.TrainState, dict[str, Any]]:
  """Trains (or restores) the model of `reference` in the study's workdir (`recipe.fit`)."""
  logging.info("stage: reference %s (%d examples; %s)", reference.name,
               len(reference.data["label"]), context.progress())
  return recipe.fit(reference, context.init_state, context.config.train, mesh=context.mesh,
                    workdir=context.workdir, writer=context.writer)


def run_method(context: Context, name: str, original: train.TrainState,
               seed: int) -> tuple[train.TrainState, float]:
  """Runs unlearning method `name` from the original model (or restores its result)."""
  directory = context.checkpoint_dir(name, seed)
  data = methods.UnlearnData(
      forget=context.sed.forget, retain=context.sed.retain, mesh=context.mesh, seed=seed,
      num_classes=context.num_classes, init_state=context.init_state,
      checkpoint_dir=directory, writer=context.writer, val=context.sed.test)
  rng = recipe.method_rng(seed)
  logging.info("stage: method %s/seed_%d (|forget|=%d, |retain|=%d; %s)", name, seed,
               len(data.forget["label"]), len(data.retain["label"]), context.progress())
  start = time.perf_counter()
  state, info = methods.call(name, original, data, context.config, rng)
  # A method that builds its own model first (SISA's shard ensemble) reports that training
  # as `train_s`: it is a training-time cost, not part of the unlearning time.
  elapsed = time.perf_counter() - start - float(info.get("train_s", 0.0))
  return state, workdir_lib.record_time(directory, info, elapsed)
