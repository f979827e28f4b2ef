"""Unlearning methods: one module per method, found by name, all with the same contract.

    unlearn(state, data: UnlearnData, config, rng) -> (state, info)

`state` is the trained `original` TrainState, `data` gives the forget set (T), the retained data
(D \\ T) and what a method needs to run (mesh, seed, checkpoint directory, a fresh-model
initialiser); `config` is the whole study config (a method reads `config.unlearn.<name>`);
`info` is a dict with at least `steps` and `wall_s`, plus diagnostics such as `diverged`.
Adding a method means adding one module here that defines `unlearn` and `default_config()`
(its hyper-parameters with their sources; they appear as `config.unlearn.<name>`), and optionally
`check_config(cfg)`. A module whose `epochs` counts passes over the retained data may set
`FRACTIONAL_EPOCHS = True` to accept fractions of a pass (e.g. 0.75).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

Arrays = dict[str, np.ndarray]
_PRIVATE = ("common",)


@dataclasses.dataclass(frozen=True)
class UnlearnData:
  """What a method may use besides the trained state.

  Attributes:
    forget: the forget set (image, label, id, kind, group arrays).
    retain: the retained training data D \\ forget.
    mesh: device mesh for the steps.
    seed: integer seed of this run (batch order, random labels).
    num_classes: number of classes.
    init_state: returns a freshly initialised TrainState for a PRNG key (for retraining).
    checkpoint_dir: where the method may keep orbax checkpoints (None: no checkpoints).
    writer: JSONL metric writer (or None).
    val: optional held-out data.
  """
  forget: Arrays
  retain: Arrays
  mesh: jax.sharding.Mesh
  seed: int
  num_classes: int
  init_state: Callable[[jax.Array], Any]
  checkpoint_dir: str | None = None
  writer: Any = None
  val: Arrays | None = None


def available() -> tuple[str, ...]:
  """Names of every method module in this package."""
  return tuple(sorted(info.name for info in pkgutil.iter_modules(__path__)
                      if not info.name.startswith("_") and info.name not in _PRIVATE))


def get(name: str) -> Callable[..., tuple[Any, dict]]:
  """The `unlearn` function of method `name`; an unknown name lists what exists."""
  names = available()
  if name not in names:
    raise ValueError(f"config.methods: unknown method {name!r}; available: {', '.join(names)}")
  return importlib.import_module(f"{__name__}.{name}").unlearn


def resolve(names) -> tuple[str, ...]:
  """Expands 'all' to every available method (in registry order), keeping other names."""
  out: list[str] = []
  for name in names:
    for item in (available() if name == "all" else (name,)):
      if item not in out:
        out.append(item)
  return tuple(out)


def default_configs() -> ml_collections.ConfigDict:
  """{method: its default hyper-parameters} from each module's `default_config()`."""
  configs = ml_collections.ConfigDict()
  for name in available():
    module = importlib.import_module(f"{__name__}.{name}")
    if hasattr(module, "default_config"):
      configs[name] = module.default_config()
  return configs


# Fields with a meaning shared by every method, checked the same way everywhere.
_POSITIVE_INTS = ("epochs", "steps", "batch_size", "forget_batch_size", "chunk_size",
                  "num_shards", "num_slices", "max_steps", "cg_steps", "max_epochs")
_POSITIVE_FLOATS = ("lr", "forget_lr", "retain_lr", "temperature")


def check_config(name: str, method_config: ml_collections.ConfigDict) -> None:
  """Validates a method's hyper-parameters: shared fields here, the rest by the module.

  A module may define `check_config(cfg)` raising `unlearn_jax.config.ConfigError`.
  """
  from unlearn_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f"{__name__}.{name}")
  fractional = getattr(module, "FRACTIONAL_EPOCHS", False)
  for key, value in method_config.items():
    field = f"unlearn.{name}.{key}"
    if key == "epochs" and fractional:
      config_lib.require_number(field, value, low=0, low_open=True)
    elif key in _POSITIVE_INTS:
      config_lib.require_number(field, value, low=1, integer=True)
    elif key in _POSITIVE_FLOATS:
      config_lib.require_number(field, value, low=0, low_open=True)
  if hasattr(module, "check_config"):
    module.check_config(method_config)
