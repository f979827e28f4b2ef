"""The command line: usage errors are one line, bad configs exit non-zero before any work."""

import os
import subprocess
import sys

import ml_collections
import pytest

from unlearn_jax import api, defaults, study
from unlearn_jax import config as config_lib
from unlearn_jax import main as main_lib
from unlearn_jax.lm import defaults as lm_defaults
from unlearn_jax.tasks import image as image_task
from unlearn_jax.tasks import lm as lm_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args, env=None):
  return subprocess.run([sys.executable, "-m", "unlearn_jax.main", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120,
                        env={**os.environ, **(env or {})})


def test_missing_workdir_is_a_one_line_error():
  result = _main("--config=configs/sed_mnist.py")
  assert result.returncode != 0
  errors = [l for l in result.stderr.splitlines() if "workdir" in l]
  assert errors and "must have a value" in errors[0]


def test_missing_config_is_a_one_line_error(tmp_path):
  result = _main(f"--workdir={tmp_path}")
  assert result.returncode != 0
  assert any("--config" in l for l in result.stderr.splitlines())


def test_helpfull_lists_the_flags_and_config_help():
  result = _main("--helpfull")  # absl exits with status 1 after printing help
  for flag in ("--workdir", "--config", "--[no]config_help"):
    assert flag in result.stdout, flag


def _leaves(node, prefix="") -> list[str]:
  """Dotted paths of every leaf of a ConfigDict (an empty ConfigDict is a leaf)."""
  paths = []
  for key in node.keys():
    value = node[key]
    if isinstance(value, ml_collections.ConfigDict) and len(value.keys()):
      paths += _leaves(value, f"{prefix}{key}.")
    else:
      paths.append(f"{prefix}{key}")
  return paths


def _help_entries(text: str) -> dict[str, str]:
  """{path: documentation} of `--config_help` output ('config.a.b = v' or 'config.a:' lines,
  each followed by its indented documentation)."""
  entries, path = {}, None
  for line in text.splitlines():
    if line.startswith("config."):
      path = line[len("config."):].split(" = ")[0].rstrip(":")
      entries[path] = ""
    elif line.startswith("    ") and path is not None:
      entries[path] = (entries[path] + " " + line.strip()).strip()
  return entries


def test_config_help_lists_every_field_with_its_documentation():
  result = _main("--config_help")  # needs neither --config nor --workdir
  assert result.returncode == 0, result.stderr[-2000:]
  entries = _help_entries(result.stdout)
  leaves = _leaves(defaults.base_config())
  assert set(leaves) <= set(entries) and "unlearn.finetune.lr" in leaves
  # The comments of base_config and of the methods' default_config(): beside the assignment,
  # above it (several lines), and a section's for the entries of its dict (eval.min_gap).
  assert "config.sed.ratio = 0.25\n    block_mask: fraction r of the blocks zeroed" in result.stdout
  assert entries["train.steps_per_call"].startswith("Train steps per jitted call (a lax.scan")
  assert entries["train.steps_per_call"].endswith("Results are identical to 1.")
  assert entries["unlearn.finetune.lr"] == "constant SGD learning rate (momentum 0.9)."
  assert entries["eval.min_gap"].startswith("Minimum |f(original) - f(clean)|")
  # Every field is documented: by its own comment or, for a dict's entries, by its section's.
  for path in leaves:
    parent = path.rpartition(".")[0]
    assert entries[path] or entries.get(parent), path


def test_config_help_of_a_language_model_config_lists_its_fields():
  result = _main("--config=configs/sed_qa.py", "--config_help")
  assert result.returncode == 0, result.stderr[-2000:]
  entries = _help_entries(result.stdout)
  assert set(_leaves(lm_defaults.base_config())) <= set(entries)
  assert entries["qa.similar_per_target"] == "|S(t)|: paraphrases of each target in D."


def _write_config(directory, name: str, text: str) -> str:
  path = directory / name
  path.write_text(text)
  return str(path)


QA, MNIST = (os.path.join(ROOT, "configs", name) for name in ("sed_qa.py", "sed_mnist.py"))
# A language-model config whose text never names the LM package: it builds on configs/sed_qa.py.
QA_ON_TOP = f"""
from unlearn_jax import api

def get_config(arg=None):
  config = api.load_config({QA!r} + (":" + arg if arg else ""))
  config.seeds = (0, 1)
  return config
"""
# An image config that mentions the LM package in a comment only.
IMAGE_WITH_COMMENT = f"""
# Unlike unlearn_jax.lm (configs/sed_qa.py), this is an image study.
from unlearn_jax import api

def get_config(arg=None):
  return api.load_config({MNIST!r} + (":" + arg if arg else ""))
"""


def test_the_track_comes_from_the_config_field_not_the_file_text(tmp_path):
  qa = _write_config(tmp_path, "my_qa.py", QA_ON_TOP)
  image = _write_config(tmp_path, "my_mnist.py", IMAGE_WITH_COMMENT)
  assert "unlearn_jax.lm" not in open(qa).read() and "unlearn_jax.lm" in open(image).read()
  assert study.TASKS[study.track(api.load_config(qa + ":runlocal"))] is lm_task.LMTask
  assert study.TASKS[study.track(api.load_config(image))] is image_task.ImageTask
  # Before the flags parse: --config_help and an unknown override use the file's track.
  entries = _help_entries(_main(f"--config={qa}:runlocal", "--config_help").stdout)
  assert "qa.similar_per_target" in entries and "sed.ratio" not in entries
  entries = _help_entries(_main(f"--config={image}", "--config_help").stdout)
  assert "sed.ratio" in entries and "qa.similar_per_target" not in entries
  result = _main(f"--config={qa}", f"--workdir={tmp_path / 'wd'}", "--config.qa.similar_per=1")
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: config.qa.similar_per: unknown field; valid fields of config.qa")
  assert "similar_per_target" in last
  result = _main(f"--config={image}", f"--workdir={tmp_path / 'wd'}", "--config.qa.x=1")
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: config.qa: unknown field") and "sed" in last


def test_an_unknown_track_is_a_one_line_error(tmp_path):
  path = _write_config(tmp_path, "audio.py", IMAGE_WITH_COMMENT + """
_load = get_config

def get_config(arg=None):
  config = _load(arg)
  config.track = "audio"
  return config
""")
  config = api.load_config(path)
  with pytest.raises(config_lib.ConfigError, match="unknown track"):
    study.track(config)
  workdir = tmp_path / "wd"
  result = _main(f"--config={path}", f"--workdir={workdir}")
  assert result.returncode == 1 and not workdir.exists()
  assert result.stderr.strip().splitlines()[-1].startswith("error: config.track='audio'")


def test_bad_value_exits_with_the_field_and_writes_nothing_else(tmp_path):
  workdir = tmp_path / "wd"
  result = _main("--config=configs/sed_mnist.py:runlocal", f"--workdir={workdir}",
                 "--config.sed.ratio=1.5", env={"TFDS_DATA_DIR": str(tmp_path / "tfds")})
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: config.sed.ratio=1.5") and "[0, 1)" in last
  assert not workdir.exists()


def test_mistyped_field_is_rejected_by_the_flag_parser(tmp_path):
  result = _main("--config=configs/sed_mnist.py", f"--workdir={tmp_path}",
                 "--config.sed.ratoi=0.5")
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: config.sed.ratoi: unknown field") and "ratio" in last


def test_bad_variant_is_one_line(tmp_path):
  result = _main("--config=configs/sed_mnist.py:runlokal", f"--workdir={tmp_path}")
  assert result.returncode != 0
  assert "unknown key 'runlokal'" in result.stderr and "Traceback" not in result.stderr


def test_diverged_method_gives_a_complete_report_and_a_failing_exit(tfds_data_dir, tmp_path):
  workdir = tmp_path / "wd"
  result = _main(f"--config=tests/tiny_study.py:data_dir={tfds_data_dir}", f"--workdir={workdir}",
                 "--config.methods=grad_ascent,finetune", "--config.unlearn.grad_ascent.lr=1e30",
                 "--config.unlearn.grad_ascent.epochs=3")
  assert result.returncode == 1
  assert "did not finish: grad_ascent/seed_0" in result.stderr.strip().splitlines()[-1]
  report = (workdir / "report" / "report.md").read_text()
  assert "| grad_ascent (diverged) |" in report and "| finetune |" in report


def test_model_fields_can_be_overridden_on_the_command_line(tmp_path):
  result = _main("--config=configs/sed_mnist.py:model=mlp", f"--workdir={tmp_path / 'wd'}",
                 "--config.model_kwargs.hidden=(8,)", "--config.sed.ratio=2.0")
  # The override is accepted by the flag parser; validation then stops at the bad ratio.
  assert "model_kwargs" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: config.sed.ratio=2.0")
