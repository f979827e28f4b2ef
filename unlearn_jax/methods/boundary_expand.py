"""Boundary Expand: train the forget set into an extra "shadow" class, then prune that class.

Chen, Gao, Chen, Wang & Wu, "Boundary Unlearning: Rapid Forgetting of Deep Networks via Shifting
the Decision Space", CVPR 2023. The classifier head gets one more output (the shadow class); the
whole network is fine-tuned so that the forget examples are predicted as the shadow class, which
pulls their representations away from their original class region; the shadow output is then
removed, so the returned model has the original outputs and scatters the forget examples over the
remaining classes.

Details from public code (the authors' boundary_expanding, reproduced in github.com/OPTML-Group/
Unlearn-Saliency, Classification/unlearn/boundary_ex.py): the widened head is a fresh Linear
layer (Xavier-normal weights, zero bias) into which the trained rows are copied, so the shadow
row is Xavier-initialised; training uses the forget examples only, cross-entropy towards the
shadow index, SGD with momentum 0.9; pruning keeps the first `num_classes` rows.

How the head is widened without touching the model code: the models are generic Flax modules,
so the head is found as the last `nn.Dense` call whose output has the model's logit shape
(a shape-only trace with `flax.linen.intercept_methods`). During training the same interceptor
wraps that call: it returns the original logits with one more column, features · w_shadow + b,
computed from the Dense's own input (the penultimate activations). The shadow weights live next
to the model parameters in the optimised pytree, {'model': θ, 'shadow': (w, b)}, and gradients
flow into θ through both the original logits and the features; pruning = keeping θ.

Defaults and cost: the paper fine-tunes 10 epochs at lr 1e-5 on class-sized forget sets, i.e.
hundreds of steps (about 400 for a 5,000-image class at batch 128; lr × steps ≈ 4e-3). A
10-example forget set is one step per epoch, so the defaults keep that product with 40 epochs at
lr 1e-4 (seconds of work, far below 10% of retraining). The authors' own release
(boundary_unlearning.py `boundary_expanding`, Boundary-Unlearning-Code.zip linked from the paper)
also trains 10 epochs at lr 1e-5, momentum 0.9, on the forget set only. The optimiser carries the
study's weight decay (`common.run_sgd`, 5e-4 as in the Unlearn-Saliency reproduction; their
release uses none): over 40 steps at lr 1e-4 a factor 1 - 2e-6 on the weights, negligible.
Training on the forget set alone has a utility cost: on the default study (CNN, MNIST subset)
test accuracy fell from 0.97 to 0.88 while 8 of the 10 targets went to the shadow class (before
pruning).
Config: `config.unlearn.boundary_expand`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from unlearn_jax import methods, train
from unlearn_jax.data import pipeline
from unlearn_jax.methods import common

HeadPath = tuple[str, ...]

SPEC = methods.Spec(search_space={
    # Passes over T only (a ten-example T: one step each, seconds of work); the paper's 10.
    "epochs": methods.Int(10, 80, log=True),
    # The paper's 1e-5, the Unlearn-Saliency reproduction's 5e-6 (as rerun in
    # JingWu321/Scissorhands) and the default 1e-4.
    "lr": methods.Float(1e-6, 1e-3, log=True),
})


def default_config() -> ml_collections.ConfigDict:
  """Boundary Expand hyper-parameters (Chen et al., CVPR 2023, and public code)."""
  config = ml_collections.ConfigDict()
  config.epochs = 40  # passes over the forget set (the paper: 10 over far larger sets).
  config.lr = 1e-4  # constant SGD learning rate, momentum 0.9 (paper: 1e-5; see docstring).
  config.batch_size = 128  # forget examples per step, capped at |forget|.
  return config


def _is_call(context, head_path: HeadPath | None = None) -> bool:
  return (isinstance(context.module, nn.Dense) and context.method_name == "__call__"
          and (head_path is None or tuple(context.module.path) == head_path))


def find_head(state: train.TrainState, image_shape: tuple[int, ...],
              num_classes: int) -> HeadPath:
  """Module path of the last nn.Dense whose output has the logits' shape (shape-only trace)."""
  calls = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if _is_call(context):
      calls.append((tuple(context.module.path), out.shape))
    return out

  images = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
  with nn.intercept_methods(record):
    logits = jax.eval_shape(lambda v, x: state.apply_fn(v, x, train=False), state.variables(),
                            images)
  heads = [path for path, shape in calls if shape == logits.shape == (1, num_classes)]
  if not heads:
    raise ValueError("boundary_expand: the model's logits do not come from an nn.Dense with "
                     f"{num_classes} outputs; cannot add the shadow class")
  return heads[-1]


def init_shadow(head: dict[str, jax.Array], key: jax.Array) -> dict[str, jax.Array]:
  """One more head output: Xavier-normal weights over the widened layer, zero bias."""
  fan_in, fan_out = head["kernel"].shape[0], head["kernel"].shape[1] + 1
  std = np.sqrt(2.0 / (fan_in + fan_out))
  shadow = {"kernel": std * jax.random.normal(key, (fan_in, 1), head["kernel"].dtype)}
  if "bias" in head:
    shadow["bias"] = jnp.zeros((1,), head["bias"].dtype)
  return shadow


def expanded_apply(apply_fn: Callable, variables: dict, shadow: dict, images: jax.Array,
                   head_path: HeadPath, **kwargs) -> Any:
  """`apply_fn(variables, images, **kwargs)` with the shadow logit appended to the head's output."""

  def add_shadow(next_fun, args, call_kwargs, context):
    out = next_fun(*args, **call_kwargs)
    if _is_call(context, head_path):
      features = args[0] if args else call_kwargs["inputs"]
      extra = jnp.dot(features, shadow["kernel"].astype(features.dtype))
      if "bias" in shadow:
        extra = extra + shadow["bias"]
      out = jnp.concatenate([out, extra.astype(out.dtype)], axis=-1)
    return out

  with nn.intercept_methods(add_shadow):
    return apply_fn(variables, images, **kwargs)


def expand_step(state: train.TrainState, batch: dict[str, jax.Array], base_key: jax.Array, *,
                head_path: HeadPath) -> tuple[train.TrainState, dict[str, jax.Array]]:
  """One step on the weighted cross-entropy of the widened model; params = {model, shadow}."""
  rng = jax.random.fold_in(base_key, state.step)
  images = train.to_float(batch["image"])

  def loss_fn(params):
    variables = {"params": params["model"]}
    if state.batch_stats:
      variables["batch_stats"] = state.batch_stats
      logits, updates = expanded_apply(state.apply_fn, variables, params["shadow"], images,
                                       head_path, train=True, mutable=["batch_stats"],
                                       rngs={"dropout": rng})
    else:
      logits = expanded_apply(state.apply_fn, variables, params["shadow"], images, head_path,
                              train=True, rngs={"dropout": rng})
      updates = {}
    return train.weighted_cross_entropy(logits, batch["label"], batch["weight"]), updates

  (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads, updates)
  return state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}


jit_expand_step = jax.jit(expand_step, donate_argnums=0, static_argnames=("head_path",))


@functools.partial(jax.jit, static_argnames=("apply_fn", "head_path"))
def _shadow_predictions(apply_fn, variables, shadow, images, head_path):
  logits = expanded_apply(apply_fn, variables, shadow, train.to_float(images), head_path,
                          train=False)
  return jnp.argmax(logits, axis=-1)


def _head_params(params: dict, head_path: HeadPath) -> dict:
  for name in head_path:
    params = params[name]
  return params


def unlearn(state, run, cfg, rng):
  """Trains the forget set into a shadow class added to the head, then drops that class."""
  num_classes = int(run.num_classes)
  head_path = find_head(state, run.forget["image"].shape[1:], num_classes)
  shadow = init_shadow(_head_params(state.params, head_path), jax.random.fold_in(rng, 0))
  widened = state.replace(params={"model": state.params, "shadow": shadow})
  batch_size = min(int(cfg.batch_size), len(run.forget["label"]))
  shadow_labels = np.full_like(run.forget["label"], num_classes)
  sampler = pipeline.EpochSampler({**run.forget, "label": shadow_labels}, batch_size, run.seed)
  num_steps = int(cfg.epochs) * sampler.steps_per_epoch
  step_fn = functools.partial(jit_expand_step, head_path=head_path)
  widened, info = common.run_sgd(widened, sampler.batch, num_steps, cfg.lr, run,
                                 "boundary_expand", run.recipe, step_fn=step_fn)
  model_params = widened.params["model"]
  variables = {"params": model_params,
               **({"batch_stats": widened.batch_stats} if widened.batch_stats else {})}
  predictions = _shadow_predictions(state.apply_fn, variables, widened.params["shadow"],
                                    jnp.asarray(run.forget["image"]), head_path)
  info.update(head="/".join(head_path),
              shadow_fraction=float(np.mean(np.asarray(predictions) == num_classes)))
  # Pruning the shadow class: keep the model's own parameters, with the original head shape.
  return state.replace(params=model_params, batch_stats=widened.batch_stats,
                       step=widened.step), info
