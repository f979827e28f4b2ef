"""Requests that arrive over time: every method through rounds of deletion requests.

With `stream.requests` = N ≥ 2 each method of `config.methods` (not the references, SISA's
ensembles nor the remedies) unlearns N requests in turn, round k from the model round k - 1
produced (round 1 from `original`), with forget set the round's request and retained data D minus
everything requested so far.

The schedule (`stream.schedule`), over the evaluated targets T in their selection order:

* 'targets_then_similar' (default): T is split into N - 1 consecutive parts (sizes as even as
  `np.array_split` makes them), one per round; round N requests S(T_1), the similar samples of
  round 1's targets. With N = 3: targets part A, targets part B, then S(A). The question it
  asks: a user asks to forget T_1, later also S(T_1); after both, does the model reach what
  retraining without both gives (on T_1: `clean`), or does round 1's leftover influence stay?
* 'targets': T split into N consecutive parts, no similar sample requested.

References. A target's residue keeps the study's definition, against `original` (D) and `clean`
(R = D \\ (T ∪ S)). After round k the ideal model retrains on D minus the requests of rounds 1..k:
`retrain_k` (recipe `retrain_round_<k>`, folder checkpoints/stream/retrain/round_<k>/seed_<s>; the
study's `retrain` when the requests so far are exactly T). Its residues are reported beside the
methods': ~0 on T_1 after the default schedule's last round, retrain-like on the other targets.

After every round, per method (means over seeds): `residue` {score: mean residue over the targets
requested so far}, `residue_round1` (over T_1 only), `acc_test`, `acc_rest` (accuracy on R) and
`cost_s`, the unlearning time summed over rounds 1..k. `one_shot` is the method applied once, from
`original`, to everything the stream requested (the comparison line of the figure).

Every round's model is checkpointed (WORKDIR/checkpoints/stream/<method>/round_<k>/seed_<s>: the
method's own checkpoints under `run/`, the finished model under `model/` with its time in
`run/info.json`), so a rerun restores the finished rounds and resumes at the round it was in.
Outputs: summary.json `stream`, a section of report.md and report/plots/stream_residue.png.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import optax
from absl import logging

from unlearn_jax import config as config_lib
from unlearn_jax import methods, recipe, runner, train, utils
from unlearn_jax import workdir as workdir_lib
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.evaluate import evaluator
from unlearn_jax.report import stream as stream_report
from unlearn_jax.tasks import base

FOLDER = "stream"
SCHEDULES = config_lib.STREAM_SCHEDULES
ONE_SHOT = "one_shot"


def active(config) -> bool:
  """Whether the study runs the stream mode (`stream.requests` ≥ 2)."""
  return "stream" in config and int(config.stream.requests) >= 2


def schedule(sed: sed_lib.SED, requests: int, kind: str) -> list[dict[str, Any]]:
  """The rounds of a stream: [{'round', 'forget' ('targets' | 'similar'), 'groups' (target ids
  whose targets or similar samples are requested)}], see the module docstring.

  Raises:
    ValueError: an unknown schedule, or more target rounds than targets.
  """
  if kind not in SCHEDULES:
    raise ValueError(f"unknown stream schedule {kind!r}; schedules: {', '.join(SCHEDULES)}")
  target_rounds = config_lib.stream_target_rounds(requests, kind)
  targets = np.asarray(sed.target_ids, np.int64)
  if target_rounds > len(targets):
    raise ValueError(f"{target_rounds} rounds of targets need at least as many targets; the "
                     f"SED has {len(targets)}")
  parts = np.array_split(targets, target_rounds)
  rounds = [{"round": k + 1, "forget": "targets", "groups": [int(t) for t in part]}
            for k, part in enumerate(parts)]
  if kind == "targets_then_similar":
    rounds.append({"round": requests, "forget": "similar", "groups": rounds[0]["groups"]})
  return rounds


def request_mask(train_arrays: dict, request: dict[str, Any]) -> np.ndarray:
  """D's rows a request asks to forget: the targets named, or the similar samples of them."""
  kind = sed_lib.TARGET if request["forget"] == "targets" else sed_lib.SIMILAR
  return (train_arrays["kind"] == kind) & np.isin(train_arrays["group"], request["groups"])


def _rows(arrays: dict, mask: np.ndarray) -> dict:
  return {key: value[mask] for key, value in arrays.items()}


def stream_methods(task: base.Task, names) -> list[str]:
  """The methods run through the stream: single-model methods of the registry, no references."""
  out = []
  for name in names:
    if "+" in name:
      continue
    spec = methods.spec(name, track=task.track)
    if not spec.reference and not spec.returns_ensemble:
      out.append(name)
  return out


def round_dir(workdir: str, name: str, label: str, seed: int) -> str:
  """WORKDIR/checkpoints/stream/<name>/<label>/seed_<seed> (label: round_<k> or one_shot)."""
  return os.path.join(workdir, "checkpoints", FOLDER, name, label, f"seed_{int(seed)}")


def _bare(state: train.TrainState) -> train.TrainState:
  """The state with an empty optimiser (what a round's finished model is saved as)."""
  return state.with_optimizer(optax.identity())


def run_request(task: base.Task, name: str, start: train.TrainState, forget: dict, retain: dict,
                round_index: int, directory: str, seed: int) -> tuple[Any, float, bool]:
  """One method on one request from `start`, or its finished model restored:
  (state, unlearning seconds, restored)."""
  model_dir, run_dir = os.path.join(directory, "model"), os.path.join(directory, "run")
  like = _bare(start)
  if os.path.isdir(model_dir):
    manager = train.checkpoint_manager(model_dir)
    try:
      if manager.latest_step() is not None:
        state = train.restore_latest_readable(manager, like)
        info = utils.read_json(os.path.join(run_dir, "info.json"))
        return state, float(info["time_s"]), True
    finally:
      manager.close()
  cfg = task.method_config(name)
  if "round" in cfg:  # a streaming method's own round counter
    cfg = cfg.copy_and_resolve_references()
    cfg.round = int(round_index)
  context = task.run_context(seed, run_dir, forget, retain)
  begin = time.perf_counter()
  state, info = methods.call(name, start, context, cfg, recipe.method_rng(seed),
                             track=task.track)
  elapsed = time.perf_counter() - begin - context.clock.excluded_s
  os.makedirs(run_dir, exist_ok=True)
  elapsed = workdir_lib.record_time(run_dir, info, elapsed)
  state = _bare(state)
  manager = train.checkpoint_manager(model_dir)
  try:
    train.save(manager, state)
  finally:
    manager.wait_until_finished()
    manager.close()
  return state, elapsed, False


class Stream(base.Plugin):
  """Runs every method through `stream.requests` rounds of deletion requests per seed."""

  def models(self, task: base.Task, names: tuple[str, ...]) -> int:
    if not active(task.config):
      return 0
    requests = int(task.config.stream.requests)
    return (requests + 1) * len(stream_methods(task, names)) + requests

  def after_runs(self, task: base.Task, run: base.SeedRun, status: dict[str, str]) -> None:
    if not active(task.config):
      return
    d = task.train
    rounds = schedule(task.sed, int(task.config.stream.requests), task.config.stream.schedule)
    names = stream_methods(task, run.names)
    states: dict[str, Any] = {"original": run.states["original"], "clean": run.states["clean"]}
    costs: dict[str, float] = {}
    total = {name: 0.0 for name in names}
    requested = np.zeros(len(d["kind"]), bool)
    for request in rounds:
      k = request["round"]
      mask = request_mask(d, request)
      requested |= mask
      forget, retain = _rows(d, mask), _rows(d, ~requested)
      states[f"retrain/round_{k}"] = self._reference(task, run, requested, retain, k)
      for name in names:
        start = run.states["original"] if k == 1 else states.get(f"{name}/round_{k - 1}")
        if start is None:  # failed in an earlier round
          continue
        key = f"{FOLDER}/{name}/round_{k}/seed_{run.seed}"
        logging.info("stage: stream %s round %d of %d/seed_%d (|forget|=%d, %s)", name, k,
                     len(rounds), run.seed, len(forget["kind"]), task.progress.line())
        with runner.method_status(status, key):
          state, seconds, _ = run_request(
              task, name, start, forget, retain, k,
              round_dir(task.workdir, name, f"round_{k}", run.seed), run.seed)
          total[name] += seconds
          states[f"{name}/round_{k}"], costs[f"{name}/round_{k}"] = state, total[name]
        task.progress.done += 1
    forget, retain = _rows(d, requested), _rows(d, ~requested)
    for name in names:
      key = f"{FOLDER}/{name}/{ONE_SHOT}/seed_{run.seed}"
      logging.info("stage: stream %s one shot/seed_%d (|forget|=%d)", name, run.seed,
                   len(forget["kind"]))
      with runner.method_status(status, key):
        state, seconds, _ = run_request(
            task, name, run.states["original"], forget, retain, 1,
            round_dir(task.workdir, name, ONE_SHOT, run.seed), run.seed)
        states[f"{name}/{ONE_SHOT}"], costs[f"{name}/{ONE_SHOT}"] = state, seconds
      task.progress.done += 1
    run.extra["stream_states"] = (rounds, names, states, costs)

  def _reference(self, task: base.Task, run: base.SeedRun, requested: np.ndarray, retain: dict,
                 k: int) -> Any:
    """retrain_k: D minus the requests of rounds 1..k (the study's `retrain` when that is T)."""
    task.progress.done += 1
    if np.array_equal(requested, task.train["kind"] == sed_lib.TARGET) and "retrain" in run.states:
      return run.states["retrain"]
    name = f"retrain_round_{k}"
    state, _ = task.fit(recipe.Recipe(retain, int(run.seed), f"{name}/seed_{run.seed}",
                                      os.path.join(FOLDER, "retrain", f"round_{k}",
                                                   f"seed_{run.seed}")))
    return state

  def extend(self, task: base.Task, run: base.SeedRun) -> None:
    packed = run.extra.pop("stream_states", None)
    if packed is None:
      return
    rounds, names, states, costs = packed
    sed = task.sed
    # The study's own models (original, clean, retrain as retrain_k) were scored by `evaluate`.
    scored = {id(run.states[name]): found for name, found in run.extra["logits"].items()}
    logits = {name: scored.get(id(state)) or {"train": task.predict(state, sed.train),
                                              "test": task.predict(state, sed.test)}
              for name, state in states.items()}
    records, rows = evaluator.evaluate_models(logits, sed, task.config.eval.min_gap,
                                              svc_max_train=0)
    first = set(rounds[0]["groups"])
    result = {"rounds": [], ONE_SHOT: {}}
    forgotten: set[int] = set()
    for request in rounds:
      k = request["round"]
      if request["forget"] == "targets":
        forgotten |= set(request["groups"])
      entry = {"methods": {}, "reference": _entry(records, rows, f"retrain/round_{k}", forgotten,
                                                  first)}
      for name in names:
        model = f"{name}/round_{k}"
        if model in records:
          entry["methods"][name] = {**_entry(records, rows, model, forgotten, first),
                                    "cost_s": costs[model]}
      result["rounds"].append(entry)
    for name in names:
      model = f"{name}/{ONE_SHOT}"
      if model in records:
        result[ONE_SHOT][name] = {**_entry(records, rows, model, forgotten, first),
                                  "cost_s": costs[model]}
    run.extra["stream"] = {"schedule": rounds, **result}

  def finish(self, task: base.Task, summary: dict[str, Any], runs: dict[int, base.SeedRun],
             status: dict[str, str]) -> None:
    results = [run.extra["stream"] for run in runs.values() if "stream" in run.extra]
    if not results:
      return
    summary["stream"] = {"schedule": [{**r, "requested": _describe(r)}
                                      for r in results[0]["schedule"]],
                         "rounds": [], ONE_SHOT: _mean([r[ONE_SHOT] for r in results])}
    for i, request in enumerate(results[0]["schedule"]):
      summary["stream"]["rounds"].append({
          "round": request["round"], "requested": _describe(request),
          "methods": _mean([r["rounds"][i]["methods"] for r in results]),
          "reference": _mean([r["rounds"][i]["reference"] for r in results])})
    if utils.is_main_process():
      stream_report.plot(os.path.join(task.workdir, "report", "plots", "stream_residue.png"),
                         summary["stream"])


def _describe(request: dict[str, Any]) -> str:
  what = "targets" if request["forget"] == "targets" else "similar samples of targets"
  return f"{what} {', '.join(str(g) for g in request['groups'])}"


def _entry(records: dict, rows: list[dict], model: str, forgotten: set[int],
           first: set[int]) -> dict[str, Any]:
  """Residues of `model` on the targets forgotten so far and on round 1's, and accuracies."""
  own = [row for row in rows if row["model"] == model]
  scores = [key[len("residue_"):] for key in own[0] if key.startswith("residue_")] if own else []

  def mean(targets: set[int]) -> dict[str, float]:
    out = {}
    for score in scores:
      values = [row[f"residue_{score}"] for row in own if row["target_id"] in targets]
      values = [v for v in values if np.isfinite(v)]
      out[score] = float(np.mean(values)) if values else float("nan")
    return out

  acc = records[model]["acc"]
  return {"residue": mean(forgotten), "residue_round1": mean(first),
          "acc_test": float(acc["test"]), "acc_rest": float(acc["rest"])}


def _mean(trees: list[Any]) -> Any:
  """The leaf-wise mean of same-shaped dicts of numbers (keys missing from some seeds: of those
  that have them); NaN where no seed has a finite value."""
  if isinstance(trees[0], dict):
    keys = [key for key in trees[0]] + [k for t in trees[1:] for k in t if k not in trees[0]]
    return {key: _mean([t[key] for t in trees if key in t]) for key in dict.fromkeys(keys)}
  values = [float(v) for v in trees if np.isfinite(float(v))]
  return float(np.mean(values)) if values else float("nan")
