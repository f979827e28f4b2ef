"""Unlearning methods of the language-model track, one module each, with the image contract:

    unlearn(state, data: unlearn_jax.methods.UnlearnData, config, rng) -> (state, info)

`data.forget` / `data.retain` hold token dicts (`tokens`, `loss_mask`, ...), `config` is the
whole study config (a method reads `config.unlearn.<name>` and the recipe `config.train`), and
`info` holds at least `steps` and `wall_s`. The returned state has the input's parameter tree.

Methods: `retrain` (exact: a fresh model on the retained data), `finetune` (retained data only),
`grad_ascent`, `grad_diff` (ascent on forget + descent on retain), `kl_min` (ascent on forget +
KL to the original on retain), `npo` (Zhang et al., COLM 2024) and `simnpo` (Fan et al., 2024),
both with a retain NLL term. Their shared objective step lives in `common`.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np

from unlearn_jax import config as config_lib
from unlearn_jax.config import ConfigError

NAMES = ("retrain", "finetune", "grad_ascent", "grad_diff", "kl_min", "npo", "simnpo")
_POSITIVE_INTS = ("batch_size",)
_POSITIVE_FLOATS = ("epochs", "lr")


def _module(name: str):
  if name not in NAMES:
    raise ConfigError(f"config.methods={name!r}: unknown language-model method; available: "
                      f"{', '.join(NAMES)}")
  return importlib.import_module(f"{__name__}.{name}")


def get(name: str) -> Callable[..., tuple[Any, dict]]:
  """The `unlearn` function of LM method `name`.

  Args:
    name: one of NAMES.

  Returns:
    `unlearn(state, data, config, rng) -> (state, info)`.

  Raises:
    ConfigError: an unknown name (the message lists NAMES).
  """
  return _module(name).unlearn


def default_configs() -> ml_collections.ConfigDict:
  """{method: its default hyper-parameters} for every LM method (`config.unlearn`)."""
  configs = ml_collections.ConfigDict()
  for name in NAMES:
    configs[name] = _module(name).default_config()
  return configs


def check_config(name: str, method_config: ml_collections.ConfigDict) -> None:
  """Validates `config.unlearn.<name>`: epochs and lr > 0, integer batch_size >= 1, and the
  method's own checks (NPO's and SimNPO's β, γ and weights).

  Args:
    name: one of NAMES.
    method_config: its section of the study config.

  Raises:
    ConfigError: naming the first bad field.
  """
  module = _module(name)
  for key, value in method_config.items():
    field = f"unlearn.{name}.{key}"
    if key in _POSITIVE_INTS:
      config_lib.require_number(field, value, low=1, integer=True)
    elif key in _POSITIVE_FLOATS:
      if key == "epochs" and not getattr(module, "FRACTIONAL_EPOCHS", False):
        config_lib.require_number(field, value, low=1, integer=True)
      else:
        config_lib.require_number(field, value, low=0, low_open=True)
    elif key == "weight_decay":
      config_lib.require_number(field, value, low=0)
  if hasattr(module, "check_config"):
    module.check_config(method_config)


def call(name: str, state: Any, data: Any, config: ml_collections.ConfigDict,
         rng: jax.Array) -> tuple[Any, dict[str, Any]]:
  """Runs LM method `name` and checks that its state keeps the input's parameter tree.

  Args:
    name: one of NAMES.
    state: the trained original model (a `train.TrainState`; left unchanged).
    data: `unlearn_jax.methods.UnlearnData` with token dicts.
    config: the study config (reads `config.unlearn.<name>` and `config.train`).
    rng: PRNG key (retrain's initialisation).

  Returns:
    (unlearned state, info) with JAX scalars in info turned into Python numbers.

  Raises:
    ConfigError: unknown name. TypeError: the result breaks the contract (another parameter
    tree, or not a (state, dict) pair). Whatever the method raises (train.DivergedError).
  """
  new_state, info = get(name)(state, data, config, rng)
  if not isinstance(info, Mapping):
    raise TypeError(f"LM method {name!r} returned info of type {type(info).__name__}")
  expected, got = _specs(state.params), _specs(new_state.params)
  if expected != got:
    missing = sorted(set(expected) ^ set(got)) or sorted(
        path for path in expected if expected[path] != got[path])
    raise TypeError(f"LM method {name!r} changed the parameter tree (e.g. {missing[:3]})")
  return new_state, {str(key): _plain(value) for key, value in info.items()}


def _specs(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(path): (tuple(np.shape(leaf)), str(leaf.dtype))
          for path, leaf in leaves}


def _plain(value: Any) -> Any:
  if isinstance(value, jax.Array):
    # Gathered from every process when sharded across them (then all processes must call).
    from unlearn_jax import parallel  # pylint: disable=g-import-not-at-top  (keeps configs light)
    value = parallel.to_host(value)
    return value.item() if value.ndim == 0 else value
  return value
