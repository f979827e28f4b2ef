"""Model registry: built-in modules found by name, and models registered by the user.

Each module `unlearn_jax.models.<name>` exposes `make(num_classes, **kwargs)` returning a
`flax.linen.Module` whose `__call__(x, train=False)` maps float32 NHWC images in [0, 1] to
float32 logits of shape (N, num_classes). Adding a model means adding one file; nothing here
needs editing. A model defined elsewhere joins with `register(name, make_fn)` (same `make`
contract), after which `config.model=name` works in a study run in the same process.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from typing import Any, Callable, Mapping

import flax.linen as nn

MAKE_CONTRACT = ("make(num_classes, **kwargs) -> flax.linen.Module, whose __call__(x, train=False) "
                 "maps float32 (N, H, W, C) images to (N, num_classes) logits")
_NAME = re.compile(r"^[A-Za-z_]\w*$")
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def builtin_names() -> tuple[str, ...]:
  """Returns the sorted names of the model modules in this package."""
  return tuple(sorted(
      info.name for info in pkgutil.iter_modules(__path__)
      if not info.name.startswith("_")))


def available() -> tuple[str, ...]:
  """Returns the sorted names of every model: built-in modules and registered models."""
  return tuple(sorted(set(builtin_names()) | set(_REGISTRY)))


def register(name: str, make_fn: Callable[..., nn.Module], *, replace: bool = False) -> None:
  """Makes `make_fn` the model called `name` in this process (`config.model=name`).

  Args:
    name: a Python identifier that is not a built-in model.
    make_fn: `make_fn(num_classes, **kwargs)` returning a `flax.linen.Module` whose
      `__call__(x, train=False)` maps float32 (N, H, W, C) images in [0, 1] to (N, num_classes)
      logits. Its keyword arguments with defaults become the model's config fields
      (`config.model_kwargs`), as for the built-in models.
    replace: allow replacing a model registered earlier under the same name.

  Raises:
    ValueError: `name` is not an identifier, is a built-in model, or is taken (without replace).
    TypeError: `make_fn` is not callable or cannot be called as `make_fn(num_classes)`.
  """
  if not isinstance(name, str) or not _NAME.match(name):
    raise ValueError(f"model name {name!r}: must be a Python identifier")
  if name in builtin_names():
    raise ValueError(f"model name {name!r} is a built-in model; choose another name")
  if not callable(make_fn):
    raise TypeError(f"model {name!r}: make_fn is a {type(make_fn).__name__}, not a function; "
                    f"expected {MAKE_CONTRACT}")
  try:
    signature = inspect.signature(make_fn)
  except (TypeError, ValueError):
    signature = None
  if signature is not None:
    try:
      signature.bind_partial(2)
    except TypeError as error:
      raise TypeError(f"model {name!r}: {getattr(make_fn, '__qualname__', make_fn)}{signature} "
                      f"cannot be called with num_classes first ({error}); expected "
                      f"{MAKE_CONTRACT}") from None
  previous = _REGISTRY.get(name)
  if previous is not None and previous is not make_fn and not replace:
    raise ValueError(f"model name {name!r} is already registered; pass replace=True to replace "
                     "it, or choose another name")
  _REGISTRY[name] = make_fn


def unregister(name: str) -> None:
  """Forgets a model registered in this process.

  Raises:
    KeyError: `name` is not a registered model.
  """
  if name not in _REGISTRY:
    raise KeyError(f"{name!r} is not a registered model; registered: "
                   f"{', '.join(sorted(_REGISTRY)) or 'none'}")
  del _REGISTRY[name]


def _make_fn(name: str) -> Callable[..., nn.Module]:
  """The `make` function of model `name`; ValueError listing the models on a miss."""
  if name in _REGISTRY:
    return _REGISTRY[name]
  if name not in builtin_names():
    raise ValueError(
        f"Unknown model={name!r}; available models: {', '.join(available())}.")
  return importlib.import_module(f"{__name__}.{name}").make


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
    name: module name under `unlearn_jax.models` (e.g. "resnet18") or a registered model.
    num_classes: number of output logits.
    **kwargs: the model's config fields (see that module's `make`).

  Returns:
    The flax module (parameters are created later by `train.create_state`).

  Raises:
    ValueError: if `name` is not a model, or a kwarg is not one of its fields.
    TypeError: a registered `make_fn` returned something other than a flax module, or one whose
      `__call__` does not accept `(x, train=...)`.
  """
  make_fn = _make_fn(name)
  _check_kwargs(name, make_fn, kwargs)
  module = make_fn(num_classes, **kwargs)
  if name in _REGISTRY:
    _check_module(name, module)
  return module


def _check_module(name: str, module: Any) -> None:
  """TypeError unless `module` is a flax Module callable as `module(x, train=False)`."""
  if not isinstance(module, nn.Module):
    raise TypeError(f"model {name!r}: make_fn returned a {type(module).__name__}; expected "
                    f"{MAKE_CONTRACT}")
  try:
    inspect.signature(type(module).__call__).bind(module, "x", train=False)
  except (TypeError, ValueError) as error:
    raise TypeError(f"model {name!r}: {type(module).__name__}.__call__ cannot be called as "
                    f"__call__(x, train=False) ({error}); training and evaluation pass `train`") \
        from None


def default_kwargs(name: str) -> dict[str, Any]:
  """The config fields of model `name` with their defaults (from its `make` signature).

  Configs start `model_kwargs` from these, so every field can be overridden on the command
  line (`--config.model_kwargs.width=16`).

  Raises:
    ValueError: if `name` is not a model.
  """
  make = _make_fn(name)
  return {key: (tuple(p.default) if isinstance(p.default, list) else p.default)
          for key, p in inspect.signature(make).parameters.items()
          if key != "num_classes" and p.default is not inspect.Parameter.empty
          and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def has_batch_stats(variables: Mapping[str, Any]) -> bool:
  """True when `variables` carries a non-empty `batch_stats` collection.

  Training code uses this to decide whether `apply` needs
  `mutable=['batch_stats']` in train mode.
  """
  return bool(variables.get("batch_stats"))
