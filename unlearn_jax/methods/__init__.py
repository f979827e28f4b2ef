"""Unlearning methods: one module per method, found by name, all with the same contract.

    unlearn(state, data: UnlearnData, config, rng) -> (state, info)

`state` is the trained `original` TrainState, `data` gives the forget set (T), the retained data
(D \\ T) and what a method needs to run (mesh, seed, checkpoint directory, a fresh-model
initialiser); `config` is the whole study config (a method reads `config.unlearn.<name>`);
`info` is a dict with at least `steps` and `wall_s`, plus diagnostics such as `diverged`.
Adding a method means adding one module here that defines `unlearn`.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Callable

import jax
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
