"""The interfaces of a study's runner (`runner.py`, docs/design.md §2.2): the `Task` a study runs
over (one per track, `config.track`), the `Plugin`s that add runs or results to it, and the
`SeedRun` that carries what one seed produces through the stages."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import ml_collections
from absl import logging

from unlearn_jax import methods, parallel, recipe, tune, utils
from unlearn_jax import workdir as workdir_lib

Arrays = dict[str, Any]


@dataclasses.dataclass
class SeedRun:
  """Everything one seed of a study produces, passed through the stages.

  Attributes:
    seed: the study seed.
    names: the runs of the seed (methods, then the plugins' runs).
    states: {model: trained state} (references, methods, plugins' models).
    times: {model: training or unlearning time in seconds}.
    references: {model: (its original, its clean)} for models scored against other residue
      references than ('original', 'clean') (SISA's ensembles).
    residue_only: models scored on residue and utility only (no model-based metric).
    extra_records: {model: {field: value}} added to the model's record.
    records: {model: record} after evaluation.
    rows: per-target rows after evaluation.
    extra: what else the task keeps per seed (the LM track's generations).
  """
  seed: int
  names: tuple[str, ...]
  states: dict[str, Any] = dataclasses.field(default_factory=dict)
  times: dict[str, float] = dataclasses.field(default_factory=dict)
  references: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
  residue_only: set[str] = dataclasses.field(default_factory=set)
  extra_records: dict[str, dict] = dataclasses.field(default_factory=dict)
  records: dict[str, dict] = dataclasses.field(default_factory=dict)
  rows: list[dict] = dataclasses.field(default_factory=list)
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Progress:
  """Models finished out of the study's total, for 'model 3 of 7, study ETA 2m10s'."""
  total: int = 0
  done: int = 0
  started: float = dataclasses.field(default_factory=time.perf_counter)

  def line(self) -> str:
    """The progress part of a stage line; the ETA (mean time per finished model times those
    left) from the first model on."""
    elapsed = time.perf_counter() - self.started
    eta = (f", study ETA {utils.format_seconds(elapsed / self.done * (self.total - self.done))}"
           if self.done else "")
    return f"model {self.done + 1} of {self.total}{eta}"


class Task:
  """What a study runs over; one subclass per track (`config.track`).

  A subclass sets, in `build`, the data every run uses: `train` (D, with a `kind` column),
  `forget` (T), `retain` (D \\ T), `val` (held-out data) and `num_classes` (the vocabulary
  size of a language model), and defines how a model is initialised, trained, scored and
  reported.
  """
  track = ""
  train: Arrays
  forget: Arrays
  retain: Arrays
  val: Arrays
  num_classes: int

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    self.mesh = parallel.make_mesh()
    self.writer = utils.MetricWriter(os.path.join(workdir, "metrics.jsonl"))
    self.progress = Progress()
    self.tuned: dict[str, dict[str, Any]] = {}  # {method: its tuned choice (tune.py)}

  @staticmethod
  def validate(config: ml_collections.ConfigDict) -> None:
    """Raises config_lib.ConfigError for an invalid config of this track."""
    raise NotImplementedError

  @classmethod
  def build(cls, config: ml_collections.ConfigDict, workdir: str) -> "Task":
    """The data stage: the task with its SED (and its provenance saved in the workdir)."""
    raise NotImplementedError

  def init_state(self, rng: jax.Array) -> Any:
    """A freshly initialised model state for a PRNG key."""
    raise NotImplementedError

  def trainer(self):
    """The function that trains a reference from scratch (`recipe.fit`'s `trainer`)."""
    raise NotImplementedError

  def plugins(self) -> list["Plugin"]:
    """The tracks plugged into this study (none by default)."""
    return []

  def models_before_seeds(self) -> int:
    """How many models `before_seeds` trains (for the progress line)."""
    return 0

  def before_seeds(self) -> None:
    """Work shared by every seed, after the data stage (the image track's LiRA references)."""

  def evaluate(self, run: SeedRun) -> None:
    """Scores every model of `run.states`: sets `run.records` and `run.rows`."""
    raise NotImplementedError

  def summarize(self, runs: dict[int, SeedRun], status: dict[str, str]) -> dict[str, Any]:
    """summary.json of the study (before the plugins add theirs)."""
    raise NotImplementedError

  def write_report(self, summary: dict[str, Any], runs: dict[int, SeedRun]) -> str:
    """Writes report/ (on the main process) and returns the markdown report."""
    raise NotImplementedError

  def tuning_task(self) -> "Task":
    """The task of the tuning SED (tune.py): other targets, same training data, its own
    workdir WORKDIR/tuning."""
    raise NotImplementedError(f"the {self.track} track does not tune")

  def tuning_scores(self, original: Any, clean: Any, state: Any) -> tuple[dict[str, float], float]:
    """({score: mean residue of `state` on this task's targets} for `tune.objective`, its
    test accuracy), with `original` and `clean` this task's references."""
    raise NotImplementedError(f"the {self.track} track does not tune")

  def method_config(self, name: str) -> ml_collections.ConfigDict:
    """The hyper-parameters method `name` runs with: its config section, with the tuned
    parameters set when it was tuned."""
    if name in self.tuned:
      return tune.apply(self.config, name, self.tuned[name]["params"])
    return methods.method_config(self.config, name)

  def checkpoint_dir(self, name: str, seed: int) -> str:
    return workdir_lib.checkpoint_dir(self.workdir, name, seed)

  def fit(self, reference: recipe.Recipe) -> tuple[Any, dict[str, Any]]:
    """Trains (or restores) the model of `reference` in the study's workdir (`recipe.fit`)."""
    logging.info("stage: reference %s (%d examples; %s)", reference.name,
                 len(reference.data["kind"]), self.progress.line())
    return recipe.fit(reference, self.init_state, self.config.train, mesh=self.mesh,
                      workdir=self.workdir, writer=self.writer, trainer=self.trainer())

  def run_context(self, seed: int, directory: str | None, forget: Arrays | None = None,
                  retain: Arrays | None = None) -> methods.RunContext:
    """The run context of a method run of seed `seed` (the SED's T and D \\ T by default)."""
    return methods.RunContext(
        forget=self.forget if forget is None else forget,
        retain=self.retain if retain is None else retain, mesh=self.mesh, seed=int(seed),
        num_classes=self.num_classes, init_state=self.init_state, recipe=self.config.train,
        checkpoint_dir=directory, writer=self.writer, val=self.val)


class Plugin:
  """A track that adds runs or results to a study; every hook does nothing by default."""

  def names(self, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Extra runs of every seed, after `config.methods`."""
    return ()

  def owns(self, name: str) -> bool:
    """Whether run `name` is this plugin's (then `run` trains it)."""
    return False

  def models(self, task: "Task", names: tuple[str, ...]) -> int:
    """Models this plugin trains per seed besides its runs (for the progress line)."""
    return 0

  def start_seed(self, task: Task, run: SeedRun) -> None:
    """Before the runs of a seed, after its references."""

  def run(self, task: Task, run: SeedRun, name: str) -> tuple[Any, float]:
    """Trains run `name` (one this plugin owns): (state, time in seconds)."""
    raise NotImplementedError

  def after_runs(self, task: Task, run: SeedRun, status: dict[str, str]) -> None:
    """After every run of a seed, before its evaluation."""

  def extend(self, task: Task, run: SeedRun) -> None:
    """After the evaluation of a seed: may add fields to `run.records` and `run.rows`."""

  def finish(self, task: Task, summary: dict[str, Any], runs: dict[int, SeedRun],
             status: dict[str, str]) -> None:
    """Adds this plugin's results to the summary, before the report is written."""
