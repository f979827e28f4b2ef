"""Tuning shared between processes through a real PostgreSQL server, started by the fixture
(initdb and pg_ctl as user postgres, a throw-away data directory, a free port on 127.0.0.1).

Needs Debian's postgresql (scripts/install_cluster.sh installs it) and psycopg (the `cluster`
extra); without them, or without root to run the server as user postgres, the tests are
skipped with the reason.
"""

import glob
import json
import os
import pathlib
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import optuna
import pytest

import test_tune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _postgres_bin() -> str | None:
  """The directory of initdb and pg_ctl (Debian keeps them out of PATH)."""
  found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
  if found:
    return os.path.dirname(found[-1])
  if shutil.which("initdb") and shutil.which("pg_ctl"):
    return os.path.dirname(os.path.realpath(shutil.which("initdb")))
  return None


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory):
  """postgresql://... of a running server (its `postgres` database); stopped afterwards."""
  try:
    import psycopg  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    pytest.skip("psycopg (SQLAlchemy's PostgreSQL driver) is not installed: "
                "pip install -e '.[cluster]'")
  bin_dir = _postgres_bin()
  if bin_dir is None:
    pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl): run scripts/install_cluster.sh "
                "(apt-get install postgresql)")
  try:
    user = pwd.getpwnam("postgres")
  except KeyError:
    pytest.skip("no user postgres to run the server as")
  if os.geteuid() not in (0, user.pw_uid):
    pytest.skip("the test PostgreSQL server runs as user postgres: needs root")
  del tmp_path_factory  # pytest's are private to root: the server's user could not enter them
  base = pathlib.Path(tempfile.mkdtemp(prefix="unlearn_postgres_"))
  data = base / "data"
  os.chown(base, user.pw_uid, user.pw_gid)
  as_postgres = lambda *command: subprocess.run(
      ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command),
      check=True, capture_output=True, text=True, cwd=str(base))
  as_postgres(os.path.join(bin_dir, "initdb"), "-D", str(data), "-U", "postgres",
              "--auth=trust", "-E", "UTF8")
  port = _free_port()
  as_postgres(os.path.join(bin_dir, "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"),
              "-w", "-t", "60", "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1",
              "start")
  try:
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
  finally:
    as_postgres(os.path.join(bin_dir, "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                "stop")
    shutil.rmtree(base, ignore_errors=True)


def _worker_script(storage: str, log: str, trials: int, kill_after: int | None = None) -> str:
  """A tuning process: the synthetic trials of test_tune, each logged to `log` as it runs."""
  return (f"import sys, json, os; sys.path[:0] = {[ROOT, os.path.join(ROOT, 'tests')]!r}\n"
          "import test_tune\n"
          "from unlearn_jax import tune\n"
          "real = tune.tune_method\n"
          "def logged(config, workdir, name, space, run_trial, **kw):\n"
          "  def wrapped(params):\n"
          f"    with open({log!r}, 'a') as f: f.write(json.dumps(params) + '\\n')\n"
          "    return run_trial(params)\n"
          "  return real(config, workdir, name, space, wrapped, **kw)\n"
          "tune.tune_method = logged\n"
          f"test_tune.run_synthetic({storage!r}, {trials}, sleep=0.3, "
          f"stop_after={kill_after!r})\n")


def _database(server: str, name: str) -> str:
  """The URL of a new, empty database `name` on the server (one per test: studies apart)."""
  import psycopg  # pylint: disable=g-import-not-at-top
  with psycopg.connect(server, autocommit=True) as connection:
    connection.execute(f"CREATE DATABASE {name}")
  return server.rsplit("/", 1)[0] + "/" + name


def test_two_processes_share_one_study_on_postgres_none_twice(postgres_url, tmp_path):
  storage = _database(postgres_url, "shared")
  log = tmp_path / "ran"
  processes = [subprocess.Popen([sys.executable, "-c", _worker_script(storage, str(log), 10)])
               for _ in range(2)]
  assert [p.wait(timeout=300) for p in processes] == [0, 0]
  loaded = optuna.load_study(study_name="image/demo/tuning", storage=storage)
  complete = loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
  ran = [json.loads(line) for line in log.read_text().splitlines()]
  assert len(complete) == 10 and len(ran) == 10  # every trial ran once, in one process
  assert sorted(json.dumps(t.params, sort_keys=True) for t in complete) == sorted(
      json.dumps(params, sort_keys=True) for params in ran)
  assert not loaded.get_trials(states=(optuna.trial.TrialState.RUNNING,))
  owners = {t.user_attrs["owner"] for t in complete}
  assert len(owners) == 2, owners  # both processes took trials


def test_a_worker_killed_mid_trial_is_failed_once_and_the_run_resumes(postgres_url, tmp_path):
  storage = _database(postgres_url, "killed")
  log = tmp_path / "ran"
  killed = subprocess.run(
      [sys.executable, "-c", _worker_script(storage, str(log), 6, kill_after=2)], timeout=300)
  assert killed.returncode == -signal.SIGKILL
  loaded = optuna.load_study(study_name="image/demo/tuning", storage=storage)
  states = [t.state for t in loaded.get_trials()]
  assert states.count(optuna.trial.TrialState.COMPLETE) == 2
  assert states.count(optuna.trial.TrialState.RUNNING) == 1  # the killed worker's, its pid
  resumed = test_tune.run_synthetic(storage, 6)
  states = [t.state for t in loaded.get_trials()]
  assert states.count(optuna.trial.TrialState.FAIL) == 1  # failed, never counted
  assert states.count(optuna.trial.TrialState.COMPLETE) == 6
  assert states.count(optuna.trial.TrialState.RUNNING) == 0
  whole = test_tune.run_synthetic(f"sqlite:///{tmp_path}/whole.db", 6)
  assert resumed["trials"] == 6 and resumed["params"] == whole["params"]
