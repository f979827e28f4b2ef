"""Selective Synaptic Dampening (SSD): shrink the parameters that matter much more for T.

Foster, Schoepf and Brintrup, "Fast Machine Unlearning Without Retraining Through Selective
Synaptic Dampening" (AAAI 2024; code github.com/if-loops/selective-synaptic-dampening).
No training: two importance estimates and one elementwise update,

  []_D  = importance over the full training data D = retained ∪ T,
  []_T  = importance over T,
  θ_i  ← θ_i · min(λ · []_D,i / []_T,i, 1)   where []_T,i > α · []_D,i   (else unchanged).

The importance follows the authors' `ParameterPerturber.calc_importance` (`ssd.py`): for each
mini-batch, the square of the gradient of the batch-mean cross-entropy, averaged over the
batches (a batch-gradient approximation of the diagonal Fisher information, not a sum of
per-example squared gradients), with the model in evaluation mode. Their global importance uses
the full training set D (`full_train_dl` in `forget_random_main.py`), not the retained set.
Their D loader concatenates retained and forget examples without shuffling; we take D in one
seeded random order, so T's examples do not share the last batch. Defaults α = 10, λ = 1 and
batch 128 are the authors' (`selection_weighting`, `dampening_constant`, `-b`).

Cost: one gradient pass over D and one over T (about one training epoch without updates).
Only parameters change; BatchNorm statistics are kept.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from unlearn_jax import config as config_lib
from unlearn_jax import methods, train
from unlearn_jax.data import pipeline

SPEC = methods.Spec(search_space={
    # Selection weighting α: a decade either side of the authors' 10 (forget_*_main.py).
    "alpha": methods.Float(1.0, 100.0, log=True),
    # Dampening constant λ: a decade either side of the authors' 1.
    "lam": methods.Float(0.1, 10.0, log=True),
})


def default_config() -> ml_collections.ConfigDict:
  """SSD hyper-parameters (the authors' defaults for ResNet18 on CIFAR)."""
  config = ml_collections.ConfigDict()
  config.alpha = 10.0  # selection weighting α: dampen where []_T > α·[]_D (authors: 10).
  config.lam = 1.0  # dampening constant λ: factor min(λ·[]_D/[]_T, 1) (authors: 1).
  config.batch_size = 128  # examples per importance batch, D and T (authors: 128).
  return config


def check_config(cfg: ml_collections.ConfigDict) -> None:
  """α and λ must be positive (shared fields are checked by methods.check_config)."""
  config_lib.require_number("unlearn.ssd.alpha", cfg.alpha, low=0, low_open=True)
  config_lib.require_number("unlearn.ssd.lam", cfg.lam, low=0, low_open=True)


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _squared_batch_grad(apply_fn, params, batch_stats, images, labels, weights):
  """(∇θ of the weighted-mean cross-entropy of one batch)², in evaluation mode."""
  def loss_fn(p):
    variables = {"params": p, **({"batch_stats": batch_stats} if batch_stats else {})}
    logits = apply_fn(variables, train.to_float(images), train=False)
    return train.weighted_cross_entropy(logits, labels, weights)

  return jax.tree.map(jnp.square, jax.grad(loss_fn)(params))


def importance(state: train.TrainState, data: dict[str, np.ndarray], batch_size: int,
               order: np.ndarray | None = None) -> tuple[dict, int]:
  """Mean over mini-batches of the squared batch gradient; returns (importance, num_batches).

  Batches take `data` in `order` (default: as given); the last one may be partial (its mean
  is over its real rows: filler rows carry weight 0, so every batch compiles to one shape).
  """
  num = len(data["label"])
  order = np.arange(num) if order is None else order
  total, num_batches = None, 0
  for start in range(0, num, batch_size):
    rows = order[start:start + batch_size]
    weights = np.r_[np.ones(len(rows)), np.zeros(batch_size - len(rows))].astype(np.float32)
    rows = np.r_[rows, np.full(batch_size - len(rows), rows[0])]
    squared = _squared_batch_grad(state.apply_fn, state.params, state.batch_stats,
                                  jnp.asarray(data["image"][rows]),
                                  jnp.asarray(data["label"][rows]), jnp.asarray(weights))
    total = squared if total is None else jax.tree.map(jnp.add, total, squared)
    num_batches += 1
  return jax.tree.map(lambda t: t / num_batches, total), num_batches


@jax.jit
def dampen(params, forget_importance, global_importance, alpha, lam):
  """θ·min(λ·[]_D/[]_T, 1) where []_T > α·[]_D, else θ; also returns the selection mask."""
  def one(theta, forget_imp, global_imp):
    selected = forget_imp > alpha * global_imp
    factor = jnp.minimum(lam * global_imp / jnp.where(selected, forget_imp, 1.0), 1.0)
    return jnp.where(selected, theta * factor, theta), selected

  pairs = jax.tree.map(one, params, forget_importance, global_importance)
  is_pair = lambda x: isinstance(x, tuple)
  return (jax.tree.map(lambda p: p[0], pairs, is_leaf=is_pair),
          jax.tree.map(lambda p: p[1], pairs, is_leaf=is_pair))


def unlearn(state, run, cfg, rng):
  """Dampens the parameters whose importance on T exceeds α times their importance on D."""
  del rng  # deterministic given run.seed (the order of D)
  start = time.perf_counter()
  batch_size = int(cfg.batch_size)
  full = pipeline.concat({k: run.retain[k] for k in pipeline.BATCH_KEYS},
                         {k: run.forget[k] for k in pipeline.BATCH_KEYS})
  order = np.random.default_rng([run.seed, 13]).permutation(len(full["label"]))
  forget_imp, forget_batches = importance(state, run.forget, batch_size)
  global_imp, global_batches = importance(state, full, batch_size, order)
  params, selected = dampen(state.params, forget_imp, global_imp, float(cfg.alpha),
                            float(cfg.lam))
  # Elementwise in replicated parameters: replicated, so every process can fetch them.
  host_params, selected = jax.device_get((params, selected))
  if not all(np.all(np.isfinite(p)) for p in jax.tree.leaves(host_params)):
    raise FloatingPointError("ssd: non-finite parameters after dampening (importances "
                             "overflowed?)")
  num_selected = sum(int(np.sum(s)) for s in jax.tree.leaves(selected))
  num_params = sum(int(s.size) for s in jax.tree.leaves(selected))
  wall = time.perf_counter() - start
  logging.info("[ssd/seed_%d] dampened %d of %d parameters (%.3f%%) in %.1fs", run.seed,
               num_selected, num_params, 100 * num_selected / num_params, wall)
  info = {"steps": forget_batches + global_batches, "wall_s": wall,
          "selected": num_selected, "selected_fraction": num_selected / num_params}
  return state.replace(params=params), info
