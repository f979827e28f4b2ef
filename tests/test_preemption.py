"""Preemption: a `configs/sed_mnist.py:runlocal` study killed (SIGKILL) or preempted (SIGTERM)
in every stage resumes to the same summary.json as an uninterrupted run (all numbers except wall
times). Checkpoints every 10 steps so that kills inside a model's training resume mid-way."""

import json
import os
import signal
import subprocess
import sys

from conftest import without_times
from unlearn_jax import study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (stderr text that marks the moment, signal). One point in each stage of a study.
KILL_POINTS = (
    ("stage: data", signal.SIGKILL),                       # preparing/loading the dataset
    ("[original/seed_0] step 20/", signal.SIGKILL),        # training a reference, mid-way
    ("stage: reference clean/seed_0", signal.SIGKILL),     # between two references
    ("[clean_alt/seed_0] step 10/", signal.SIGTERM),       # preemption notice while training
    ("stage: method random_label/seed_0", signal.SIGKILL), # unlearning
    ("stage: evaluate seed_0", signal.SIGKILL),            # evaluation
    ("stage: report", signal.SIGKILL),                     # writing the report
)


CHECKPOINT_EVERY = 10  # steps; runlocal trains each reference for 30 steps


def _command(workdir, data_dir):
  return [sys.executable, "-m", "unlearn_jax.main", "--config=configs/sed_mnist.py:runlocal",
          f"--config.data_dir={data_dir}", f"--config.train.checkpoint_every={CHECKPOINT_EVERY}",
          f"--workdir={workdir}"]


def _run_until(marker, sig, workdir, data_dir):
  """Starts the study, sends `sig` when `marker` appears on stderr; returns the exit code."""
  process = subprocess.Popen(_command(workdir, data_dir), cwd=ROOT, stderr=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, text=True)
  seen = False
  for line in process.stderr:
    if marker in line:
      seen = True
      process.send_signal(sig)
      break
  for _ in process.stderr:  # drain so the child never blocks on a full pipe
    pass
  code = process.wait(timeout=300)
  return seen, code


def test_killed_in_every_stage_resumes_to_the_same_summary(tfds_data_dir, tmp_path):
  from configs import sed_mnist  # pylint: disable=g-import-not-at-top
  config = sed_mnist.get_config("runlocal")
  config.data_dir, config.train.checkpoint_every = tfds_data_dir, CHECKPOINT_EVERY
  reference = study.run(config, str(tmp_path / "uninterrupted"))

  workdir, data_dir = tmp_path / "killed", tmp_path / "fresh_tfds"
  for marker, sig in KILL_POINTS:
    seen, code = _run_until(marker, sig, workdir, data_dir)
    assert seen, f"the study finished before {marker!r}"
    if sig == signal.SIGTERM:
      assert code == 143, "a preempted study exits with 128 + SIGTERM after checkpointing"
    else:
      assert code == -signal.SIGKILL
  final = subprocess.run(_command(workdir, data_dir), cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
  assert final.returncode == 0, final.stderr[-2000:]
  with open(workdir / "report" / "summary.json") as f:
    resumed = json.load(f)
  assert reference["status"] == resumed["status"]
  with open(tmp_path / "uninterrupted" / "report" / "summary.json") as f:
    expected = json.load(f)
  assert without_times(resumed) == without_times(expected)
