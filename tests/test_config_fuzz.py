"""Property-based tests of config validation (hypothesis).

Every generated bad config (one field set to an out-of-range value, an unknown name or an
impossible combination) is rejected by `study.run` before anything is written, with a
ConfigError naming the field; every generated good config passes validation. 200 bad and 50
good examples per run.
"""

import math
import os

import hypothesis
import pytest
from hypothesis import strategies as st

from unlearn_jax import config as config_lib
from unlearn_jax import defaults, methods, models, study

NUM_TRAIN, SIDE = 4000, 28  # mnist_subset: training examples and image side
finite = dict(allow_nan=False, allow_infinity=False)
bad_float = st.sampled_from([math.nan, math.inf, -math.inf])
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
positive_int = (st.integers(1, 1000), st.integers(max_value=0))
positive_float = (st.floats(1e-6, 10.0, **finite),
                  st.one_of(st.floats(max_value=0.0, **finite), bad_float))
# [0, 1): sed.ratio, train.momentum.
unit_fraction = (st.floats(0.0, 1.0, exclude_max=True, **finite),
                 st.one_of(st.floats(max_value=-1e-9, **finite),
                           st.floats(min_value=1.0, **finite), bad_float))


def non_negative_float(high: float):
  """A number >= 0 (good values up to `high`)."""
  return (st.floats(0.0, high, **finite),
          st.one_of(st.floats(max_value=-1e-9, **finite), bad_float))


def choice(allowed: tuple[str, ...]):
  """One of `allowed` names."""
  return st.sampled_from(allowed), names.filter(lambda n: n not in allowed)


# path: (strategy of good values, strategy of bad values)
FIELDS = {
    "sed.num_targets": (st.integers(1, NUM_TRAIN),
                        st.one_of(st.integers(max_value=0), st.integers(NUM_TRAIN + 1, 10**9))),
    "sed.similar_per_target": (st.integers(0, 500), st.integers(max_value=-1)),
    "sed.block": (st.integers(1, SIDE),
                  st.one_of(st.integers(max_value=0), st.integers(SIDE + 1, 10**6))),
    "sed.ratio": unit_fraction,
    "sed.sigma": non_negative_float(5.0),
    "sed.generator": choice(config_lib.GENERATORS),
    "sed.selection": choice(config_lib.SELECTIONS),
    "sed.seed": (st.integers(0, 10**6), st.integers(max_value=-1)),
    "train_size": (st.one_of(st.just(0), st.integers(100, NUM_TRAIN)), st.integers(max_value=-1)),
    "test_size": (st.integers(0, 1000), st.integers(max_value=-1)),
    # The transformer is the language-model track's model: image configs refuse it.
    "model": (st.sampled_from([m for m in models.available() if m != "transformer"]),
              names.filter(lambda n: n not in models.available())),
    "train.epochs": positive_int,
    "train.batch_size": positive_int,
    "train.lr": positive_float,
    "train.momentum": unit_fraction,
    "train.weight_decay": non_negative_float(1.0),
    "train.optimizer": choice(config_lib.OPTIMIZERS),
    "train.schedule": choice(config_lib.SCHEDULES),
    "train.checkpoint_every": positive_int,
    "train.log_every": positive_int,
    "methods": (st.lists(st.sampled_from(methods.available()), min_size=1, unique=True).map(tuple),
                st.lists(names.filter(lambda n: n not in methods.available() and n != "all"),
                         min_size=1, max_size=3).map(tuple)),
    "seeds": (st.lists(st.integers(0, 10**6), min_size=1, max_size=4, unique=True).map(tuple),
              st.one_of(st.just(()), st.lists(st.integers(max_value=-1), min_size=1,
                                              max_size=3).map(tuple),
                        st.integers(0, 10).map(lambda s: (s, s)))),
    "floor_seed_offset": positive_int,
    "eval.batch_size": positive_int,
    "eval.min_gap.margin": non_negative_float(5.0),
    "unlearn.finetune.epochs": positive_int,
    "unlearn.finetune.lr": positive_float,
    "unlearn.grad_ascent.lr": positive_float,
    "unlearn.random_label.forget_batch_size": positive_int,
}


def _set(config, path, value):
  *parents, leaf = path.split(".")
  node = config
  for key in parents:
    node = node[key]
  node[leaf] = value


@hypothesis.settings(max_examples=200, deadline=None, database=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(data=st.data())
def test_every_bad_value_is_rejected_before_any_work(data, tmp_path):
  path = data.draw(st.sampled_from(sorted(FIELDS)), label="field")
  value = data.draw(FIELDS[path][1], label="bad value")
  config = defaults.base_config()
  _set(config, path, value)
  workdir = tmp_path / f"wd_{abs(hash((path, repr(value))))}"
  with pytest.raises(config_lib.ConfigError) as error:
    study.run(config, str(workdir))
  message = str(error.value)
  assert message.startswith(f"config.{path}"), message
  assert "\n" not in message  # one line
  assert not os.path.exists(workdir)  # nothing written


@hypothesis.settings(max_examples=50, deadline=None, database=None)
@hypothesis.given(data=st.data())
def test_every_good_config_is_accepted(data):
  config = defaults.base_config()
  paths = data.draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=6,
                             unique=True), label="fields")
  for path in paths:
    _set(config, path, data.draw(FIELDS[path][0], label=path))
  num_train = config.train_size or NUM_TRAIN
  hypothesis.assume(config.sed.num_targets <= num_train)  # a combination rule, tested above
  # `nearest` takes S(t) from the split itself (its rules: tests/test_sed_nearest.py).
  hypothesis.assume(config.sed.generator != "nearest" or config.sed.num_targets * (
      1 + config.sed.similar_per_target) <= num_train)
  defaults.validate(config)


def test_impossible_combination_more_targets_than_examples():
  config = defaults.base_config()
  config.train_size, config.sed.num_targets = 100, 101
  with pytest.raises(config_lib.ConfigError, match=r"config.sed.num_targets=101.*\[1, 100\]"):
    defaults.validate(config)
