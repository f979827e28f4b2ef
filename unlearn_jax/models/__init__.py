"""Model registry: models are modules found by name and imported lazily.

Each module `unlearn_jax.models.<name>` exposes `make(num_classes, **kwargs)`
returning a `flax.linen.Module` whose `__call__(x, train=False)` maps float32
NHWC images in [0, 1] to float32 logits of shape (N, num_classes). Adding a
model means adding one file; nothing here needs editing.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any, Mapping

import flax.linen as nn


def available() -> tuple[str, ...]:
  """Returns the sorted names of all model modules in this package."""
  return tuple(sorted(
      info.name for info in pkgutil.iter_modules(__path__)
      if not info.name.startswith("_")))


def _check_kwargs(name: str, make_fn: Any, kwargs: Mapping[str, Any]) -> None:
  """Raises ValueError naming any kwargs that `make_fn` does not accept.

  Checked here rather than left to Python's TypeError so the message names
  the model and lists the fields it does accept.
  """
  params = inspect.signature(make_fn).parameters
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
    return
  accepted = [p for p in params if p != "num_classes"]
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown:
    raise ValueError(
        f"Unknown config field(s) {unknown} for model={name!r}; "
        f"accepted fields: {accepted}.")


def get(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
  """Builds model `name` with `num_classes` outputs and its config `kwargs`.

  Args:
    name: module name under `unlearn_jax.models`, e.g. "resnet18".
    num_classes: number of output logits.
    **kwargs: the model's config fields (see that module's `make`).

  Raises:
    ValueError: if `name` is not a model, or a kwarg is not one of its fields.
  """
  names = available()
  if name not in names:
    raise ValueError(
        f"Unknown model={name!r}; available models: {', '.join(names)}.")
  module = importlib.import_module(f"{__name__}.{name}")
  _check_kwargs(name, module.make, kwargs)
  return module.make(num_classes, **kwargs)


def default_kwargs(name: str) -> dict[str, Any]:
  """The config fields of model `name` with their defaults (from its `make` signature).

  Configs start `model_kwargs` from these, so every field can be overridden on the command
  line (`--config.model_kwargs.width=16`).
  """
  if name not in available():
    raise ValueError(f"Unknown model={name!r}; available models: {', '.join(available())}.")
  make = importlib.import_module(f"{__name__}.{name}").make
  return {key: (tuple(p.default) if isinstance(p.default, list) else p.default)
          for key, p in inspect.signature(make).parameters.items()
          if key != "num_classes" and p.default is not inspect.Parameter.empty}


def has_batch_stats(variables: Mapping[str, Any]) -> bool:
  """True when `variables` carries a non-empty `batch_stats` collection.

  Training code uses this to decide whether `apply` needs
  `mutable=['batch_stats']` in train mode.
  """
  return bool(variables.get("batch_stats"))
