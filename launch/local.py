"""Runs a sweep on this machine (CPU, or every local accelerator shared by the points).

    python launch/local.py --workdir=/tmp/sweep --config=configs/sweep_similarity.py:runlocal
    python launch/local.py --workdir=/tmp/sweep --parallel=2 --dry_run -- \
        --config.study.data_dir=/data/tfds

Flags after `--` go to the sweep unchanged (`--config.<field>=value` overrides). With
`--dry_run` the command is printed and not run. Rerunning the same command resumes the sweep.

On CPU the command runs with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` added (XLA's per-call
scratch buffers then come in 2 MiB pages instead of being page-faulted in 4 KiB pages on every
step: about 30 % of a CNN step on a 2-core VM, benchmarks/RESULTS.md); `--nohugepages` leaves
the environment as it is.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # pylint: disable=g-import-not-at-top,wrong-import-position

import common  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = flags.DEFINE_string("config", common.DEFAULT_CONFIG + ":runlocal",
                              "Sweep config file with its variant.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory.", required=True)
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Points run at once (worker processes).",
                                 lower_bound=1)
_PYTHON = flags.DEFINE_string("python", sys.executable, "Python interpreter to run.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the command instead of running it.")
_HUGEPAGES = flags.DEFINE_bool("hugepages", True,
                               "Add glibc.malloc.hugetlb=1 to GLIBC_TUNABLES (faster XLA:CPU).")


def main(argv: list[str]) -> int:
  overrides, dry_run = common.passthrough(argv[1:], _DRY_RUN.value)
  if _PARALLEL.value > 1:
    overrides = [f"--config.parallel={_PARALLEL.value}", *overrides]
  try:
    command = common.sweep_command(_CONFIG.value, _WORKDIR.value, overrides, _PYTHON.value)
  except ValueError as error:
    common.fail(str(error))
  tunables = common.with_hugepages(os.environ.get("GLIBC_TUNABLES")) if _HUGEPAGES.value else None
  env = {"GLIBC_TUNABLES": tunables} if tunables else {}
  return common.run(command, dry_run, env)


if __name__ == "__main__":
  app.run(main)
