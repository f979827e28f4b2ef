"""The public API: every name imports and is documented; user methods, models and datasets plug
into a study; references, SED and evaluation from a script equal what a study computes.

Reference values come from outside the code under test: the study's own checkpoints and
summary, hand-built parameter trees, and the registration inputs themselves.
"""

import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import unlearn_jax as uj
from unlearn_jax import (api, defaults, methods, models, parallel, references, study, train,
                         utils)
from unlearn_jax.config import ConfigError
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.data import sources
from unlearn_jax.tasks import image

CONTRACT_TEXT = "unlearn(state, run: RunContext, cfg, rng)"

# Dotted names that user scripts and docs/api.md rely on; a rename must fail here.
PUBLIC = (
    "unlearn_jax.sed.build", "unlearn_jax.sed.SED", "unlearn_jax.train.fit",
    "unlearn_jax.train.create_state", "unlearn_jax.train.train_from_scratch",
    "unlearn_jax.train.restore_latest_readable", "unlearn_jax.train.predict",
    "unlearn_jax.references.train", "unlearn_jax.references.train_one",
    "unlearn_jax.references.make_model", "unlearn_jax.references.training_data",
    "unlearn_jax.methods.get", "unlearn_jax.methods.register", "unlearn_jax.methods.unregister",
    "unlearn_jax.methods.load", "unlearn_jax.methods.resolve", "unlearn_jax.methods.call",
    "unlearn_jax.methods.available", "unlearn_jax.methods.method_config",
    "unlearn_jax.methods.RunContext", "unlearn_jax.methods.Spec", "unlearn_jax.methods.spec",
    "unlearn_jax.methods.MethodContractError",
    "unlearn_jax.models.register", "unlearn_jax.models.unregister", "unlearn_jax.models.get",
    "unlearn_jax.models.default_kwargs", "unlearn_jax.datasets.register",
    "unlearn_jax.datasets.unregister", "unlearn_jax.datasets.load",
    "unlearn_jax.pipeline.EpochSampler", "unlearn_jax.pipeline.concat", "unlearn_jax.study.run",
    "unlearn_jax.metrics.kl_divergence", "unlearn_jax.metrics.example_scores",
    "unlearn_jax.mia.roc_auc", "unlearn_jax.mia.tpr_at_fpr", "unlearn_jax.mia.loss_attack_auc",
    "unlearn_jax.residue.ratio", "unlearn_jax.evaluator.evaluate_models",
)
# Functions of the API's own modules: their docstrings must document arguments.
DOCUMENTED_WITH_ARGS = (
    api.load_config, api.read_config, api.build_sed, api.unlearn_data, api.predict,
    api.evaluate_states, api.load_checkpoint, references.train, references.make_model,
    methods.register, methods.call, models.register, models.get, sources.register,
)


@pytest.fixture(autouse=True)
def forget_registrations():
  """Unregisters what a test registered, so no other test sees it."""
  before = (set(methods.available()), set(models.available()), set(sources.registered()))
  yield
  for name in set(methods.available()) - before[0]:
    methods.unregister(name)
  for name in set(models.available()) - before[1]:
    models.unregister(name)
  for name in set(sources.registered()) - before[2]:
    sources.unregister(name)


# ----------------------------------------------------------------------------------------------
# Names and docstrings.


def _resolve_dotted(dotted: str):
  _, *parts = dotted.split(".")
  value = uj
  for part in parts:
    value = getattr(value, part)
  return value


@pytest.mark.parametrize("dotted", PUBLIC)
def test_public_name_resolves_and_is_documented(dotted):
  value = _resolve_dotted(dotted)
  assert (value.__doc__ or "").strip(), dotted


def test_top_level_names_are_the_api_objects_and_documented():
  assert list(uj.API) == api.__all__
  import unlearn_jax.evaluate  # pylint: disable=g-import-not-at-top,unused-import  (a subpackage)
  for name in uj.__all__:
    if name == "__version__":
      continue
    value = getattr(uj, name)
    assert (value.__doc__ or "").strip(), name
    if name in uj.API:  # a subpackage of the same name would shadow it
      assert value is getattr(api, name), name
  with pytest.raises(AttributeError, match="public names"):
    getattr(uj, "no_such_name")


@pytest.mark.parametrize("function", DOCUMENTED_WITH_ARGS, ids=lambda f: f.__qualname__)
def test_api_functions_document_args_and_errors(function):
  doc = function.__doc__
  assert "Args:" in doc, function.__qualname__
  assert "Returns:" in doc or "Raises:" in doc, function.__qualname__


def test_import_is_cheap():
  code = ("import sys, unlearn_jax; "
          "print('jax' in sys.modules, 'tensorflow_datasets' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          timeout=60, check=True)
  assert result.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------------------------------------
# Methods: registration, import paths, the contract check.


def _ok(state, run, cfg, rng):
  del run, cfg, rng
  return state, {"steps": 0}


def test_register_rejects_a_wrong_signature_naming_the_contract():
  def two_args(state, data):
    return state, {}

  def keyword_only(state, run, cfg, rng, *, extra):
    return state, {}

  for fn in (two_args, keyword_only):
    with pytest.raises(methods.MethodContractError) as error:
      methods.register("bad", fn)
    assert CONTRACT_TEXT in str(error.value) and fn.__name__ in str(error.value)
  with pytest.raises(methods.MethodContractError, match="not callable"):
    methods.register("bad", 3)
  assert "bad" not in methods.available()


def test_register_names():
  with pytest.raises(ValueError, match="built-in"):
    methods.register("finetune", _ok)
  with pytest.raises(ValueError, match="identifier"):
    methods.register("my-method", _ok)
  methods.register("mine", _ok, default_config={"lr": 0.5})
  methods.register("mine", _ok)  # the same function again: no-op
  assert "mine" in methods.available() and methods.get("mine") is _ok
  assert "mine" not in methods.builtin_names()  # 'all' runs the built-in methods only
  with pytest.raises(ValueError, match="already registered"):
    methods.register("mine", lambda s, d, c, r: (s, {}))
  methods.register("mine", lambda s, d, c, r: (s, {}), replace=True)
  methods.unregister("mine")
  with pytest.raises(KeyError):
    methods.unregister("mine")


USER_MODULE = textwrap.dedent("""
    from unlearn_jax.config import ConfigError

    def default_config():
      return {"lr": 0.5, "epochs": 1}

    def check_config(cfg):
      if cfg.lr > 1:
        raise ConfigError(f"config.unlearn.user_methods.lr={cfg.lr}: must be at most 1")

    def unlearn(state, run, cfg, rng):
      return state, {"steps": 0, "lr": cfg.lr}

    def halve(state, run, cfg, rng):
      return state, {}

    def finetune(state, run, cfg, rng):
      return state, {}

    def two_args(state, data):
      return state, {}

    NOT_CALLABLE = 3
""")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
  (tmp_path / "user_methods.py").write_text(USER_MODULE)
  (tmp_path / "broken_user_module.py").write_text("import no_such_dependency_xyz\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  yield "user_methods"
  for name in ("user_methods", "broken_user_module"):
    sys.modules.pop(name, None)


def test_import_path_names_and_resolution(user_module):
  assert methods.load("user_methods:unlearn") == "user_methods"  # `unlearn`: the module's name
  assert methods.load("user_methods:halve") == "halve"
  assert methods.load("user_methods:unlearn") == "user_methods"  # loading twice is fine
  names = methods.resolve(["finetune", "user_methods:unlearn", "user_methods", "halve"])
  assert names == ("finetune", "user_methods", "halve")
  import user_methods  # pylint: disable=g-import-not-at-top,import-error
  assert methods.get("user_methods:unlearn") is user_methods.unlearn


@pytest.mark.parametrize("path,fragments", [
    ("user_methods:two_args", [CONTRACT_TEXT, "two_args"]),
    ("user_methods:nope", ["has no attribute 'nope'", "unlearn", "halve"]),
    ("user_methods:NOT_CALLABLE", ["non-callable", "NOT_CALLABLE"]),
    ("user_methods:finetune", ["'finetune' is a built-in method"]),
    ("no_such_pkg_xyz.module:fn", ["cannot import module 'no_such_pkg_xyz.module'"]),
    ("user_methods:", ["package.module:function"]),
    ("user methods:fn", ["package.module:function"]),
])
def test_import_path_errors_name_the_field_and_the_problem(user_module, path, fragments):
  with pytest.raises(ConfigError) as error:
    methods.resolve([path])
  message = str(error.value)
  assert message.startswith(f"config.methods={path!r}"), message
  for fragment in fragments:
    assert fragment in message, (fragment, message)


def test_an_error_inside_the_users_module_keeps_its_traceback(user_module):
  with pytest.raises(ModuleNotFoundError) as error:
    methods.resolve(["broken_user_module:unlearn"])
  assert error.value.name == "no_such_dependency_xyz"


def test_unknown_name_lists_methods_and_the_import_path_form():
  with pytest.raises(ConfigError) as error:
    methods.resolve(["finetuen"])
  assert "finetune" in str(error.value) and "package.module:function" in str(error.value)


def test_validate_fills_and_checks_an_import_path_methods_config(user_module):
  config = defaults.base_config()
  config.methods = ("finetune", "user_methods:unlearn")
  defaults.validate(config)
  assert config.unlearn.user_methods.to_dict() == {"lr": 0.5, "epochs": 1}
  defaults.validate(config)  # validating again (the section now exists) passes too
  config.unlearn.user_methods.lr = 2.0  # the module's own check_config
  with pytest.raises(ConfigError, match="user_methods.lr=2.0"):
    defaults.validate(config)
  config.unlearn.user_methods.lr = 0.5
  config.unlearn.user_methods.epochs = 0  # a shared field, checked as for built-in methods
  with pytest.raises(ConfigError, match="unlearn.user_methods.epochs=0: must be an integer"):
    defaults.validate(config)


def test_registered_method_config_joins_base_config():
  methods.register("mine", _ok, default_config=lambda: {"lr": 0.25, "epochs": 0.5},
                   spec=methods.Spec(fractional_epochs=True))
  config = defaults.base_config()
  assert config.unlearn.mine.lr == 0.25
  config.methods = ("mine",)
  defaults.validate(config)  # fractional epochs allowed
  methods.unregister("mine")
  assert "mine" not in defaults.base_config().unlearn


@pytest.fixture(scope="module")
def toy_state():
  model = models.get("mlp", 3, hidden=(4,))
  state = train.create_state(model, jax.random.key(0), (6, 6, 1))
  rng = np.random.default_rng(0)
  arrays = {"image": rng.integers(0, 256, (10, 6, 6, 1), dtype=np.uint8),
            "label": rng.integers(0, 3, 10).astype(np.int32), "id": np.arange(10)}
  run = methods.RunContext(forget=arrays, retain=arrays, mesh=parallel.make_mesh(),
                           seed=0, num_classes=3,
                           init_state=lambda key: train.create_state(model, key, (6, 6, 1)),
                           recipe=defaults.base_config().train)
  return state, run


@pytest.mark.parametrize("returned,fragments", [
    (lambda s: s, ["returned a", "TrainState", "expected a pair (state, info)"]),
    (lambda s: (s, {}, {}), ["a tuple of 3", "expected a pair"]),
    (lambda s: (s.params, {}), ["expected a unlearn_jax.train.TrainState first"]),
    (lambda s: (s, [1]), ["(state, a list)", "expected a dict"]),
    (lambda s: (s.replace(params={"Dense_0": s.params["Dense_0"]}), {}),
     ["params differ", "missing ['Dense_1']['bias']", "missing ['Dense_1']['kernel']"]),
    (lambda s: (s.replace(params=jax.tree.map(lambda p: jnp.zeros((2,) + p.shape), s.params)),
                {}), ["params differ", "['Dense_0']['bias'] is (2, 4) float32, expected (4,)"]),
    (lambda s: (s.replace(params=jax.tree.map(lambda p: p.astype(jnp.int32), s.params)), {}),
     ["int32, expected (4,) float32"]),
])
def test_call_reports_a_wrong_return_with_what_was_expected(toy_state, returned, fragments):
  state, data = toy_state
  methods.register("wrong", lambda s, d, c, r: returned(s))
  with pytest.raises(methods.MethodContractError) as error:
    methods.call("wrong", state, data, ml_collections.ConfigDict(), jax.random.key(0))
  message = str(error.value)
  assert message.startswith("method 'wrong' (register('wrong'"), message
  for fragment in fragments:
    assert fragment in message, (fragment, message)


def test_call_returns_a_checked_pair_and_method_config_adds_the_section(toy_state):
  state, data = toy_state
  seen = {}

  def halve(state, run, cfg, rng):
    del run, rng
    seen["factor"] = cfg.factor
    params = jax.tree.map(lambda p: p * cfg.factor, state.params)
    return state.replace(params=params), {"steps": jnp.int32(1), "norms": jnp.ones(2)}

  config = defaults.base_config()
  config.lock()
  methods.register("halve", halve, default_config={"factor": 0.5})
  cfg = methods.method_config(config, "halve")
  assert config.unlearn.halve.factor == 0.5  # the section was added
  new_state, info = methods.call("halve", state, data, cfg, jax.random.key(0))
  assert seen["factor"] == 0.5
  assert info["steps"] == 1 and isinstance(info["steps"], int)
  np.testing.assert_array_equal(info["norms"], [1.0, 1.0])
  np.testing.assert_array_equal(new_state.params["Dense_1"]["kernel"],
                                0.5 * np.asarray(state.params["Dense_1"]["kernel"]))


# ----------------------------------------------------------------------------------------------
# Models.


class TinyNet(nn.Module):
  """Flatten, one hidden layer, logits."""
  num_classes: int
  width: int = 8

  @nn.compact
  def __call__(self, x, train=False):
    del train
    x = nn.relu(nn.Dense(self.width)(x.reshape((x.shape[0], -1))))
    return nn.Dense(self.num_classes)(x)


def make_tiny(num_classes: int, width: int = 8) -> nn.Module:
  return TinyNet(num_classes=num_classes, width=width)


class NoTrainArgument(nn.Module):
  @nn.compact
  def __call__(self, x):
    return x


def test_model_registration_and_errors():
  with pytest.raises(TypeError, match="num_classes first"):
    models.register("no_args", lambda: TinyNet(2))
  with pytest.raises(TypeError, match="not a function"):
    models.register("not_callable", "make")
  with pytest.raises(ValueError, match="built-in"):
    models.register("mlp", make_tiny)
  models.register("tiny_net", make_tiny)
  assert "tiny_net" in models.available()
  assert models.default_kwargs("tiny_net") == {"width": 8}
  assert models.get("tiny_net", 5, width=3) == TinyNet(num_classes=5, width=3)
  with pytest.raises(ValueError, match=r"Unknown config field\(s\) \['depth'\]"):
    models.get("tiny_net", 5, depth=3)
  models.register("returns_dict", lambda num_classes: {"n": num_classes})
  with pytest.raises(TypeError, match="returned a dict; expected make"):
    models.get("returns_dict", 3)
  models.register("no_train", lambda num_classes: NoTrainArgument())
  with pytest.raises(TypeError, match=r"__call__\(x, train=False\)"):
    models.get("no_train", 3)


def test_registered_model_validates_in_a_config():
  models.register("tiny_net", make_tiny)
  config = defaults.base_config()
  config.model = "tiny_net"
  config.model_kwargs = ml_collections.ConfigDict({"width": 4})
  defaults.validate(config)
  config.model_kwargs.depth = 2
  with pytest.raises(ConfigError, match="depth"):
    defaults.validate(config)


# ----------------------------------------------------------------------------------------------
# Datasets.


def toy_arrays(num_train=90, num_test=30, num_classes=3, side=8, seed=0):
  """Learnable toy images: class c brightens row band c."""
  rng = np.random.default_rng(seed)

  def split(n):
    labels = np.arange(n) % num_classes
    images = rng.integers(0, 60, (n, side, side, 1))
    for c in range(num_classes):
      images[labels == c, 2 * c:2 * c + 2] += 150
    return {"image": images.astype(np.uint8), "label": labels}

  return split(num_train), split(num_test)


@pytest.mark.parametrize("change,fragments", [
    (lambda tr, te: (dict(tr, image=tr["image"].astype(np.float32)), te),
     ["train['image']", "uint8 (N, H, W, C)", "float32"]),
    (lambda tr, te: (dict(tr, image=tr["image"][..., 0]), te), ["train['image']", "(90, 8, 8)"]),
    (lambda tr, te: (tr, dict(te, label=te["label"][:-1])), ["test['label']", "shape (30,)"]),
    (lambda tr, te: (dict(tr, label=tr["label"] + 1), te), ["train['label']", "[0, 3)", "1..3"]),
    (lambda tr, te: (tr, dict(te, image=te["image"][:, :4])), ["train images are (8, 8, 1)"]),
    (lambda tr, te: (dict(tr, id=np.zeros(90, int)), te), ["train['id']", "unique"]),
    (lambda tr, te: (dict(tr, weight=np.ones(90)), te), ["unknown keys ['weight']"]),
    (lambda tr, te: ([tr["image"], tr["label"]], te), ["expected a dict", "list"]),
])
def test_dataset_registration_errors_name_split_and_key(change, fragments):
  train_arrays, test_arrays = change(*toy_arrays())
  with pytest.raises(ValueError) as error:
    sources.register("toy", train_arrays, test_arrays, num_classes=3)
  for fragment in fragments:
    assert fragment in str(error.value), (fragment, str(error.value))
  assert "toy" not in sources.registered()


def test_dataset_registration_names():
  train_arrays, test_arrays = toy_arrays()
  for bad in (1, 1.5, True):
    with pytest.raises(ValueError, match="num_classes"):
      sources.register("toy", train_arrays, test_arrays, num_classes=bad)
  with pytest.raises(ValueError, match="embedded"):
    sources.register("mnist_subset", train_arrays, test_arrays, num_classes=3)
  sources.register("toy", train_arrays, test_arrays, num_classes=3)
  with pytest.raises(ValueError, match="already registered"):
    sources.register("toy", train_arrays, test_arrays, num_classes=3)
  with pytest.raises(ValueError, match="registered in this process: toy"):
    sources.load("not_registered_xyz")


def test_registered_dataset_loads_like_a_tfds_one():
  train_arrays, test_arrays = toy_arrays()
  shuffled_ids = np.random.default_rng(1).permutation(1000)[:90] + 5000
  sources.register("toy", dict(train_arrays, id=shuffled_ids), test_arrays, num_classes=3)
  assert sources.num_classes("toy") == 3 and sources.image_shape("toy") == (8, 8, 1)
  assert sources.num_train_examples("toy") == 90
  sources.check_name("toy")
  splits = sources.load("toy")
  order = np.argsort(shuffled_ids)
  np.testing.assert_array_equal(splits["train"]["id"], shuffled_ids[order])
  np.testing.assert_array_equal(splits["train"]["image"], train_arrays["image"][order])
  np.testing.assert_array_equal(splits["train"]["label"], train_arrays["label"][order])
  np.testing.assert_array_equal(splits["test"]["id"], np.arange(90, 120))  # after train's ids
  assert splits["train"]["label"].dtype == np.int32 and splits["test"]["id"].dtype == np.int64
  splits["train"]["image"][:] = 0  # callers get copies
  assert sources.load("toy")["train"]["image"].any()


# ----------------------------------------------------------------------------------------------
# A study with a user dataset, model and method; the script API against its results.


def _shrink(state, run, cfg, rng):
  """Scales the output layer: logits scale, so predictions (accuracy) stay the same."""
  del run, rng
  factor = cfg.factor
  params = dict(state.params)
  params["Dense_1"] = jax.tree.map(lambda p: p * factor, params["Dense_1"])
  return state.replace(params=params), {"steps": 0}


def toy_config() -> ml_collections.ConfigDict:
  config = defaults.base_config()
  config.dataset, config.model = "toy", "tiny_net"
  config.sed.num_targets, config.sed.similar_per_target, config.sed.block = 3, 2, 2
  config.train.epochs, config.train.batch_size, config.train.lr = 2, 16, 0.1
  config.train.checkpoint_every = config.train.log_every = 1000
  config.methods = ("finetune", "shrink")
  config.unlearn.finetune.epochs = 1
  config.recon.enabled = False  # 8×8 images: smaller than the 11×11 SSIM window
  if "lira" in config.eval:  # cheap evaluation extras
    config.eval.lira.num_models = 0
  if "relearn" in config.eval:
    config.eval.relearn.max_steps = 3
  if "svc_max_train" in config.eval:
    config.eval.svc_max_train = 20
  return config


@pytest.fixture(scope="module")
def toy_study(tmp_path_factory):
  sources.register("toy", *toy_arrays(), num_classes=3)
  models.register("tiny_net", make_tiny)
  methods.register("shrink", _shrink, default_config={"factor": 0.5})
  try:
    workdir = str(tmp_path_factory.mktemp("toy_study"))
    config = toy_config()
    summary = study.run(config, workdir)
    yield workdir, config, summary
  finally:  # registrations are per process: never leak them into other test modules
    methods.unregister("shrink")
    models.unregister("tiny_net")
    sources.unregister("toy")


def test_user_dataset_model_and_method_run_in_a_study(toy_study):
  workdir, _, summary = toy_study
  assert summary["dataset"] == "toy" and summary["model"] == "tiny_net"
  assert summary["status"] == {"finetune/seed_0": "ok", "shrink/seed_0": "ok"}
  shrink, original = summary["methods"]["shrink"], summary["methods"]["original"]
  assert shrink["acc"] == original["acc"]  # halved logits: same predictions
  assert shrink["loss"]["target"] != original["loss"]["target"]
  assert api.read_config(workdir).unlearn.shrink.factor == 0.5  # recorded in config.json


def test_build_sed_equals_the_studys_provenance(toy_study):
  workdir, config, _ = toy_study
  sed = api.build_sed(config)
  saved = sed_lib.load_provenance(os.path.join(workdir, "data", "provenance.npz"))
  train_rows = saved["split"] == 0
  for key in ("id", "label", "kind", "group"):
    np.testing.assert_array_equal(sed.train[key], saved[key][train_rows], err_msg=key)
  np.testing.assert_array_equal(sed.test["id"], saved["id"][~train_rows])


def test_build_sed_with_atypical_targets_equals_the_studys(toy_study, tmp_path):
  _, config, _ = toy_study
  config = ml_collections.ConfigDict(config.to_dict())
  config.sed.selection = "atypical"
  expected = image.ImageTask.build(config, str(tmp_path)).sed  # trains the study's probe
  sed = api.build_sed(config)  # trains it again, elsewhere
  for key in ("id", "label", "kind", "group"):
    np.testing.assert_array_equal(sed.train[key], expected.train[key], err_msg=key)
  np.testing.assert_array_equal(sed.target_ids, expected.target_ids)


def test_references_equal_the_studys_checkpoints(toy_study):
  workdir, config, _ = toy_study
  sed = api.build_sed(config)
  trained = references.train(sed, config, seed=0, names=("original", "clean_alt"))
  for name, state in trained.items():
    saved = api.load_checkpoint(references.checkpoint_dir(workdir, name, 0))
    assert int(saved.step) == int(state.step)
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(saved.params)):
      np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=name)
  # With the study's workdir, a finished reference is restored, not trained again, and keeps
  # the training time the study recorded; a workdir of another config is refused.
  _, info = references.train_one(sed, config, "clean", 0, workdir=workdir)
  assert info["steps_run"] == 0
  recorded = utils.read_json(os.path.join(references.checkpoint_dir(workdir, "clean", 0),
                                               "info.json"))
  assert info["time_s"] == recorded["time_s"] > 0
  other = ml_collections.ConfigDict(config.to_dict())
  other.train.epochs = 3
  with pytest.raises(ConfigError, match="different config.*train.epochs"):
    references.train(sed, other, 0, workdir=workdir)


def test_evaluate_states_equals_the_studys_summary(toy_study):
  workdir, config, summary = toy_study
  sed = api.build_sed(config)
  states = {name: api.load_checkpoint(references.checkpoint_dir(workdir, name, 0))
            for name in ("original", "retrain", "clean", "finetune")}
  records, rows = api.evaluate_states(states, sed, config)
  for name in states:
    for key in ("acc", "loss", "margin", "kl_to_clean", "mia_auc"):
      assert records[name][key] == pytest.approx(summary["methods"][name][key], nan_ok=True), (
          name, key)
  assert len(rows) == len(states) * config.sed.num_targets
  with pytest.raises(ValueError, match="'clean'"):
    api.evaluate_states({"original": states["original"]}, sed, config)


def test_load_checkpoint_errors(toy_study, tmp_path):
  workdir, config, _ = toy_study
  with pytest.raises(FileNotFoundError, match="no checkpoint in"):  # shrink saves none
    api.load_checkpoint(references.checkpoint_dir(workdir, "shrink", 0))
  wider = ml_collections.ConfigDict(config.to_dict())
  wider.model_kwargs = ml_collections.ConfigDict({"width": 16})
  with pytest.raises(ValueError, match=r"do not fit.*\(8,\), the model's \(16,\)"):
    api.load_checkpoint(references.checkpoint_dir(workdir, "original", 0), wider)
  with pytest.raises(FileNotFoundError, match="config.json"):
    api.load_checkpoint(str(tmp_path / "checkpoints" / "original" / "seed_0"))


def test_load_config_and_unlearn_data(toy_study):
  _, config, _ = toy_study
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  loaded = api.load_config(os.path.join(root, "configs", "sed_mnist.py:runlocal,seeds=2"))
  assert loaded.train_size == 1000 and tuple(loaded.seeds) == (0, 1)
  with pytest.raises(ValueError, match="config.py"):
    api.load_config("configs/sed_mnist.yaml")
  sed = api.build_sed(config)
  data = api.unlearn_data(sed, config, seed=3)
  np.testing.assert_array_equal(data.forget["id"], np.sort(sed.target_ids))
  assert len(data.retain["id"]) == len(sed.train["id"]) - config.sed.num_targets
  assert data.seed == 3 and data.num_classes == 3 and data.recipe is config.train
  fresh = data.init_state(jax.random.key(0))
  assert fresh.params["Dense_0"]["kernel"].shape == (64, 8)
