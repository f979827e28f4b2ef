"""Every command the README and docs/*.md quote parses (scripts/check_doc_commands.py).

The checker runs in this process, where other tests may have imported the binaries: each
command's module parses its own command line (flags, config file and variant, `--config.x=y`
overrides) and validates its config, and nothing runs.
"""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import check_doc_commands as checker  # pylint: disable=g-import-not-at-top,wrong-import-position


def results_of(tmp_path, text: str) -> list:
  path = tmp_path / "doc.md"
  path.write_text(text)
  return checker.check_files([str(path)])


def test_every_command_in_the_docs_parses():
  results = checker.check_files(checker.default_docs())
  assert len(results) > 10  # the docs quote commands: finding none is a bug of the checker
  failed = [f"{r.command.where}: {r.command.text}\n    {r.reason}" for r in results
            if r.status == "failed"]
  assert not failed, "commands quoted in the docs that do not parse:\n" + "\n".join(failed)


def test_extraction_of_blocks_continuations_inline_spans_and_tables():
  text = "\n".join([
      "Run `python -m unlearn_jax.main --config=configs/sed_mnist.py",  # 1: wraps
      "--workdir=/tmp/a` first.",
      "",
      "```bash",
      "pip install -e . && python -m unlearn_jax.sweep \\",  # 5
      "    --config=configs/sweep_similarity.py --workdir=W   # a comment",
      "python -m pytest -q tests",
      "```",
      "",
      "| what | command |",  # 10
      "|---|---|",
      "| x | `python -m examples.my_method --workdir=W --config='a\\|b'` |",
      "| y | `... --config=configs/sed_mnist_full.py ...` |",
      "",
      "    python -m unlearn_jax.main --config=configs/sed_mnist.py \\",  # 15
      "        --workdir=/tmp/b",
  ])
  commands, skipped = checker.extract("doc.md", text)
  assert [(c.line, c.module, c.args) for c in commands] == [
      (5, "unlearn_jax.sweep", ["--config=configs/sweep_similarity.py", "--workdir=W"]),
      (1, "unlearn_jax.main", ["--config=configs/sed_mnist.py", "--workdir=/tmp/a"]),
      (12, "examples.my_method", ["--workdir=W", "--config=a|b"]),
      (15, "unlearn_jax.main", ["--config=configs/sed_mnist.py", "--workdir=/tmp/b"]),
  ]
  assert [r.command.line for r in skipped] == [13]


def test_bad_commands_fail_with_their_line_and_reason(tmp_path):
  results = results_of(tmp_path, "\n".join([
      "```",
      "python -m unlearn_jax.main --config=configs/sed_mnist.py:runlocal --workdir=W",
      "python -m unlearn_jax.main --config=configs/sed_mnist.py --config.sed.ratoi=0.5 "
      "--workdir=W",
      "python -m unlearn_jax.main --config=configs/sed_mnist.py --config.sed.ratio=abc "
      "--workdir=W",
      "python -m unlearn_jax.main --config=configs/sed_mnist.py --config.sed.ratio=7.0 "
      "--workdir=W",
      "python -m unlearn_jax.main --config=configs/sed_mnist.py:bogus=1 --workdir=W",
      "python -m unlearn_jax.main --config=configs/no_such_file.py --workdir=W",
      "python -m unlearn_jax.main --config=configs/sed_mnist.py --workdir=W --dry_run",
      "python -m unlearn_jax.sweep --config=configs/sweep_similarity.py --workdir=W --dry_run",
      "python -m unlearn_jax.no_such_module --workdir=W",
      "python -m examples.compare_checkpoints only_one",
      "python -m unlearn_jax.main --config=configs/sed_mnist.py --workdir=W "
      "--config.methods=finetune,no_such_method",
      "python -m unlearn_jax.main --config=configs/sed_mnist.py",
      "```",
  ]))
  status = {r.command.line: (r.status, r.reason) for r in results}
  assert status[2][0] == "ok" and status[9][0] == "ok", status
  expected = {3: "sed.ratoi: unknown field", 4: "could not convert string to float",
              5: "must be a number in [0, 1)", 6: "unknown key 'bogus'",
              7: "no_such_file.py", 8: "Unknown command line flag 'dry_run'",
              10: "no module unlearn_jax.no_such_module", 11: "arguments are required: second",
              12: "no_such_method", 13: "Flag --workdir must have a value"}
  for line, text in expected.items():
    assert status[line][0] == "failed" and text in status[line][1], (line, status[line])
  assert checker.main([str(tmp_path / "doc.md")]) == 1


def test_placeholders_and_abbreviations(tmp_path):
  results = results_of(tmp_path, "\n".join([
      "```",
      "python -m unlearn_jax.main --config=FILE[:variant] --workdir=DIR",
      "python -m unlearn_jax.main --config=... --workdir=...",
      "python -m unlearn_jax.sweep ... --distributed",
      "python -m unlearn_jax.sweep --config=configs/sweep_similarity.py ... --dry_run",
      "python -m unlearn_jax.main --config=configs/sed_mnist.py --workdir=W "
      "--config.methods=my_pkg.my_module:unlearn",
      "python -m unlearn_jax.main --config=configs/my_study.py --workdir=W",
      "python -m unlearn_jax.lm.select_lr",
      "```",
  ]))
  status = {r.command.line: r.status for r in results}
  assert status == {2: "skipped", 3: "skipped", 4: "skipped", 5: "ok", 6: "skipped",
                    7: "skipped", 8: "ok"}


def test_data_checks_are_skipped_where_the_data_is_not_prepared(monkeypatch):
  from unlearn_jax import api  # pylint: disable=g-import-not-at-top
  from unlearn_jax.data import sources  # pylint: disable=g-import-not-at-top
  config = api.load_config(os.path.join(ROOT, "configs", "sed_mnist.py"))
  config.dataset = "mnist"

  def absent(name, data_dir=None):
    raise sources.DatasetNotPreparedError(f"{name} is not prepared")

  monkeypatch.setattr(sources, "check_name", absent)
  monkeypatch.setattr(sources, "image_shape", absent)
  assert checker.validate_study(config).startswith("data checks skipped (mnist is not prepared")
  config.sed.ratio = 7.0  # the other checks still run
  with pytest.raises(ValueError, match="sed.ratio"):
    checker.validate_study(config)


def test_the_check_works_after_the_modules_defined_their_flags_in_this_process(tmp_path):
  # Another test of this process may have imported the binaries (their absl flags are then
  # defined): checking must not define them twice, and must leave them as they were.
  from absl import flags  # pylint: disable=g-import-not-at-top
  import unlearn_jax.main  # pylint: disable=g-import-not-at-top,unused-import
  import unlearn_jax.sweep  # pylint: disable=g-import-not-at-top,unused-import
  config_flag = flags.FLAGS["config"]
  results = results_of(tmp_path, "\n".join([
      "`python -m unlearn_jax.main --config=configs/sed_mnist.py:runlocal --workdir=/tmp/a`",
      "",
      "`python -m unlearn_jax.main --config=configs/sed_mnist.py --config.no_such_field=1 "
      "--workdir=/tmp/b`",
  ]))
  assert [r.status for r in results] == ["ok", "failed"], [r.reason for r in results]
  assert "no_such_field" in results[1].reason
  assert flags.FLAGS["config"] is config_flag
