"""Tests for the SED generator registry (unlearn_jax/data/generators/) and the contract that
every generator it finds keeps: a new module is found, checked and built without other edits.

The behaviour of each generator has its own tests (test_sed.py: block_mask, duplicate,
gaussian_noise; test_sed_nearest.py: nearest; test_generator_<name>.py for the others).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from test_sed import make_splits, sed_config
from unlearn_jax import config as config_lib
from unlearn_jax import defaults
from unlearn_jax.data import generators
from unlearn_jax.data import sed as sed_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.join(ROOT, "unlearn_jax", "data", "generators")
DERIVED = [name for name in generators.names() if not generators.get(name).selects_rows]


def test_the_generators_are_the_modules_of_the_package():
  modules = sorted(name[:-3] for name in os.listdir(PACKAGE_DIR)
                   if name.endswith(".py") and not name.startswith("_"))
  assert generators.names() == tuple(modules)
  assert {"block_mask", "duplicate", "gaussian_noise", "nearest"} <= set(modules)
  # The choices of sed.generator are the registry's.
  assert config_lib.GENERATORS == generators.names()
  for generator in generators.generators():
    assert generator.name in modules
    assert all(field in defaults.base_config().sed for field in generator.fields)
  assert generators.get("nearest").selects_rows
  assert not generators.get("block_mask").selects_rows


def test_every_generator_has_a_summary_for_the_listing():
  summaries = generators.summaries()
  assert list(summaries) == list(generators.names())
  assert all(summaries.values()), summaries
  result = subprocess.run([sys.executable, "-m", "unlearn_jax.data.generators"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
  lines = result.stdout.splitlines()
  assert [line.split(":")[0] for line in lines] == list(generators.names())


def test_importing_the_config_imports_no_generator_and_no_numerical_code():
  code = ("import sys; import unlearn_jax.config as c; "
          "print(' '.join(c.GENERATORS)); print(' '.join(sorted(sys.modules)))")
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
  names, modules = result.stdout.splitlines()
  assert names.split() == list(generators.names())
  modules = set(modules.split())
  assert not {"jax", "numpy"} & modules
  assert not [m for m in modules if m.startswith("unlearn_jax.data.generators.")]


def test_a_declaration_has_exactly_one_of_derive_and_select():
  with pytest.raises(ValueError, match="exactly one"):
    generators.Generator(name="nothing")
  with pytest.raises(ValueError, match="exactly one"):
    generators.Generator(name="both", derive=lambda *args: None, select=lambda *args: None)


def test_an_unknown_name_is_refused_with_the_known_ones():
  with pytest.raises(KeyError, match="block_mask, duplicate"):
    generators.get("blur")
  with pytest.raises(config_lib.ConfigError, match="sed.generator.*block_mask, duplicate"):
    sed_lib.check_params(sed_config(generator="blur"))


@pytest.fixture
def extra_generators(tmp_path, monkeypatch):
  """A second folder of generator modules seen by the package (its caches cleared)."""
  monkeypatch.setattr(generators, "__path__", [*generators.__path__, str(tmp_path)])
  generators.names.cache_clear()
  generators.get.cache_clear()
  yield tmp_path
  for name in os.listdir(tmp_path):
    sys.modules.pop(f"{generators.__name__}.{name[:-3]}", None)
  generators.names.cache_clear()
  generators.get.cache_clear()


def test_a_new_module_is_found_and_built_without_other_edits(extra_generators):
  (extra_generators / "invert.py").write_text(textwrap.dedent('''\
      """Inverted copies of the target."""
      from unlearn_jax.data import generators

      def derive(image, count, rng, sed_config):
        del rng, sed_config
        return (255 - image)[None].repeat(count, axis=0)

      GENERATOR = generators.Generator(name="invert", derive=derive)
      '''))
  assert "invert" in generators.names()
  splits = make_splits()
  config = sed_config(generator="invert")
  sed = sed_lib.build(splits, config)
  similar = sed.select(sed_lib.SIMILAR)
  image_of = {int(i): im for i, im in zip(sed.train["id"], sed.train["image"])}
  for image, group in zip(similar["image"], similar["group"]):
    np.testing.assert_array_equal(image, 255 - image_of[int(group)])


def test_a_module_must_declare_its_own_name(extra_generators):
  (extra_generators / "misnamed.py").write_text(textwrap.dedent('''\
      """A module whose generator is called otherwise."""
      from unlearn_jax.data import generators

      GENERATOR = generators.Generator(name="other", derive=lambda *args: None)
      '''))
  with pytest.raises(ValueError, match="name is its module's"):
    generators.get("misnamed")


# ----------------------------------------------------------------------------------------------
# The contract of every derived generator: uint8 copies of the target's shape, a function of the
# rng stream, and similar samples with the label and group of their target.


@pytest.mark.parametrize("name", DERIVED)
@pytest.mark.parametrize("channels", [1, 3])
def test_derived_copies_are_uint8_of_the_image_shape_and_seeded(name, channels):
  generator = generators.get(name)
  image = np.random.default_rng(0).integers(0, 256, (28, 28, channels), dtype=np.uint8)
  config = sed_config(generator=name)
  copies = generator.derive(image, 5, np.random.default_rng(1), config)
  assert copies.dtype == np.uint8 and copies.shape == (5, 28, 28, channels)
  again = generator.derive(image, 5, np.random.default_rng(1), config)
  np.testing.assert_array_equal(copies, again)
  empty = generator.derive(image, 0, np.random.default_rng(1), config)
  assert empty.dtype == np.uint8 and empty.shape == (0, 28, 28, channels)


@pytest.mark.parametrize("name", generators.names())
def test_every_generator_builds_an_sed_with_exact_provenance(name):
  splits = make_splits()
  features = np.random.default_rng(4).normal(size=(len(splits["train"]["label"]), 6))
  config = sed_config(generator=name, similar_per_target=2)
  first = sed_lib.build(splits, config, features=features)
  second = sed_lib.build(splits, config, features=features)
  for key in first.train:
    np.testing.assert_array_equal(first.train[key], second.train[key])
  similar, forget = first.select(sed_lib.SIMILAR), first.forget
  assert len(similar["id"]) == 2 * len(forget["id"])
  label_of = dict(zip(forget["id"].tolist(), forget["label"].tolist()))
  assert [label_of[g] for g in similar["group"].tolist()] == similar["label"].tolist()
  assert len(np.unique(first.train["id"])) == len(first.train["id"])
  if generators.get(name).selects_rows:
    assert len(first.train["id"]) == len(splits["train"]["id"])
    np.testing.assert_array_equal(np.sort(first.neighbours["neighbour_id"]),
                                  np.sort(similar["id"]))
  else:
    assert first.neighbours is None
    assert similar["id"].min() > max(splits["train"]["id"].max(), splits["test"]["id"].max())
