"""Tests for unlearn_jax.config (parse_arg, checks), the base configs and configs/sed_mnist.py."""

import ast
import importlib.util
import inspect
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import tokenize

import ml_collections
import pytest

from unlearn_jax import config as config_lib
from unlearn_jax import defaults
from unlearn_jax import methods
from unlearn_jax import models
from unlearn_jax.lm import defaults as lm_defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_PATH = os.path.join(ROOT, "configs", "sed_mnist.py")
DEFAULTS_PATH = os.path.join(ROOT, "unlearn_jax", "defaults.py")
ConfigError = config_lib.ConfigError


def load_config_module():
  spec = importlib.util.spec_from_file_location("sed_mnist_config", CONFIG_PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def config_module():
  return load_config_module()


@pytest.fixture(autouse=True)
def hermetic_tfds_dir(tmp_path, monkeypatch):
  # Dataset-name checks read tfds's default data dir; keep it empty and local to the test.
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))


def all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, object]:
  """{'sed.ratio': value, 'sed': ConfigDict, ...} over every key, recursively."""
  out = {}
  for key, value in config.items():
    path = prefix + key
    out[path] = value
    if isinstance(value, ml_collections.ConfigDict):
      out.update(all_keys(value, path + "."))
  return out


# ----------------------------------------------------------------------------------------------
# parse_arg.

SPEC = dict(runlocal=False, seeds=1, ratio=-1.0, methods=(), dataset="")


def test_parse_arg_defaults_for_empty_arg():
  for arg in (None, "", " , "):
    parsed = config_lib.parse_arg(arg, **SPEC)
    assert parsed.to_dict() == SPEC


def test_parse_arg_types():
  parsed = config_lib.parse_arg(
      "runlocal, seeds=3,ratio=0.5,methods=finetune+grad_ascent,dataset=fashion_mnist", **SPEC)
  assert parsed.runlocal is True
  assert parsed.seeds == 3 and type(parsed.seeds) is int
  assert parsed.ratio == 0.5 and type(parsed.ratio) is float
  assert parsed.methods == ("finetune", "grad_ascent")
  assert parsed.dataset == "fashion_mnist"


def test_parse_arg_float_from_integer_text_and_single_item_tuple():
  parsed = config_lib.parse_arg("ratio=1,methods=finetune", **SPEC)
  assert parsed.ratio == 1.0 and type(parsed.ratio) is float
  assert parsed.methods == ("finetune",)


@pytest.mark.parametrize("text, expected", [
    ("runlocal", True), ("runlocal=true", True), ("runlocal=1", True),
    ("runlocal=False", False), ("runlocal=0", False)])
def test_parse_arg_bool(text, expected):
  assert config_lib.parse_arg(text, runlocal=not expected).runlocal is expected


def test_parse_arg_unknown_key_lists_valid_keys():
  with pytest.raises(ConfigError) as info:
    config_lib.parse_arg("runlokal,seeds=2", **SPEC)
  message = str(info.value)
  assert "'runlokal'" in message
  for key in SPEC:
    assert key in message.split("valid keys:")[1]


@pytest.mark.parametrize("text, key", [
    ("seeds=three", "seeds"), ("seeds=2.5", "seeds"), ("ratio=half", "ratio"),
    ("runlocal=maybe", "runlocal"), ("seeds", "seeds")])
def test_parse_arg_bad_value(text, key):
  with pytest.raises(ConfigError, match=key) as info:
    config_lib.parse_arg(text, **SPEC)
  assert isinstance(info.value, ValueError)


def test_parse_arg_bad_int_names_the_type():
  with pytest.raises(ConfigError, match=r"seeds='three' is not a valid int"):
    config_lib.parse_arg("seeds=three", **SPEC)


# ----------------------------------------------------------------------------------------------
# configs/sed_mnist.py.

VARIANTS = [None, "runlocal", "seeds=3", "methods=finetune+grad_ascent", "similar=5,ratio=0.5",
            "runlocal,seeds=3", "dataset=fashion_mnist", "model=resnet18", "recon=thorough",
            "recon=off", "protocol=0", "paper", "selection=atypical"]


def docstring_variants(module) -> list[str]:
  """The `:variant` lines of the config module's docstring."""
  return re.findall(r"^\s+:(\S+)", module.__doc__, flags=re.MULTILINE)


def test_docstring_variants_are_all_tested(config_module):
  documented = docstring_variants(config_module)
  assert "runlocal" in documented  # the parse itself works
  assert set(documented) <= set(VARIANTS)


@pytest.mark.parametrize("arg", VARIANTS)
def test_every_variant_validates_and_has_the_base_keys(config_module, arg):
  config = config_module.get_config(arg)
  defaults.validate(config)
  # model_kwargs holds the model's own fields when the variant names the model.
  without_model = lambda c: {k for k in all_keys(c) if not k.startswith("model_kwargs.")}
  assert without_model(config) == without_model(defaults.base_config())
  expected = set(models.default_kwargs(config.model)) if "model=" in (arg or "") else set()
  assert set(config.model_kwargs.keys()) == expected


def test_default_variant_is_the_base_config_with_the_protocol(config_module):
  expected = defaults.base_config()
  config_lib.apply_protocol(expected, runlocal=False)
  assert config_module.get_config().to_dict() == expected.to_dict()
  assert config_module.get_config("").to_dict() == expected.to_dict()
  assert config_module.get_config("protocol=0").to_dict() == defaults.base_config().to_dict()


def test_the_default_study_runs_the_comparison_protocol(config_module):
  config = config_module.get_config()
  assert config.sed.num_targets >= 30 and config.tune.enabled
  assert config.eval.control and config.eval.specificity
  paper = config_module.get_config("paper")
  assert paper.methods == ("all",) and len(paper.sed_seeds) >= 3 and len(paper.seeds) >= 3
  assert paper.eval.floor_seeds >= 3
  assert config_module.get_config("paper,selection=atypical").sed.selection == "atypical"


def test_variant_values(config_module):
  base = defaults.base_config()
  runlocal = config_module.get_config("runlocal")
  assert (runlocal.train_size, runlocal.test_size, runlocal.train.epochs) == (1000, 500, 3)
  assert runlocal.train.epochs < base.train.epochs
  assert config_module.get_config("seeds=3").seeds == (0, 1, 2)
  assert config_module.get_config("methods=finetune+grad_ascent").methods == (
      "finetune", "grad_ascent")
  strength = config_module.get_config("similar=5,ratio=0.5")
  assert (strength.sed.similar_per_target, strength.sed.ratio) == (5, 0.5)
  both = config_module.get_config("runlocal,seeds=3")
  assert both.seeds == (0, 1, 2) and both.train_size == 1000
  assert config_module.get_config("dataset=fashion_mnist").dataset == "fashion_mnist"
  assert config_module.get_config("model=mlp").model == "mlp"
  thorough = config_module.get_config("recon=thorough").recon
  assert thorough.steps > base.recon.steps and thorough.num_rest > base.recon.num_rest
  assert not config_module.get_config("runlocal,recon=off").recon.enabled
  with pytest.raises(ConfigError, match="thorough"):
    config_module.get_config("recon=fast")


def test_unknown_variant_key_is_rejected(config_module):
  with pytest.raises(ConfigError, match="runlocal"):
    config_module.get_config("run_local")


# ----------------------------------------------------------------------------------------------
# defaults.validate.


def test_base_config_validates():
  defaults.validate(defaults.base_config())


def _set(path, value):
  def mutate(config):
    config.unlock()
    node = config
    *parents, leaf = path.split(".")
    for key in parents:
      node = node[key]
    node[leaf] = value
  return mutate


REJECTIONS = {
    "unknown_top_level_key": (_set("learning_rate", 0.1),
                              ["config.learning_rate", "unknown field", "dataset", "train"]),
    "unknown_nested_key": (_set("sed.ratoi", 0.3),
                           ["config.sed.ratoi", "unknown field", "ratio"]),
    "ratio_too_large": (_set("sed.ratio", 1.5), ["sed.ratio", "1.5"]),
    "lr_zero": (_set("train.lr", 0.0), ["train.lr"]),
    "optimizer": (_set("train.optimizer", "sgdd"), ["train.optimizer", "'sgdd'",
                                                    "sgd, adam, adamw"]),
    "model": (_set("model", "cnnn"), ["model", "'cnnn'", *models.available()]),
    "method": (_set("methods", ("finetune", "nope")), ["methods", "'nope'",
                                                       *methods.available()]),
    "no_seeds": (_set("seeds", ()), ["seeds"]),
    "duplicate_seeds": (_set("seeds", (0, 0)), ["seeds", "unique"]),
    "negative_num_targets": (_set("sed.num_targets", 0), ["sed.num_targets"]),
    "unknown_generator": (_set("sed.generator", "blur"), ["sed.generator", "block_mask"]),
    "bad_unlearn_lr": (_set("unlearn.finetune.lr", -1.0), ["unlearn.finetune.lr"]),
    "unknown_unlearn_key": (_set("unlearn.finetune.epoch", 1), ["config.unlearn.finetune.epoch"]),
    "schedule": (_set("train.schedule", "linear"), ["train.schedule", "constant, cosine"]),
    "min_gap": (_set("eval.min_gap.loss", -0.1), ["eval.min_gap.loss"]),
    "steps_per_call": (_set("train.steps_per_call", 0),
                       ["config.train.steps_per_call=0", "an integer in [1, inf]"]),
}


@pytest.mark.parametrize("name", sorted(REJECTIONS))
def test_validate_rejects_with_a_message_naming_the_field(name):
  mutate, fragments = REJECTIONS[name]
  config = defaults.base_config()
  mutate(config)
  with pytest.raises(ConfigError) as info:
    defaults.validate(config)
  message = str(info.value)
  for fragment in fragments:
    assert fragment in message, (fragment, message)


@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "config.train.epochs=0: must be an integer in [1, inf]"),
    ("batch_size", -2, "config.train.batch_size=-2: must be an integer in [1, inf]"),
    ("optimizer", "sgdd", "config.train.optimizer='sgdd': must be one of sgd, adam, adamw"),
    ("lr", 0.0, "config.train.lr=0.0: must be a number in (0, inf]"),
    ("momentum", 1.0, "config.train.momentum=1.0: must be a number in [0, 1)"),
    ("weight_decay", -0.5, "config.train.weight_decay=-0.5: must be a number in [0, inf]"),
    ("schedule", "linear", "config.train.schedule='linear': must be one of constant, cosine"),
    ("checkpoint_every", 0, "config.train.checkpoint_every=0: must be an integer in [1, inf]"),
    ("log_every", -1, "config.train.log_every=-1: must be an integer in [1, inf]"),
])
def test_both_tracks_reject_a_bad_train_recipe_with_one_message(field, value, message):
  for track in (defaults, lm_defaults):
    config = track.base_config()
    config.train[field] = value
    with pytest.raises(ConfigError) as info:
      track.validate(config)
    assert str(info.value) == message, track.__name__


def test_train_recipe_messages_name_the_section_path():
  recipe = defaults.base_config().train
  config_lib.check_train_recipe(recipe, "unlearn.retrain")  # the base recipe is valid
  recipe.lr = -1.0
  with pytest.raises(ConfigError, match=r"^config\.unlearn\.retrain\.lr=-1\.0: "):
    config_lib.check_train_recipe(recipe, "unlearn.retrain")


def test_available_lists_are_not_empty():
  # The model/method fragments above are only meaningful if the registries list something.
  assert {"cnn", "mlp"} <= set(models.available())
  assert {"finetune", "grad_ascent"} <= set(methods.available())


def test_unknown_dataset_is_rejected_naming_the_field():
  config = defaults.base_config()
  config.dataset = "no_such_dataset_xyz"
  with pytest.raises(ValueError, match=r"dataset='no_such_dataset_xyz'"):
    defaults.validate(config)


def test_unknown_dataset_raises_config_error():
  config = defaults.base_config()
  config.dataset = "no_such_dataset_xyz"
  with pytest.raises(ConfigError, match="dataset"):
    defaults.validate(config)


def test_model_kwargs_documented_example_validates():
  config = defaults.base_config()
  config.model = "resnet18"
  config.model_kwargs = ml_collections.ConfigDict({"width": 16})
  defaults.validate(config)


# ----------------------------------------------------------------------------------------------
# Command-line overrides shown in the config's docstring, through absl's config_flags.

_FLAGS_SCRIPT = textwrap.dedent("""
    import json, sys
    from absl import app
    from ml_collections import config_flags
    _CONFIG = config_flags.DEFINE_config_file("config", None, "", lock_config=True)
    def main(argv):
      print("CONFIG=" + json.dumps(_CONFIG.value.to_dict()))
    app.run(main)
""")


@pytest.fixture(scope="module")
def overridden():
  """The config as `python -m unlearn_jax.main` would see it with the docstring's overrides."""
  args = [f"--config={CONFIG_PATH}:runlocal", "--config.sed.ratio=0.5",
          "--config.train.epochs=5", "--config.methods=finetune,grad_ascent"]
  env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
  result = subprocess.run([sys.executable, "-c", _FLAGS_SCRIPT, *args], capture_output=True,
                          text=True, env=env, timeout=60, check=True)
  line = next(l for l in result.stdout.splitlines() if l.startswith("CONFIG="))
  return json.loads(line[len("CONFIG="):])


def test_docstring_single_field_overrides(overridden, config_module):
  assert "--config.sed.ratio=0.5" in config_module.__doc__
  assert overridden["sed"]["ratio"] == 0.5
  assert overridden["train"]["epochs"] == 5
  assert overridden["train_size"] == 1000


def test_docstring_methods_override_validates(overridden, config_module):
  assert "--config.methods=finetune,grad_ascent" in config_module.__doc__
  config = config_module.get_config("runlocal")
  config.methods = tuple(overridden["methods"])
  defaults.validate(config)
  assert config_lib.as_tuple(config.methods) == ("finetune", "grad_ascent")


# ----------------------------------------------------------------------------------------------
# Every field of base_config() is commented where it is defined (STYLE.md).


Location = tuple[str, int]  # (source file, line)


def _definitions(source_path: str, function_names: set[str],
                 prefix: str = "") -> dict[str, set[Location]]:
  """{key path: lines that may hold its comment} from the source of config functions."""
  with open(source_path) as f:
    source = f.read()
  functions = [node for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.FunctionDef) and node.name in function_names]
  assert len(functions) == len(function_names), (source_path, function_names)

  def path_of(target):
    parts = []
    while isinstance(target, ast.Attribute):
      parts.append(target.attr)
      target = target.value
    if isinstance(target, ast.Name) and target.id == "config":
      return prefix + ".".join(reversed(parts))
    return None

  lines = {}
  for statement in (s for function in functions for s in function.body):
    if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1):
      continue
    path = path_of(statement.targets[0])
    if not path:
      continue
    statement_lines = set(range(statement.lineno, statement.end_lineno + 1))
    # The statement's lines, and the line just above it (the end of a comment block).
    lines[path] = statement_lines | {statement.lineno - 1}
    for node in ast.walk(statement.value):
      if isinstance(node, ast.Dict):
        for key in node.keys:
          if isinstance(key, ast.Constant):
            lines[f"{path}.{key.value}"] = lines[path] | {key.lineno, key.lineno - 1}
  return {path: {(source_path, line) for line in found} for path, found in lines.items()}


def _section_definitions(track) -> dict[str, set[Location]]:
  """`_definitions` of every section build of a track (`track.SECTIONS`), wherever defined."""
  functions: dict[str, set[str]] = {}
  for build, _ in track.SECTIONS:
    functions.setdefault(inspect.getsourcefile(build), set()).add(build.__name__)
  definitions = {}
  for source_path, names in functions.items():
    definitions.update(_definitions(source_path, names))
  return definitions


def _comment_lines(source_path: str) -> set[Location]:
  with open(source_path) as f:
    tokens = tokenize.generate_tokens(io.StringIO(f.read()).readline)
    return {(source_path, token.start[0]) for token in tokens if token.type == tokenize.COMMENT}


TRACKS = {"image": (defaults, os.path.join(ROOT, "unlearn_jax", "methods")),
          "lm": (lm_defaults, os.path.join(ROOT, "unlearn_jax", "lm", "methods"))}


def _uncommented(track_name: str) -> dict[str, bool]:
  """{key path: is a section} for every key without a comment where it is defined.

  Method hyper-parameters (unlearn.<name>.<field>) are defined in the method's module by
  `default_config()`.
  """
  track, methods_dir = TRACKS[track_name]
  definitions = _section_definitions(track)
  comments = set().union(*(_comment_lines(path) for path, _ in
                           set().union(*definitions.values())))
  missing = {}
  for path, value in all_keys(track.base_config()).items():
    parts = path.split(".")
    if parts[0] == "unlearn" and len(parts) == 2:
      continue  # a method's section: documented by its module docstring
    if parts[:2] == ["eval", "min_gap"] and len(parts) == 3 and track is defaults:
      continue  # a score's floor: its unit and default are its metric's (evaluate/scores/)
    if parts[0] == "unlearn" and len(parts) > 2:
      method_file = os.path.join(methods_dir, f"{parts[1]}.py")
      where = _definitions(method_file, {"default_config"}, f"unlearn.{parts[1]}.")
      found = where.get(path, set()) & _comment_lines(method_file)
    else:
      found = definitions.get(path, set()) & comments
    if not found:
      missing[path] = isinstance(value, ml_collections.ConfigDict)
  return missing


def test_comment_parser_finds_every_field():
  definitions = _section_definitions(defaults)
  top_level = {k for k in all_keys(defaults.base_config())
               if not (k.startswith(("unlearn.", "model_kwargs.", "eval.min_gap."))
                       and k.count(".") >= 1)}
  assert top_level <= set(definitions)
  assert definitions["sed.ratio"] & _comment_lines(DEFAULTS_PATH)  # a known commented field
  assert definitions["seeds"] & _comment_lines(config_lib.__file__)  # a shared section's field


@pytest.mark.parametrize("track", sorted(TRACKS))
def test_every_leaf_field_is_commented(track):
  missing = sorted(path for path, section in _uncommented(track).items() if not section)
  assert not missing, f"uncommented fields of the {track} track's base config: {missing}"


@pytest.mark.parametrize("track", sorted(TRACKS))
def test_every_section_is_commented(track):
  missing = sorted(path for path, section in _uncommented(track).items() if section)
  assert not missing, f"uncommented sections of the {track} track's base config: {missing}"
