"""Shared by the launch scripts: the sweep's command line, and printing or running it.

The scripts only compose commands (docs/design.md §2.4: `launch/` scripts print or run commands);
all the work happens in `python -m unlearn_jax.sweep`. They import nothing from unlearn_jax (no
JAX), so `--dry_run` is instant and works on a machine without accelerators.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from typing import Mapping, Sequence

DEFAULT_CONFIG = "configs/sweep_similarity.py"
# The repository root: commands run from there so that `configs/...` paths resolve.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sweep_command(config: str, workdir: str, overrides: Sequence[str] = (),
                  python: str = "python", distributed: bool = False) -> list[str]:
  """argv of one sweep: `python -m unlearn_jax.sweep --config=... --workdir=... [overrides]`.

  Args:
    config: config file with its variant, e.g. 'configs/sweep_similarity.py:runlocal'.
    workdir: the sweep directory.
    overrides: extra flags, e.g. ['--config.study.data_dir=/data/tfds'].
    python: the interpreter on the machine that runs the command.
    distributed: add `--distributed` (every host of a multi-host slice runs the command).

  Raises:
    ValueError: an override that is not a `--flag`.
  """
  bad = [o for o in overrides if not o.startswith("--")]
  if bad:
    raise ValueError(f"overrides must be flags like --config.parallel=2; got {bad}")
  argv = [python, "-m", "unlearn_jax.sweep", f"--config={config}", f"--workdir={workdir}"]
  if distributed:
    argv.append("--distributed")
  return argv + list(overrides)


def render(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
  """The command as one shell line (environment assignments first), quoted for a POSIX shell."""
  assignments = [f"{key}={shlex.quote(value)}" for key, value in (env or {}).items()]
  return " ".join(assignments + [shlex.join(argv)])


def passthrough(args: Sequence[str], dry_run: bool) -> tuple[list[str], bool]:
  """The flags after `--` for the sweep, and whether to dry-run.

  A `--dry_run` among them is taken as this script's flag: a misplaced `--dry_run` must never
  start a sweep (or an ssh session).
  """
  return [a for a in args if a != "--dry_run"], dry_run or "--dry_run" in args


def run(argv: Sequence[str], dry_run: bool, env: Mapping[str, str] | None = None,
        cwd: str | None = ROOT) -> int:
  """Prints the command; unless `dry_run`, runs it (from `cwd`) and returns its exit status."""
  print(render(argv, env), flush=True)
  if dry_run:
    return 0
  return subprocess.call(list(argv), cwd=cwd, env={**os.environ, **(env or {})})


def fail(message: str) -> None:
  """Exits with a one-line error."""
  sys.exit(f"error: {message}")


HUGEPAGES_TUNABLE = "glibc.malloc.hugetlb=1"


def with_hugepages(tunables: str | None) -> str | None:
  """GLIBC_TUNABLES with `glibc.malloc.hugetlb=1` added to `tunables` (what is set now), or
  None when `tunables` already chooses a hugetlb setting (left as the user set it).

  2 MiB pages for malloc: XLA:CPU's per-call scratch buffers are then not page-faulted in
  4 KiB pages on every step (benchmarks/RESULTS.md).
  """
  if tunables and "glibc.malloc.hugetlb" in tunables:
    return None
  return f"{tunables}:{HUGEPAGES_TUNABLE}" if tunables else HUGEPAGES_TUNABLE
