"""Command-line entry point of a study.

    python -m unlearn_jax.main --config=configs/sed_mnist.py[:runlocal] --workdir=/tmp/study

`--config.<field>=value` overrides one field (e.g. `--config.sed.ratio=0.5`). The binary only
parses flags and calls `study.run`, which does the work and returns the summary.
"""

from __future__ import annotations

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from unlearn_jax import config as config_lib
from unlearn_jax import study
from unlearn_jax.data import sources

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Study config file, e.g. configs/sed_mnist.py:runlocal.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and the report (resumed if it exists).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.info("JAX %s: process %d of %d, %d local / %d global device(s) (%s)", jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform)
  try:
    study.run(_CONFIG.value, _WORKDIR.value)
  except (config_lib.ConfigError, sources.DatasetNotPreparedError) as error:
    # Bad input is the user's to fix: one line, no traceback, non-zero exit.
    sys.exit(f"error: {error}")


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
