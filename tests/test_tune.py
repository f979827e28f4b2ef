"""Tuning: never on an evaluated target, resumable, shared between processes, refused early."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import ml_collections
import numpy as np
import optuna
import pytest

from unlearn_jax import config as config_lib
from unlearn_jax import defaults, methods, study, tune
from unlearn_jax.data import sed as sed_lib

import tiny_study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE = {"lr": methods.Float(1e-3, 1.0, log=True), "epochs": methods.Int(1, 4)}


def synthetic_trial(params: dict) -> tune.Outcome:
  """A deterministic stand-in for a method run: residue |log10(lr) + 1| + epochs / 10."""
  residue = abs(math.log10(params["lr"]) + 1.0) + params["epochs"] / 10
  return tune.Outcome({"margin": residue}, acc_test=0.9, time_s=0.01)


def tune_config(storage: str, trials: int = 8) -> ml_collections.ConfigDict:
  config = defaults.base_config()
  config.tune.storage, config.tune.trials, config.tune.startup_trials = storage, trials, 3
  return config


def run_synthetic(storage: str, trials: int, *, stop_after: int | None = None,
                  sleep: float = 0.0) -> dict:
  calls = []

  def run_trial(params):
    if stop_after is not None and len(calls) == stop_after:
      os.kill(os.getpid(), signal.SIGKILL)  # killed mid-trial: it stays RUNNING in the storage
    calls.append(params)
    time.sleep(sleep)
    return synthetic_trial(params)

  return tune.tune_method(tune_config(storage, trials), "/unused", "demo", SPACE, run_trial,
                          baseline_acc=0.9, cap_s=10.0, track="image")


def test_a_killed_run_resumes_and_picks_what_an_uninterrupted_run_picks(tmp_path):
  whole = run_synthetic(f"sqlite:///{tmp_path}/whole.db", 8)
  assert whole["trials"] == 8 and whole["feasible"]
  storage = f"sqlite:///{tmp_path}/killed.db"
  # The first process dies in its fourth trial, leaving it RUNNING under its own pid.
  script = (f"import sys; sys.path[:0] = {[ROOT, os.path.join(ROOT, 'tests')]!r}\n"
            "import test_tune\n"
            f"test_tune.run_synthetic({storage!r}, 8, stop_after=3, sleep=0.0)\n")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == -signal.SIGKILL
  loaded = optuna.load_study(study_name="image/demo/tuning", storage=storage)
  states = [t.state for t in loaded.get_trials()]
  assert states.count(optuna.trial.TrialState.COMPLETE) == 3
  assert states.count(optuna.trial.TrialState.RUNNING) == 1
  resumed = run_synthetic(storage, 8)
  assert resumed["trials"] == 8
  assert resumed["params"] == whole["params"] and resumed["objective"] == whole["objective"]


def test_two_processes_on_one_storage_complete_n_trials_none_twice(tmp_path):
  storage = f"sqlite:///{tmp_path}/shared.db"
  log = tmp_path / "ran"
  script = (f"import sys, json, os; sys.path[:0] = {[ROOT, os.path.join(ROOT, 'tests')]!r}\n"
            "import optuna, test_tune\n"
            "from unlearn_jax import tune\n"
            "real = tune.tune_method\n"
            "def logged(config, workdir, name, space, run_trial, **kw):\n"
            "  def wrapped(params):\n"
            f"    with open({str(log)!r}, 'a') as f: f.write(json.dumps(params) + '\\n')\n"
            "    return run_trial(params)\n"
            "  return real(config, workdir, name, space, wrapped, **kw)\n"
            "tune.tune_method = logged\n"
            f"test_tune.run_synthetic({storage!r}, 10, sleep=0.3)\n")
  processes = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(2)]
  assert all(p.wait(timeout=300) == 0 for p in processes)
  loaded = optuna.load_study(study_name="image/demo/tuning", storage=storage)
  complete = loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
  ran = [json.loads(line) for line in log.read_text().splitlines()]
  assert len(complete) == 10 and len(ran) == 10  # every trial ran once, in one process
  assert not loaded.get_trials(states=(optuna.trial.TrialState.RUNNING,))


def test_the_rule_prefers_feasible_trials_and_states_when_none_is():
  config = defaults.base_config()
  good = tune.Outcome({"margin": 0.5, "mia": -0.1}, acc_test=0.90, time_s=1.0)
  value, feasible, objective = tune.value_of(good, 0.905, 10.0, config)
  assert feasible and value == objective == pytest.approx(0.6)
  damaging = tune.Outcome({"margin": 0.0, "mia": 0.0}, acc_test=0.80, time_s=1.0)
  value, feasible, _ = tune.value_of(damaging, 0.905, 10.0, config)
  assert not feasible and value > tune.INFEASIBLE  # ranked after every feasible trial
  slow = tune.Outcome({"margin": 0.0}, acc_test=0.905, time_s=11.0)
  assert not tune.value_of(slow, 0.905, 10.0, config)[1]


@pytest.fixture(scope="module")
def tuned_study(tfds_data_dir, tmp_path_factory):
  config = tiny_study.get_config(f"data_dir={tfds_data_dir}")
  config.methods = ("finetune",)
  config.eval.lira.num_models = 0
  config.recon.enabled = False
  config.tune.enabled, config.tune.trials, config.tune.startup_trials = True, 3, 2
  workdir = str(tmp_path_factory.mktemp("tuned"))
  return workdir, config, study.run(config, workdir)


def test_tuning_never_reads_an_evaluated_target(tuned_study):
  workdir, _, summary = tuned_study
  evaluated = sed_lib.load_provenance(os.path.join(workdir, "data", "provenance.npz"))
  tuning = sed_lib.load_provenance(os.path.join(workdir, "tuning", "data", "provenance.npz"))
  train = tuning["split"] == 0
  evaluated_ts = evaluated["id"][np.isin(evaluated["kind"], (sed_lib.TARGET, sed_lib.SIMILAR))
                                 & (evaluated["split"] == 0)]
  assert not np.isin(tuning["id"][train], evaluated_ts).any()
  tuning_targets = tuning["id"][train & (tuning["kind"] == sed_lib.TARGET)]
  assert len(tuning_targets) == 4 and not np.isin(tuning_targets, evaluated_ts).any()
  chosen = summary["methods"]["finetune"]["tuning"]
  assert chosen["trials"] == 3 and chosen["mode"] == "tuning SED"
  assert set(chosen["params"]) == set(methods.search_space("finetune"))
  rows = open(os.path.join(workdir, "report", "tuning.csv")).read().splitlines()
  assert len(rows) == 1 + 3 and "acc_test" in rows[0]
  assert os.path.exists(os.path.join(workdir, "report", "plots", "tuning_finetune.png"))


def test_the_method_runs_with_its_tuned_parameters(tuned_study):
  workdir, config, summary = tuned_study
  chosen = summary["methods"]["finetune"]["tuning"]["params"]
  with open(os.path.join(workdir, "checkpoints", "finetune", "seed_0", "info.json")) as f:
    info = json.load(f)
  assert info["steps"] > 0
  section = tune.apply(config, "finetune", chosen)
  for key, value in chosen.items():
    assert section[key] == pytest.approx(value)


@pytest.mark.parametrize("change, field", [
    (lambda c: setattr(c.tune, "trials", 0), "tune.trials"),
    (lambda c: setattr(c.tune, "storage", "postgresql://127.0.0.1:1/none"), "tune.storage"),
    (lambda c: setattr(c.tune, "methods", ("retrain",)), "tune.methods"),
    (lambda c: setattr(c.tune, "sed_seed", c.sed.seed), "tune.sed_seed"),
])
def test_bad_tuning_input_is_refused_before_any_work(change, field, tfds_data_dir, tmp_path):
  config = tiny_study.get_config(f"data_dir={tfds_data_dir}")
  config.methods = ("finetune",)
  config.tune.enabled = True
  change(config)
  workdir = tmp_path / "never"
  with pytest.raises(config_lib.ConfigError, match=field.replace(".", r"\.")) as error:
    study.run(config, str(workdir))
  assert "\n" not in str(error.value) and not workdir.exists()


def test_an_unknown_parameter_or_an_empty_space_is_refused(tfds_data_dir):
  def keep(state, run, cfg, rng):
    del run, cfg, rng
    return state, {"steps": 0, "wall_s": 0.0}

  config = tiny_study.get_config(f"data_dir={tfds_data_dir}")
  for name, space, message in (
      ("tune_typo", {"lrr": methods.Float(0.01, 1.0)}, "unknown parameter"),
      ("tune_empty", {}, "empty search space")):
    methods.register(name, keep, default_config={"lr": 0.1},
                     spec=methods.Spec(search_space=space))
    try:
      config.methods = (name,)
      config.tune.enabled, config.tune.methods = True, (name,)
      with pytest.raises(config_lib.ConfigError, match=message):
        tune.preflight(config, "image")
    finally:
      methods.unregister(name)


def test_processes_that_create_one_new_storage_at_once_all_open_it(tmp_path):
  # Several workers started together on a fresh SQLite file race on its schema; each must open it.
  start = time.time() + 4.0
  script = (f"import sys, time; sys.path[:0] = {[ROOT]!r}\n"
            "from unlearn_jax import tune\n"
            f"time.sleep(max(0.0, {start!r} - time.time()))\n"
            f"tune.open_storage('sqlite:///{tmp_path}/fresh.db')\n")
  processes = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
               for _ in range(12)]
  errors = [p.communicate(timeout=300)[1] for p in processes]
  assert [p.returncode for p in processes] == [0] * 12, "\n".join(errors)
