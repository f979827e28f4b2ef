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
from unlearn_jax import preemption, study
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
    summary = study.run(_CONFIG.value, _WORKDIR.value)
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
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    node, path = defaults.base_config(), "config"
    for key in arg[len("--config."):].split("=", 1)[0].split("."):
      if path == "config.model_kwargs":
        break  # free-form: the model checks its own fields
      if not hasattr(node, "keys") or key not in node:
        valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "none"
        return f"{path}.{key}: unknown field; valid fields of {path}: {valid}"
      node, path = node[key], f"{path}.{key}"
  return None


def run():
  """Console-script entry point."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
