"""Sweeps through a real SLURM: a one-node cluster (munged, slurmctld, slurmd on localhost) that
the fixture starts in a temporary directory and stops afterwards.

Needs Debian's slurm-wlm and munge (scripts/install_cluster.sh installs them); without them, or
without root (slurmd runs jobs as their user), the tests are skipped with the reason.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from unlearn_jax import utils

import test_sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _find(name: str) -> str | None:
  return shutil.which(name) or next(
      (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
  """SLURM_CONF of a running one-node cluster (2 CPUs for jobs); the daemons stop afterwards."""
  missing = [name for name in DAEMONS if _find(name) is None]
  if missing:
    pytest.skip(f"SLURM is not installed (no {', '.join(missing)}): run "
                "scripts/install_cluster.sh (apt-get install slurm-wlm munge)")
  if os.geteuid() != 0:
    pytest.skip("a test SLURM cluster needs root (slurmd starts jobs as their user)")
  base = tmp_path_factory.mktemp("slurm")
  for sub in ("state", "spool", "munge"):
    (base / sub).mkdir()
  munge = base / "munge"
  key, socket_path = munge / "munge.key", munge / "munge.socket"
  subprocess.run([_find("mungekey"), "-c", "-f", "-k", str(key)], check=True)
  host = socket.gethostname().split(".")[0]
  cpus = 2
  conf = base / "slurm.conf"
  conf.write_text("\n".join([
      "ClusterName=unlearntest", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root",
      "SlurmdUser=root", f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
      "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={socket_path}",
      f"StateSaveLocation={base / 'state'}", f"SlurmdSpoolDir={base / 'spool'}",
      f"SlurmctldPidFile={base / 'slurmctld.pid'}", f"SlurmdPidFile={base / 'slurmd.pid'}",
      f"SlurmctldLogFile={base / 'slurmctld.log'}", f"SlurmdLogFile={base / 'slurmd.log'}",
      "ProctrackType=proctrack/pgid", "TaskPlugin=task/none",
      "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
      "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "MpiDefault=none",
      "ReturnToService=2", "SchedulerType=sched/backfill", "MinJobAge=600",
      "KillWait=10", "InactiveLimit=0", "SlurmdTimeout=60",
      f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
      f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
  env = {**os.environ, "SLURM_CONF": str(conf)}
  quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}  # each has a log file
  processes = []
  try:
    processes.append(subprocess.Popen(
        [_find("munged"), "-F", f"--socket={socket_path}", f"--key-file={key}",
         f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
         f"--seed-file={munge / 'munged.seed'}", "--force"], env=env, **quiet))
    _wait_for(lambda: socket_path.exists(), 30, "munged did not start", base)
    processes.append(subprocess.Popen([_find("slurmctld"), "-D", "-i"], env=env, **quiet))
    time.sleep(1.0)
    processes.append(subprocess.Popen([_find("slurmd"), "-D"], env=env, **quiet))
    sinfo = lambda: subprocess.run([_find("sinfo"), "-h", "-o", "%t"], env=env,
                                   capture_output=True, text=True).stdout.strip()
    _wait_for(lambda: sinfo() in ("idle", "mix", "alloc"), 60, "the node never became idle",
              base)
    yield str(conf)
  finally:
    for process in reversed(processes):
      process.send_signal(signal.SIGTERM)
      try:
        process.wait(timeout=30)
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_for(condition, seconds: float, message: str, base) -> None:
  deadline = time.time() + seconds
  while not condition():
    if time.time() > deadline:
      logs = "".join(f"\n--- {p.name}:\n{p.read_text()[-2000:]}" for p in base.rglob("*.log"))
      raise RuntimeError(f"test SLURM cluster: {message}{logs}")
    time.sleep(0.5)


def _command(workdir, data_dir, *extra):
  return [*test_sweep._sweep_command(workdir, data_dir, 1), "--config.executor=slurm",
          "--config.slurm.cpus_per_point=1", "--config.slurm.time_min=30", *extra]


def test_a_sweep_on_slurm_survives_a_cancelled_point_and_matches_the_local_sweep(
    slurm_cluster, tfds_data_dir, tmp_path):
  env = {**os.environ, "SLURM_CONF": slurm_cluster,
         # Shared by every job and the local sweep: only saves test time.
         "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  workdir = tmp_path / "slurm_sweep"
  dry = subprocess.run(_command(workdir, tfds_data_dir, "--dry_run"), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
  assert dry.returncode == 0, dry.stderr[-3000:]
  assert "would run 2 point(s) (SLURM job array" in dry.stdout
  assert "#SBATCH --cpus-per-task=1" in dry.stdout and not workdir.exists()

  # First call: both points go to SLURM; the |S(t)|=3 one is cancelled while it trains.
  first = subprocess.Popen(_command(workdir, tfds_data_dir), cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  log = workdir / "logs" / f"{test_sweep.POINT_NAMES[1]}.log"
  deadline = time.time() + 240
  while "stage: reference retrain" not in (log.read_text() if log.exists() else ""):
    assert first.poll() is None, "the sweep ended before a point could be cancelled"
    assert time.time() < deadline, "the point never logged 'stage: reference retrain'"
    time.sleep(0.5)
  jobs = subprocess.run(["squeue", "-h", "-r", "-o", "%i %j"], env=env, capture_output=True,
                        text=True, check=True).stdout.split()
  array = jobs[0].split("_")[0]
  subprocess.run(["scancel", f"{array}_1"], env=env, check=True)
  output = first.communicate(timeout=300)[0]
  assert first.returncode != 0, output[-3000:]
  assert f"1 point(s) did not finish ({test_sweep.POINT_NAMES[1]}" in output
  record = utils.read_json(workdir / "report" / "sweep.json")
  # scancel sends SIGTERM first: the study checkpoints and the job reports the point interrupted.
  assert [p["status"] for p in record["points"]] == ["ok", "interrupted"]
  point = workdir / "points" / test_sweep.POINT_NAMES[1]
  assert not (point / "report" / "summary.json").exists()

  # The same command again: only the cancelled point is submitted, and it resumes.
  second = subprocess.run(_command(workdir, tfds_data_dir), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "submitted 1 points as SLURM job array" in second.stderr
  assert "2/2 points done" in second.stderr
  assert "resum" in log.read_text().lower()  # the study picked up its checkpoints

  local = tmp_path / "local_sweep"
  result = subprocess.run(test_sweep._sweep_command(local, tfds_data_dir, 1), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]
  read = lambda w: test_sweep.without_wall_times(
      test_sweep.read_csv(os.path.join(w, "report", "sweep.csv")))
  assert read(workdir) == read(local)
