"""Declarations of a method: its `Spec`, the ranges a tuner searches, and the contract errors.

Light on purpose (no JAX): method modules declare `SPEC = methods.Spec(...)` at import, and config
checks use the ranges (docs/design.md §3.3).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Mapping

import numpy as np

# The signature every method has (see `unlearn_jax.methods`).
CONTRACT = "unlearn(state, run: RunContext, cfg, rng) -> (state, info)"


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class Float:
  """A real hyper-parameter's range [low, high], searched on a log scale when `log`.

  Attributes:
    low: the smallest value (> 0 when `log`).
    high: the largest value (> low).
    log: sample and grid log-uniformly (learning rates, weights spanning decades).

  Raises:
    ValueError: bounds that are not finite numbers, low >= high, or low <= 0 with `log`.
  """
  low: float
  high: float
  log: bool = False

  def __post_init__(self):
    if not (_is_number(self.low) and _is_number(self.high)):
      raise ValueError(f"Float({self.low!r}, {self.high!r}): bounds must be finite numbers")
    if not self.low < self.high:
      raise ValueError(f"Float({self.low!r}, {self.high!r}): low must be below high")
    if self.log and self.low <= 0:
      raise ValueError(f"Float({self.low!r}, {self.high!r}, log=True): low must be > 0")
    object.__setattr__(self, "low", float(self.low))
    object.__setattr__(self, "high", float(self.high))
    object.__setattr__(self, "log", bool(self.log))


@dataclasses.dataclass(frozen=True)
class Int:
  """An integer hyper-parameter's range low, low + step, ..., high (log scale when `log`).

  Attributes:
    low: the smallest value (> 0 when `log`).
    high: the largest value (> low; high - low a multiple of `step`).
    log: sample and grid log-uniformly (then `step` must be 1, as in Optuna).
    step: the spacing of the values.

  Raises:
    ValueError: bounds or step that are not integers, low >= high, low <= 0 with `log`, a step
      below 1 (or above 1 with `log`), or high - low not a multiple of step.
  """
  low: int
  high: int
  log: bool = False
  step: int = 1

  def __post_init__(self):
    where = f"Int({self.low!r}, {self.high!r}, step={self.step!r})"
    if not all(isinstance(v, int) and not isinstance(v, bool)
               for v in (self.low, self.high, self.step)):
      raise ValueError(f"{where}: low, high and step must be integers")
    if not self.low < self.high:
      raise ValueError(f"{where}: low must be below high")
    if self.log and self.low <= 0:
      raise ValueError(f"{where}: low must be > 0 with log=True")
    if self.step < 1 or (self.log and self.step != 1):
      raise ValueError(f"{where}: step must be >= 1 (and 1 with log=True)")
    if (self.high - self.low) % self.step:
      raise ValueError(f"{where}: high - low must be a multiple of step")
    object.__setattr__(self, "log", bool(self.log))


@dataclasses.dataclass(frozen=True)
class Choice:
  """A hyper-parameter's set of values, searched as categories (every one in a grid).

  Attributes:
    values: the distinct values, a tuple of None, bools, ints, floats or strings (what Optuna
      stores).

  Raises:
    ValueError: no values, a repeated value, or a value of another type.
  """
  values: tuple

  def __post_init__(self):
    if isinstance(self.values, (str, bytes)) or not isinstance(self.values, (tuple, list)):
      raise ValueError(f"Choice({self.values!r}): values must be a tuple")
    values = tuple(self.values)
    if not values:
      raise ValueError("Choice(()): values must not be empty")
    for value in values:
      if value is not None and not isinstance(value, (bool, int, float, str)):
        raise ValueError(f"Choice({values!r}): {value!r} is not None, a bool, int, float or str")
    if len({(type(v), v) for v in values}) != len(values):
      raise ValueError(f"Choice({values!r}): values must be distinct")
    object.__setattr__(self, "values", values)


Range = Float | Int | Choice


@dataclasses.dataclass(frozen=True)
class Spec:
  """What the study must know about a method beyond its function and hyper-parameters.

  A built-in module declares it as `SPEC = methods.Spec(...)`; a user method passes it to
  `register(..., spec=...)` or sets a `SPEC` attribute on its function or module. Omitted: all
  defaults.

  Attributes:
    fractional_epochs: its `epochs` may be a fraction of a pass (e.g. 0.75); otherwise `epochs`
      must be a positive integer.
    returns_ensemble: its model is not the original's architecture (SISA's shard ensemble), so
      `call` does not require the input's parameter tree.
    reference: the study reference that is this method's model (`retrain` is the `retrain`
      reference): the study does not run the method but reports that reference under its name.
    search_space: {hyper-parameter: `Float`, `Int` or `Choice`}, what a tuner searches (the
      parameters are fields of the method's default config; see `check_search_space`); empty:
      nothing to tune.

  Raises:
    TypeError: a search-space key that is not a string or a value that is not a range.
  """
  fractional_epochs: bool = False
  returns_ensemble: bool = False
  reference: str | None = None
  search_space: Mapping[str, Range] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not isinstance(self.search_space, Mapping):
      raise TypeError(f"Spec(search_space={self.search_space!r}): expected a dict "
                      "{parameter: Float | Int | Choice}")
    for key, value in self.search_space.items():
      if not isinstance(key, str) or not isinstance(value, (Float, Int, Choice)):
        raise TypeError(f"Spec(search_space={{{key!r}: {value!r}}}): expected a parameter name "
                        "and a methods.Float, methods.Int or methods.Choice")
    object.__setattr__(self, "search_space", dict(self.search_space))

  def __hash__(self):
    return hash((self.fractional_epochs, self.returns_ensemble, self.reference,
                 tuple(self.search_space.items())))


class MethodContractError(TypeError):
  """A method's signature or return value does not follow the method contract."""


def _type_mismatch(default: Any, entry: Range) -> str:
  """Why `entry` cannot search a parameter whose default is `default` ('' when it can)."""
  if isinstance(entry, Choice):
    if isinstance(default, bool):
      fits = all(isinstance(v, bool) for v in entry.values)
      kind = "a bool parameter takes bool values"
    elif isinstance(default, int):
      fits = all(isinstance(v, int) and not isinstance(v, bool) for v in entry.values)
      kind = "an integer parameter takes integer values"
    elif isinstance(default, float):
      fits = all(_is_number(v) for v in entry.values)
      kind = "a float parameter takes numbers"
    elif default is None:
      fits, kind = True, ""
    else:
      fits = all(isinstance(v, type(default)) for v in entry.values)
      kind = f"a {type(default).__name__} parameter takes {type(default).__name__} values"
    return "" if fits else kind
  if isinstance(default, bool) or not isinstance(default, (int, float)):
    return "only a number parameter takes a range; use methods.Choice"
  if isinstance(default, int) and isinstance(entry, Float):
    return "an integer parameter takes methods.Int or methods.Choice, not methods.Float"
  return ""


def space_grid(space: Mapping[str, Range], points: int = 3) -> list[dict[str, Any]]:
  """The grid of a search space: every combination of `points` values per range.

  `Float`: `points` values from low to high, both included, evenly spaced (geometrically when
  `log`; one point: the (geometric) middle); `Int`: the same rounded onto its steps, repeats
  dropped (so a short range gives fewer); `Choice`: all its values. Parameters vary in the
  space's order, the last fastest. An empty space gives one empty point.

  Args:
    space: {parameter: Float | Int | Choice}.
    points: values per Float or Int range (≥ 1).

  Returns:
    The grid's points, each {parameter: value}.

  Raises:
    ValueError: `points` is not a positive integer, or an entry is not a range.
  """
  if isinstance(points, bool) or not isinstance(points, int) or points < 1:
    raise ValueError(f"points={points!r}: must be a positive integer")
  axes = []
  for key, entry in space.items():
    if not isinstance(entry, (Float, Int, Choice)):
      raise ValueError(f"{key}: {entry!r} is not a methods.Float, methods.Int or methods.Choice")
    axes.append(list(entry.values) if isinstance(entry, Choice) else _axis(entry, points))
  return [dict(zip(space, combination)) for combination in itertools.product(*axes)]


def _axis(entry: Float | Int, points: int) -> list[Any]:
  """`points` values of a Float or Int range (see `space_grid`)."""
  low, high = float(entry.low), float(entry.high)
  if points == 1:
    values = [math.sqrt(low * high) if entry.log else (low + high) / 2]
  elif entry.log:
    values = list(np.geomspace(low, high, points))
  else:
    values = list(np.linspace(low, high, points))
  if points > 1:
    values[0], values[-1] = low, high
  if isinstance(entry, Float):
    return [float(f"{v:.12g}") for v in values]
  out = []
  for v in values:
    value = min(max(entry.low + entry.step * int(round((v - entry.low) / entry.step)),
                    entry.low), entry.high)
    if value not in out:
      out.append(value)
  return out


def _checked_spec(name: str, value: Any) -> Spec:
  """`value` if it is a Spec, `Spec()` for None; MethodContractError otherwise."""
  if value is None:
    return Spec()
  if not isinstance(value, Spec):
    raise MethodContractError(f"method {name!r}: its spec is {_type_name(value)}; expected "
                              "unlearn_jax.methods.Spec(...)")
  return value


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
