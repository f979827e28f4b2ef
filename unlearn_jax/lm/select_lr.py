"""Selects the LM unlearning methods' default learning rates on held-out targets.

docs/design.md §4.2: a method's setting is chosen on a *tuning SED* — other targets, drawn with
another SED seed — and only then applied to the evaluated targets. This module does that for one
hyper-parameter of the LM methods, the learning rate, over a fixed grid; it chose the defaults
(lm.defaults.METHOD_LR) that an untuned LM study runs with. A study with `tune.enabled` tunes
every declared hyper-parameter with tune.py instead (`configs/sed_qa.py:tune=1`), on its own
tuning SED, under this module's utility budget (`tune.max_test_drop`):

    python -m unlearn_jax.lm.select_lr --config=configs/sed_qa.py:runlocal \\
        --workdir=/tmp/select_lr --sed_seed=1

trains `original` and `clean` on the QA SED of `qa.seed = sed_seed` (the offline generator then
builds another fictitious world: other targets, paraphrases and unrelated facts), runs every
method of `config.methods` at every learning rate of `--grid` from that original, and applies
the rule of `choose`:

* distance to clean, per residue score f of lm.defaults.RESIDUE_SCORES,
  Σ_t |f(M, t) - f(clean, t)| / Σ_t |f(original, t) - f(clean, t)| over the held-out targets
  t (0: behaves like clean on every target, 1: as far from it as the original); a score is left
  out when the original and clean differ by less than `config.eval.min_gap` per target on
  average (it cannot tell forgetting from noise there); the distance is the mean over the
  scores left;
* utility budget: ROUGE-L recall of the answers to unrelated training questions (the study's
  `ROUGE-L R`) at most UTILITY_BUDGET below the original's;
* the lr of the smallest distance within the budget (ties: the smaller lr); when no lr keeps
  the budget, the lr of the highest utility, flagged `within_budget: false`.

The workdir holds config.json (with the held-out seed), data/, checkpoints/{original,clean}/
seed_<s> and checkpoints/<method>/lr_<lr>/seed_<s> (a rerun resumes), metrics.jsonl and
report/select_lr.{json,md}. The numbers behind the defaults are in lm/defaults.py.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Sequence

import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from unlearn_jax import config as config_lib
from unlearn_jax import methods as methods_lib
from unlearn_jax import recipe, train, utils
from unlearn_jax import workdir as workdir_lib
from unlearn_jax.lm import defaults as lm_defaults
from unlearn_jax.lm import evaluate as lm_evaluate
from unlearn_jax.lm import steps
from unlearn_jax.tasks import lm as lm_task

GRID = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)  # AdamW learning rates, half-decade steps.
UTILITY_BUDGET = 0.10  # largest allowed drop of ROUGE-L R recall below the original's.
HELD_OUT_SEED = 1  # the QA SED seed of the selection; studies evaluate seed 0 by default.


def distance_to_clean(rows: Sequence[dict], model: str, min_gap: dict) -> dict[str, float]:
  """{score: Σ_t |f(model) - f(clean)| / Σ_t |f(original) - f(clean)|} and their 'mean'.

  Args:
    rows: per-target rows of `lm.evaluate.evaluate` (model, target_id and one value per score of
      RESIDUE_SCORES) for `model`, 'original' and 'clean'.
    model: the model whose distance is measured.
    min_gap: per score, the least mean |f(original) - f(clean)| for the score to count.

  Returns:
    One distance per score (NaN when the score does not separate original from clean on the
    targets where all three are defined) and 'mean', the mean of the defined ones (NaN if none).
  """
  by_model: dict[str, dict[int, dict]] = {}
  for row in rows:
    by_model.setdefault(row["model"], {})[int(row["target_id"])] = row
  targets = sorted(by_model["original"])
  out = {}
  for score in lm_defaults.RESIDUE_SCORES:
    values = np.array([[by_model[m][t][score] for m in (model, "original", "clean")]
                       for t in targets], np.float64)
    values = values[np.isfinite(values).all(axis=1)]
    gap = np.abs(values[:, 1] - values[:, 2])
    if not len(values) or gap.mean() < float(min_gap[score]):
      out[score] = float("nan")
      continue
    out[score] = float(np.abs(values[:, 0] - values[:, 2]).sum() / gap.sum())
  defined = [value for value in out.values() if np.isfinite(value)]
  out["mean"] = float(np.mean(defined)) if defined else float("nan")
  return out


def choose(candidates: dict[float, dict[str, float]], utility_floor: float
           ) -> tuple[float, bool]:
  """The rule of this module: (chosen lr, whether it keeps the utility budget).

  Args:
    candidates: {lr: {'distance': mean distance to clean, 'utility': ROUGE-L R recall}}; a
      failed run has distance inf and utility -inf.
    utility_floor: the original's utility minus the budget.

  Returns:
    The lr of the smallest finite distance among those with utility >= utility_floor (ties: the
    smaller lr), True; else the lr of the highest utility (ties: the smaller lr), False.
  """
  if not candidates:
    raise ValueError("choose: no candidate learning rate")
  order = sorted(candidates)
  admissible = [lr for lr in order if candidates[lr]["utility"] >= utility_floor
                and np.isfinite(candidates[lr]["distance"])]
  if admissible:
    return min(admissible, key=lambda lr: candidates[lr]["distance"]), True
  return max(order, key=lambda lr: (candidates[lr]["utility"], -lr)), False


def held_out_config(config: ml_collections.ConfigDict,
                    sed_seed: int) -> ml_collections.ConfigDict:
  """`config` with `qa.seed = sed_seed`; refuses the seed of the evaluated study itself."""
  if int(sed_seed) == int(config.qa.seed):
    raise config_lib.ConfigError(
        f"sed_seed={sed_seed} is the evaluated study's qa.seed: learning rates must be chosen on "
        "other targets (docs/design.md §4.2); pass another --sed_seed")
  held_out = copy.deepcopy(config)
  held_out.qa.seed = int(sed_seed)
  return held_out


def run(config: ml_collections.ConfigDict, workdir: str, *, sed_seed: int = HELD_OUT_SEED,
        grid: Sequence[float] = GRID, methods: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the selection for the study `config` on its held-out SED; returns the results.

  Args:
    config: the config of the evaluated study (its `qa.seed` is the seed NOT to tune on).
    workdir: where checkpoints and report/select_lr.{json,md} go (resumed if it exists).
    sed_seed: the held-out QA SED seed.
    grid: learning rates to try (each > 0).
    methods: LM methods to tune (default: config.methods without `retrain`, which has no lr).

  Returns:
    {'sed_seed', 'grid', 'utility_budget', 'references': {original, clean: their utility},
     'methods': {name: {'candidates': {lr: distance, per-score distances, utility, nll_rest,
     status}, 'chosen': lr, 'within_budget': bool}}}.

  Raises:
    config_lib.ConfigError: an invalid config, grid or method, or sed_seed == config.qa.seed.
  """
  utils.quiet_library_logs()
  config = held_out_config(config, sed_seed)
  lm_defaults.validate(config)
  track = lm_defaults.TRACK
  names = [n for n in methods_lib.resolve(methods or config_lib.as_tuple(config.methods), track)
           if not methods_lib.spec(n, track).reference]
  grid = sorted(float(lr) for lr in grid)
  config_lib.require(bool(grid) and all(lr > 0 for lr in grid), "grid", grid,
                     "must hold learning rates > 0")
  workdir = os.path.abspath(workdir)
  workdir_lib.prepare(config, workdir)
  task = lm_task.LMTask.build(config, workdir)
  seed = int(config_lib.as_tuple(config.seeds)[0])
  states = {}
  for name in ("original", "clean"):
    logging.info("stage: reference %s/seed_%d (held-out SED seed %d)", name, seed, sed_seed)
    states[name], _ = steps.train_from_scratch(
        task.init_state(recipe.init_key(seed)), recipe.select(task.train, name), config.train,
        seed, name=f"{name}/seed_{seed}", mesh=task.mesh,
        checkpoint_dir=_directory(workdir, name, None, seed), writer=task.writer)
  scores = {name: lm_evaluate.model_scores(task, state) for name, state in states.items()}
  status = {}
  for name in names:
    for lr in grid:
      key = _key(name, lr)
      trial = copy.deepcopy(config)
      trial.unlearn[name].lr = lr
      cfg = methods_lib.method_config(trial, name)
      methods_lib.check_config(name, cfg, track)
      run = task.run_context(seed, _directory(workdir, name, lr, seed))
      logging.info("stage: method %s", key)
      try:
        state, _ = methods_lib.call(name, states["original"], run, cfg, recipe.method_rng(seed),
                                    track=track)
      except train.DivergedError as error:
        status[key] = f"diverged: {error}"
        continue
      status[key] = "ok"
      scores[key] = lm_evaluate.model_scores(task, state)
  records, rows = lm_evaluate.evaluate(task, scores)
  results = summarize(config, records, rows, status, names, grid, sed_seed)
  if utils.is_main_process():
    report_dir = os.path.join(workdir, "report")
    utils.write_json(os.path.join(report_dir, "select_lr.json"), results)
    utils.write_text(os.path.join(report_dir, "select_lr.md"), markdown(results))
  return results


def summarize(config, records, rows, status, names, grid, sed_seed) -> dict[str, Any]:
  """Distances, utilities and the choice of `choose` for every method (see `run`)."""
  utility = lambda key: float(records[key]["rouge_l"]["rest"])
  floor = utility("original") - UTILITY_BUDGET
  results = {"sed_seed": int(sed_seed), "grid": list(grid), "utility_budget": UTILITY_BUDGET,
             "references": {name: {"utility": utility(name),
                                   "nll_rest": float(records[name]["nll"]["rest"])}
                            for name in ("original", "clean")},
             "methods": {}}
  for name in names:
    candidates = {}
    for lr in grid:
      key = _key(name, lr)
      if status[key] != "ok":
        candidates[lr] = {"distance": float("inf"), "utility": float("-inf"),
                          "status": status[key]}
        continue
      distances = distance_to_clean(rows, key, config.eval.min_gap)
      candidates[lr] = {"distance": distances.pop("mean"), "distances": distances,
                        "utility": utility(key), "nll_rest": float(records[key]["nll"]["rest"]),
                        "status": "ok"}
    chosen, within = choose(candidates, floor)
    results["methods"][name] = {"candidates": {f"{lr:g}": c for lr, c in candidates.items()},
                                "chosen": chosen, "within_budget": within}
  return results


def markdown(results: dict[str, Any]) -> str:
  """A table: per method and lr, distance to clean / ROUGE-L R; the chosen lr marked *."""
  grid = results["grid"]
  original = results["references"]["original"]["utility"]
  lines = [f"# Learning-rate selection on the held-out QA SED (seed {results['sed_seed']})", "",
           f"Cells: mean distance to clean / ROUGE-L R (original {original:.2f}; budget: at "
           f"least {original - results['utility_budget']:.2f}); * the chosen lr.", "",
           "| method | " + " | ".join(f"{lr:g}" for lr in grid) + " |",
           "|---|" + "---|" * len(grid)]
  for name, result in results["methods"].items():
    cells = []
    for lr in grid:
      c = result["candidates"][f"{lr:g}"]
      mark = "*" if lr == result["chosen"] else ""
      cells.append(f"{mark}{c['distance']:.2f} / {c['utility']:.2f}" if c["status"] == "ok"
                   else "diverged")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _key(name: str, lr: float) -> str:
  return f"{name}@lr={lr:g}"


def _directory(workdir: str, name: str, lr: float | None, seed: int) -> str:
  parts = [workdir, "checkpoints", name] + ([] if lr is None else [f"lr_{lr:g}"])
  return os.path.join(*parts, f"seed_{seed}")


def _define_flags() -> dict[str, Any]:
  """The binary's flags (defined only when run as a program, so importing defines none)."""
  return {
      "config": config_flags.DEFINE_config_file(
          "config", None, "The evaluated LM study's config, e.g. configs/sed_qa.py:runlocal.",
          lock_config=True),
      "workdir": flags.DEFINE_string("workdir", None,
                                     "Directory of the selection (resumed if it exists)."),
      "sed_seed": flags.DEFINE_integer(
          "sed_seed", HELD_OUT_SEED, "QA SED seed of the held-out targets (not the config's "
          "qa.seed)."),
      "grid": flags.DEFINE_list("grid", [f"{lr:g}" for lr in GRID], "Learning rates to try."),
      "methods": flags.DEFINE_list("methods", [], "Methods to tune (default: the config's)."),
  }


def main(argv, flag_values: dict[str, Any]) -> None:
  """Runs the selection named by the flags and prints its table."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    results = run(flag_values["config"].value, flag_values["workdir"].value,
                  sed_seed=flag_values["sed_seed"].value,
                  grid=[float(lr) for lr in flag_values["grid"].value],
                  methods=flag_values["methods"].value or None)
  except config_lib.ConfigError as error:
    raise SystemExit(f"error: {error}") from None
  print(markdown(results), flush=True)


if __name__ == "__main__":
  _FLAGS = _define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(lambda argv: main(argv, _FLAGS))
