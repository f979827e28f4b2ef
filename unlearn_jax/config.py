"""Shared config helpers: the variant-string parser and validation against the base config.

`parse_arg` turns the string after `configs/X.py:` into typed values (big_vision style);
`validate` checks a resolved config before any work starts, so a typo or an out-of-range value
fails with one line that names the field, the value and what is allowed.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import ml_collections

from unlearn_jax.data import generators as _generators

# Names referenced by configs and checked here; the registries own the authoritative lists.
# The SED generators (`sed.generator`): the modules of unlearn_jax/data/generators/, listed
# without importing them.
GENERATORS = _generators.names()
# Similarity of the `nearest` generator (data/generators/nearest.py `similarities`).
SIMILARITIES = ("ssim", "embedding")
SELECTIONS = ("random", "class_balanced", "atypical")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine")
# Stream mode's request schedules (tasks/stream.py).
STREAM_SCHEDULES = ("targets_then_similar", "targets")


def stream_target_rounds(requests: int, schedule: str) -> int:
  """How many of a stream's `requests` rounds request targets (the last one of
  'targets_then_similar' requests similar samples)."""
  return requests - 1 if schedule == "targets_then_similar" else requests


class ConfigError(ValueError):
  """A config field holds a value that is not allowed."""


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
  """Parses a variant string like `runlocal,seeds=3,methods=finetune+grad_ascent`.

  Args:
    arg: the text after `:` in `--config=configs/X.py:arg` (None or '' for none).
    **spec: every accepted key with its default; the default's type converts the value. A bare
      key (`runlocal`) sets a bool to True. Tuples take `+`-separated items.

  Returns:
    A ConfigDict with every key of `spec`.

  Raises:
    ConfigError: for a key not in `spec` (listing the valid ones) or a value of the wrong type.
  """
  result = ml_collections.ConfigDict(dict(spec))
  for token in filter(None, (t.strip() for t in (arg or "").split(","))):
    key, has_value, text = token.partition("=")
    if key not in spec:
      raise ConfigError(
          f"config arg: unknown key {key!r} in {arg!r}; valid keys: {', '.join(sorted(spec))}")
    default = spec[key]
    if not has_value:
      if not isinstance(default, bool):
        raise ConfigError(f"config arg: {key!r} needs a value ({key}=...)")
      result[key] = True
      continue
    result[key] = _convert(key, text, default)
  return result


def _convert(key: str, text: str, default: Any) -> Any:
  """Converts `text` to the type of `default` for `parse_arg`."""
  try:
    if isinstance(default, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(text)
      return text.lower() in ("true", "1")
    if isinstance(default, int):
      return int(text)
    if isinstance(default, float):
      return float(text)
    if isinstance(default, tuple):
      return tuple(t for t in text.split("+") if t)
    return text
  except ValueError:
    raise ConfigError(
        f"config arg: {key}={text!r} is not a valid {type(default).__name__}") from None


# ----------------------------------------------------------------------------------------------
# Validation.


def check_keys(config: ml_collections.ConfigDict, base: ml_collections.ConfigDict,
               prefix: str = "config", free: tuple[str, ...] = ()) -> None:
  """Rejects keys of `config` that `base` lacks, recursively, listing the valid ones.

  Sections named in `free` (dotted paths, e.g. 'config.model_kwargs') hold arbitrary keys that
  their owner validates.
  """
  for key in config.keys():
    path = f"{prefix}.{key}"
    if path in free:
      continue
    if key not in base:
      raise ConfigError(
          f"{path}: unknown field; valid fields of {prefix}: {', '.join(sorted(base.keys()))}")
    value, reference = config[key], base[key]
    if isinstance(value, ml_collections.ConfigDict) and isinstance(
        reference, ml_collections.ConfigDict):
      check_keys(value, reference, path, free)


def require(condition: bool, field: str, value: Any, allowed: str) -> None:
  """Raises a ConfigError naming the field, the value and the allowed values."""
  if not condition:
    raise ConfigError(f"config.{field}={value!r}: {allowed}")


def require_choice(field: str, value: Any, choices: Iterable[str]) -> None:
  """Requires `value` to be one of `choices`."""
  choices = tuple(choices)
  require(value in choices, field, value, f"must be one of {', '.join(choices)}")


def require_number(field: str, value: Any, *, low: float = -math.inf, high: float = math.inf,
                   integer: bool = False, low_open: bool = False, high_open: bool = False) -> None:
  """Requires a finite number in a range; the message states the range in interval notation."""
  kind = "an integer" if integer else "a number"
  left, right = ("(" if low_open else "["), (")" if high_open else "]")
  allowed = f"must be {kind} in {left}{low}, {high}{right}"
  ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  ok = ok and (not integer or float(value).is_integer()) and math.isfinite(value)
  if ok:
    ok = (value > low if low_open else value >= low) and (value < high if high_open else
                                                         value <= high)
  require(ok, field, value, allowed)


def require_integers(path: str, section: ml_collections.ConfigDict, **lows: int) -> None:
  """Requires `section[key]` to be an integer >= `lows[key]` for every key (in that order);
  `path` is the section's dotted path under `config`, for the messages."""
  for key, low in lows.items():
    require_number(f"{path}.{key}", section[key], low=low, integer=True)


def require_bool(field: str, value: Any) -> None:
  """Requires True or False."""
  require(isinstance(value, bool), field, value, "must be True or False")


def check_min_gaps(section: ml_collections.ConfigDict, path: str = "eval.min_gap") -> None:
  """Requires every residue floor (`eval.min_gap.<score>`) to be a number >= 0."""
  for key, value in section.items():
    require_number(f"{path}.{key}", value, low=0)


def check_train_recipe(section: ml_collections.ConfigDict, path: str = "train") -> None:
  """Checks a training recipe (`config.train` of either track): its optimiser and schedule.

  Args:
    section: the recipe: epochs, batch_size, optimizer, lr, momentum, weight_decay, schedule,
      checkpoint_every, log_every.
    path: the section's dotted path under `config`, for the messages.

  Raises:
    ConfigError: on the first field out of range, naming `config.<path>.<field>`.
  """
  require_number(f"{path}.epochs", section.epochs, low=1, integer=True)
  require_number(f"{path}.batch_size", section.batch_size, low=1, integer=True)
  require_choice(f"{path}.optimizer", section.optimizer, OPTIMIZERS)
  require_number(f"{path}.lr", section.lr, low=0, low_open=True)
  require_number(f"{path}.momentum", section.momentum, low=0, high=1, high_open=True)
  require_number(f"{path}.weight_decay", section.weight_decay, low=0)
  require_choice(f"{path}.schedule", section.schedule, SCHEDULES)
  require_number(f"{path}.checkpoint_every", section.checkpoint_every, low=1, integer=True)
  require_number(f"{path}.log_every", section.log_every, low=1, integer=True)


def build_seeds(config: ml_collections.ConfigDict) -> None:
  """The training seeds of a study (either track)."""
  # Training seeds; every reference and method is run once per seed (mean and 95% CI reported).
  config.seeds = (0,)
  # clean_alt (the seed-noise floor) uses seed + this offset.
  config.floor_seed_offset = 1000


def check_seeds(config: ml_collections.ConfigDict) -> None:
  """Checks seeds (at least one, unique, >= 0) and floor_seed_offset."""
  seeds = as_tuple(config.seeds)
  require(len(seeds) >= 1, "seeds", config.seeds, "must hold at least one seed")
  for seed in seeds:
    require_number("seeds", seed, low=0, integer=True)
  require(len(set(seeds)) == len(seeds), "seeds", config.seeds, "seeds must be unique")
  require_number("floor_seed_offset", config.floor_seed_offset, low=1, integer=True)


def build_overwrite(config: ml_collections.ConfigDict) -> None:
  """What happens to a workdir made with another config (either track)."""
  # Rerunning into a workdir made with a different config is refused unless this is True, in
  # which case the old checkpoints, data, metrics and report are deleted first.
  config.overwrite = False


def check_overwrite(config: ml_collections.ConfigDict) -> None:
  """Checks overwrite."""
  require_bool("overwrite", config.overwrite)


# A section of a base config: `build(config)` adds its fields, each documented by the comment
# above (or beside) its assignment; `check(config)` raises ConfigError on the first bad value.
Section = tuple[Callable[[ml_collections.ConfigDict], None],
                Callable[[ml_collections.ConfigDict], None]]


def build_sections(sections: Iterable[Section]) -> ml_collections.ConfigDict:
  """The base config made of `sections` (each build in turn: the order of the fields in
  WORKDIR/config.json)."""
  config = ml_collections.ConfigDict()
  for build, _ in sections:
    build(config)
  return config


def check_sections(config: ml_collections.ConfigDict, base: ml_collections.ConfigDict,
                   sections: Iterable[Section]) -> None:
  """Rejects a field that `base` lacks (model_kwargs aside), then runs each section's check."""
  check_keys(config, base, free=("config.model_kwargs",))
  for _, check in sections:
    check(config)


def as_tuple(value: Any) -> tuple:
  """Accepts a tuple/list or comma-separated strings (as typed on a command line).

  `--config.methods=finetune,grad_ascent` reaches the config as ('finetune,grad_ascent',), so
  string items are split on commas too.
  """
  items = [value] if isinstance(value, str) else list(value)
  out = []
  for item in items:
    if isinstance(item, str):
      out.extend(v.strip() for v in item.split(",") if v.strip())
    else:
      out.append(item)
  return tuple(out)


def validate_names(field: str, names: Iterable[str], available: Callable[[], Iterable[str]]):
  """Requires every name to be in `available()`, listing what exists on a miss."""
  known = tuple(available())
  for name in names:
    require(name in known, field, name, f"unknown name; available: {', '.join(known)}")


# ----------------------------------------------------------------------------------------------
# Variants shared by the study configs in configs/ (config files are loaded by path, so their
# shared pieces live here).

STUDY_VARIANTS = dict(runlocal=False, seeds=1, methods=(), similar=-1, ratio=-1.0, remedy=False)
# Remedy suffixes of method names (methods.REMEDY_SUFFIXES): in a variant's `+`-separated list
# `finetune+nbr` stays one name.
_REMEDY_SUFFIXES = ("nbr", "wnbr", "dist")


def apply_study_variants(config: ml_collections.ConfigDict, arg: ml_collections.ConfigDict,
                         *, runlocal_sizes: tuple[int, int], runlocal_epochs: int) -> None:
  """Applies the variants every study config accepts (see configs/sed_mnist.py), in place.

  `seeds=N` (seeds 0..N-1), `methods=a+b` (remedy names keep their suffix:
  `methods=finetune+finetune+nbr` is finetune and finetune+nbr), `similar=K` (|S(t)|),
  `ratio=R` (block-mask ratio), `remedy=1` (remedy.enabled: detection report, +nbr/+wnbr/+dist
  runs and the trade-off sweep) and `runlocal` (a stratified subset of `runlocal_sizes` =
  (train, test) images, `runlocal_epochs` epochs, one-epoch finetune and random_label, progress
  every 10 steps, 4 LiRA reference models, relearn to a loss of 1e-2 on T at lr 0.1 and a smaller,
  shorter reconstruction track).
  """
  config.seeds = tuple(range(arg.seeds))
  if arg.methods:
    names: list[str] = []
    for item in arg.methods:
      if item in _REMEDY_SUFFIXES and names:
        names[-1] += f"+{item}"
      else:
        names.append(item)
    config.methods = tuple(names)
  if arg.remedy:
    config.remedy.enabled = True
  if arg.similar >= 0:
    config.sed.similar_per_target = arg.similar
  if arg.ratio >= 0:
    config.sed.ratio = arg.ratio
  if arg.runlocal:
    config.train_size, config.test_size = runlocal_sizes
    config.train.epochs = runlocal_epochs
    config.train.log_every = 10
    config.unlearn.finetune.epochs = 1
    config.unlearn.random_label.epochs = 1
    config.eval.lira.num_models = 4
    # Three epochs leave 0.1-0.3 nats of loss on T: a level every model reaches within the cap.
    config.eval.relearn.lr, config.eval.relearn.target_loss = 0.1, 1e-2
    config.eval.relearn.max_steps = 100
    config.recon.num_rest, config.recon.hidden = 40, (100, 100)
    config.recon.train_steps, config.recon.steps, config.recon.trial_steps = 1500, 800, 100


def apply_protocol(config: ml_collections.ConfigDict, *, runlocal: bool) -> None:
  """The comparison protocol of the default study, in place (docs/design.md §3.8, §3.9, §4.2):
  30 targets, every method tuned on a tuning SED (12 trials each, 4 under `runlocal`), the
  control without similar samples, and specificity on matched non-targets."""
  config.sed.num_targets = 30
  config.tune.enabled = True
  config.tune.trials, config.tune.startup_trials = (4, 2) if runlocal else (12, 6)
  if runlocal:  # retraining 3 epochs takes ~0.5 s: a tenth is below a method's fixed overhead
    config.tune.cost_cap = 1.0
  config.eval.control = True
  config.eval.specificity = True


def full_dataset_study(config: ml_collections.ConfigDict, arg: str | None, *, dataset: str,
                       epochs: int, runlocal_sizes: tuple[int, int],
                       runlocal_epochs: int) -> ml_collections.ConfigDict:
  """`config` (a base config) on every training and test example of the tfds `dataset`.

  The study config of CIFAR-10 (configs/sed_cifar10.py): trains `epochs` epochs, then applies
  the variant string `arg` (STUDY_VARIANTS; see `apply_study_variants`). Returns `config`,
  changed in place.
  """
  config.dataset = dataset
  config.train_size = config.test_size = 0  # every example of the splits
  config.train.epochs = epochs
  apply_study_variants(config, parse_arg(arg, **STUDY_VARIANTS), runlocal_sizes=runlocal_sizes,
                       runlocal_epochs=runlocal_epochs)
  return config


def grey_digit_study(config: ml_collections.ConfigDict, arg: str | None, *, dataset: str,
                     epochs: int, sizes: tuple[int, int]) -> ml_collections.ConfigDict:
  """`config` (a base config) on a 28×28 grey 10-class dataset (configs/sed_mnist_full.py,
  configs/sed_fashion_mnist.py): the comparison protocol of configs/sed_mnist.py on a stratified
  subset of `sizes` = (train, test) images, `epochs` epochs.

  Variants: those of every study (STUDY_VARIANTS; `:runlocal` is 2,000 / 500 images, 3
  epochs), `protocol=0` (a plain study: 10 targets, no tuning, control or specificity),
  `full` (every image of both splits) and `dataset=idx:/path` (the same data from another
  folder of idx files). Returns `config`, changed in place.
  """
  arg = parse_arg(arg, **STUDY_VARIANTS, protocol=True, full=False, dataset="")
  config.dataset = arg.dataset or dataset
  config.train_size, config.test_size = (0, 0) if arg.full else sizes
  config.train.epochs = epochs
  apply_study_variants(config, arg, runlocal_sizes=(2000, 500), runlocal_epochs=3)
  if arg.protocol:
    apply_protocol(config, runlocal=arg.runlocal)
  return config


def parse_flags_or_exit(argv: list[str], explain: Callable[[list[str]], str | None]) -> list[str]:
  """absl flag parsing for the binaries, with one-line errors for bad config overrides.

  ml_collections reports an unknown `--config.x` field as a KeyError traceback and a bad
  variant string as a traceback inside the flag error; both become `error: <last line>`.
  `explain(argv)` names the unknown field against the binary's own config (or returns None).
  """
  import sys  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[-1] if any(l.startswith("Traceback") for l in lines) else " ".join(lines)
    sys.exit(f"error: {message}\nPass --helpshort or --helpfull to see help on flags.")
  except (KeyError, AttributeError, TypeError, ValueError) as error:
    sys.exit(f"error: {explain(argv) or error}")
