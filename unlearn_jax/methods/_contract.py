"""Runs a method and checks that what it returns keeps the method contract (`call`).

The one part of the method registry that needs JAX and the training state type; the registry
(`unlearn_jax.methods`) loads it on first use of `methods.call`.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from unlearn_jax import methods, parallel, train
from unlearn_jax.methods._context import RunContext
from unlearn_jax.methods._spec import CONTRACT, MethodContractError, _type_name



def call(name: str, state: Any, run: RunContext, cfg: ml_collections.ConfigDict, rng: jax.Array,
         *, track: str = "image") -> tuple[Any, dict[str, Any]]:
  """Runs method `name` of `track` from `state` and checks that it returns what the contract
  promises.

  Nothing is subtracted from the time: a caller that times the call subtracts
  `run.clock.excluded_s`, the time the method spent inside `run.untimed()`.

  Args:
    name: a method name or import path (see `resolve`).
    state: the trained TrainState to unlearn from (left unchanged by the built-in methods).
    run: the forget and retained data and the run's context (recipe, mesh, seed, clock, ...).
    cfg: the method's hyper-parameters, `config.unlearn.<name>` (see `method_config`).
    rng: a PRNG key for the method's own randomness.
    track: 'image' or 'lm'.

  Returns:
    (unlearned TrainState, info) with info a plain dict (JAX arrays in it become numpy arrays,
    scalars Python numbers).

  Raises:
    ConfigError: an unknown track or name.
    MethodContractError: the method did not return a `(TrainState, dict)` pair, or its state's
      parameters (or BatchNorm statistics) differ in structure, shape or dtype from the input's
      (unless its spec has `returns_ensemble`).
    Whatever the method itself raises (FloatingPointError when it diverged).
  """
  name = methods._one(name, track)
  expected = {part: _leaf_specs(getattr(state, part)) for part in ("params", "batch_stats")}
  result = methods.get(name, track)(state, run, cfg, rng)
  where = f"method {name!r} ({methods._source(name, track)})"
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
  for part, specs in ({} if methods.spec(name, track).returns_ensemble else expected).items():
    problems = _tree_differences(specs, _leaf_specs(getattr(new_state, part)))
    if problems:
      raise MethodContractError(
          f"{where} returned a state whose {part} differ from the input's (the unlearned model "
          f"must have the original's architecture): {'; '.join(problems)}")
  return new_state, {str(key): _plain(value) for key, value in info.items()}


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
    value = parallel.to_host(value)
    return value.item() if value.ndim == 0 else value
  return value
