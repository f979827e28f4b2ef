"""Pieces shared by the gradient-based methods: an SGD run over step-addressed batches.

Batches are split across the devices of the mesh, so their row count must be a multiple of the
device count. A method's batch often comes from a small set (min(batch_size, |forget|) rows,
or a retain batch joined with a few forget rows), so `train.fit` pads every batch with rows of
weight 0 up to that multiple (`pipeline.pad_rows`): the number of real rows per step, the steps and
the loss stay what they are on one device.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unlearn_jax import train


def run_sgd(state: train.TrainState, batch_fn: Callable[[int], dict[str, np.ndarray]],
            num_steps: int, lr: float, run, name: str, recipe, momentum: float = 0.9,
            step_fn: Callable | None = None,
            tx: optax.GradientTransformation | train.Optimizer | None = None,
            weight_decay: float | None = None) -> tuple[train.TrainState, dict]:
  """Runs `num_steps` steps from `state` with a fresh optimiser (default: SGD, constant lr).

  The default optimiser is SGD with momentum and L2 weight decay added to the gradient
  (trace ← g + wd·θ + momentum·trace, as torch's `SGD(weight_decay=wd)`), wd =
  `recipe.weight_decay` unless `weight_decay` is given: the reference unlearning recipe runs
  its methods with the training recipe's decay (5e-4 in github.com/OPTML-Group/
  Unlearn-Saliency, Classification/unlearn/impl.py and arg_parser.py; the same in
  OPTML-Group/Unlearn-Sparse). The settings live in the optimiser state
  (`train.make_optimizer`), so every SGD method shares one compiled step.

  `step_fn` replaces the weighted cross-entropy step (see `train.fit`); `tx` replaces the
  optimiser (then `lr`, `momentum` and `weight_decay` are ignored).

  `run` (a `methods.RunContext`) gives the seed, mesh, checkpoint directory and metric writer,
  `recipe` (the track's training recipe, `run.recipe`: the study's `config.train`) the weight
  decay and the checkpoint and log intervals.

  Progress, finite-loss checks and checkpoints come from `train.fit`; a non-finite loss raises
  FloatingPointError, which the study records as `diverged` for this method. `fit` pads batches
  to a multiple of the mesh size (`pipeline.mesh_batches`), so a step function must give rows
  whose `weight` (and every `*_weight` field) is 0 no influence on the update.
  """
  if tx is None:
    decay = recipe.weight_decay if weight_decay is None else weight_decay
    tx = train.make_optimizer("sgd", float(lr), int(num_steps), momentum=float(momentum),
                              weight_decay=float(decay))
  state = state.with_optimizer(tx)
  return train.fit(state, batch_fn, num_steps, name=f"{name}/seed_{run.seed}",
                   mesh=run.mesh, seed=run.seed,
                   checkpoint_dir=run.checkpoint_dir,
                   checkpoint_every=recipe.checkpoint_every,
                   log_every=recipe.log_every, writer=run.writer, step_fn=step_fn)


def example_loss(apply_fn: Callable, variables: dict, image: jax.Array,
                 label: jax.Array) -> jax.Array:
  """Cross-entropy of one example (uint8 image (H, W, C), int label), evaluation mode."""
  logits = apply_fn(variables, train.to_float(image)[None], train=False)[0]
  return optax.softmax_cross_entropy_with_integer_labels(logits, label)


@functools.partial(jax.jit, static_argnames=("apply_fn", "transform"))
def _chunk_grad_sum(apply_fn, transform, params, batch_stats, images, labels, weights):
  def one(image, label):
    variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
    grads = jax.grad(lambda p: example_loss(apply_fn, {**variables, "params": p}, image,
                                            label))(params)
    return transform(grads)

  per_example = jax.vmap(one)(images, labels)
  return jax.tree.map(lambda g: jnp.tensordot(weights, g, axes=1), per_example)


def per_example_grad_sum(state: train.TrainState, data: dict[str, np.ndarray],
                         chunk_size: int, transform: Callable | None = None) -> Any:
  """Sum over examples of transform(∇θ loss_i), with per-example gradients from vmap(grad).

  Memory is bounded by `chunk_size` per-example gradients at a time (a config knob of the
  methods that use it: `chunk_size`). `transform` must be a module-level function (it is a
  static argument of the compiled chunk), e.g. `square` for the diagonal Fisher information.
  """
  transform = transform or _identity
  num = len(data["label"])
  chunk_size = min(chunk_size, num)
  total = None
  for start in range(0, num, chunk_size):
    stop = min(start + chunk_size, num)
    pad = chunk_size - (stop - start)
    index = np.r_[np.arange(start, stop), np.full(pad, stop - 1)]
    weights = np.r_[np.ones(stop - start), np.zeros(pad)].astype(np.float32)
    chunk = _chunk_grad_sum(state.apply_fn, transform, state.params, state.batch_stats,
                            jnp.asarray(data["image"][index]), jnp.asarray(data["label"][index]),
                            jnp.asarray(weights))
    total = chunk if total is None else jax.tree.map(jnp.add, total, chunk)
  return total


def _identity(tree):
  return tree


def square(tree):
  """Elementwise square of a gradient pytree (diagonal Fisher information terms)."""
  return jax.tree.map(jnp.square, tree)
