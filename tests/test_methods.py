"""Unlearning methods: the registry, the contract, and what each update does on a toy problem."""

import dataclasses
import importlib
import os
import pkgutil
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from conftest import make_toy_unlearning

import unlearn_jax
from unlearn_jax import methods, train
from unlearn_jax.config import ConfigError
from unlearn_jax.methods import random_label

NUM_CLASSES = 3


def test_every_module_imports():
  for info in pkgutil.walk_packages(unlearn_jax.__path__, "unlearn_jax."):
    importlib.import_module(info.name)


def test_registry_lists_methods_and_explains_a_miss():
  assert {"finetune", "grad_ascent", "random_label", "retrain"} <= set(methods.available())
  assert "common" not in methods.available()
  with pytest.raises(ValueError, match="available: .*finetune"):
    methods.get("finetuen")
  for name in methods.available():
    assert callable(methods.get(name))


def test_the_image_registry_lists_its_builtin_methods():
  directory = os.path.dirname(methods.__file__)
  modules = sorted(name[:-3] for name in os.listdir(directory)
                   if name.endswith(".py") and not name.startswith("_") and name != "common.py")
  assert methods.builtin_names() == methods.builtin_names("image") == tuple(modules)
  assert {"retrain", "salun", "sisa", "scrub"} <= set(modules)


@pytest.mark.parametrize("track", ["image", "lm"])
def test_defaults_read_from_the_source_equal_the_imported_modules(track, monkeypatch):
  for name in methods.builtin_names(track):
    module_name = f"{methods.TRACKS[track]}.{name}"
    module = importlib.import_module(module_name)
    expected = module.default_config().to_dict() if hasattr(module, "default_config") else None
    monkeypatch.delitem(sys.modules, module_name)  # read from the file, not the loaded module
    got = methods.declared_defaults(name, track)
    assert (got.to_dict() if got is not None else None) == expected, name
    monkeypatch.setitem(sys.modules, module_name, module)


@pytest.mark.parametrize("config_file", ["configs/sed_mnist.py:runlocal", "configs/sed_qa.py"])
def test_building_a_config_imports_no_method_code(config_file):
  path, _, args = config_file.partition(":")
  code = ("import importlib.util, sys\n"
          f"spec = importlib.util.spec_from_file_location('c', {path!r})\n"
          "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
          f"config = module.get_config({args!r}) if {bool(args)} else module.get_config()\n"
          "assert 'finetune' in config.unlearn and config.unlearn.finetune.lr > 0\n"
          "print(sorted(m for m in sys.modules if m.startswith(('unlearn_jax.methods.',\n"
          "    'unlearn_jax.lm.methods.', 'unlearn_jax.train', 'unlearn_jax.lm.steps'))))")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=root)
  # Only the registry's light declaration modules, never a method's module.
  assert out.stdout.strip() == "['unlearn_jax.methods._context', 'unlearn_jax.methods._spec']", (
      out.stdout)


def test_specs_say_what_the_study_must_know():
  assert methods.spec("retrain") == methods.Spec(reference="retrain")
  assert methods.spec("sisa").returns_ensemble and methods.spec("sisa").reference is None
  assert methods.spec("salun").fractional_epochs and not methods.spec("salun").returns_ensemble
  ascent = methods.spec("grad_ascent")  # only a search space: every other field's default
  assert ascent == methods.Spec(search_space=methods.search_space("grad_ascent"))
  assert not ascent.fractional_epochs and not ascent.returns_ensemble and ascent.reference is None
  for module in ("finetune", "l1_sparse", "neggrad_plus", "random_label", "salun", "sisa",
                 "retrain"):
    loaded = importlib.import_module(f"unlearn_jax.methods.{module}")
    assert not hasattr(loaded, "FRACTIONAL_EPOCHS") and not hasattr(loaded, "RETURNS_ENSEMBLE")


def test_an_unknown_track_is_refused_naming_track():
  for call in (lambda: methods.available("audio"), lambda: methods.get("finetune", "audio"),
               lambda: methods.default_configs("audio"),
               lambda: methods.register("mine", lambda s, r, c, k: (s, {}), track="audio")):
    with pytest.raises(ConfigError, match=r"track='audio': unknown track; tracks: image, lm"):
      call()
  config = ml_collections.ConfigDict({"track": "audio", "unlearn": {}})
  with pytest.raises(ConfigError, match="track='audio'"):
    methods.method_config(config, "finetune")


def test_relabel_never_keeps_the_true_label():
  labels = np.arange(1000) % NUM_CLASSES
  new = random_label.relabel(labels, NUM_CLASSES, np.random.default_rng(0))
  assert np.all(new != labels)
  assert set(np.unique(new)) == set(range(NUM_CLASSES))


@pytest.fixture(scope="module")
def toy():
  """A small MLP trained a few steps on random data, with 6 forget examples."""
  return make_toy_unlearning(NUM_CLASSES, epochs=3, lr=0.05)


def _forget_loss(state, data, mesh):
  logits = train.predict(state, data.forget, 64, mesh)
  log_probs = jax.nn.log_softmax(logits)
  return float(-np.mean(np.take_along_axis(np.asarray(log_probs),
                                           data.forget["label"][:, None], axis=1)))


def test_grad_ascent_raises_the_forget_loss(toy):
  state, data, config, mesh = toy
  cfg = config.unlearn.grad_ascent.copy_and_resolve_references()
  cfg.lr = 0.05
  unlearned, info = methods.get("grad_ascent")(state, data, cfg, jax.random.key(1))
  assert info["steps"] == cfg.epochs
  assert _forget_loss(unlearned, data, mesh) > _forget_loss(state, data, mesh)


@pytest.mark.parametrize("name", ["finetune", "random_label", "retrain"])
def test_method_contract(toy, name):
  state, data, config, mesh = toy
  before = jax.device_get(state.params)
  unlearned, info = methods.get(name)(state, data, config.unlearn[name], jax.random.key(1))
  assert info["steps"] > 0 and info["wall_s"] >= 0
  assert jax.tree.structure(unlearned.params) == jax.tree.structure(state.params)
  # The original state is left intact (methods start from a copy).
  jax.tree.map(np.testing.assert_array_equal, before, jax.device_get(state.params))
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before,
                         jax.device_get(unlearned.params))
  assert any(jax.tree.leaves(changed))


def test_time_spent_untimed_is_on_the_run_clock(toy):
  state, data, _, _ = toy
  run = dataclasses.replace(data, clock=methods.Clock())  # a fresh clock

  def sleepy(state, run, cfg, rng):
    del cfg, rng
    with run.untimed():
      time.sleep(0.2)
    return state, {"steps": 0, "wall_s": 0.0}

  methods.register("sleepy", sleepy)
  try:
    start = time.perf_counter()
    methods.call("sleepy", state, run, ml_collections.ConfigDict(), jax.random.key(0))
    elapsed = time.perf_counter() - start
  finally:
    methods.unregister("sleepy")
  assert 0.2 <= run.clock.excluded_s <= elapsed
  assert data.clock.excluded_s == 0  # another run's clock is untouched


def test_random_label_lowers_confidence_on_forget(toy):
  state, data, config, mesh = toy
  cfg = config.unlearn.random_label.copy_and_resolve_references()
  cfg.epochs = 3
  unlearned, _ = methods.get("random_label")(state, data, cfg, jax.random.key(1))
  assert _forget_loss(unlearned, data, mesh) > _forget_loss(state, data, mesh)


def _occurrences(batch_fn, steps, images):
  """How often each of `images` is a real row (weight ≠ 0) of the batches of `steps`."""
  keys = {image.tobytes(): i for i, image in enumerate(images)}
  counts = np.zeros(len(images), int)
  for step in steps:
    batch = batch_fn(step)
    for image, weight in zip(batch["image"], batch["weight"]):
      if weight != 0 and image.tobytes() in keys:
        counts[keys[image.tobytes()]] += 1
  return counts


@pytest.mark.parametrize("name", ["random_label", "salun"])
@pytest.mark.parametrize("epochs", [1, 0.5, 2.5])
def test_random_labels_see_every_target_once_per_pass(toy, name, epochs):
  _, data, config, _ = toy
  cfg = config.unlearn[name].copy_and_resolve_references()
  cfg.epochs, cfg.batch_size = epochs, 8
  batch_fn, num_steps = random_label.relabelled_batches(data, cfg)
  num_retain, num_forget = len(data.retain["label"]), len(data.forget["label"])
  steps_per_pass = -(-(num_retain + num_forget) // 8)  # one pass over R ∪ T
  for start in range(0, num_steps, steps_per_pass):
    steps = range(start, min(start + steps_per_pass, num_steps))
    np.testing.assert_array_equal(_occurrences(batch_fn, steps, data.forget["image"]), 1)
    retain_counts = _occurrences(batch_fn, steps, data.retain["image"])
    assert retain_counts.max() == 1
    if len(steps) == steps_per_pass:  # a whole pass: every retained row once, too
      assert retain_counts.min() == 1
    else:  # a partial pass fills its steps: all targets and as many retained rows as fit
      assert retain_counts.sum() == len(steps) * 8 - num_forget
  assert num_steps == max(1, round(epochs * steps_per_pass))  # epochs count passes over R ∪ T


def test_every_batch_sampling_keeps_the_targets_in_every_step(toy):
  _, data, config, _ = toy
  cfg = config.unlearn.random_label.copy_and_resolve_references()
  cfg.epochs, cfg.batch_size, cfg.sampling = 1, 8, "every_batch"
  batch_fn, num_steps = random_label.relabelled_batches(data, cfg)
  counts = _occurrences(batch_fn, range(num_steps), data.forget["image"])
  np.testing.assert_array_equal(counts, num_steps)  # 6 forget rows in each of the 7 steps


def test_random_labels_are_drawn_over_all_classes_as_in_the_authors_code(toy):
  _, data, config, _ = toy
  cfg = config.unlearn.random_label.copy_and_resolve_references()
  assert (cfg.sampling, cfg.label_draw) == ("mixed", "any")  # the defaults
  cfg.epochs, cfg.batch_size = 40, 8
  batch_fn, num_steps = random_label.relabelled_batches(data, cfg)
  true = {image.tobytes(): label for image, label in zip(data.forget["image"],
                                                           data.forget["label"])}
  kept = []
  for step in range(num_steps):
    batch = batch_fn(step)
    for image, label, weight in zip(batch["image"], batch["label"], batch["weight"]):
      if weight != 0 and image.tobytes() in true:
        kept.append(label == true[image.tobytes()])
  assert len(kept) == 40 * len(true)  # once per pass
  assert abs(np.mean(kept) - 1 / NUM_CLASSES) < 0.1  # 240 uniform draws: the true label ~1/3
  cfg.label_draw = "other"
  batch_fn, _ = random_label.relabelled_batches(data, cfg)
  for step in range(num_steps):
    batch = batch_fn(step)
    for image, label in zip(batch["image"], batch["label"]):
      assert image.tobytes() not in true or label != true[image.tobytes()]
