"""Unlearning methods of both tracks: built-in modules and user functions, one contract.

    unlearn(state, run: RunContext, cfg, rng) -> (state, info)

`state` is the trained `original` TrainState; `run` (a `RunContext`) gives the forget set (T), the
retained data (D \\ T) and what a method needs to run: mesh, seed, the track's training recipe
(`run.recipe`, the study's `config.train`), a fresh-model initialiser, a checkpoint directory and a
clock; `cfg` is the method's own section of the study config, `config.unlearn.<name>`; `info` is
a dict with at least `steps` and `wall_s`, plus diagnostics such as `diverged`. The returned state
must have the same parameter tree (structure, shapes, dtypes) as the input, unless the method's
`Spec` says that its model is its own ensemble.

Tracks (`TRACKS`): 'image' methods are the modules of this package and take dicts of image arrays
(`image`, `label`, `id`, ...); 'lm' methods are the modules of `unlearn_jax.lm.methods` and take
dicts of token arrays (`tokens`, `loss_mask`, ...). Every function below takes `track` (default
'image'); a name is looked up in its track only.

Three ways to provide a method:

* Built-in: a module of the track's package that defines `unlearn` and `default_config()` (its
  hyper-parameters with their sources; they appear as `config.unlearn.<name>`), and optionally
  `check_config(cfg)` and `SPEC = methods.Spec(...)` (what the study must know about it, e.g.
  that its `epochs` may be a fraction of a pass, and the hyper-parameter ranges a tuner searches;
  see `Spec`).
* Registered in the running process: `register("my_method", fn, default_config=..., spec=...)`.
* By import path in the config: `--config.methods=my_pkg.my_module:my_function` imports the
  function when the config is validated. Its name in the study (checkpoints, summary.json,
  `config.unlearn.<name>`) is the function's name, or the module's last component when the
  function is called `unlearn` (`examples.my_method:unlearn` is `my_method`).

A user method's hyper-parameters come from, in this order: the `default_config` given to
`register`, a `default_config` attribute of the function, or a `default_config()` function in
its module (the same for `check_config` and `SPEC`). They become `config.unlearn.<name>` when the
config is validated, so config.json records them. Because `--config.x=...` overrides only fields
that already exist, overriding them on the command line needs the method registered before the
config is built: a config file that calls `register` (or `load("pkg.module:function")`) before
`base_config()`.

The study runs every method through `call`, which checks what the method returns, and counts as
its unlearning time the elapsed time less what the method spent inside `run.untimed()`
(`run.clock.excluded_s`).

Search spaces: a method's `Spec.search_space` maps some of its hyper-parameters to a range
(`Float`, `Int`) or a set of values (`Choice`), what a tuner (`unlearn_jax.tune`) searches;
`search_space(name)` returns it, `check_search_space` validates one against the method's defaults
and `check_config`, and `space_grid` expands it into a grid. A method without one (`retrain`,
`sisa`) is not tuned.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import pkgutil
import re
import sys
from typing import Any, Callable, Mapping

import ml_collections

from unlearn_jax import config as config_lib
from unlearn_jax.config import ConfigError
from unlearn_jax.methods._context import Arrays, Clock, RunContext
from unlearn_jax.methods._spec import (CONTRACT, Choice, Float, Int, MethodContractError,
                                       Range, Spec, _checked_spec, _describe, _is_number,
                                       _type_mismatch, _type_name, space_grid)

# The package holding each track's built-in method modules.
TRACKS = {"image": "unlearn_jax.methods", "lm": "unlearn_jax.lm.methods"}
_PRIVATE = ("common",)
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_NAME = re.compile(r"^[A-Za-z_]\w*$")


@dataclasses.dataclass(frozen=True)
class _UserMethod:
  """A method registered in this process (by `register` or from an import path)."""
  fn: Callable[..., Any]
  default_config: ml_collections.ConfigDict
  check_config: Callable[[ml_collections.ConfigDict], None] | None
  spec: Spec
  source: str  # where it came from, for messages: 'register(...)' or the import path


_REGISTRY: dict[tuple[str, str], _UserMethod] = {}


def _package(track: str) -> str:
  """The package of `track`'s built-in methods; ConfigError for an unknown track."""
  if not isinstance(track, str) or track not in TRACKS:
    raise ConfigError(f"track={track!r}: unknown track; tracks: {', '.join(TRACKS)}")
  return TRACKS[track]


def _module(name: str, track: str):
  return importlib.import_module(f"{_package(track)}.{name}")


def _registered(track: str) -> dict[str, _UserMethod]:
  """{name: method} of the methods registered on `track`."""
  return {name: entry for (where, name), entry in _REGISTRY.items() if where == track}


def builtin_names(track: str = "image") -> tuple[str, ...]:
  """Names of the method modules of `track`'s package (what `'all'` runs), sorted."""
  package = importlib.import_module(_package(track))
  return tuple(sorted(info.name for info in pkgutil.iter_modules(package.__path__)
                      if not info.name.startswith("_") and info.name not in _PRIVATE))


def available(track: str = "image") -> tuple[str, ...]:
  """Names of every method of `track`: its built-in modules and the methods registered on it."""
  return tuple(sorted(set(builtin_names(track)) | set(_registered(track))))


def register(name: str, fn: Callable[..., Any], default_config: Any = None,
             check_config: Callable[[ml_collections.ConfigDict], None] | None = None, *,
             spec: Spec | None = None, track: str = "image", replace: bool = False) -> None:
  """Makes `fn` a method called `name` of `track` in this process (`config.methods` may list it).

  Args:
    name: the method's name: a Python identifier that is not a built-in method of `track`. It
      names the method's checkpoints, its row of summary.json and its config section
      `config.unlearn.<name>`.
    fn: a function with the method contract `unlearn(state, run, cfg, rng) -> (state, info)`.
    default_config: its hyper-parameters: a ConfigDict, a dict, or a function returning one
      (None: `fn.default_config`, else `default_config()` of fn's module, else none).
    check_config: optional `check_config(cfg)` raising `unlearn_jax.config.ConfigError` for a bad
      value of `config.unlearn.<name>` (None: `fn.check_config`, else the module's).
    spec: what the study must know about it, a `Spec` (None: `fn.SPEC`, else the module's
      `SPEC`, else `Spec()`: integer epochs, the original's architecture, no reference).
    track: 'image' or 'lm' (see `TRACKS`); the method is visible on that track only.
    replace: allow replacing a method registered earlier under the same name.

  Raises:
    ConfigError: an unknown track.
    ValueError: `name` is not an identifier, is a built-in method, or is taken (without replace).
    MethodContractError: `fn` cannot be called as `fn(state, run, cfg, rng)`, or `spec` is not a
      `Spec`.
  """
  _package(track)
  if not isinstance(name, str) or not _NAME.match(name):
    raise ValueError(f"method name {name!r}: must be a Python identifier (it becomes "
                     "config.unlearn.<name>)")
  if name in builtin_names(track):
    raise ValueError(f"method name {name!r} is a built-in method; choose another name")
  entry = _user_method(name, fn, default_config, check_config, spec,
                       source=f"register({name!r}, {_describe(fn)})")
  previous = _REGISTRY.get((track, name))
  if previous is not None and previous.fn is not fn and not replace:
    raise ValueError(f"method name {name!r} is already registered ({previous.source}); pass "
                     "replace=True to replace it, or choose another name")
  _REGISTRY[(track, name)] = entry


def unregister(name: str, track: str = "image") -> None:
  """Forgets a method registered on `track` in this process (built-in methods stay).

  Raises:
    KeyError: `name` is not a method registered on `track`.
  """
  if (track, name) not in _REGISTRY:
    raise KeyError(f"{name!r} is not a registered method; registered: "
                   f"{', '.join(sorted(_registered(track))) or 'none'}")
  del _REGISTRY[(track, name)]


def load(path: str, track: str = "image") -> str:
  """Imports the method at import path `package.module:function`, registers it on `track`,
  returns its name.

  The name is the function's name, or the module's last component when the function is called
  `unlearn` (the built-in convention): `examples.my_method:unlearn` -> 'my_method'. Loading the
  same path again returns the same name. Its hyper-parameters and spec come as for `register`.

  Args:
    path: 'package.module:function', importable from the working directory or PYTHONPATH.
    track: 'image' or 'lm'.

  Returns:
    The method's name (for `config.methods`, checkpoints, summary.json, `config.unlearn`).

  Raises:
    ConfigError: an unknown track, a malformed path, a module that cannot be found, a missing or
      non-callable attribute, a function whose signature breaks the contract, or a name that is
      taken.
  """
  _package(track)
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
  if name in builtin_names(track):
    raise ConfigError(f"{field}: its name {name!r} is a built-in method; rename the function "
                      "(or its module) or register it under another name with methods.register")
  previous = _REGISTRY.get((track, name))
  if previous is not None:
    if previous.fn is fn:
      return name
    raise ConfigError(f"{field}: its name {name!r} is already taken ({previous.source})")
  try:
    _REGISTRY[(track, name)] = _user_method(name, fn, None, None, None, source=path)
  except MethodContractError as error:
    raise ConfigError(f"{field}: {error}") from None
  return name


def get(name: str, track: str = "image") -> Callable[..., tuple[Any, dict]]:
  """The `unlearn` function of method `name` of `track` (built-in, registered or import path).

  Args:
    name: a method name (see `available`) or an import path 'package.module:function'.
    track: 'image' or 'lm'.

  Returns:
    The function `unlearn(state, run, cfg, rng) -> (state, info)` (unchecked; `call` runs it and
    checks what it returns).

  Raises:
    ConfigError (a ValueError): an unknown track or name (the message lists what exists) or an
      import path that does not load (see `load`).
  """
  name = _one(name, track)
  if (track, name) in _REGISTRY:
    return _REGISTRY[(track, name)].fn
  return _module(name, track).unlearn


def spec(name: str, track: str = "image") -> Spec:
  """The `Spec` of method `name` of `track` (`Spec()` when it declares none).

  Raises:
    ConfigError: an unknown track or name, or an import path that does not load.
    MethodContractError: a built-in module whose `SPEC` is not a `Spec`.
  """
  name = _one(name, track)
  if (track, name) in _REGISTRY:
    return _REGISTRY[(track, name)].spec
  return _checked_spec(name, getattr(_module(name, track), "SPEC", None))


def search_space(name: str, track: str = "image") -> dict[str, Range]:
  """The hyper-parameter search space that method `name` of `track` declares in its `Spec`.

  For a user method registered with a spec (or with a `SPEC` attribute), that spec's space.

  Returns:
    {parameter: Float | Int | Choice}, a copy; {} for a method with nothing to tune.

  Raises:
    ConfigError: an unknown track or name, or an import path that does not load.
  """
  return dict(spec(name, track).search_space)


def check_search_space(name: str, space: Any, defaults: Any = None, track: str = "image",
                       field: str = "search_space") -> None:
  """Checks a search space of method `name` before any trial runs.

  Every parameter must be a field of the method's hyper-parameters (`defaults`) and its range
  must fit the default's type: `Float` a float field; `Int` an int or float field; `Choice`
  values of the default's type (ints also for a float field; bools only for a bool field). Then
  every Choice value and both ends of every range go through the method's `check_config` (the
  shared checks and its own), each on a copy of `defaults` with that one value set, so that a
  value the method refuses (a misspelt string choice, a ratio outside (0, 1], ...) fails here
  rather than in a trial. A value that passes only together with other non-default values
  (SCRUB's `msteps` ≤ `epochs`) is not caught.

  Args:
    name: a method of `track`.
    space: {parameter: Float | Int | Choice}, e.g. `search_space(name)`.
    defaults: the method's hyper-parameters, `config.unlearn.<name>` (None: its defaults).
    track: 'image' or 'lm'.
    field: what the messages call the space (e.g. 'config.tune.space.salun').

  Raises:
    ConfigError: one line naming `field` (and the parameter): a space that is not a dict or is
      empty, an unknown parameter, an entry that is not a range, a range that does not fit the
      parameter's type, or a value the method's check_config refuses; or an unknown track or
      name.
  """
  name = _one(name, track)
  if defaults is None:
    defaults = _default_config(name, track)
  defaults = _as_dict(defaults)
  if not isinstance(space, Mapping):
    raise ConfigError(f"{field}: expected a dict {{parameter: methods.Float | methods.Int | "
                      f"methods.Choice}} for {name}, got {_type_name(space)}")
  if not space:
    raise ConfigError(f"{field}: empty search space for {name}; name at least one of its "
                      f"parameters ({', '.join(sorted(defaults)) or 'none'})")
  for key, entry in space.items():
    where = f"{field}.{key}"
    if key not in defaults:
      raise ConfigError(f"{where}: unknown parameter of {name}; its parameters: "
                        f"{', '.join(sorted(defaults)) or 'none'}")
    if not isinstance(entry, (Float, Int, Choice)):
      raise ConfigError(f"{where}: {entry!r} is not a range; expected methods.Float, "
                        "methods.Int or methods.Choice")
    problem = _type_mismatch(defaults[key], entry)
    if problem:
      raise ConfigError(f"{where}: {entry!r} does not fit {name}'s {key} (default "
                        f"{defaults[key]!r}): {problem}")
    values = entry.values if isinstance(entry, Choice) else (entry.low, entry.high)
    for value in values:
      _check_value(name, track, defaults, key, value, where)


def resolve(names, track: str = "image") -> tuple[str, ...]:
  """Method names to run, in order: 'all' expands to the built-in methods of `track`, import
  paths load (and become their names, see `load`), duplicates are dropped.

  Args:
    names: names, import paths and 'all' (e.g. `config_lib.as_tuple(config.methods)`).
    track: 'image' or 'lm'.

  Returns:
    The method names, each once.

  Raises:
    ConfigError: an unknown name, listing the available ones; an import path that fails.
  """
  out: list[str] = []
  for name in names:
    if name == "all":
      items = builtin_names(track)
    elif isinstance(name, str) and "+" in name and ":" not in name:
      base, suffix = split_remedy(name)
      items = (f"{_one(base, track)}+{suffix}",)
    else:
      items = (_one(name, track),)
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


def _one(name: Any, track: str) -> str:
  """The method name of a name or import path; ConfigError when `track` has no such method."""
  _package(track)
  if isinstance(name, str) and ":" in name:
    return load(name, track)
  if not isinstance(name, str) or name not in available(track):
    what = "name" if track == "image" else "language-model method"
    raise ConfigError(f"config.methods={name!r}: unknown {what}; available: "
                      f"{', '.join(available(track))}; or an import path package.module:function")
  return name


def default_configs(track: str = "image") -> ml_collections.ConfigDict:
  """{method: its default hyper-parameters}, for the built-in and registered methods of `track`.

  A built-in module's `default_config()` is run from the module's source (see
  `declared_defaults`), so that building a config imports no method code.
  """
  configs = ml_collections.ConfigDict()
  for name in builtin_names(track):
    defaults = declared_defaults(name, track)
    if defaults is not None:
      configs[name] = defaults
  for name, entry in sorted(_registered(track).items()):
    configs[name] = ml_collections.ConfigDict(entry.default_config.to_dict())
  return configs


def declared_defaults(name: str, track: str = "image") -> ml_collections.ConfigDict | None:
  """What built-in method `name`'s `default_config()` returns, without importing its module.

  The function is compiled from the module's source with only those of the module's imports that
  hold no method code (`_CONFIG_MODULES`: ml_collections, math, the config modules): the rule for
  a built-in `default_config`, which a test holds every built-in to. A module already imported
  is asked directly.

  Returns:
    The ConfigDict, or None for a module without `default_config`.
  """
  module_name = f"{_package(track)}.{name}"
  if module_name in sys.modules:
    module = sys.modules[module_name]
    return module.default_config() if hasattr(module, "default_config") else None
  function = _declared_default_config(module_name)
  return function() if function is not None else None  # a fresh ConfigDict per call


@functools.cache
def _declared_default_config(module_name: str) -> Callable[[], ml_collections.ConfigDict] | None:
  """`default_config` of built-in module `module_name`, compiled from its source once."""
  origin = importlib.util.find_spec(module_name).origin
  with open(origin) as f:
    tree = ast.parse(f.read(), origin)
  found = [node for node in tree.body
           if isinstance(node, ast.FunctionDef) and node.name == "default_config"]
  if not found:
    return None
  imports = [node for node in tree.body if _imports_config_only(node)]
  scope = {"__name__": module_name}
  code = compile(ast.Module(imports + found, type_ignores=[]), origin, "exec")
  exec(code, scope)  # pylint: disable=exec-used
  return scope["default_config"]


# What a built-in `default_config()` may use: modules that hold no method code.
_CONFIG_MODULES = ("math", "ml_collections", "unlearn_jax.config", "unlearn_jax.lm.defaults")


def _imports_config_only(node: ast.stmt) -> bool:
  """Whether `node` is an import of `_CONFIG_MODULES` only (kept when reading defaults)."""
  if isinstance(node, ast.Import):
    return all(alias.name in _CONFIG_MODULES for alias in node.names)
  if isinstance(node, ast.ImportFrom) and node.level == 0:
    return all(node.module in _CONFIG_MODULES or f"{node.module}.{alias.name}" in _CONFIG_MODULES
               for alias in node.names)
  return False


def method_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """`config.unlearn.<name>`, the `cfg` that `call` passes to the method; for a user method
  without that section, adds its defaults first.

  The track is the config's (`config.track`, 'image' when it has none). Adding the section (also
  to a locked config) makes the study's config.json record the hyper-parameters a user method ran
  with.
  """
  track = config.get("track", None) or "image"
  name = _one(name, track)
  if name not in config.unlearn:
    if (track, name) not in _REGISTRY:
      base = "defaults" if track == "image" else f"{track}.defaults"
      raise ConfigError(f"config.unlearn.{name}: missing; the built-in method {name!r} needs its "
                        f"section (start the config from {base}.base_config())")
    defaults = ml_collections.ConfigDict(_REGISTRY[(track, name)].default_config.to_dict())
    with config.unlocked():
      config.unlearn[name] = defaults
  return config.unlearn[name]


# Fields with a meaning shared by every method, checked the same way everywhere.
_POSITIVE_INTS = ("epochs", "steps", "batch_size", "forget_batch_size", "chunk_size",
                  "num_shards", "num_slices", "max_steps", "cg_steps", "max_epochs")
_POSITIVE_FLOATS = ("lr", "forget_lr", "retain_lr", "temperature")
_NON_NEGATIVE = ("weight_decay",)


def check_config(name: str, cfg: ml_collections.ConfigDict, track: str = "image") -> None:
  """Validates a method's hyper-parameters: shared fields here, the rest by the method.

  Shared fields: integer counts ≥ 1 (`epochs`, `batch_size`, ...; `epochs` may be a positive
  fraction when the method's spec has `fractional_epochs`), learning rates and temperatures > 0,
  `weight_decay` ≥ 0. A built-in module may define `check_config(cfg)` raising
  `unlearn_jax.config.ConfigError`; a user method may bring one (see `register`).

  Args:
    name: a method of `track`.
    cfg: its section of the study config, `config.unlearn.<name>`.
    track: 'image' or 'lm'.

  Raises:
    ConfigError: naming the first bad field (or an unknown track or name).
  """
  name = _one(name, track)
  if (track, name) in _REGISTRY:
    own_check = _REGISTRY[(track, name)].check_config
  else:
    own_check = getattr(_module(name, track), "check_config", None)
  fractional = spec(name, track).fractional_epochs
  for key, value in cfg.items():
    field = f"unlearn.{name}.{key}"
    if key == "epochs" and fractional:
      config_lib.require_number(field, value, low=0, low_open=True)
    elif key in _POSITIVE_INTS:
      config_lib.require_number(field, value, low=1, integer=True)
    elif key in _POSITIVE_FLOATS:
      config_lib.require_number(field, value, low=0, low_open=True)
    elif key in _NON_NEGATIVE:
      config_lib.require_number(field, value, low=0)
  if own_check is not None:
    own_check(cfg)


# ----------------------------------------------------------------------------------------------
# Helpers.


def _user_method(name: str, fn: Any, default_config: Any, check: Any, given_spec: Spec | None,
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
      signature.bind("state", "run", "cfg", "rng")
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
  return _UserMethod(fn, defaults, check, _checked_spec(name, own("SPEC", given_spec)), source)


def _default_config(name: str, track: str) -> ml_collections.ConfigDict:
  """The default hyper-parameters of method `name` of `track` (empty when it has none)."""
  if (track, name) in _REGISTRY:
    return _REGISTRY[(track, name)].default_config
  return declared_defaults(name, track) or ml_collections.ConfigDict()


def _as_dict(config: Any) -> dict[str, Any]:
  """A plain dict copy of a ConfigDict or mapping of hyper-parameters."""
  if isinstance(config, ml_collections.ConfigDict):
    return config.to_dict()
  if isinstance(config, Mapping):
    return dict(config)
  raise ConfigError(f"defaults: expected a ConfigDict or dict of hyper-parameters, got "
                    f"{_type_name(config)}")


def _check_value(name: str, track: str, defaults: dict[str, Any], key: str, value: Any,
                 where: str) -> None:
  """Runs the method's `check_config` on its defaults with `key` set to `value`."""
  if isinstance(defaults[key], float) and _is_number(value):
    value = float(value)
  cfg = ml_collections.ConfigDict({**defaults, key: value})
  try:
    check_config(name, cfg, track)
  except (ValueError, TypeError) as error:
    reason = (str(error).splitlines() or [type(error).__name__])[0]
    raise ConfigError(f"{where}: {key}={value!r} is refused by {name}'s check_config "
                      f"({reason})") from None


def _source(name: str, track: str) -> str:
  if (track, name) in _REGISTRY:
    return _REGISTRY[(track, name)].source
  return f"{_package(track)}.{name}"


def __getattr__(attribute: str) -> Any:
  """`call` loads on first use: it needs JAX and the training state (`_contract`), which a
  config does not."""
  if attribute == "call":
    return importlib.import_module("unlearn_jax.methods._contract").call
  raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
