"""Similarity sweeps: a grid of studies in one resumable command, aggregated into one report.

    python -m unlearn_jax.sweep --config=configs/sweep_similarity.py:runlocal --workdir=/tmp/sweep
    python -m unlearn_jax.sweep --config=configs/sweep_similarity.py --workdir=/shared/sweep \
        --config.executor=slurm --config.slurm.partition=gpu --config.slurm.gpus_per_node=1

A sweep config holds a base study config (`config.study`) and a grid (`config.grid`, shaped like
the study config, every leaf a tuple of values, e.g. `grid.sed.similar_per_target = (0, 5, 20)`).
Each combination of grid values is a *point*: an ordinary study (`study.run`) in its own
sub-workdir `WORKDIR/points/<name>`, where the name spells the point's values
(`ratio=0.25,similar_per_target=5`), so it is readable and stays the same across reruns. Methods
and seeds stay inside each point's study.

Why each piece is there:
* Rerunning skips complete points (report/summary.json written after the point's config.json,
  and config.json equal to the point's config but for fields that change no result, such as
  `data_dir`) and resumes interrupted ones: the study resumes from its own checkpoints.
* Points whose studies would be identical share one sub-workdir: with no similar samples the
  generator's parameters are unused, and each generator uses only its own parameters, so
  `similar_per_target=0` is trained once for every mask ratio.
* Points run where `executor` says, through submitit (`unlearn_jax.executors`): `'local'`
  with `parallel=N` runs N at once, each in its own process writing only its own sub-workdir
  and log (`WORKDIR/logs/<name>.log`; `devices_per_point=k` gives slot i its own k GPUs);
  `'slurm'` submits the missing points as one SLURM job array (`config.slurm`: partition, time,
  nodes and GPUs per point, array parallelism, extra sbatch options), waits for them and
  aggregates the report. A preempted or timed-out job is requeued and its study resumes from
  its checkpoints; a cancelled one is recorded as not finished and the next call of the same
  command submits it again. `--dry_run` says what would run (and the sbatch script). A file
  lock per point remains only for two commands sharing one sweep workdir (a rerun while an
  earlier call's jobs still run): the second waits, then finds the point complete.
* A failed point is recorded with its error in report/sweep.json and the others go on; the
  aggregated report (`unlearn_jax.report.sweep_report`) covers every complete point.
* `--distributed` (multi-host, e.g. every host of a TPU pod slice running the same command):
  points run one after the other, each study over all hosts' devices; process 0's view of
  which points are complete is broadcast to the others, and only it writes the reports.

Layout: WORKDIR/{sweep_config.json, points/<name>/ (a study workdir each), logs/<name>.log
(each point's output when it runs in its own process), jobs/ (submitit's pickles, results and
the engines' own logs), report/{sweep.json, sweep.csv, report.md, plots/*.png}}.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import os
import re
import sys
import time
import traceback
from typing import Any, Iterator

import ml_collections
from absl import logging

from unlearn_jax import config as config_lib
from unlearn_jax import defaults, methods, preemption, study, utils
from unlearn_jax.data import generators, idx, sources
from unlearn_jax.report import sweep_report

POINTS_DIR = "points"
LOGS_DIR = "logs"
# Study fields that change no result (where data is read from, how often to log and save): a
# point whose config.json differs only in these is still complete.
NO_RESULT_FIELDS = ("data_dir", "overwrite", "train.log_every", "train.checkpoint_every")


def base_config() -> ml_collections.ConfigDict:
  """The base sweep config: every field, documented; sweep configs change values."""
  config = ml_collections.ConfigDict()
  # The study every point starts from (a full study config, see unlearn_jax/defaults.py).
  config.study = defaults.base_config()
  # Grid: the study's fields to vary, nested like the study config; every leaf is a tuple of
  # values, e.g. grid.sed.similar_per_target = (0, 5, 20). The points are all combinations.
  config.grid = ml_collections.ConfigDict()
  # Points run at once, each in its own spawned worker process; 1 runs them in this process.
  config.parallel = 1
  # With parallel > 1 on GPUs: accelerators per worker slot (slot i gets GPUs i*k .. i*k+k-1 of
  # CUDA_VISIBLE_DEVICES); 0 lets every worker see every device (memory is then allocated on
  # demand rather than preallocated, so the workers can share it).
  config.devices_per_point = 0
  # Where points run: 'local' (this machine: in this process with parallel=1, else parallel
  # processes through submitit's LocalExecutor) or 'slurm' (one SLURM job array of the missing
  # points through submitit; the command waits for them and aggregates the report).
  config.executor = "local"
  # executor='slurm': what each point's job asks for.
  config.slurm = ml_collections.ConfigDict()
  config.slurm.partition = ""  # '' = the cluster's default partition
  config.slurm.time_min = 240  # time limit per job; a job that reaches it is requeued
  config.slurm.nodes = 1  # > 1: the point's study runs over every node (jax.distributed)
  config.slurm.gpus_per_node = 0
  config.slurm.cpus_per_point = 4  # per node
  config.slurm.mem_gb = 0  # 0 = the partition's default
  config.slurm.array_parallelism = 16  # points running at once
  # Extra sbatch options, `key=value` comma-separated (e.g. 'qos=high,account=lab').
  config.slurm.sbatch_options = ""
  # Rerun complete points whose study recorded a failed or diverged method.
  config.retry_failed_methods = False
  # Aggregated report: residue scores to tabulate and plot against the grid axes (`margin`,
  # `lira`, `mia`, `recon_ssim`, `loss`, `confidence`, `kl_to_clean`; those absent from the
  # studies' results are skipped).
  config.report = ml_collections.ConfigDict(
      {"scores": ("margin", "lira", "mia", "recon_ssim")})
  return config


@dataclasses.dataclass(frozen=True)
class Point:
  """One grid point.

  Attributes:
    name: sub-workdir name derived from the point's (canonical) grid values.
    values: {dotted grid path: value} as requested by the grid.
    config: the point's study config (canonical: unused SED fields at their defaults).
    workdir: the study's workdir.
  """
  name: str
  values: dict[str, Any]
  config: ml_collections.ConfigDict
  workdir: str


# ----------------------------------------------------------------------------------------------
# Grid expansion.


def grid_axes(grid: ml_collections.ConfigDict, prefix: str = "") -> list[tuple[str, tuple]]:
  """[(dotted path, values)] of every leaf of the grid, in sorted path order."""
  axes = []
  for key in grid.keys():  # ConfigDict.keys() is sorted: the order (and names) are stable
    value, path = grid[key], f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      axes.extend(grid_axes(value, path + "."))
    else:
      values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
      axes.append((path, values))
  return axes


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
  node = config
  for key in path.split("."):
    node = node[key]
  return node


def _set(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
  *parents, leaf = path.split(".")
  node = config
  for key in parents:
    node = node[key]
  try:
    node[leaf] = value
  except (TypeError, ValueError) as error:
    raise config_lib.ConfigError(
        f"config.grid.{path}: value {value!r} does not fit config.study.{path} "
        f"({_get(config, path)!r}): {error}") from None


def canonical_study(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of a study config with the SED fields that do not change its data at their defaults.

  With `similar_per_target=0` no generator runs; otherwise a generator reads only its own
  parameters (its `Generator.fields`). Such points give identical studies, so they share one run.
  Fields bounded by the point's |S(t)| (`recon.similar_per_target`) are capped by it.
  """
  config = copy.deepcopy(config)
  if "recon" in config and config.recon.similar_per_target > config.sed.similar_per_target:
    # The reconstruction track's D_r takes its similar samples from the point's S(t): it can
    # hold no more than the point has (e.g. none at similar_per_target=0).
    config.recon.similar_per_target = config.sed.similar_per_target
  sed, default = config.sed, defaults.base_config().sed
  every = generators.fields()
  if sed.similar_per_target == 0:
    unused = ("generator",) + every
  elif sed.generator in generators.names():
    unused = [f for f in every if f not in generators.get(sed.generator).fields]
  else:
    unused = ()  # an unknown generator: validation names it
  for field in unused:
    sed[field] = default[field]
  return config


format_value = sweep_report.format_value


def point_name(values: dict[str, Any]) -> str:
  """`ratio=0.25,similar_per_target=5`: leaf names (dotted paths where leaves clash)."""
  if not values:
    return "base"
  leaves = [path.rsplit(".", 1)[-1] for path in values]
  parts = []
  for (path, value), leaf in zip(values.items(), leaves):
    label = leaf if leaves.count(leaf) == 1 else path
    parts.append(f"{label}={re.sub(r'[^A-Za-z0-9_.+-]', '_', format_value(value))}")
  return ",".join(parts)


def expand(config: ml_collections.ConfigDict, workdir: str) -> list[Point]:
  """Every grid point of a sweep config, in grid order (the last axis varies fastest).

  Raises:
    config_lib.ConfigError: a grid path that the study config lacks, an empty axis, or a value
      of the wrong type.
  """
  axes = grid_axes(config.grid)
  for path, values in axes:
    try:
      field = _get(config.study, path)
    except (KeyError, AttributeError):
      raise config_lib.ConfigError(
          f"config.grid.{path}: config.study has no field {path}") from None
    config_lib.require(not isinstance(field, ml_collections.ConfigDict), f"grid.{path}",
                       values, "must name a single study field, not a section")
    config_lib.require(len(values) >= 1 and len(set(map(format_value, values))) == len(values),
                       f"grid.{path}", values, "must be a non-empty tuple of distinct values")
  points, configs_by_name = [], {}
  for combination in itertools.product(*(values for _, values in axes)):
    point_config = copy.deepcopy(config.study)
    for (path, _), value in zip(axes, combination):
      _set(point_config, path, value)
    values = {path: _get(point_config, path) for path, _ in axes}  # typed as the study field
    canonical = canonical_study(point_config)
    name = point_name({path: _get(canonical, path) for path, _ in axes})
    resolved = canonical.to_json()
    if configs_by_name.setdefault(name, resolved) != resolved:
      raise config_lib.ConfigError(f"config.grid: two different points are both named {name!r}")
    points.append(Point(name, values, canonical, os.path.join(workdir, POINTS_DIR, name)))
  return points


def validate(config: ml_collections.ConfigDict) -> list[Point]:
  """Checks the sweep fields and every point's study before anything runs.

  Returns:
    The points (see `expand`), placed under `workdir=''` (callers re-expand with theirs).

  Raises:
    config_lib.ConfigError: the first problem, naming the field (and the point).
  """
  config_lib.check_keys(config, base_config(), free=("config.study", "config.grid"))
  config_lib.require_number("parallel", config.parallel, low=1, integer=True)
  config_lib.require_number("devices_per_point", config.devices_per_point, low=0, integer=True)
  config_lib.require(config.executor in ("local", "slurm"), "executor", config.executor,
                     "must be 'local' or 'slurm'")
  for field, low in (("time_min", 1), ("nodes", 1), ("gpus_per_node", 0), ("cpus_per_point", 1),
                     ("mem_gb", 0), ("array_parallelism", 1)):
    config_lib.require_number(f"slurm.{field}", config.slurm[field], low=low, integer=True)
  try:
    executors_options(config.slurm.sbatch_options)
  except ValueError as error:
    raise config_lib.ConfigError(f"config.slurm.sbatch_options={config.slurm.sbatch_options!r}:"
                                 f" {error}") from None
  config_lib.require(isinstance(config.retry_failed_methods, bool), "retry_failed_methods",
                     config.retry_failed_methods, "must be True or False")
  scores = config_lib.as_tuple(config.report.scores)
  config_lib.require(len(scores) >= 1, "report.scores", config.report.scores,
                     "must name at least one residue score")
  points = expand(config, "")
  for point in points:
    try:
      defaults.validate(point.config)
    except config_lib.ConfigError as error:
      raise config_lib.ConfigError(f"point {point.name}: {error}") from None
  if config.parallel > 1 or config.executor != "local":  # workers start a fresh interpreter
    in_process = sorted({p.config.dataset for p in points} & set(sources.registered())) + [
        name for name in config_lib.as_tuple(config.study.methods)
        if name != "all" and ":" not in name and name not in methods.builtin_names()]
    config_lib.require(not in_process, "parallel", config.parallel,
                       f"worker processes do not see what was registered in this process "
                       f"({', '.join(in_process)}); use parallel=1 and executor='local', or "
                       "name methods by import path (package.module:function)")
  return points


def executors_options(text: str) -> dict[str, str]:
  """`config.slurm.sbatch_options` as a dict (see `executors.sbatch_options`)."""
  from unlearn_jax import executors  # pylint: disable=g-import-not-at-top
  return executors.sbatch_options(text)


def check_datasets_prepared(points: list[Point]) -> None:
  """Fails before anything runs when a tfds dataset of the sweep is not prepared.

  Every point on that dataset would fail the same way, one study start after another.

  Raises:
    sources.DatasetNotPreparedError: naming the dataset, the data dir and how to prepare it.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  for name, data_dir in sorted({(p.config.dataset, p.config.data_dir) for p in points}):
    if name in sources.EMBEDDED or name in sources.registered():
      continue  # embedded builders prepare themselves; registered arrays live in memory
    directory = os.path.expanduser(data_dir) if data_dir else sources.default_data_dir()
    try:
      name = sources.resolve(name, directory)  # fails with the install command
      if name.startswith(idx.PREFIX):  # a folder of idx files: prepared on first use
        idx.find_files(idx.folder_of(name))
        continue
    except ValueError as error:
      raise sources.DatasetNotPreparedError(f"no point of the sweep can run: {error}") from None
    if not tfds.builder(name, data_dir=directory).is_prepared():
      raise sources.DatasetNotPreparedError(
          f"dataset={name!r} is not prepared in data_dir={directory!r}, so no point of the "
          f"sweep can run. Prepare it once (needs network access and TensorFlow): `tfds build "
          f"{name} --data_dir={directory} --file_format=array_record`, or point "
          "--config.study.data_dir at a data dir that has it.")


# ----------------------------------------------------------------------------------------------
# Running.


def is_complete(point: Point, retry_failed_methods: bool = False) -> bool:
  """True when the point's report was written by a study with exactly the point's config.

  The study rewrites config.json when it starts and summary.json when it ends, so a summary
  older than config.json belongs to a run that was interrupted (or made with another config).
  """
  config_path = os.path.join(point.workdir, "config.json")
  summary_path = os.path.join(point.workdir, "report", "summary.json")
  try:
    if os.stat(summary_path).st_mtime_ns < os.stat(config_path).st_mtime_ns:
      return False
    saved, summary = utils.read_json(config_path), utils.read_json(summary_path)
  except (OSError, ValueError):
    return False
  if _without(saved, NO_RESULT_FIELDS) != _without(json.loads(point.config.to_json()),
                                                   NO_RESULT_FIELDS):
    return False
  return not retry_failed_methods or all(
      text == "ok" for text in summary.get("status", {}).values())


def _without(tree: dict, paths: tuple[str, ...]) -> dict:
  """A copy of a JSON tree without the dotted `paths`."""
  tree = copy.deepcopy(tree)
  for path in paths:
    *parents, leaf = path.split(".")
    node = tree
    for key in parents:
      node = node.get(key, {})
    node.pop(leaf, None)
  return tree


def method_errors(workdir: str) -> dict[str, str]:
  """{'method/seed_k': reason} for every method run of a complete point that did not finish."""
  summary = utils.read_json(os.path.join(workdir, "report", "summary.json"))
  return {key: text for key, text in summary.get("status", {}).items() if text != "ok"}


@contextlib.contextmanager
def point_lock(path: str, name: str) -> Iterator[None]:
  """An exclusive flock on `path` while a point runs; waits (saying so) if another holds it."""
  try:
    import fcntl  # pylint: disable=g-import-not-at-top
  except ImportError:
    yield
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "a") as lock_file:
    try:
      fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      logging.warning("point %s is being run by another process; waiting for it", name)
      fcntl.flock(lock_file, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock_file, fcntl.LOCK_UN)


def run_point(point: Point, sweep_workdir: str, retry_failed_methods: bool = False,
              use_lock: bool = True) -> dict[str, Any]:
  """Runs (or resumes) one point's study in this process; returns its result record.

  Returns:
    {'status': 'ok' | 'failed', 'ran': bool, 'error': text (failed only),
     'method_errors': {...}}. `preemption.Preempted` and KeyboardInterrupt propagate.
  """
  lock = point_lock(os.path.join(sweep_workdir, LOGS_DIR, f"{point.name}.lock"), point.name)
  with lock if use_lock else contextlib.nullcontext():
    if is_complete(point, retry_failed_methods):  # finished by another process meanwhile
      return {"status": "ok", "ran": False, "method_errors": method_errors(point.workdir)}
    try:
      summary = study.run(point.config, point.workdir)
    except Exception as error:  # pylint: disable=broad-except
      # A failed point must not cost the others their results.
      logging.error("point %s failed:\n%s", point.name, traceback.format_exc())
      return {"status": "failed", "ran": True, "error": f"{type(error).__name__}: {error}"}
  errors = {key: text for key, text in summary["status"].items() if text != "ok"}
  return {"status": "ok", "ran": True, "method_errors": errors}


def slot_env(slot: int, devices_per_point: int, parallel: int) -> dict[str, str]:
  """Environment of worker slot `slot`: its own GPUs, or on-demand memory on shared devices."""
  if parallel == 1:
    return {}
  if devices_per_point == 0:
    return {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  ids = visible.split(",") if visible else [str(i) for i in range(parallel * devices_per_point)]
  mine = ids[slot * devices_per_point:(slot + 1) * devices_per_point]
  if len(mine) < devices_per_point:
    raise config_lib.ConfigError(
        f"config.parallel={parallel} × devices_per_point={devices_per_point} needs "
        f"{parallel * devices_per_point} GPUs; CUDA_VISIBLE_DEVICES lists {len(ids)}")
  return {"CUDA_VISIBLE_DEVICES": ",".join(mine)}


class Progress:
  """Sweep-level progress: points done / total and an ETA from the points run so far."""

  def __init__(self, total: int, done: int, parallel: int):
    self.total, self.done, self.failed, self.parallel = total, done, 0, parallel
    self.started = time.perf_counter()
    self.durations: list[float] = []

  def finished(self, seconds: float, status: str) -> str:
    """Counts a point that ended with `status`; returns the sweep's progress line."""
    self.done += status == "ok"
    self.failed += status == "failed"
    self.durations.append(seconds)
    remaining = self.total - self.done - self.failed
    eta = (sum(self.durations) / len(self.durations) * -(-remaining // self.parallel)
           if remaining else 0.0)
    return (f"{self.done}/{self.total} points done, {self.failed} failed, "
            f"elapsed {utils.format_seconds(time.perf_counter() - self.started)}, "
            f"sweep ETA {utils.format_seconds(eta)}")


def run(config: ml_collections.ConfigDict, workdir: str, dry_run: bool = False
        ) -> dict[str, Any]:
  """Runs (or resumes) every point of the sweep and writes the aggregated report.

  Args:
    config: a sweep config (see `base_config`).
    workdir: the sweep's directory (created if needed).
    dry_run: only say (log and return) which points would run, and where; writes nothing.

  Returns:
    The sweep record, also written to WORKDIR/report/sweep.json: grid, points with their status
    ('ok', 'failed', 'interrupted' or 'pending'), error text and method errors.

  Raises:
    config_lib.ConfigError: an invalid sweep config or point, before anything runs.
    preemption.Preempted: after SIGTERM, once the running points are checkpointed.
  """
  utils.quiet_library_logs()
  validate(config)
  workdir = os.path.abspath(workdir)
  points = expand(config, workdir)
  check_datasets_prepared(points)
  parallel = int(config.parallel)
  multihost = parallel == 1 and config.executor == "local" and _process_count() > 1
  main_process = not multihost or utils.is_main_process()
  jobs = list({point.workdir: point for point in points}.values())  # shared studies run once
  complete = _agree([is_complete(job, config.retry_failed_methods) for job in jobs], multihost)
  results: dict[str, dict] = {job.workdir: {"status": "ok", "ran": False,
                                            "method_errors": method_errors(job.workdir)}
                              for job, done in zip(jobs, complete) if done}
  pending = [job for job, done in zip(jobs, complete) if not done]
  logging.info("sweep: %d points (%d studies): %d complete, %d to run (%s) in %s",
               len(points), len(jobs), len(jobs) - len(pending), len(pending),
               where(config), workdir)
  if dry_run:
    return {"dry_run": True, "where": where(config), "sbatch": _sbatch_text(config, workdir),
            "complete": [job.name for job, done in zip(jobs, complete) if done],
            "to_run": [job.name for job in pending]}
  if main_process:
    utils.write_json(os.path.join(workdir, "sweep_config.json"), json.loads(config.to_json()))
  progress = Progress(len(jobs), len(jobs) - len(pending), parallel)
  record = lambda: _record(config, workdir, points, results, progress)

  def write() -> None:  # after every point, so an interrupted sweep leaves its record
    if main_process:
      utils.write_json(os.path.join(workdir, "report", "sweep.json"), record())

  preemption.install()
  try:
    if parallel == 1 and config.executor == "local":
      _run_in_process(pending, workdir, config, results, progress, write, not multihost)
    else:
      _run_in_executor(pending, workdir, config, results, progress, write)
  finally:
    write()
  final = record()
  if main_process:
    sweep_report.write(workdir, final, config_lib.as_tuple(config.report.scores))
    logging.info("sweep report written to %s", os.path.join(workdir, "report"))
  return final


def where(config: ml_collections.ConfigDict) -> str:
  """Where the points run, in words (log lines, --dry_run)."""
  if config.executor == "slurm":
    slurm = config.slurm
    return (f"SLURM job array: partition {slurm.partition or '(default)'}, {slurm.time_min} min, "
            f"{slurm.nodes} node(s) × {slurm.gpus_per_node} GPU(s) and {slurm.cpus_per_point} "
            f"CPUs per point, at most {slurm.array_parallelism} at once"
            + (f", sbatch options {slurm.sbatch_options}" if slurm.sbatch_options else ""))
  if int(config.parallel) == 1:
    return "local: one point after the other in this process"
  return f"local: {config.parallel} points at once, each in its own process"


def _sbatch_text(config: ml_collections.ConfigDict, workdir: str) -> str | None:
  """The sbatch script submitit would submit (executor='slurm'), for --dry_run."""
  if config.executor != "slurm":
    return None
  from unlearn_jax import executors  # pylint: disable=g-import-not-at-top
  executor = executors.make(config, workdir)
  # pylint: disable-next=protected-access
  return executor._executor._make_submission_file_text("python -m submitit.core._submit ...",
                                                       "SWEEP_POINT")


def _process_count() -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_count()


def _agree(values: list[bool], multihost: bool) -> list[bool]:
  """Process 0's decisions on every process (hosts may not all see the same files)."""
  if not multihost:
    return values
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  agreed = multihost_utils.broadcast_one_to_all(np.asarray(values, np.int32))
  return [bool(v) for v in np.asarray(agreed)]


def _start_line(point: Point, index: int, total: int, log: str | None = None) -> None:
  where = f" (log: {log})" if log else ""
  logging.info("sweep: point %d/%d %s started%s", index, total, point.name, where)


def _finish_line(point: Point, result: dict, seconds: float, progress: Progress) -> None:
  ok = result["status"] == "ok"
  text = "ok" if ok else f"{result['status']}: {result.get('error', '')}"
  logging.log(logging.INFO if ok else logging.ERROR, "sweep: point %s %s in %s; %s",
              point.name, text, utils.format_seconds(seconds),
              progress.finished(seconds, result["status"]))


def _run_in_process(pending, workdir, config, results, progress, write, use_lock) -> None:
  """parallel=1: the points one after the other in this process (also every host of a pod)."""
  for point in pending:
    if preemption.requested():
      raise preemption.Preempted("SIGTERM received between points")
    _start_line(point, progress.done + progress.failed + 1, progress.total)
    start = time.perf_counter()
    try:
      result = run_point(point, workdir, config.retry_failed_methods, use_lock)
    except BaseException:  # Preempted, KeyboardInterrupt: record, then stop
      results[point.workdir] = {"status": "interrupted", "ran": True}
      raise
    result["time_s"] = time.perf_counter() - start
    results[point.workdir] = result
    _finish_line(point, result, result["time_s"], progress)
    write()


def _run_in_executor(pending, workdir, config, results, progress, write) -> None:
  """parallel=N or executor='slurm': every point through a submitit executor (see executors).

  Local: at most `parallel` points at once, each in its own process. SLURM: one job array of
  every pending point, as many at once as `slurm.array_parallelism` and the cluster allow.
  """
  from unlearn_jax import executors  # pylint: disable=g-import-not-at-top
  slurm = config.executor == "slurm"
  parallel = len(pending) if slurm else int(config.parallel)
  envs = [None] * parallel if slurm else [
      slot_env(slot, config.devices_per_point, parallel) for slot in range(parallel)]
  executor = executors.make(config, workdir)
  log = lambda point: os.path.join(workdir, LOGS_DIR, f"{point.name}.log")
  job_of = executors.PointJob()
  parent = None if slurm else os.getpid()
  queue, running = list(pending), {}  # running: job -> (point, slot, start)
  free_slots = list(range(parallel))
  if slurm and queue:
    jobs = executor.map_array(job_of, queue, [workdir] * len(queue),
                              [config.retry_failed_methods] * len(queue), envs,
                              [log(p) for p in queue], [None] * len(queue))
    logging.info("sweep: submitted %d points as SLURM job array %s (engine logs: %s)",
                 len(jobs), str(jobs[0].job_id).split("_")[0],
                 os.path.join(workdir, executors.JOBS_DIR))
    for index, (point, job) in enumerate(zip(queue, jobs)):
      running[job] = (point, free_slots.pop(0), time.perf_counter())
      logging.info("sweep: point %d/%d %s is SLURM job %s (log: %s)",
                   progress.done + index + 1, progress.total, point.name, job.job_id, log(point))
    queue = []
  try:
    while queue or running:
      while queue and free_slots and not preemption.requested():
        point, slot = queue.pop(0), free_slots.pop(0)
        job = executor.submit(job_of, point, workdir, config.retry_failed_methods, envs[slot],
                              log(point), parent)
        _start_line(point, progress.done + progress.failed + len(running) + 1, progress.total,
                    log(point))
        running[job] = (point, slot, time.perf_counter())
      if preemption.requested():
        queue.clear()
        if not slurm:  # a SLURM array outlives the sweep command: its points go on
          executors.cancel(running)
          for job in running:
            job.wait()
        raise preemption.Preempted("SIGTERM: the running points were checkpointed")
      states = executors.slurm_states(running) if slurm else None
      for job in [job for job in running if executors.finished(job, states)]:
        point, slot, start = running.pop(job)
        result = executors.outcome(job, log(point))
        free_slots.append(slot)
        result["time_s"] = time.perf_counter() - start
        results[point.workdir] = result
        _finish_line(point, result, result["time_s"], progress)
        write()
      time.sleep(5.0 if slurm else 1.0)
  except BaseException:
    # KeyboardInterrupt, SIGTERM or an error here. Local points checkpoint and stop; SLURM
    # jobs go on (the next call of the command finds them done or resumes them).
    if not slurm:
      executors.cancel(running)
    for point, *_ in running.values():
      results[point.workdir] = {"status": "interrupted", "ran": True}
    raise

def _record(config, workdir, points, results, progress) -> dict[str, Any]:
  """The sweep.json content."""
  entries = []
  for point in points:
    result = results.get(point.workdir, {"status": "pending"})
    entries.append({"name": point.name,
                    "values": {path: utils.to_jsonable(v) for path, v in point.values.items()},
                    "workdir": os.path.relpath(point.workdir, workdir), **result})
  statuses = [entry["status"] for entry in entries]
  return {
      "grid": {path: list(utils.to_jsonable(values)) for path, values in grid_axes(config.grid)},
      "dataset": config.study.dataset, "model": config.study.model,
      "methods": list(config_lib.as_tuple(config.study.methods)),
      "seeds": [int(s) for s in config_lib.as_tuple(config.study.seeds)],
      "parallel": int(config.parallel), "executor": str(config.executor),
      "num_points": len(points), "num_studies": len({p.workdir for p in points}),
      "complete": statuses.count("ok"), "failed": statuses.count("failed"),
      "time_s": time.perf_counter() - progress.started,
      "points": entries,
  }


def exit_message(record: dict[str, Any]) -> str | None:
  """The error line for a sweep with failed points or failed methods; None when all is well."""
  failed = list(dict.fromkeys(p["name"] for p in record["points"] if p["status"] != "ok"))
  method_runs = sorted({f"{p['name']}: {key}" for p in record["points"]
                        for key in p.get("method_errors") or {}})
  parts = []
  if failed:
    parts.append(f"{len(failed)} point(s) did not finish ({', '.join(failed)}; rerun to "
                 "resume them)")
  if method_runs:
    parts.append(f"{len(method_runs)} method run(s) did not finish ({'; '.join(method_runs)}; "
                 "rerun with --config.retry_failed_methods=True to retry them)")
  return "error: " + "; ".join(parts) + "; see report/sweep.json" if parts else None


# ----------------------------------------------------------------------------------------------
# The binary.


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file, as `--config=path:arg` gives it (`api.load_config`).

  Relative paths are tried from the working directory, then from the repository root (the
  parent of configs/), so a sweep config can name `configs/sed_mnist.py` from anywhere.

  Raises:
    config_lib.ConfigError: the file exists in neither place.
  """
  from unlearn_jax import api  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  candidates = [path, os.path.join(root, path)]
  found = next((p for p in candidates if os.path.isfile(p)), None)
  if found is None:
    raise config_lib.ConfigError(f"config file {path!r} not found (tried {candidates})")
  return api.load_config(f"{found}:{arg}" if arg else found)


def _unknown_override(argv: list[str]) -> str | None:
  """Says which `--config.a.b=...` names no field, and what can be overridden there."""
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    path = arg[len("--config."):].split("=", 1)[0]
    if path.startswith("grid."):
      return (f"config.{path}: not an axis of this sweep's grid; the command line can change "
              "the values of existing axes only. Add axes with the config's variants (e.g. "
              "`configs/sweep_similarity.py:block=2+4`) or in the config file.")
    node, where = base_config(), "config"
    for key in path.split("."):
      if where in ("config.study.model_kwargs",):
        break  # free-form: the model checks its own fields
      if not hasattr(node, "keys") or key not in node:
        valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "none"
        return f"{where}.{key}: unknown field; valid fields of {where}: {valid}"
      node, where = node[key], f"{where}.{key}"
  return None


def cli() -> None:
  """The binary: `python -m unlearn_jax.sweep --config=... --workdir=...`.

  Exits 0 when every point and method finished, 143 after SIGTERM (rerun to resume), and with
  a one-line error otherwise (bad config, unprepared dataset, failed points or methods).
  """
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from unlearn_jax.data import sources  # pylint: disable=g-import-not-at-top
  config_flag = config_flags.DEFINE_config_file(
      "config", None, "Sweep config file, e.g. configs/sweep_similarity.py:runlocal.",
      lock_config=True)
  workdir_flag = flags.DEFINE_string(
      "workdir", None, "Sweep directory: points/<name> (one study each), logs/, report/.")
  distributed_flag = flags.DEFINE_bool(
      "distributed", False, "Call jax.distributed.initialize() first (multi-host: every host "
      "of a TPU pod slice runs the same command; needs parallel=1).")
  dry_run_flag = flags.DEFINE_bool(
      "dry_run", False, "Print which points would run, and where (with executor=slurm, the "
      "sbatch script), without running or writing anything.")
  flags.mark_flags_as_required(["config", "workdir"])

  def main(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if distributed_flag.value:
      if config_flag.value.parallel != 1 or config_flag.value.executor != "local":
        sys.exit("error: --distributed runs every point over all hosts; it needs "
                 "config.parallel=1 and config.executor='local' (with executor='slurm', "
                 "config.slurm.nodes spreads each point over nodes)")
      import jax  # pylint: disable=g-import-not-at-top
      jax.distributed.initialize()  # TPU VMs and SLURM find the coordinator themselves
    try:
      record = run(config_flag.value, workdir_flag.value, dry_run=dry_run_flag.value)
    except (config_lib.ConfigError, sources.DatasetNotPreparedError) as error:
      sys.exit(f"error: {error}")
    except preemption.Preempted as error:
      logging.warning("%s; rerun the same command to resume the sweep", error)
      sys.exit(preemption.EXIT_CODE)
    if dry_run_flag.value:
      print(f"would run {len(record['to_run'])} point(s) ({record['where']}):")
      print("".join(f"  {name}\n" for name in record["to_run"]), end="")
      print(f"{len(record['complete'])} complete: {', '.join(record['complete']) or 'none'}")
      if record["sbatch"]:
        print("sbatch script of each point's job:\n" + record["sbatch"])
      return
    message = exit_message(record)
    if message:
      sys.exit(message)

  app.run(main, flags_parser=lambda argv: config_lib.parse_flags_or_exit(argv,
                                                                         _unknown_override))


if __name__ == "__main__":
  # Through the package module, so worker processes find `unlearn_jax.sweep._worker`.
  from unlearn_jax import sweep as _sweep  # pylint: disable=g-import-not-at-top,import-self
  _sweep.cli()
