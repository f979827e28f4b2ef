"""Where a sweep's points run: submitit executors for one machine and for SLURM.

`unlearn_jax.sweep` hands every missing point to one executor and waits for the results:

* `executor='local'` with `parallel=N`: submitit's LocalExecutor, at most N points at once,
  each in its own process (its own GPUs with `devices_per_point`), output in
  WORKDIR/logs/<name>.log. A point's process ends (checkpointing first) when the sweep process
  that started it dies, so a rerun never finds a stray copy still running it.
* `executor='slurm'`: one SLURM job array of the missing points (`config.slurm` gives the
  partition, time limit, nodes and GPUs per point, how many run at once and extra sbatch
  options). A point that SLURM preempts or times out is requeued by submitit and resumes from
  its study's checkpoints. A point spanning several nodes starts `jax.distributed` from the
  job's environment (submitit's JobEnvironment: hosts, rank, world size).

Scheduling belongs to the engines; the sweep only decides which points are missing (a point is
done when its report/summary.json is newer than its config.json) and aggregates the report.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from typing import Any

import submitit

JOBS_DIR = "jobs"  # submitit's folder: pickled jobs, results and the engines' own logs
# squeue states of a job that may still run (a preempted job is requeued: PENDING again).
ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED",
                 "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED"}


def sbatch_options(text: str) -> dict[str, str]:
  """`qos=high,account=lab` -> {'qos': 'high', 'account': 'lab'} (sbatch's long options).

  Raises:
    ValueError: an item without `=`.
  """
  options = {}
  for item in filter(None, (part.strip() for part in text.split(","))):
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise ValueError(f"{item!r} is not KEY=VALUE")
    options[key.strip().lstrip("-").replace("-", "_")] = value.strip()
  return options


def make(config, workdir: str) -> submitit.Executor:
  """The submitit executor of a sweep config (`config.executor`, `config.slurm`)."""
  folder = os.path.join(workdir, JOBS_DIR, "%j")
  if config.executor == "slurm":
    slurm = config.slurm
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    parameters = {
        "name": f"sweep:{os.path.basename(workdir.rstrip('/'))}",
        "timeout_min": int(slurm.time_min), "nodes": int(slurm.nodes), "tasks_per_node": 1,
        "cpus_per_task": int(slurm.cpus_per_point),
        "slurm_array_parallelism": int(slurm.array_parallelism),
        "slurm_additional_parameters": sbatch_options(slurm.sbatch_options),
    }
    if slurm.gpus_per_node:
      parameters["gpus_per_node"] = int(slurm.gpus_per_node)
    if slurm.partition:
      parameters["slurm_partition"] = str(slurm.partition)
    if slurm.mem_gb:
      parameters["mem_gb"] = int(slurm.mem_gb)
    executor.update_parameters(**parameters)
    return executor
  executor = submitit.LocalExecutor(folder=folder)
  # A point runs as long as it needs; the sweep process limits how many run at once.
  executor.update_parameters(timeout_min=60 * 24 * 365)
  return executor


class PointJob(submitit.helpers.Checkpointable):
  """One point, run by an engine's process: `__call__` returns its result record.

  Checkpointable: submitit requeues a preempted or timed-out SLURM job with the same arguments,
  and the study resumes from the checkpoints in the point's workdir.
  """

  def __call__(self, point, sweep_workdir: str, retry_failed_methods: bool,
               env: dict[str, str] | None, log_path: str,
               parent_pid: int | None) -> dict[str, Any]:
    if parent_pid is not None:
      _end_with(parent_pid)
    os.environ.update(env or {})  # before JAX initialises a backend (it does so lazily)
    _log_to(log_path)
    from unlearn_jax import preemption, sweep  # pylint: disable=g-import-not-at-top
    rank = _start_distributed(point.name)
    try:
      return sweep.run_point(point, sweep_workdir, retry_failed_methods, use_lock=rank == 0)
    except preemption.Preempted as error:
      return {"status": "interrupted", "ran": True, "error": str(error)}
    finally:
      sys.stdout.flush()
      sys.stderr.flush()


def _log_to(log_path: str) -> None:
  """Sends this process's output to `log_path` (appended), with absl's INFO log format."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  descriptor = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  os.dup2(descriptor, 1)
  os.dup2(descriptor, 2)
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)


def _start_distributed(name: str) -> int:
  """On a SLURM job of several tasks, starts jax.distributed; returns this process's rank."""
  try:
    environment = submitit.JobEnvironment()
  except RuntimeError:  # not inside a submitit job
    return 0
  if environment.num_tasks <= 1:
    return 0
  from unlearn_jax import parallel  # pylint: disable=g-import-not-at-top
  # Every task derives the same port from the job: the coordinator runs on the first host.
  port = 20000 + zlib.crc32(f"{environment.job_id}:{name}".encode()) % 20000
  parallel.initialize(f"{environment.hostnames[0]}:{port}", environment.num_tasks,
                      environment.global_rank)
  return environment.global_rank


def _end_with(parent_pid: int, every_s: float = 2.0) -> None:
  """SIGTERMs this process (the study checkpoints and stops) once the sweep process is gone."""

  def watch() -> None:
    while True:
      try:
        os.kill(parent_pid, 0)
      except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGTERM)
        return
      except PermissionError:
        pass
      time.sleep(every_s)

  threading.Thread(target=watch, name="sweep-parent", daemon=True).start()


def slurm_states(jobs) -> dict[str, str]:
  """{job id: squeue state} of the SLURM jobs still listed (array tasks as `ARRAY_TASK`).

  squeue rather than sacct: it needs no accounting database. A job that has left the queue is
  absent.
  """
  arrays = sorted({str(job.job_id).split("_")[0] for job in jobs})
  if not arrays:
    return {}
  result = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(arrays)],
                          capture_output=True, text=True, check=False)
  if result.returncode != 0:
    if "Invalid job id" in result.stderr:
      return {}  # every job has left the queue
    raise RuntimeError(f"squeue failed: {result.stderr.strip()}")
  states = {}
  for line in result.stdout.splitlines():
    job_id, _, state = line.strip().partition(" ")
    states[job_id] = state.strip()
  return states


def finished(job, states: dict[str, str] | None) -> bool:
  """True once the job wrote its result, or (SLURM) left the queue without one."""
  if job.paths.result_pickle.exists():
    return True
  if states is None:  # local
    return job.done()
  return states.get(str(job.job_id)) not in ACTIVE_STATES


def outcome(job, log_path: str, wait_s: float = 5.0) -> dict[str, Any]:
  """The point's result record from a finished job; 'failed' with the reason when it has none."""
  deadline = time.time() + wait_s
  while not job.paths.result_pickle.exists() and time.time() < deadline:
    time.sleep(0.5)  # a shared file system may show the result a little later
  if job.paths.result_pickle.exists():
    try:
      return job.result()
    except Exception as error:  # pylint: disable=broad-except  (the job's own exception)
      text = str(error).strip().splitlines()
      return {"status": "failed", "ran": True,
              "error": f"{type(error).__name__}: {text[-1] if text else ''} (see {log_path})"}
  return {"status": "failed", "ran": True,
          "error": f"job {job.job_id} ended without a result (cancelled, killed or out of "
                   f"memory; see {log_path} and {job.paths.stderr})"}


def cancel(jobs) -> None:
  """Asks every job to stop: the studies checkpoint first.

  Local jobs get SIGTERM through their submitit controller, which forwards it to the point's
  process (submitit's own `cancel` sends SIGINT, which the study does not checkpoint on).
  """
  for job in jobs:
    try:
      process = getattr(job, "_process", None)  # LocalJob's controller process
      if process is not None:
        process.send_signal(signal.SIGTERM)
      else:
        job.cancel(check=False)
    except Exception:  # pylint: disable=broad-except  (already gone)
      pass
