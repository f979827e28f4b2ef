"""Runs a sweep on one machine with several GPUs: one point per GPU (or per group of GPUs).

    python launch/gpu_box.py --workdir=/data/sweeps/cifar10 --gpus=8 \
        --config=configs/sweep_similarity.py:dataset=cifar10 -- --config.study.data_dir=/data/tfds

composes

    CUDA_VISIBLE_DEVICES=0,1,...,7 python -m unlearn_jax.sweep --config=... --workdir=... \
        --config.parallel=8 --config.devices_per_point=1 --config.study.data_dir=/data/tfds

The sweep starts `gpus / gpus_per_point` worker processes; worker slot i sees only its own
GPUs (CUDA_VISIBLE_DEVICES), so points never share a device and each study data-parallelises
over its GPUs. `--gpus=0` (default) counts them with `nvidia-smi -L`. Flags after `--` go to the
sweep unchanged; `--dry_run` prints the command without running it.
"""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # pylint: disable=g-import-not-at-top,wrong-import-position

import common  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = flags.DEFINE_string("config", common.DEFAULT_CONFIG, "Sweep config with its variant.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory.", required=True)
_GPUS = flags.DEFINE_integer("gpus", 0, "GPUs to use (ids 0..gpus-1); 0 = all of nvidia-smi's.",
                             lower_bound=0)
_GPUS_PER_POINT = flags.DEFINE_integer("gpus_per_point", 1, "GPUs of one point's study.",
                                       lower_bound=1)
_PYTHON = flags.DEFINE_string("python", sys.executable, "Python interpreter to run.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the command instead of running it.")


def count_gpus() -> int:
  """GPUs listed by `nvidia-smi -L` (0 when it is missing or fails)."""
  try:
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30,
                             check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return 0
  return sum(line.startswith("GPU ") for line in listing.splitlines())


def main(argv: list[str]) -> int:
  extra, dry_run = common.passthrough(argv[1:], _DRY_RUN.value)
  gpus = _GPUS.value or count_gpus()
  per_point = _GPUS_PER_POINT.value
  if gpus == 0:
    common.fail("no GPUs found (nvidia-smi -L lists none); pass --gpus=N")
  if gpus % per_point:
    common.fail(f"--gpus={gpus} is not a multiple of --gpus_per_point={per_point}")
  overrides = [f"--config.parallel={gpus // per_point}",
               f"--config.devices_per_point={per_point}", *extra]
  try:
    command = common.sweep_command(_CONFIG.value, _WORKDIR.value, overrides, _PYTHON.value)
  except ValueError as error:
    common.fail(str(error))
  env = {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(gpus))}
  return common.run(command, dry_run, env)


if __name__ == "__main__":
  app.run(main)
