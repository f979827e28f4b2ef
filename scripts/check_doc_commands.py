"""Checks that every command the docs quote parses, without running anything heavy.

    python scripts/check_doc_commands.py             # README.md and docs/*.md
    python scripts/check_doc_commands.py -v FILE.md  # also list what passed and was skipped

Finds every `python -m MODULE ...` of this project (`unlearn_jax.*`, `examples.*`,
`benchmarks.*`) in fenced and indented code blocks (a trailing `\\` continues a line) and in inline
code spans (which may wrap over lines), and checks each one in this process, the way the
command would start:

* the module exists and has a command-line entry point;
* its flags parse: the module is run as `__main__` with the command's arguments, but its
  `absl.app.run` / `argparse` parser returns before the program does anything, so absl flags
  (`--workdir`, `--dry_run`, ...) must be flags the module defines, `--config=FILE[:args]` must
  load, and every `--config.x=y` must name an existing field and parse as its type (ml_collections'
  own override parser; the binaries' own one-line errors are reported);
* the config validates as the binary validates it before it runs: a study config through its
  track's `validate` and `tune.preflight` (the storage is not opened), a sweep through
  `sweep.validate`. Checks that need data on disk are skipped: where a dataset is not prepared
  here (`DatasetNotPreparedError`), the config is validated again with the dataset's presence
  taken for granted (its image shape from `KNOWN_SHAPES`), and the command is reported as passing
  with a note.

Placeholders: values such as WORKDIR, W, DIR or /tmp/... are ordinary strings to the parsers
(nothing is read or written), so they pass. A `--config=` whose file part is a placeholder
(`FILE`, `<...>`, `[...]`) cannot be loaded: the command is skipped. Abbreviations: an argument
that is or contains a literal `...` (e.g. `--config=... --workdir=...` in a table) is dropped, a
required flag that is then missing is supplied with a placeholder value, and the rest of the
command is checked; a command whose `--config` is abbreviated is skipped, as is a fragment with
no module (`... --config=configs/sed_mnist_full.py ...`: which binary it belongs to is not
written). Exit status 1 when a command fails; each failure is printed as `FILE:LINE: command:
reason`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import glob
import importlib.util
import io
import os
import re
import runpy
import shlex
import sys
import warnings
from typing import Any, Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The packages of this repository whose modules the docs run with `python -m`.
PACKAGES = ("unlearn_jax", "examples", "benchmarks")
# Image shapes of the tested tfds datasets, for validating a config whose data is not prepared.
KNOWN_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
ELLIPSIS = "..."
PLACEHOLDER_VALUE = "/tmp/check_doc_commands_placeholder"

# A user's own file or package in an example (`configs/my_study.py`, `my_pkg.my_module:fn`).
PLACEHOLDER_NAME = re.compile(r"^(?:my|your)_\w*")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
PYTHON = re.compile(r"^(?:\S*/)?python(?:\d+(?:\.\d+)*)?$")
# An inline code span: a run of N backticks, content, the same run (CommonMark).
SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
SHELL_SEPARATORS = {";", "&&", "||", "|", "&", ";;"}


@dataclasses.dataclass
class Command:
  """One `python -m MODULE ARGS` quoted in a doc."""
  path: str  # the doc, relative to ROOT
  line: int  # where the command starts
  text: str  # as quoted (continuations joined)
  module: str = ""
  args: list[str] = dataclasses.field(default_factory=list)
  abbreviated: bool = False  # arguments with a literal `...` were dropped

  @property
  def where(self) -> str:
    return f"{self.path}:{self.line}"


@dataclasses.dataclass
class Result:
  command: Command
  status: str  # 'ok', 'skipped' or 'failed'
  reason: str = ""


# ----------------------------------------------------------------------------------------------
# Extraction.


def _logical_lines(lines: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
  """(first line number, text) of each line of code, `\\`-continued lines joined."""
  pending, start = [], 0
  for number, line in lines:
    if not pending:
      start = number
    stripped = line.rstrip()
    if stripped.endswith("\\"):
      pending.append(stripped[:-1])
      continue
    pending.append(stripped)
    yield start, " ".join(part.strip() for part in pending)
    pending = []
  if pending:
    yield start, " ".join(part.strip() for part in pending)


def _strip_prompt(text: str) -> str:
  return re.sub(r"^\s*(?:\$|>>>|%)\s+", "", text)


def extract(path: str, text: str) -> tuple[list[Command], list[Result]]:
  """The commands of this project quoted in the markdown `text` of `path`, and the fragments
  that mention a config but name no module (returned as skipped results)."""
  commands: list[Command] = []
  skipped: list[Result] = []
  lines = text.splitlines()
  code: list[tuple[int, str]] = []  # fenced code lines
  prose: list[tuple[int, str]] = []
  fence = None
  for number, line in enumerate(lines, 1):
    match = FENCE.match(line)
    if fence is None and match:
      fence = match.group(1)
    elif fence is not None and line.strip().startswith(fence) and not line.strip(
        )[len(fence):].strip():
      fence = None
    elif fence is not None:
      code.append((number, line))
    else:
      prose.append((number, line))

  def add(number: int, snippet: str) -> None:
    for command in shell_commands(path, number, _strip_prompt(snippet)):
      commands.append(command)

  # Fenced code: every line (blocks are contiguous runs of numbers; a continuation never
  # crosses a fence, since the fence line is not in `code`).
  for block in _runs(code):
    for number, logical in _logical_lines(block):
      add(number, logical)
  # Prose: paragraphs (runs of non-blank lines); inline spans may wrap over lines.
  for paragraph in _paragraphs(prose):
    joined = "\n".join(line for _, line in paragraph)
    offsets = [0]
    for _, line in paragraph:
      offsets.append(offsets[-1] + len(line) + 1)
    covered = set()
    for span in SPAN.finditer(joined):
      first = next(i for i in range(len(paragraph)) if offsets[i + 1] > span.start())
      last = next(i for i in range(len(paragraph)) if offsets[i + 1] > span.end() - 1)
      covered.update(range(first, last + 1))
      content = span.group(2)
      if paragraph[first][1].lstrip().startswith("|"):
        content = content.replace("\\|", "|")  # an escaped pipe in a table cell
      content = " ".join(content.split())
      number = paragraph[first][0]
      if re.search(r"\bpython\S*\s+-m\s", content):
        add(number, content)
      elif content.startswith(ELLIPSIS) and "--config" in content:
        skipped.append(Result(Command(path, number, content), "skipped",
                              "abbreviated: no module named (which binary is not written)"))
    # Indented code (or a command line in a list item) outside inline spans.
    candidates = [(n, line) for i, (n, line) in enumerate(paragraph) if i not in covered]
    block: list[tuple[int, str]] = []
    for number, line in candidates + [(-1, "")]:
      starts = re.match(r"^\s*(?:[-*]\s+)?(?:\$\s+)?python\S*\s+-m\s", line)
      if block and block[-1][1].rstrip().endswith("\\") and number == block[-1][0] + 1:
        block.append((number, line))
        continue
      if block:
        for start, logical in _logical_lines(block):
          add(start, re.sub(r"^\s*[-*]\s+", "", logical))
        block = []
      if starts:
        block = [(number, line)]
  return commands, skipped


def _runs(numbered: list[tuple[int, str]]) -> Iterator[list[tuple[int, str]]]:
  """Splits (number, line) pairs into runs of consecutive numbers."""
  run: list[tuple[int, str]] = []
  for number, line in numbered:
    if run and number != run[-1][0] + 1:
      yield run
      run = []
    run.append((number, line))
  if run:
    yield run


def _paragraphs(prose: list[tuple[int, str]]) -> Iterator[list[tuple[int, str]]]:
  for run in _runs(prose):
    paragraph: list[tuple[int, str]] = []
    for number, line in run:
      if line.strip():
        paragraph.append((number, line))
      elif paragraph:
        yield paragraph
        paragraph = []
    if paragraph:
      yield paragraph


def shell_commands(path: str, number: int, text: str) -> list[Command]:
  """The `python -m MODULE` commands of this project in one shell line (`a && b; c | d`)."""
  if not re.search(r"\bpython\S*\s+-m\s", text):
    return []
  lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
  lexer.whitespace_split = True
  lexer.commenters = "#"
  try:
    tokens = list(lexer)
  except ValueError as error:  # unbalanced quotes
    module = re.search(r"python\S*\s+-m\s+(\S+)", text).group(1)
    if module.split(".")[0] in PACKAGES:
      return [Command(path, number, text, module, [f"<shell: {error}>"])]
    return []
  commands, simple = [], []
  for token in tokens + [";"]:
    if token in SHELL_SEPARATORS:
      command = _python_module(path, number, text, simple)
      if command:
        commands.append(command)
      simple = []
    else:
      simple.append(token)
  return commands


def _python_module(path: str, number: int, text: str, tokens: list[str]) -> Command | None:
  for i, token in enumerate(tokens):
    if PYTHON.match(token):
      rest = tokens[i + 1:]
      if "-m" not in rest or rest.index("-m") + 1 >= len(rest):
        return None
      at = rest.index("-m")
      module, args = rest[at + 1], rest[at + 2:]
      if module.split(".")[0] not in PACKAGES:
        return None
      kept = [arg for arg in args if ELLIPSIS not in arg and "…" not in arg]
      return Command(path, number, text, module, kept, abbreviated=len(kept) != len(args))
  return None


# ----------------------------------------------------------------------------------------------
# Checking.


class _Parsed(Exception):
  """Raised by the patched parsers once the command line parsed: the program does not run."""

  def __init__(self, kind: str, value: Any = None):
    super().__init__(kind)
    self.kind, self.value = kind, value


def _source_of(module: str) -> tuple[str | None, bool]:
  """(the source `python -m module` runs, whether `module` is a package, whose `__main__.py`
  runs); the source is None when there is none."""
  spec = importlib.util.find_spec(module)
  package = spec is not None and spec.submodule_search_locations is not None
  if package:
    spec = importlib.util.find_spec(f"{module}.__main__")
  if spec is None or not spec.origin or not os.path.isfile(spec.origin):
    return None, package
  with open(spec.origin, encoding="utf-8") as f:
    return f.read(), package


def _missing_flag(reason: str) -> str | None:
  """The required flag a parse error says is missing (absl's wording), or None."""
  missing = re.search(r"Flag --([\w.]+) must have a value other than None", reason)
  return missing.group(1) if missing else None


@contextlib.contextmanager
def _parse_only(argv: list[str]) -> Iterator[io.StringIO]:
  """Within the block, `absl.app.run` and `ArgumentParser.parse_args` parse and raise `_Parsed`;
  sys.argv is `argv`; stdout is captured (e.g. --config_help); the flags the block defines are
  removed afterwards and the process's own flags restored.

  A parse error raises (flags.Error, or SystemExit with the message) instead of being printed:
  stderr is not redirected, since a library that reconfigures logging while it is (e.g.
  submitit's dictConfig) would close the stream of absl's handler.
  """
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  before = set(flags.FLAGS)
  was_parsed = flags.FLAGS.is_parsed()
  saved = {name: (flags.FLAGS[name].value, flags.FLAGS[name].present,
                  flags.FLAGS[name].using_default_value) for name in before}
  # Flags that the project's modules defined when this process imported them (e.g. another test
  # imported unlearn_jax.main): hidden while the block runs the module again, then put back.
  hidden = _hide_project_flags(flags.FLAGS)
  original_parse_args = argparse.ArgumentParser.parse_args
  original_error = argparse.ArgumentParser.error
  original_run = app.run

  def run(main, argv=None, flags_parser=None):
    del main
    argv = argv if argv is not None else list(sys.argv)
    if flags_parser is None or flags_parser is app.parse_flags_with_usage:
      flags_parser = flags.FLAGS  # app's default parser, without printing the error
    raise _Parsed("absl", flags_parser(argv))

  def parse_args(self, args=None, namespace=None):
    raise _Parsed("argparse", original_parse_args(self, args, namespace))

  def error(self, message):
    raise SystemExit(f"{self.prog}: error: {message}")

  output = io.StringIO()
  saved_argv = sys.argv
  sys.argv = list(argv)
  app.run = run
  argparse.ArgumentParser.parse_args = parse_args
  argparse.ArgumentParser.error = error
  try:
    with contextlib.redirect_stdout(output), warnings.catch_warnings():
      # runpy's note that the module was imported before (by an earlier command) is ours.
      warnings.filterwarnings("ignore", r".* found in sys.modules after import", RuntimeWarning)
      yield output
  finally:
    sys.argv = saved_argv
    app.run = original_run
    argparse.ArgumentParser.parse_args = original_parse_args
    argparse.ArgumentParser.error = original_error
    for name in set(flags.FLAGS) - before:
      if name in flags.FLAGS:
        delattr(flags.FLAGS, name)
    for name in set(flags.FLAGS) & set(hidden):
      delattr(flags.FLAGS, name)  # defined again by the block
    for name, (module, flag) in hidden.items():
      flags.FLAGS[name] = flag
      flags.FLAGS.register_flag_by_module(module, flag)
    # The process's own flags as they were (e.g. under pytest, which may have parsed them).
    flags.FLAGS.unparse_flags()
    for name, (value, present, using_default) in saved.items():
      flag = flags.FLAGS[name]
      flag.value, flag.present, flag.using_default_value = value, present, using_default
    if was_parsed:
      flags.FLAGS.mark_as_parsed()


def _hide_project_flags(flag_values) -> dict[str, tuple[str, Any]]:
  """Removes the flags defined by modules of this repository (the package, examples,
  benchmarks, or a file under ROOT) from `flag_values`; returns {name: (module, flag)}."""
  by_module = flag_values.flags_by_module_dict()
  # A library's flags (absl.logging's `verbosity`, ...) stay, whoever else lists them.
  libraries = {id(flag) for module, module_flags in by_module.items()
               if not _is_project_module(module) for flag in module_flags}
  hidden = {}
  for module, module_flags in by_module.items():
    if _is_project_module(module):
      for flag in module_flags:
        if id(flag) not in libraries:
          hidden[flag.name] = (module, flag)
  for name in hidden:
    if name in flag_values:
      delattr(flag_values, name)
  return hidden


def _is_project_module(module: str) -> bool:
  if os.sep in module:  # a module run by path (runpy) is registered under its file name
    return os.path.abspath(module).startswith(ROOT + os.sep)
  return module.split(".")[0] in ("unlearn_jax", "examples", "benchmarks")


@contextlib.contextmanager
def _data_taken_for_granted() -> Iterator[None]:
  """Dataset presence is not checked: `check_name` passes and `image_shape` answers from
  KNOWN_SHAPES for a dataset that is not prepared here."""
  from unlearn_jax.data import sources  # pylint: disable=g-import-not-at-top
  check_name, image_shape = sources.check_name, sources.image_shape

  def lenient_check_name(name, data_dir=None):
    try:
      check_name(name, data_dir)
    except sources.DatasetNotPreparedError:
      pass

  def lenient_image_shape(name, data_dir=None):
    try:
      return image_shape(name, data_dir)
    except sources.DatasetNotPreparedError:
      if name in KNOWN_SHAPES:
        return KNOWN_SHAPES[name]
      raise

  sources.check_name, sources.image_shape = lenient_check_name, lenient_image_shape
  try:
    yield
  finally:
    sources.check_name, sources.image_shape = check_name, image_shape


def _validated(validate, config) -> str:
  """Runs `validate(config)`; '' or a note when data checks had to be skipped."""
  from unlearn_jax.data import sources  # pylint: disable=g-import-not-at-top
  try:
    validate(config)
    return ""
  except sources.DatasetNotPreparedError as error:
    note = str(error).splitlines()[0]
  with _data_taken_for_granted():
    try:
      validate(config)
    except sources.DatasetNotPreparedError:
      pass  # as far as it goes without the data
  return f"data checks skipped ({note[:120]})"


def validate_study(config) -> str:
  """What `unlearn_jax.main` checks before a study does any work (runner.run)."""
  from unlearn_jax import study, tune  # pylint: disable=g-import-not-at-top

  def validate(config):
    task = study.TASKS[study.track(config)]
    task.validate(config)
    checked = copy.deepcopy(config)
    if "tune" in checked:
      with checked.unlocked():
        checked.tune.storage = ""  # the default SQLite file: opening it would touch disk
    tune.preflight(checked, task.track)

  return _validated(validate, config)


def validate_sweep(config) -> str:
  from unlearn_jax import sweep  # pylint: disable=g-import-not-at-top
  return _validated(sweep.validate, config)


# How each binary validates its config before it runs (default: a study's).
VALIDATORS = {"unlearn_jax.sweep": validate_sweep}


def check(command: Command) -> Result:
  """Parses `command` as its module would, validates its config; nothing runs."""
  bad_shell = [arg for arg in command.args if arg.startswith("<shell: ")]
  if bad_shell:
    return Result(command, "failed", f"does not parse as a shell command: {bad_shell[0][8:-1]}")
  config_args = [a for a in command.args if re.match(r"^--?config=", a)]
  if command.abbreviated and not config_args and any(
      re.search(r"--?config=\S*" + re.escape(ELLIPSIS), a) for a in command.text.split()):
    return Result(command, "skipped", "abbreviated: --config=... is not written out")
  for arg in config_args:
    spec = arg.split("=", 1)[1]
    file_part = spec.split(":", 1)[0]
    if re.search(r"[<>\[\]{}]", file_part) or re.fullmatch(r"[A-Z_]+", file_part):
      return Result(command, "skipped", f"placeholder config {spec!r}")
    if PLACEHOLDER_NAME.match(os.path.basename(file_part)) and not os.path.exists(file_part):
      return Result(command, "skipped", f"a user's own config file {file_part!r} (a placeholder)")
  try:
    source, package = _source_of(command.module)
  except (ImportError, ValueError) as error:
    return Result(command, "failed", f"no module {command.module}: {error}")
  if source is None:
    return Result(command, "failed", f"no module {command.module}" + (
        " (a package without __main__.py: `python -m` cannot run it)" if package else ""))
  if not package and "__main__" not in source:
    return Result(command, "failed", f"{command.module} has no `if __name__ == \"__main__\"`: "
                  "`python -m` would do nothing")
  if not re.search(r"\bapp\.run\(|\.parse_args\(", source):
    if not command.args and not command.abbreviated:
      return Result(command, "ok", "names the binary only")
    return Result(command, "skipped", f"{command.module} parses its command line itself; "
                  "only its presence is checked (it is not run)")
  args = list(command.args)
  result = _check_args(command, args)
  # An abbreviated command may lack a required flag (`--workdir=...` dropped): supply it.
  while command.abbreviated and result.status == "failed":
    missing = _missing_flag(result.reason)
    if not missing or any(a.startswith(f"--{missing}=") for a in args):
      break
    if "config" in missing:
      return Result(command, "skipped", f"abbreviated: --{missing} is not written out")
    args.append(f"--{missing}={PLACEHOLDER_VALUE}")
    result = _check_args(command, args)
  if not command.args and not command.abbreviated and result.status == "failed" and (
      _missing_flag(result.reason)):
    # The binary named in prose (`python -m unlearn_jax.lm.select_lr` chose ...), no arguments.
    return Result(command, "ok", "names the binary only (its required flags are not written)")
  placeholder = re.search(r"No module named '((?:my|your)_\w*)", result.reason)
  if result.status == "failed" and placeholder:
    return Result(command, "skipped", f"imports a user's own package {placeholder.group(1)!r} "
                  "(a placeholder)")
  if command.abbreviated and result.status == "ok":
    result.reason = "; ".join(filter(None, ["abbreviated: checked without the `...` arguments",
                                            result.reason]))
  return result


def _check_args(command: Command, args: list[str]) -> Result:
  from absl import flags  # pylint: disable=g-import-not-at-top
  notes = []
  config = None
  with _parse_only([command.module, *args]) as output:
    try:
      runpy.run_module(command.module, run_name="__main__", alter_sys=True)
      return Result(command, "failed", f"{command.module} ran without parsing a command line")
    except _Parsed as parsed:
      try:
        if parsed.kind == "absl":
          for name in list(flags.FLAGS):
            flag = flags.FLAGS[name]
            if _is_config_flag(flag) and flag.present:
              config = flag.value
              config.keys()  # a config file that failed to load raises here
        elif getattr(parsed.value, "config", None):
          from unlearn_jax import api  # pylint: disable=g-import-not-at-top
          config = api.load_config(parsed.value.config)
        if parsed.kind == "argparse" and getattr(parsed.value, "method", None):
          from unlearn_jax import methods  # pylint: disable=g-import-not-at-top
          methods.resolve([parsed.value.method])
        if config is not None:
          note = VALIDATORS.get(command.module, validate_study)(config)
          if note:
            notes.append(note)
      except Exception as error:  # pylint: disable=broad-except  (ConfigError and the rest)
        return Result(command, "failed", _one_line(error))
    except SystemExit as error:
      if error.code in (0, None):
        return Result(command, "ok", "prints help and exits")
      if isinstance(error.code, str):
        return Result(command, "failed", f"exits with an error: {_one_line(error.code)}")
      return Result(command, "failed", f"exits {error.code}: "
                    f"{_one_line(output.getvalue().strip() or '(no message)')}")
    except Exception as error:  # pylint: disable=broad-except  (a config file may raise anything)
      return Result(command, "failed", _one_line(error))
  return Result(command, "ok", "; ".join(notes))


def _is_config_flag(flag) -> bool:
  """True for a `DEFINE_config_file` / `DEFINE_config_dict` flag."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  is_config = getattr(config_flags, "is_config_flag", None) or (
      config_flags.config_flags.is_config_flag)
  return is_config(flag)


def _one_line(error: Any) -> str:
  text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
  text = text.replace("Pass --helpshort or --helpfull to see help on flags.", "")
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if any(line.startswith("Traceback") for line in lines):
    return lines[-1]
  return " ".join(lines)[:400]


# ----------------------------------------------------------------------------------------------
# The program.


def default_docs(root: str = ROOT) -> list[str]:
  return [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))


def check_files(paths: list[str], root: str = ROOT) -> list[Result]:
  """Every command of every file in `paths`, checked (from `root`, as the docs' commands run)."""
  if root not in sys.path:
    sys.path.insert(0, root)
  results = []
  cwd = os.getcwd()
  os.chdir(root)
  try:
    for path in paths:
      with open(path, encoding="utf-8") as f:
        text = f.read()
      inside = os.path.abspath(path).startswith(os.path.join(root, ""))
      commands, skipped = extract(os.path.relpath(path, root) if inside else path, text)
      results += skipped
      results += [check(command) for command in commands]
  finally:
    os.chdir(cwd)
  return sorted(results, key=lambda r: (r.command.path, r.command.line))


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("files", nargs="*", help="markdown files (default: README.md, docs/*.md)")
  parser.add_argument("-v", "--verbose", action="store_true",
                      help="also list the commands that passed or were skipped")
  options = parser.parse_args(argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # nothing runs: no accelerator needed
  from unlearn_jax import utils  # pylint: disable=g-import-not-at-top
  utils.quiet_library_logs()
  paths = [os.path.abspath(p) for p in options.files] or default_docs()
  results = check_files(paths)
  failed = [r for r in results if r.status == "failed"]
  for result in results:
    if result.status == "failed" or options.verbose:
      print(f"{result.command.where}: {result.status.upper()}: {result.command.text}"
            + (f"\n    {result.reason}" if result.reason else ""))
  counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
  print(f"{len(results)} command(s): {counts['ok']} ok, {counts['skipped']} skipped, "
        f"{counts['failed']} failed")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
