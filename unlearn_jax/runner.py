"""The study runner: one loop for every track (docs/design.md §2).

A study is stages over a task: data -> references -> methods -> evaluation -> report. The task
(`tasks/image.py`: image classification; `tasks/lm.py`: question answering with a small
language model) supplies the data, how its models train and how they are scored; this module
runs the stages in the same order for both:

1. data: `Task.build` loads the data and builds the SED (the task's `forget`, `retain`, `val`);
2. references: `original`, `retrain`, `clean`, `clean_alt` of every seed (`recipe.reference`);
3. methods: every name of `config.methods` from `original`, through the method registry
   (`methods.call`), each in its checkpoint folder; a method whose spec names a reference
   (`retrain`) is that reference, not a run;
4. evaluation: `Task.evaluate` scores every model of the seed;
5. report: `Task.summarize` and `Task.write_report`.

Tracks that add runs or results to a study (remedies, training-data reconstruction, SISA's ensemble
references) plug in as `Plugin`s (`tasks/base.py`): each may own extra runs, act after the runs of a
seed, add fields after its evaluation and add to the summary. Every model is checkpointed, so
rerunning a command resumes where it stopped; a method that fails is recorded in the summary's
`status` and the others go on.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from typing import Any, Iterator

import ml_collections
from absl import logging

from unlearn_jax import config as config_lib
from unlearn_jax import methods, preemption, recipe, tune, utils
from unlearn_jax import workdir as workdir_lib
from unlearn_jax.tasks.base import Arrays, Plugin, SeedRun, Task


def run(task_type: type[Task], config: ml_collections.ConfigDict,
        workdir: str) -> dict[str, Any]:
  """Runs (or resumes) a study of `task_type` and returns its summary (also in report/).

  Raises:
    config_lib.ConfigError: for an invalid config, before anything is written.
    preemption.Preempted: after SIGTERM, once the running model is checkpointed.
  """
  utils.quiet_library_logs()
  preemption.install()
  task_type.validate(config)
  tune.preflight(config, task_type.track)
  return execute(task_type, config, os.path.abspath(workdir))[0]


def execute(task_type: type[Task], config: ml_collections.ConfigDict, workdir: str
            ) -> tuple[dict[str, Any], Task, dict[int, SeedRun], dict[str, str]]:
  """The stages of a validated study in `workdir`: (summary, task, {seed: SeedRun}, status)."""
  workdir_lib.prepare(config, workdir)
  task = task_type.build(config, workdir)
  plugins = task.plugins()
  names = run_names(task, plugins)
  seeds = [int(s) for s in config_lib.as_tuple(config.seeds)]
  task.progress.total = task.models_before_seeds() + len(seeds) * (
      len(recipe.names(config)) + len([n for n in names if not is_reference(task, plugins, n)])
      + sum(plugin.models(task, names) for plugin in plugins))
  task.before_seeds()
  task.tuned = tune.run(task, names)
  runs: dict[int, SeedRun] = {}
  status: dict[str, str] = {}
  for seed in seeds:
    runs[seed] = run_seed(task, plugins, names, seed, status)
  logging.info("stage: report")
  summary = task.summarize(runs, status)
  for plugin in plugins:
    plugin.finish(task, summary, runs, status)
  report = task.write_report(summary, runs)
  logging.info("report written to %s", os.path.join(workdir, "report"))
  if utils.is_main_process():  # one copy of the report, not one per process
    print(report, flush=True)
  return summary, task, runs, status


def run_names(task: Task, plugins: list[Plugin]) -> tuple[str, ...]:
  """Every run of a seed: `config.methods`, then the plugins' runs (each once)."""
  names = methods.resolve(config_lib.as_tuple(task.config.methods), track=task.track)
  for plugin in plugins:
    names += tuple(name for name in plugin.names(task.config) if name not in names)
  return names


def owner(plugins: list[Plugin], name: str) -> Plugin | None:
  """The plugin that runs `name`, or None for a method of the registry."""
  return next((plugin for plugin in plugins if plugin.owns(name)), None)


def is_reference(task: Task, plugins: list[Plugin], name: str) -> bool:
  """Whether method `name` is one of the study's references (`retrain`): not run again."""
  return owner(plugins, name) is None and bool(methods.spec(name, track=task.track).reference)


def run_seed(task: Task, plugins: list[Plugin], names: tuple[str, ...], seed: int,
             status: dict[str, str]) -> SeedRun:
  """Trains the references and runs the methods of one seed, then evaluates its models."""
  run = SeedRun(seed, names)
  for name in recipe.names(task.config):
    run.states[name], info = task.fit(recipe.reference(task.train, task.config, name, seed))
    run.times[name] = info["time_s"]
    task.progress.done += 1
  for plugin in plugins:
    plugin.start_seed(task, run)
  for name in names:
    key = f"{name}/seed_{seed}"
    if is_reference(task, plugins, name):  # its model is the reference itself
      status[key] = "ok"
      continue
    plugin = owner(plugins, name)
    with method_status(status, key):
      run.states[name], run.times[name] = (plugin.run(task, run, name) if plugin
                                           else run_method(task, name, run))
    task.progress.done += 1
  for plugin in plugins:
    plugin.after_runs(task, run, status)
  logging.info("stage: evaluate seed_%d (%d models)", seed, len(run.states))
  task.evaluate(run)
  for plugin in plugins:
    plugin.extend(task, run)
  run.extra.pop("logits", None)  # kept for the plugins only
  for name, record in run.records.items():
    record["time_s"] = run.times[name]
    # Its numbers in metrics.jsonl and TensorBoard's run eval/<model>, at step = the seed.
    task.writer.write(run=f"eval/{name}", step=seed, **utils.scalars(utils.to_jsonable(record)))
  return run


def run_method(task: Task, name: str, run: SeedRun, forget: Arrays | None = None,
               retain: Arrays | None = None, base: str | None = None) -> tuple[Any, float]:
  """Runs method `base` (default `name`) from the seed's `original` as run `name` (or restores
  its result); returns the state and the unlearning time in seconds.

  The time leaves out what the method spends in `RunContext.untimed()` (SISA training its own
  ensemble before it unlearns) and is kept in the run's info.json across resumptions.
  """
  directory = task.checkpoint_dir(name, run.seed)
  context = task.run_context(run.seed, directory, forget, retain)
  logging.info("stage: method %s/seed_%d (|forget|=%d, |retain|=%d; %s)", name, run.seed,
               len(context.forget["kind"]), len(context.retain["kind"]), task.progress.line())
  method = base or name
  start = time.perf_counter()
  state, info = methods.call(method, run.states["original"], context, task.method_config(method),
                             recipe.method_rng(run.seed), track=task.track)
  elapsed = time.perf_counter() - start - context.clock.excluded_s
  return state, workdir_lib.record_time(directory, info, elapsed)


@contextlib.contextmanager
def method_status(status: dict[str, str], key: str) -> Iterator[None]:
  """Runs the block of one run and records how it ended in `status[key]`.

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
