"""Command-line entry point of a study.

    python -m unlearn_jax.main --config=configs/sed_mnist.py[:runlocal] --workdir=/tmp/study
    python -m unlearn_jax.main --config=configs/sed_qa.py[:runlocal] --workdir=/tmp/qa

`--config.<field>=value` overrides one field (e.g. `--config.sed.ratio=0.5`). The binary only
parses flags and calls `study.run`, which runs the stages of a study (`runner.py`) over the
task of the config's `track` field (docs/design.md §2.1): 'image' (or no `track` field) or
'lm' (`tasks/`); it does the work and returns the summary.

`--config_help` prints every config field with its default and its documentation (the comments
of the section builds in `defaults.SECTIONS` and of each method's `default_config()`) and exits;
with `--config=FILE`, the fields of that file's track (its `get_config` is loaded to read `track`).

Many hosts: run the same command on every host with `--coordinator_address=HOST:PORT
--num_processes=N --process_id=I` (or on a TPU pod slice / SLURM with `--distributed`, which
lets JAX detect the cluster); every process trains on its slice of each global batch and
process 0 writes the report.
"""

from __future__ import annotations

import importlib
import inspect
import io
import sys
import textwrap
import tokenize
from typing import Any, Callable

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from unlearn_jax import api, parallel, preemption, study
from unlearn_jax import config as config_lib
from unlearn_jax.data import sources
from unlearn_jax.tasks import control

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
_CONFIG_HELP = flags.DEFINE_bool(
    "config_help", False, "Print every config field (--config.<field>) with its default and "
    "documentation, then exit; with --config=FILE, the fields of that file's track.")
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
    summary = study.run(_CONFIG.value, _WORKDIR.value)
  except (config_lib.ConfigError, sources.DatasetNotPreparedError) as error:
    # Bad input is the user's to fix: one line, no traceback, non-zero exit.
    sys.exit(f"error: {error}")
  except preemption.Preempted as error:
    logging.warning("%s; rerun the same command to resume", error)
    sys.exit(preemption.EXIT_CODE)
  failed = {key: text for key, text in summary["status"].items() if text != "ok"}
  for key in [key for key, text in failed.items() if control.diverged_result(key, text)]:
    # A control run that diverges is a result of the control (its table says so), not a failure.
    logging.warning("%s: %s (reported in the control table)", key, failed.pop(key))
  if failed:
    # The report is complete for everything else; the exit status says that something failed.
    for key, text in failed.items():
      logging.error("%s: %s", key, text)
    sys.exit(f"error: {len(failed)} method run(s) did not finish: {', '.join(failed)} "
             "(see report/report.md)")


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with one-line errors (see `config.parse_flags_or_exit`).

  `--config_help` is answered before parsing (it needs neither --config nor --workdir).
  """
  if any(arg in ("--config_help", "--config_help=true", "--config_help=True") for arg in argv):
    config = _config_of(argv)
    try:
      print(config_help(study.track(config) if config is not None else "image"))
    except config_lib.ConfigError as error:
      sys.exit(f"error: {error}")
    sys.exit(0)
  return config_lib.parse_flags_or_exit(argv, _unknown_override)


def _config_of(argv: list[str]) -> ml_collections.ConfigDict | None:
  """The config that `--config=FILE[:variant]` in `argv` names, loaded as the flag loads it
  (the file's `get_config(variant)`); None without the flag or when it does not load (the flag
  parser then reports why)."""
  specs = [arg[len("--config="):] for arg in argv if arg.startswith("--config=")]
  if not specs:
    return None
  try:
    return api.load_config(specs[-1])
  except Exception:  # pylint: disable=broad-except  (a user's file may raise anything)
    return None


def config_help(track_name: str = "image") -> str:
  """Every field of the base config as `config.<path> = <default>`, each followed by its
  documentation: the comments above and beside its assignment in `base_config()` of the track
  ('image' or 'lm') or in the builds of its `SECTIONS`, or in its method's `default_config()`
  (`config.unlearn.<method>`).

  A section (a ConfigDict field) is listed with its own comment before its fields; a field with
  no comment of its own is documented by its section's.
  """
  from unlearn_jax import defaults  # pylint: disable=g-import-not-at-top
  from unlearn_jax import methods  # pylint: disable=g-import-not-at-top
  from unlearn_jax.lm import defaults as lm_defaults  # pylint: disable=g-import-not-at-top
  lm = track_name == "lm"
  base_fn = lm_defaults.base_config if lm else defaults.base_config
  package = methods.TRACKS["lm" if lm else "image"]
  base = base_fn()
  # The fields are assigned in base_config() or in the builds of its module's sections.
  builds = [build for build, _ in getattr(sys.modules[base_fn.__module__], "SECTIONS", ())]
  docs = {path: text for fn in [base_fn, *builds] for path, text in field_docs(fn).items()}
  for name in base.unlearn.keys():
    try:
      make = importlib.import_module(f"{package}.{name}").default_config
    except (ImportError, AttributeError):  # a registered method: no source of ours
      continue
    summary = (inspect.getdoc(make) or "").split("\n\n")[0]
    docs.setdefault(f"unlearn.{name}", " ".join(summary.split()))
    docs.update({f"unlearn.{name}.{path}": text for path, text in field_docs(make).items()})
  lines = []

  def walk(node: ml_collections.ConfigDict, prefix: str) -> None:
    for key in node.keys():
      path, value = f"{prefix}{key}", node[key]
      section = isinstance(value, ml_collections.ConfigDict) and len(value.keys())
      lines.append(f"config.{path}" + (":" if section else f" = {_show(value)}"))
      if path in docs:
        lines.extend(textwrap.wrap(docs[path], 96, initial_indent="    ",
                                   subsequent_indent="    "))
      if section:
        walk(value, f"{path}.")

  walk(base, "")
  return "\n".join(lines)


def field_docs(fn: Callable[..., Any]) -> dict[str, str]:
  """{field path: its comment} of the `<var>.<path> = ...` assignments in `fn`'s source.

  A field's comment is the block of comment lines right above its assignment (no blank line in
  between) and the comments on the assignment's own lines; a path is relative to the variable
  (`config.sed.ratio = ...` gives 'sed.ratio'). Empty when the source cannot be read.
  """
  try:
    source = textwrap.dedent(inspect.getsource(fn))
  except (OSError, TypeError):
    return {}
  docs: dict[str, str] = {}
  above: list[str] = []  # the comment block before the current statement
  statement: list[tokenize.TokenInfo] = []
  inline: list[str] = []  # comments inside the current statement
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT:
      (inline if statement else above).append(token.string.lstrip("#").strip())
    elif token.type == tokenize.NL:
      if not statement and not token.line.strip():
        above = []  # a blank line ends a comment block
    elif token.type == tokenize.NEWLINE:
      text = " ".join(above + inline)
      for path in _assigned_paths(statement):
        if text:
          docs[path] = text
      above, statement, inline = [], [], []
    elif token.type not in (tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
      statement.append(token)
  return docs


def _assigned_paths(tokens: list[tokenize.TokenInfo]) -> list[str]:
  """['sed.ratio'] for the tokens of `config.sed.ratio = ...` (several for `a.x, a.y = ...`);
  [] for any other statement."""
  targets, path, depth = [], [], 0
  for position, token in enumerate(tokens):
    if token.type == tokenize.OP and token.string in "([{":
      depth += 1
    elif token.type == tokenize.OP and token.string in ")]}":
      depth -= 1
    if depth == 0 and token.type == tokenize.OP and token.string in (",", "="):
      targets.append(path)
      path = []
      if token.string == "=":
        return [".".join(p[1:]) for p in targets if len(p) > 1] if all(targets) else []
      continue
    names = [t for t in tokens[position - 1:position] if t.type == tokenize.OP]
    if token.type == tokenize.NAME and (not path or (names and names[0].string == ".")):
      path.append(token.string)
    elif token.type == tokenize.STRING and depth == 1 and path:  # config.unlearn["name"]
      path.append(token.string.strip("\"'"))
    elif not (token.type == tokenize.OP and token.string in ".[]"):
      return []
  return []


def _show(value: Any) -> str:
  if isinstance(value, ml_collections.ConfigDict):
    return repr(value.to_dict())
  return repr(value)


def _unknown_override(argv: list[str]) -> str | None:
  """Names the first `--config.a.b=...` whose field the `--config` file's config lacks (the image
  base config when it does not load), listing valid ones."""
  from unlearn_jax import defaults  # pylint: disable=g-import-not-at-top
  base = _config_of(argv)
  if base is None:
    base = defaults.base_config()
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


def run():
  """Console-script entry point."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
