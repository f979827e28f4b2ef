"""Tuning every method's hyper-parameters on targets the study never evaluates
(docs/design.md §4.2).

A method's setting is chosen on a *tuning SED*: targets and their similar samples drawn with
another SED seed (`tune.sed_seed`) from the study's training data without the evaluated targets,
with its own `original` and `clean` references (trained once, under WORKDIR/tuning/). Each trial
runs the method from the tuning `original` with parameters drawn from the method's declared
search space (`methods.search_space`, covering its authors' values), and is scored by:

* objective: Σ over `tune.objective` scores of |mean residue| on the tuning targets (margin and
  the loss-attack membership AUC by default, answer NLL and that AUC on the language-model
  track: 0 = like `clean`, the model that never saw them);
* feasibility: test accuracy at least the tuning original's minus `tune.max_test_drop`, and an
  unlearning time at most `tune.cost_cap` × the tuning `clean` model's training time (on the
  language-model track "test accuracy" is its utility, `UTILITY`: the ROUGE-L recall of the
  answers to unrelated training questions);
* the rule that picks the trial: the feasible trial with the smallest objective; when no trial
  is feasible, the one with the smallest test-accuracy drop (`feasible: false` in the summary).

Trials run one by one in an Optuna study per method (seeded TPE, or a grid) kept in
`tune.storage` (an SQLAlchemy URL; by default the SQLite file WORKDIR/tuning/optuna.db): a killed
run resumes where it stopped and picks what an uninterrupted run picks (trial n samples with
seed `tune.seed` + n over the completed trials), and several processes or machines may share
one study: each stops when the trials done or running reach `tune.trials`. `tune.mode='oracle'`
tunes on the evaluated targets themselves: an upper bound, labelled as such, never the default.

Outputs: `report/tuning.csv` (every trial), `summary.json` `methods.<m>.tuning`, and one plot
per method of residue against test accuracy over its trials (`report/plots/tuning_<m>.png`).
"""

from __future__ import annotations

import contextvars
import copy
import dataclasses
import fcntl
import math
import os
import socket
import time
import warnings
from typing import Any, Callable

import ml_collections
import optuna
from absl import logging
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from unlearn_jax import config as config_lib
from unlearn_jax import methods, recipe, utils
from unlearn_jax.report import tables

# Optuna flags its heartbeats as experimental; what they do here is documented above.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
ORACLE_LABEL = "oracle: tuned on the evaluated targets (an upper bound, not a fair comparison)"
INFEASIBLE = 1e3  # objective offset of a trial that breaks a constraint (ranked after all others)
# What a track's tuning keeps within `tune.max_test_drop` (`Outcome.acc_test`, tuning.csv's
# `acc_test`), in the words of its plots and logs.
UTILITY = {"image": "test accuracy", "lm": "utility (ROUGE-L R)"}


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What one trial measured."""
  parts: dict[str, float]  # {score: mean residue on the tuning targets}
  acc_test: float
  time_s: float


def storage_url(config: ml_collections.ConfigDict, workdir: str) -> str:
  """`tune.storage`, or the SQLite file WORKDIR/tuning/optuna.db."""
  if config.tune.storage:
    return str(config.tune.storage)
  return "sqlite:///" + os.path.join(workdir, "tuning", "optuna.db")


def open_storage(url: str):
  """The Optuna storage at `url`, with heartbeats so that a dead process's trial is failed.

  Raises:
    config_lib.ConfigError: the storage cannot be reached or created (one line naming
      `tune.storage`).
  """
  if url.startswith("sqlite:///"):
    # Processes that create one new SQLite storage at once race on its schema (a table or a
    # version row written twice): a lock beside the file lets one create it and the rest read it.
    path = url[len("sqlite:///"):]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".lock", "a") as lock_file:
      fcntl.flock(lock_file, fcntl.LOCK_EX)
      try:
        return _connect(url)
      finally:
        fcntl.flock(lock_file, fcntl.LOCK_UN)
  return _connect(url)


# What a database says when another process created the same schema a moment earlier.
_SCHEMA_RACE = ("UNIQUE constraint failed", "already exists", "duplicate key")


def _connect(url: str):
  for attempt in range(5):
    try:
      return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)
    except Exception as error:  # pylint: disable=broad-except  (any driver's connection error)
      if attempt < 4 and any(sign in str(error) for sign in _SCHEMA_RACE):
        time.sleep(0.5 * (attempt + 1))  # a server database: the next try reads the schema
        continue
      raise config_lib.ConfigError(
          f"config.tune.storage={url!r}: cannot open it ({type(error).__name__}: "
          f"{str(error).splitlines()[0][:200]})") from None
  raise AssertionError("unreachable")


def check(config: ml_collections.ConfigDict, names, track: str) -> dict[str, dict]:
  """The search space of every method to tune, checked before any work.

  Returns:
    {method: its space} for the methods `tune.methods` names (or every method of `names` with a
    declared space, when empty).

  Raises:
    config_lib.ConfigError: `tune.trials` < 1, a named method that is not run or has no space,
      an unknown parameter or an empty space (one line naming the field).
  """
  config_lib.require_number("tune.trials", config.tune.trials, low=1, integer=True)
  wanted = config_lib.as_tuple(config.tune.methods)
  runnable = [n for n in names if "+" not in n and not methods.spec(n, track=track).reference]
  for name in wanted:
    config_lib.require(name in runnable, "tune.methods", name,
                       f"is not a method of this study ({', '.join(runnable)})")
  spaces = {}
  for name in wanted or runnable:
    space = methods.search_space(name, track=track)
    if not space and not wanted:
      continue  # nothing to tune (retrain, sisa)
    methods.check_search_space(name, space, methods.method_config(config, name), track=track,
                               field=f"search_space of {name}")
    spaces[name] = space
  return spaces


def preflight(config: ml_collections.ConfigDict, track: str) -> None:
  """Checks, before a study does any work, what tuning will need: the search spaces of the
  methods it tunes and a `tune.storage` it can reach (the default SQLite file always is).

  Raises:
    config_lib.ConfigError: one line naming the field.
  """
  if "tune" not in config or not config.tune.enabled:
    return
  check(config, methods.resolve(config_lib.as_tuple(config.methods), track=track), track)
  if config.tune.storage:
    open_storage(str(config.tune.storage))


def _distributions(space: dict) -> dict:
  out = {}
  for key, value in space.items():
    if isinstance(value, methods.Float):
      out[key] = optuna.distributions.FloatDistribution(value.low, value.high, log=value.log)
    elif isinstance(value, methods.Int):
      out[key] = optuna.distributions.IntDistribution(value.low, value.high, log=value.log,
                                                      step=value.step)
    else:
      out[key] = optuna.distributions.CategoricalDistribution(tuple(value.values))
  return out


def _sampler(config: ml_collections.ConfigDict, space: dict, seed: int):
  if config.tune.sampler == "grid":
    grid: dict[str, list] = {}
    for point in methods.space_grid(space, points=int(config.tune.grid_points)):
      for key, value in point.items():
        grid.setdefault(key, [])
        if value not in grid[key]:
          grid[key].append(value)
    return optuna.samplers.GridSampler(grid, seed=seed)
  return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(config.tune.startup_trials))


def _owner() -> str:
  return f"{socket.gethostname()}:{os.getpid()}"


def _fail_dead_trials(study) -> None:
  """Fails the running trials of dead processes: on this host, those whose process is gone;
  elsewhere, those whose heartbeat stopped (Optuna's `fail_stale_trials`)."""
  optuna.storages.fail_stale_trials(study)
  host = socket.gethostname()
  for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
    owner = str(trial.user_attrs.get("owner", ""))
    if owner.startswith(host + ":") and owner != _owner():
      try:
        os.kill(int(owner.rsplit(":", 1)[1]), 0)
      except ProcessLookupError:
        study._storage.set_trial_state_values(  # pylint: disable=protected-access
            trial._trial_id, optuna.trial.TrialState.FAIL)  # pylint: disable=protected-access
      except PermissionError:
        pass  # alive, another user's


def value_of(outcome: Outcome, baseline_acc: float, cap_s: float,
             config: ml_collections.ConfigDict) -> tuple[float, bool, float]:
  """(the trial's value to minimise, feasible, objective) by the rule in the module docstring."""
  parts = [abs(v) for v in outcome.parts.values() if math.isfinite(v)]
  objective = float(sum(parts)) if parts else math.inf
  drop = baseline_acc - outcome.acc_test
  feasible = (drop <= float(config.tune.max_test_drop) and outcome.time_s <= cap_s
              and math.isfinite(objective))
  value = objective if feasible else INFEASIBLE + min(max(drop, 0.0), 1.0)
  return float(value), feasible, objective


# The number of the trial `tune_method` is running (for its runs' names in the metrics).
_TRIAL: contextvars.ContextVar[int | None] = contextvars.ContextVar("trial", default=None)


def tune_method(config: ml_collections.ConfigDict, workdir: str, name: str, space: dict,
                run_trial: Callable[[dict], Outcome], *, baseline_acc: float, cap_s: float,
                track: str) -> dict[str, Any]:
  """Runs (or resumes) the trials of method `name`; returns its choice.

  Args:
    config: the study config (`tune` section).
    workdir: the study's workdir (default storage).
    name: the method.
    space: its search space.
    run_trial: params -> the trial's `Outcome` (runs the method on the tuning SED).
    baseline_acc: test accuracy of the tuning `original`.
    cap_s: a trial's largest feasible unlearning time, seconds.
    track: the method's track.

  Returns:
    {'params', 'objective', 'feasible', 'trials', 'value'} of the chosen trial.
  """
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  storage = open_storage(storage_url(config, workdir))
  study = optuna.create_study(study_name=f"{track}/{name}/{config.tune.mode}", storage=storage,
                              direction="minimize", load_if_exists=True)
  distributions = _distributions(space)
  total = int(config.tune.trials)
  states = optuna.trial.TrialState
  surplus = []

  def objective(trial) -> float:
    trial.set_user_attr("owner", _owner())
    ahead = [t for t in study.get_trials(deepcopy=False, states=(states.COMPLETE,
                                                                 states.RUNNING))
             if t.number < trial.number]
    if len(ahead) >= total:  # another process took the last trial meanwhile
      surplus.append(trial.number)
      raise optuna.TrialPruned("surplus")
    params = {key: trial._suggest(key, distribution)  # pylint: disable=protected-access
              for key, distribution in distributions.items()}
    logging.info("tuning %s: trial %d of %d %s", name, len(ahead) + 1, total, params)
    token = _TRIAL.set(trial.number)
    try:
      outcome = run_trial(params)
    finally:
      _TRIAL.reset(token)
    value, feasible, objective_value = value_of(outcome, baseline_acc, cap_s, config)
    for key, part in outcome.parts.items():
      trial.set_user_attr(f"residue_{key}", float(part))
    trial.set_user_attr("acc_test", float(outcome.acc_test))
    trial.set_user_attr("time_s", float(outcome.time_s))
    trial.set_user_attr("feasible", bool(feasible))
    trial.set_user_attr("objective", float(objective_value))
    return value

  while not surplus:
    _fail_dead_trials(study)
    complete = len(study.get_trials(deepcopy=False, states=(states.COMPLETE,)))
    running = len(study.get_trials(deepcopy=False, states=(states.RUNNING,)))
    if complete + running >= total:
      break
    study.sampler = _sampler(config, space, int(config.tune.seed) + complete + 1000 * running)
    # `optimize` beats the storage's heartbeat while the trial runs: a process that dies
    # mid-trial on another machine has its trial failed after `grace_period`.
    study.optimize(objective, n_trials=1, catch=(), gc_after_trial=False)
  return choice(study)


def choice(study) -> dict[str, Any]:
  """The chosen trial of a finished study (the smallest value; ties: the earliest)."""
  done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
  best = min(done, key=lambda t: (t.value, t.number))
  return {"params": dict(best.params), "objective": best.user_attrs["objective"],
          "feasible": best.user_attrs["feasible"], "trials": len(done), "value": best.value,
          "trial": best.number}


def trial_rows(config: ml_collections.ConfigDict, workdir: str, names, track: str
               ) -> list[dict[str, Any]]:
  """Every completed trial of the methods `names`, as rows of report/tuning.csv."""
  storage = open_storage(storage_url(config, workdir))
  rows = []
  for name in names:
    study = optuna.load_study(study_name=f"{track}/{name}/{config.tune.mode}", storage=storage)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
      rows.append({"method": name, "trial": trial.number,
                   **{f"param.{k}": v for k, v in trial.params.items()},
                   **{k: v for k, v in trial.user_attrs.items() if k != "owner"},
                   "value": trial.value})
  return rows


def apply(config: ml_collections.ConfigDict, name: str, params: dict) -> ml_collections.ConfigDict:
  """A copy of `config.unlearn.<name>` with `params` set (values cast to the defaults' types)."""
  cfg = copy.deepcopy(methods.method_config(config, name))
  with cfg.unlocked():
    for key, value in params.items():
      default = cfg[key]
      cfg[key] = type(default)(value) if isinstance(default, (int, float)) and not isinstance(
          default, bool) else value
  return cfg


def save_plot(rows: list[dict], name: str, path: str, score: str,
              utility: str = UTILITY["image"]) -> None:
  """Residue against test accuracy (`utility`: the track's words for it, `UTILITY`) over a
  method's trials (the trade-off its space offers)."""
  own = [r for r in rows if r["method"] == name and f"residue_{score}" in r]
  if not own:
    return
  fig = Figure(figsize=(4.5, 3.5))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  for feasible, marker in ((True, "o"), (False, "x")):
    points = [r for r in own if bool(r["feasible"]) == feasible]
    ax.scatter([r["acc_test"] for r in points], [r[f"residue_{score}"] for r in points],
               marker=marker, label="feasible" if feasible else "infeasible")
  ax.axhline(0.0, color="grey", lw=0.8)
  ax.set_xlabel(f"{utility} (tuning SED)")
  ax.set_ylabel(f"{score} residue (tuning targets)")
  ax.set_title(f"{name}: {len(own)} trials")
  ax.legend(fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=120)


def write_outputs(config: ml_collections.ConfigDict, workdir: str, names, track: str) -> None:
  """report/tuning.csv and one plot per tuned method."""
  if not utils.is_main_process() or not names:
    return
  rows = trial_rows(config, workdir, names, track)
  utils.write_text(os.path.join(workdir, "report", "tuning.csv"), tables.to_csv(rows))
  score = config_lib.as_tuple(config.tune.objective)[0]
  for name in names:
    save_plot(rows, name, os.path.join(workdir, "report", "plots", f"tuning_{name}.png"), score,
              UTILITY.get(track, UTILITY["image"]))


def run(task, names) -> dict[str, dict[str, Any]]:
  """Tunes every method of `names` with a search space on the task's tuning SED.

  Args:
    task: the study's task (`tasks/base.py`); it supplies the tuning task (`tuning_task`) and
      its scores (`tuning_scores`).
    names: the study's runs.

  Returns:
    {method: its choice (`tune_method`) with `mode` and `space`}; {} when `tune.enabled` is
    off or the config has no `tune` section.
  """
  config = task.config
  if "tune" not in config or not config.tune.enabled:
    return {}
  spaces = check(config, names, task.track)
  if not spaces:
    return {}
  tuner = task.tuning_task()
  tuner.progress = task.progress
  # Its metrics stay in WORKDIR/tuning/metrics.jsonl; its event files go beside the study's,
  # under WORKDIR/tensorboard/tuning/.
  tuner.writer = utils.MetricWriter(
      os.path.join(tuner.workdir, "metrics.jsonl"),
      tensorboard_dir=os.path.join(task.workdir, utils.TENSORBOARD_DIR, "tuning"))
  task.progress.total += 2  # the tuning SED's original and clean
  seed = int(config_lib.as_tuple(config.seeds)[0])
  logging.info("stage: tuning %s on %s (%d trials each)", ", ".join(spaces),
               "the evaluated targets (oracle)" if config.tune.mode == "oracle"
               else f"a tuning SED (seed {config.tune.sed_seed})", int(config.tune.trials))
  refs = {}
  for reference in ("original", "clean"):
    refs[reference] = tuner.fit(recipe.reference(tuner.train, config, reference, seed))
    task.progress.done += 1
  baseline = tuner.tuning_scores(refs["original"][0], refs["clean"][0], refs["original"][0])
  cap_s = float(config.tune.cost_cap) * float(refs["clean"][1]["time_s"])
  choices = {}
  for name, space in spaces.items():

    def run_trial(params: dict, name: str = name) -> Outcome:
      run = tuner.run_context(seed, None)
      number = _TRIAL.get()
      if number is not None and run.writer is not None:  # runs <method>/trial_<n>/seed_<s>
        run = dataclasses.replace(run, writer=run.writer.renamed(
            lambda inner, n=number, name=name:
            f"{name}/trial_{n}/{inner.removeprefix(name + '/')}"))
      start = time.perf_counter()
      try:
        state, _ = methods.call(name, refs["original"][0], run, apply(config, name, params),
                                recipe.method_rng(seed), track=task.track)
      except FloatingPointError as error:  # a diverged trial is infeasible, not fatal
        logging.warning("tuning %s: %s diverged: %s", name, params, error)
        return Outcome({}, -math.inf, time.perf_counter() - start)
      elapsed = time.perf_counter() - start - run.clock.excluded_s
      parts, acc = tuner.tuning_scores(refs["original"][0], refs["clean"][0], state)
      if number is not None:  # the trials of a method, one step each: <method>/trials
        tuner.writer.write(run=f"{name}/trials", step=number, params=params, acc_test=acc,
                           time_s=elapsed, **{f"residue_{k}": v for k, v in parts.items()})
      return Outcome(parts, acc, elapsed)

    choices[name] = {**tune_method(config, task.workdir, name, space, run_trial,
                                   baseline_acc=baseline[1], cap_s=cap_s, track=task.track),
                     "mode": ORACLE_LABEL if config.tune.mode == "oracle" else "tuning SED"}
    logging.info("tuning %s: chose %s (objective %.3f, %s; %s of the tuning original %.3f)",
                 name, choices[name]["params"], choices[name]["objective"],
                 "feasible" if choices[name]["feasible"] else "no feasible trial",
                 UTILITY.get(task.track, UTILITY["image"]), baseline[1])
  write_outputs(config, task.workdir, list(choices), task.track)
  return choices
