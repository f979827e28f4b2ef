"""Command-line entry point of a study.

    python -m unlearn_jax.main --config=configs/sed_mnist.py[:runlocal] --workdir=/tmp/study
    python -m unlearn_jax.main --config=configs/sed_qa.py[:runlocal] --workdir=/tmp/qa

`--config.<field>=value` overrides one field (e.g. `--config.sed.ratio=0.5`). The binary only
parses flags and calls `study.run` (image track) or `lm.study.run` (a config with
`track = 'lm'`), which do the work and return the summary.

Many hosts: run the same command on every host with `--coordinator_address=HOST:PORT
--num_processes=N --process_id=I` (or on a TPU pod slice / SLURM with `--distributed`, which
lets JAX detect the cluster); every process trains on its slice of each global batch and
process 0 writes the report.
"""

from __future__ import annotations

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from unlearn_jax import config as config_lib
from unlearn_jax import parallel, preemption, study
from unlearn_jax.data import sources
from unlearn_jax.lm import study as lm_study

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Study config file, e.g. configs/sed_mnist.py:runlocal.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and the report (resumed if it exists).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host: HOST:PORT of process 0 (jax.distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Multi-host with cluster auto-detection (TPU pod slices, SLURM).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if _DISTRIBUTED.value or _COORDINATOR.value or _NUM_PROCESSES.value is not None:
    parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  logging.info("JAX %s: process %d of %d, %d local / %d global device(s) (%s)", jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform)
  try:
    runner = lm_study.run if lm_study.is_lm_config(_CONFIG.value) else study.run
    summary = runner(_CONFIG.value, _WORKDIR.value)
  except (config_lib.ConfigError, sources.DatasetNotPreparedError) as error:
    # Bad input is the user's to fix: one line, no traceback, non-zero exit.
    sys.exit(f"error: {error}")
  except preemption.Preempted as error:
    logging.warning("%s; rerun the same command to resume", error)
    sys.exit(preemption.EXIT_CODE)
  failed = {key: text for key, text in summary["status"].items() if text != "ok"}
  if failed:
    # The report is complete for everything else; the exit status says that something failed.
    for key, text in failed.items():
      logging.error("%s: %s", key, text)
    sys.exit(f"error: {len(failed)} method run(s) did not finish: {', '.join(failed)} "
             "(see report/report.md)")


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with one-line errors (see `config.parse_flags_or_exit`)."""
  return config_lib.parse_flags_or_exit(argv, _unknown_override)


def _unknown_override(argv: list[str]) -> str | None:
  """Names the first `--config.a.b=...` whose field the base config lacks, listing valid ones."""
  from unlearn_jax import defaults  # pylint: disable=g-import-not-at-top
  from unlearn_jax.lm import defaults as lm_defaults  # pylint: disable=g-import-not-at-top
  base = defaults.base_config()
  if any(_is_lm_config_file(arg[len("--config="):].split(":", 1)[0])
         for arg in argv if arg.startswith("--config=")):
    base = lm_defaults.base_config()
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    node, path = base, "config"
    for key in arg[len("--config."):].split("=", 1)[0].split("."):
      if path == "config.model_kwargs":
        break  # free-form: the model checks its own fields
      if not hasattr(node, "keys") or key not in node:
        valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "none"
        return f"{path}.{key}: unknown field; valid fields of {path}: {valid}"
      node, path = node[key], f"{path}.{key}"
  return None


def _is_lm_config_file(path: str) -> bool:
  """A config file that builds on the language-model base config."""
  try:
    with open(path) as f:
      return "unlearn_jax.lm" in f.read()
  except OSError:
    return False


def run():
  """Console-script entry point."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
