"""The image SED's similar-sample generators (docs/design.md §3.1), one module each.

The module `<name>.py` of this package declares the generator `<name>` (the value of
`sed.generator`) as `GENERATOR = Generator(...)`. A generator either *derives* a target's
similar samples from its image (`derive`: `data/sed.py:build` appends them to D with fresh ids)
or *selects* them among the training rows (`select`, as `nearest` does: the rows are relabelled
in place). From the declarations come the choices of `sed.generator` (`config.GENERATORS`), the
dispatch of `data/sed.py`, the generator's own config checks and the list that
`python -m unlearn_jax.data.generators` prints (each name with its module's first docstring
line). Adding a generator is one module here plus its test.

The names are the module names, listed without importing the modules (`names`), so that building
or checking a config imports no numerical code; a module is imported when its generator is first
used (`get`), and must declare the name of its module.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from typing import Any, Callable

# What `select` returns: one entry per similar sample, ordered by target then rank.
#   target_row, neighbour_row  rows of the training split (int64);
#   rank      0 = the target's most similar row (int64);
#   position  its 0-based position in the target's ranking of all its candidates (int64);
#   similarity  its similarity to the target (float32).
SELECTED_FIELDS = ("target_row", "neighbour_row", "rank", "position", "similarity")
SELECTED_DTYPES = {"target_row": "int64", "neighbour_row": "int64", "rank": "int64",
                   "position": "int64", "similarity": "float32"}


def _no_check(sed_config, num_train: float, image_side: float) -> None:
  del sed_config, num_train, image_side


def _no_features(sed_config) -> bool:
  del sed_config
  return False


@dataclasses.dataclass(frozen=True)
class Generator:
  """One way of making the similar samples S(t) of a target t.

  Attributes:
    name: the value of `sed.generator` that picks it: the name of its module.
    fields: the `config.sed` fields it reads besides num_targets, similar_per_target, selection
      and seed (the others do not change its data).
    derive: (image uint8 (H, W, C), count, rng, sed_config) -> uint8 (count, H, W, C): the
      similar samples of one target. `rng` is the numpy Generator (seeded by `sed.seed`) that
      chose the targets; the copies of the targets are drawn from it in selection order, so
      the SED is a function of the config.
    select: (train arrays, target rows in selection order, sed_config, features or None) ->
      `SELECTED_FIELDS` arrays: similar samples that are rows of the training split.
    check: (sed_config, num_train, image_side) -> None: raises a ConfigError for a setting it
      cannot meet on a split of `num_train` images of the smaller side `image_side` (either may
      be inf: unknown). `data/sed.py:check_params` calls it after the checks of every field.
    needs_features: sed_config -> whether `select` needs `features` (one vector per training
      row, from a probe model: tasks/image.py).
  """
  name: str
  fields: tuple[str, ...] = ()
  derive: Callable[..., Any] | None = None
  select: Callable[..., Any] | None = None
  check: Callable[[Any, float, float], None] = _no_check
  needs_features: Callable[[Any], bool] = _no_features

  def __post_init__(self):
    if (self.derive is None) == (self.select is None):
      raise ValueError(f"generator {self.name}: declare exactly one of `derive` and `select`")

  @property
  def selects_rows(self) -> bool:
    """Whether its similar samples are rows of the training split (else derived images)."""
    return self.select is not None


@functools.cache
def names() -> tuple[str, ...]:
  """The generators' names, sorted: the modules of this package (none is imported)."""
  return tuple(sorted(module.name for module in pkgutil.iter_modules(__path__)
                      if not module.name.startswith("_")))


@functools.cache
def get(name: str) -> Generator:
  """The generator called `name` (imports its module)."""
  if name not in names():
    raise KeyError(f"no SED generator {name!r}; one of {', '.join(names())}")
  generator = importlib.import_module(f"{__name__}.{name}").GENERATOR
  if generator.name != name:
    raise ValueError(f"module {__name__}.{name} declares the generator {generator.name!r}: a "
                     f"generator's name is its module's")
  return generator


@functools.cache
def fields() -> tuple[str, ...]:
  """Every `sed` field some generator reads, in the order of `names` (imports every module)."""
  return tuple(dict.fromkeys(field for generator in generators() for field in generator.fields))


def generators() -> tuple[Generator, ...]:
  """Every generator, in the order of `names`."""
  return tuple(get(name) for name in names())


def summaries() -> dict[str, str]:
  """{name: the first line of its module's docstring}."""
  found = {}
  for name in names():
    doc = importlib.import_module(f"{__name__}.{name}").__doc__ or ""
    found[name] = doc.strip().splitlines()[0] if doc.strip() else ""
  return found
