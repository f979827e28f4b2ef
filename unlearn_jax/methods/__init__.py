"""Unlearning methods: built-in modules, user functions, all with the same contract.

    unlearn(state, data: UnlearnData, config, rng) -> (state, info)

`state` is the trained `original` TrainState, `data` gives the forget set (T), the retained data
(D \\ T) and what a method needs to run (mesh, seed, checkpoint directory, a fresh-model
initialiser); `config` is the whole study config (a method reads `config.unlearn.<name>`);
`info` is a dict with at least `steps` and `wall_s`, plus diagnostics such as `diverged`. The
returned state must have the same parameter tree (structure, shapes, dtypes) as the input.

Three ways to provide a method:

* Built-in: a module here that defines `unlearn` and `default_config()` (its hyper-parameters
  with their sources; they appear as `config.unlearn.<name>`), and optionally
  `check_config(cfg)`. A module whose `epochs` counts passes over the retained data may set
  `FRACTIONAL_EPOCHS = True` to accept fractions of a pass (e.g. 0.75).
* Registered in the running process: `register("my_method", fn, default_config=...)`.
* By import path in the config: `--config.methods=my_pkg.my_module:my_function` imports the
  function when the config is validated. Its name in the study (checkpoints, summary.json,
  `config.unlearn.<name>`) is the function's name, or the module's last component when the
  function is called `unlearn` (`examples.my_method:unlearn` is `my_method`).

A user method's hyper-parameters come from, in this order: the `default_config` given to
`register`, a `default_config` attribute of the function, or a `default_config()` function in
its module (the same for `check_config` and `FRACTIONAL_EPOCHS`). They become
`config.unlearn.<name>` when the config is validated, so config.json records them. Because
`--config.x=...` overrides only fields that already exist, overriding them on the command line
needs the method registered before the config is built: a config file that calls `register` (or
`load("pkg.module:function")`) before `base_config()`.

The study runs every method through `call`, which checks what the method returns.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np

from unlearn_jax import config as config_lib
from unlearn_jax.config import ConfigError

Arrays = dict[str, np.ndarray]
_PRIVATE = ("common",)
CONTRACT = "unlearn(state, data: UnlearnData, config, rng) -> (state, info)"
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_NAME = re.compile(r"^[A-Za-z_]\w*$")


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


class MethodContractError(TypeError):
  """A method's signature or return value does not follow the method contract."""


@dataclasses.dataclass(frozen=True)
class _UserMethod:
  """A method registered in this process (by `register` or from an import path)."""
  fn: Callable[..., Any]
  default_config: ml_collections.ConfigDict
  check_config: Callable[[ml_collections.ConfigDict], None] | None
  fractional_epochs: bool
  source: str  # where it came from, for messages: 'register(...)' or the import path


_REGISTRY: dict[str, _UserMethod] = {}


def builtin_names() -> tuple[str, ...]:
  """Names of the method modules in this package (what `'all'` runs)."""
  return tuple(sorted(info.name for info in pkgutil.iter_modules(__path__)
                      if not info.name.startswith("_") and info.name not in _PRIVATE))


def available() -> tuple[str, ...]:
  """Names of every method: the built-in modules and the methods registered in this process."""
  return tuple(sorted(set(builtin_names()) | set(_REGISTRY)))


def register(name: str, fn: Callable[..., Any], default_config: Any = None,
             check_config: Callable[[ml_collections.ConfigDict], None] | None = None, *,
             fractional_epochs: bool | None = None, replace: bool = False) -> None:
  """Makes `fn` a method called `name` in this process (`config.methods` may then list it).

  Args:
    name: the method's name: a Python identifier that is not a built-in method. It names the
      method's checkpoints, its row of summary.json and its config section `config.unlearn.<name>`.
    fn: a function with the method contract `unlearn(state, data, config, rng) -> (state, info)`.
    default_config: its hyper-parameters: a ConfigDict, a dict, or a function returning one
      (None: `fn.default_config`, else `default_config()` of fn's module, else none).
    check_config: optional `check_config(cfg)` raising `unlearn_jax.config.ConfigError` for a bad
      value of `config.unlearn.<name>` (None: `fn.check_config`, else the module's).
    fractional_epochs: whether an `epochs` field may be a fraction (None: `FRACTIONAL_EPOCHS` of
      fn or its module, else False, i.e. `epochs` must be a positive integer).
    replace: allow replacing a method registered earlier under the same name.

  Raises:
    ValueError: `name` is not an identifier, is a built-in method, or is taken (without replace).
    MethodContractError: `fn` cannot be called as `fn(state, data, config, rng)`.
  """
  if not isinstance(name, str) or not _NAME.match(name):
    raise ValueError(f"method name {name!r}: must be a Python identifier (it becomes "
                     "config.unlearn.<name>)")
  if name in builtin_names():
    raise ValueError(f"method name {name!r} is a built-in method; choose another name")
  entry = _user_method(name, fn, default_config, check_config, fractional_epochs,
                       source=f"register({name!r}, {_describe(fn)})")
  previous = _REGISTRY.get(name)
  if previous is not None and previous.fn is not fn and not replace:
    raise ValueError(f"method name {name!r} is already registered ({previous.source}); pass "
                     "replace=True to replace it, or choose another name")
  _REGISTRY[name] = entry


def unregister(name: str) -> None:
  """Forgets a method registered in this process (built-in methods cannot be removed).

  Raises:
    KeyError: `name` is not a registered method.
  """
  if name not in _REGISTRY:
    raise KeyError(f"{name!r} is not a registered method; registered: "
                   f"{', '.join(sorted(_REGISTRY)) or 'none'}")
  del _REGISTRY[name]


def load(path: str) -> str:
  """Imports the method at import path `package.module:function`, registers it, returns its name.

  The name is the function's name, or the module's last component when the function is called
  `unlearn` (the built-in convention): `examples.my_method:unlearn` -> 'my_method'. Loading the
  same path again returns the same name. Its hyper-parameters come as for `register`.

  Args:
    path: 'package.module:function', importable from the working directory or PYTHONPATH.

  Returns:
    The method's name (for `config.methods`, checkpoints, summary.json, `config.unlearn`).

  Raises:
    ConfigError: a malformed path, a module that cannot be found, a missing or non-callable
      attribute, a function whose signature breaks the contract, or a name that is taken.
  """
  field = f"config.methods={path!r}"
  if not isinstance(path, str) or not _IMPORT_PATH.match(path):
    raise ConfigError(f"{field}: an import path must read package.module:function")
  module_name, attribute = path.split(":")
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as error:
    parts = module_name.split(".")
    if error.name not in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}:
      raise  # the module exists but fails to import something itself: show the traceback
    raise ConfigError(f"{field}: cannot import module {module_name!r} ({error}); it must be "
                      "importable from the working directory or PYTHONPATH") from None
  fn = getattr(module, attribute, None)
  if fn is None or not callable(fn):
    functions = sorted(key for key, value in vars(module).items()
                       if inspect.isfunction(value) and not key.startswith("_"))
    what = "has no attribute" if fn is None else "has a non-callable attribute"
    raise ConfigError(f"{field}: module {module_name!r} {what} {attribute!r}; its functions: "
                      f"{', '.join(functions) or 'none'}")
  name = module_name.rsplit(".", 1)[-1] if attribute == "unlearn" else attribute
  if name in builtin_names():
    raise ConfigError(f"{field}: its name {name!r} is a built-in method; rename the function "
                      "(or its module) or register it under another name with methods.register")
  previous = _REGISTRY.get(name)
  if previous is not None:
    if previous.fn is fn:
      return name
    raise ConfigError(f"{field}: its name {name!r} is already taken ({previous.source})")
  try:
    _REGISTRY[name] = _user_method(name, fn, None, None, None, source=path)
  except MethodContractError as error:
    raise ConfigError(f"{field}: {error}") from None
  return name


def get(name: str) -> Callable[..., tuple[Any, dict]]:
  """The `unlearn` function of method `name` (a built-in, registered or import-path method).

  Args:
    name: a method name (see `available`) or an import path 'package.module:function'.

  Returns:
    The function `unlearn(state, data, config, rng) -> (state, info)` (unchecked; `call` runs it
    and checks what it returns).

  Raises:
    ConfigError (a ValueError): an unknown name (the message lists what exists) or an import
      path that does not load (see `load`).
  """
  name = _one(name)
  if name in _REGISTRY:
    return _REGISTRY[name].fn
  return importlib.import_module(f"{__name__}.{name}").unlearn


def resolve(names) -> tuple[str, ...]:
  """Method names to run, in order: 'all' expands to the built-in methods, import paths load
  (and become their names, see `load`), duplicates are dropped.

  Args:
    names: names, import paths and 'all' (e.g. `config_lib.as_tuple(config.methods)`).

  Returns:
    The method names, each once.

  Raises:
    ConfigError: an unknown name, listing the available ones; an import path that fails.
  """
  out: list[str] = []
  for name in names:
    if name == "all":
      items = builtin_names()
    elif isinstance(name, str) and "+" in name and ":" not in name:
      base, suffix = split_remedy(name)
      items = (f"{_one(base)}+{suffix}",)
    else:
      items = (_one(name),)
    for item in items:
      if item not in out:
        out.append(item)
  return tuple(out)


# Remedy variants of any method (unlearn_jax/remedy_track.py): `<method>+nbr` unlearns the
# targets and their detected neighbours, `+wnbr` the neighbours weighted by their similarity,
# `+dist` as many samples chosen by the distributional-unlearning rule.
REMEDY_SUFFIXES = ("nbr", "wnbr", "dist")


def split_remedy(name: str) -> tuple[str, str]:
  """('salun', 'nbr') for 'salun+nbr'; (name, '') for a name without a remedy suffix.

  Raises:
    ConfigError: an unknown suffix (the message lists the valid ones).
  """
  if "+" not in name:
    return name, ""
  base, _, suffix = name.rpartition("+")
  if suffix not in REMEDY_SUFFIXES or not base:
    raise ConfigError(f"config.methods={name!r}: unknown remedy suffix +{suffix}; a method name "
                      f"may end in {', '.join('+' + s for s in REMEDY_SUFFIXES)}")
  return base, suffix


def _one(name: Any) -> str:
  """The method name of a name or import path; ConfigError when there is no such method."""
  if isinstance(name, str) and ":" in name:
    return load(name)
  if not isinstance(name, str) or name not in available():
    raise ConfigError(f"config.methods={name!r}: unknown name; available: "
                      f"{', '.join(available())}; or an import path package.module:function")
  return name


def default_configs() -> ml_collections.ConfigDict:
  """{method: its default hyper-parameters}, for the built-in and the registered methods."""
  configs = ml_collections.ConfigDict()
  for name in builtin_names():
    module = importlib.import_module(f"{__name__}.{name}")
    if hasattr(module, "default_config"):
      configs[name] = module.default_config()
  for name, entry in sorted(_REGISTRY.items()):
    configs[name] = ml_collections.ConfigDict(entry.default_config.to_dict())
  return configs


def method_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """`config.unlearn.<name>`; for a user method without that section, adds its defaults first.

  Adding it (also to a locked config) makes the study's config.json record the hyper-parameters
  a user method ran with.
  """
  name = _one(name)
  if name not in config.unlearn:
    if name not in _REGISTRY:
      raise ConfigError(f"config.unlearn.{name}: missing; the built-in method {name!r} needs its "
                        "section (start the config from defaults.base_config())")
    defaults = ml_collections.ConfigDict(_REGISTRY[name].default_config.to_dict())
    with config.unlocked():
      config.unlearn[name] = defaults
  return config.unlearn[name]


# Fields with a meaning shared by every method, checked the same way everywhere.
_POSITIVE_INTS = ("epochs", "steps", "batch_size", "forget_batch_size", "chunk_size",
                  "num_shards", "num_slices", "max_steps", "cg_steps", "max_epochs")
_POSITIVE_FLOATS = ("lr", "forget_lr", "retain_lr", "temperature")


def check_config(name: str, method_config: ml_collections.ConfigDict) -> None:
  """Validates a method's hyper-parameters: shared fields here, the rest by the method.

  A built-in module may define `check_config(cfg)` raising `unlearn_jax.config.ConfigError`; a
  user method may bring one (see `register`).
  """
  name = _one(name)
  if name in _REGISTRY:
    fractional, own_check = _REGISTRY[name].fractional_epochs, _REGISTRY[name].check_config
  else:
    module = importlib.import_module(f"{__name__}.{name}")
    fractional = getattr(module, "FRACTIONAL_EPOCHS", False)
    own_check = getattr(module, "check_config", None)
  for key, value in method_config.items():
    field = f"unlearn.{name}.{key}"
    if key == "epochs" and fractional:
      config_lib.require_number(field, value, low=0, low_open=True)
    elif key in _POSITIVE_INTS:
      config_lib.require_number(field, value, low=1, integer=True)
    elif key in _POSITIVE_FLOATS:
      config_lib.require_number(field, value, low=0, low_open=True)
  if own_check is not None:
    own_check(method_config)


def call(name: str, state: Any, data: UnlearnData, config: ml_collections.ConfigDict,
         rng: jax.Array) -> tuple[Any, dict[str, Any]]:
  """Runs method `name` from `state` and checks that it returns what the contract promises.

  Args:
    name: a method name or import path (see `resolve`).
    state: the trained TrainState to unlearn from (left unchanged by the built-in methods).
    data: the forget and retained data and run context.
    config: the study config; `config.unlearn.<name>` is added from the method's defaults if it
      is missing (see `method_config`).
    rng: a PRNG key for the method's own randomness.

  Returns:
    (unlearned TrainState, info) with info a plain dict (JAX arrays in it become numpy arrays).

  Raises:
    MethodContractError: the method did not return a `(TrainState, dict)` pair, or its state's
      parameters (or BatchNorm statistics) differ in structure, shape or dtype from the input's.
    Whatever the method itself raises (FloatingPointError when it diverged).
  """
  from unlearn_jax import train  # pylint: disable=g-import-not-at-top  (heavy; not for configs)
  name = _one(name)
  method_config(config, name)
  expected = {part: _leaf_specs(getattr(state, part)) for part in ("params", "batch_stats")}
  result = get(name)(state, data, config, rng)
  where = f"method {name!r} ({_source(name)})"
  if not isinstance(result, tuple) or len(result) != 2:
    raise MethodContractError(
        f"{where} returned {_type_name(result)}; expected a pair (state, info): {CONTRACT}")
  new_state, info = result
  if not isinstance(new_state, train.TrainState):
    raise MethodContractError(
        f"{where} returned ({_type_name(new_state)}, ...); expected a unlearn_jax.train.TrainState "
        "first (e.g. `state.replace(params=new_params)`)")
  if not isinstance(info, Mapping):
    raise MethodContractError(
        f"{where} returned (state, {_type_name(info)}); expected a dict of diagnostics second "
        "(at least {'steps': ..., 'wall_s': ...})")
  # A built-in method whose result is another model by design (SISA's shard ensemble) says so.
  own_architecture = name not in _REGISTRY and getattr(
      importlib.import_module(f"{__name__}.{name}"), "RETURNS_ENSEMBLE", False)
  for part, specs in ({} if own_architecture else expected).items():
    problems = _tree_differences(specs, _leaf_specs(getattr(new_state, part)))
    if problems:
      raise MethodContractError(
          f"{where} returned a state whose {part} differ from the input's (the unlearned model "
          f"must have the original's architecture): {'; '.join(problems)}")
  return new_state, {str(key): _plain(value) for key, value in info.items()}


# ----------------------------------------------------------------------------------------------
# Helpers.


def _user_method(name: str, fn: Any, default_config: Any, check: Any, fractional: bool | None,
                 source: str) -> _UserMethod:
  """Checks `fn` against the contract and gathers its defaults (see `register`)."""
  if not callable(fn):
    raise MethodContractError(f"method {name!r}: {_type_name(fn)} is not callable; expected a "
                              f"function {CONTRACT}")
  try:
    signature = inspect.signature(fn)
  except (TypeError, ValueError):  # builtins without a signature: nothing to check
    signature = None
  if signature is not None:
    try:
      signature.bind("state", "data", "config", "rng")
    except TypeError as error:
      raise MethodContractError(
          f"method {name!r}: {_describe(fn)}{signature} cannot be called as {CONTRACT} "
          f"({error})") from None
  module = inspect.getmodule(fn)

  def own(attribute: str, given: Any) -> Any:
    if given is not None:
      return given
    if hasattr(fn, attribute):
      return getattr(fn, attribute)
    return getattr(module, attribute, None)

  defaults = own("default_config", default_config)
  if callable(defaults) and not isinstance(defaults, Mapping):
    defaults = defaults()
  if defaults is None:
    defaults = ml_collections.ConfigDict()
  if not isinstance(defaults, (Mapping, ml_collections.ConfigDict)):
    raise MethodContractError(f"method {name!r}: default_config gave {_type_name(defaults)}; "
                              "expected a ConfigDict or dict of hyper-parameters")
  defaults = ml_collections.ConfigDict(
      defaults.to_dict() if isinstance(defaults, ml_collections.ConfigDict) else dict(defaults))
  check = own("check_config", check)
  if check is not None and not callable(check):
    raise MethodContractError(f"method {name!r}: check_config must be a function check(cfg)")
  fractional = own("FRACTIONAL_EPOCHS", fractional)
  return _UserMethod(fn, defaults, check, bool(fractional), source)


def _source(name: str) -> str:
  return _REGISTRY[name].source if name in _REGISTRY else f"unlearn_jax.methods.{name}"


def _describe(fn: Any) -> str:
  module = getattr(fn, "__module__", None)
  qualname = getattr(fn, "__qualname__", type(fn).__name__)
  return f"{module}.{qualname}" if module else qualname


def _type_name(value: Any) -> str:
  """'a tuple of 3', 'a dict', 'a flax.core.frozen_dict.FrozenDict' for messages."""
  if isinstance(value, tuple):
    return f"a tuple of {len(value)}"
  kind = type(value)
  return f"a {kind.__qualname__}" if kind.__module__ == "builtins" else (
      f"a {kind.__module__}.{kind.__qualname__}")


def _leaf_specs(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  """{path: (shape, dtype)} of every array leaf of a pytree."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(path): (tuple(np.shape(leaf)), str(getattr(leaf, "dtype", "?")))
          for path, leaf in leaves}


def _tree_differences(expected: dict, got: dict, limit: int = 3) -> list[str]:
  """Human-readable differences between two `_leaf_specs` results (at most `limit`)."""
  problems = [f"missing {path}" for path in expected if path not in got]
  problems += [f"unexpected {path}" for path in got if path not in expected]
  problems += [f"{path} is {got[path][0]} {got[path][1]}, expected {spec[0]} {spec[1]}"
               for path, spec in expected.items() if path in got and got[path] != spec]
  if len(problems) > limit:
    problems = problems[:limit] + [f"and {len(problems) - limit} more"]
  return problems


def _plain(value: Any) -> Any:
  """JAX arrays to numpy (so info can be written as JSON); everything else unchanged."""
  if isinstance(value, jax.Array):
    # Gathered from every process when sharded across them (then all processes must call).
    from unlearn_jax import parallel  # pylint: disable=g-import-not-at-top  (keeps configs light)
    value = parallel.to_host(value)
    return value.item() if value.ndim == 0 else value
  return value
