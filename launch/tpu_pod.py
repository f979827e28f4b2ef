"""Runs a sweep on a Cloud TPU pod slice: every host runs the same command, one study at a time.

    python launch/tpu_pod.py --tpu=my-v4-32 --zone=us-central2-b --workdir=/mnt/shared/sweep \
        --config=configs/sweep_similarity.py:dataset=cifar10 -- --config.study.data_dir=/mnt/tfds

composes

    gcloud compute tpus tpu-vm ssh my-v4-32 --zone=us-central2-b --worker=all \
        --command='cd unlearn_jax && python3 -m unlearn_jax.sweep --config=... \
        --workdir=/mnt/shared/sweep --distributed --config.study.data_dir=/mnt/tfds'

`--distributed` makes every host call `jax.distributed.initialize()`, so each study is one JAX
program over all chips of the slice (points run one after the other; process 0 decides which
points are complete and writes the reports). The workdir and the data dir must be a filesystem
every host sees at the same path (NFS/Filestore, or a gcsfuse mount): the study's checkpoints
are written by all hosts. `--setup` first installs the repository and JAX for TPU on every
host. Flags after `--` go to the sweep unchanged; `--dry_run` prints the command only.
"""

from __future__ import annotations

import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # pylint: disable=g-import-not-at-top,wrong-import-position

import common  # pylint: disable=g-import-not-at-top,wrong-import-position

_TPU = flags.DEFINE_string("tpu", None, "TPU VM (pod slice) name.", required=True)
_ZONE = flags.DEFINE_string("zone", None, "Its zone, e.g. us-central2-b.", required=True)
_PROJECT = flags.DEFINE_string("project", "", "Google Cloud project ('' = gcloud's default).")
_CONFIG = flags.DEFINE_string("config", common.DEFAULT_CONFIG, "Sweep config with its variant.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory on a filesystem shared by all "
                               "hosts.", required=True)
_REPO = flags.DEFINE_string("repo", "unlearn_jax", "The repository's path on the hosts "
                            "(relative to the login directory, or absolute).")
_PYTHON = flags.DEFINE_string("python", "python3", "Python interpreter on the hosts.")
_SETUP = flags.DEFINE_bool("setup", False, "First `pip install -e . jax[tpu]` on every host.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the command instead of running it.")


def remote_command(overrides: list[str]) -> str:
  """The shell line every host runs."""
  sweep = common.sweep_command(_CONFIG.value, _WORKDIR.value, overrides, _PYTHON.value,
                               distributed=True)
  steps = [f"cd {shlex.quote(_REPO.value)}"]
  if _SETUP.value:
    steps.append(shlex.join([_PYTHON.value, "-m", "pip", "install", "-e", ".", "jax[tpu]"]))
  steps.append(shlex.join(sweep))
  return " && ".join(steps)


def main(argv: list[str]) -> int:
  extra, dry_run = common.passthrough(argv[1:], _DRY_RUN.value)
  try:
    remote = remote_command(extra)
  except ValueError as error:
    common.fail(str(error))
  command = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", _TPU.value, f"--zone={_ZONE.value}"]
  if _PROJECT.value:
    command.append(f"--project={_PROJECT.value}")
  command += ["--worker=all", f"--command={remote}"]
  return common.run(command, dry_run, cwd=None)


if __name__ == "__main__":
  app.run(main)
