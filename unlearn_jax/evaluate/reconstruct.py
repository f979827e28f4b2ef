"""Training-data reconstruction from a model's parameters, and the small model it needs.

Reconstruction-based verification (issue 5) asks whether a target image can still be recovered
from a model's parameters after unlearning. The attack is the KKT-based reconstruction of Haim,
Vardi, Yehudai, Shamir and Irani, "Reconstructing Training Data from Trained Neural Networks"
(NeurIPS 2022), in the multiclass, weight-decay form of Buzaglo, Haim, Yehudai, Vardi, Oz,
Nikankin and Irani, "Deconstructing Data Reconstruction: Multiclass, Weight Decay and General
Losses" (NeurIPS 2023):

* A network trained long without weight decay tends to a KKT point of the max-margin problem,
  θ = Σ_i λ_i ∇θ margin_i with λ_i ≥ 0, where margin_i is the label's logit minus the largest
  other logit (the multiclass margin). With weight decay, a stationary point of
  (1/n) Σ_i CE_i + (wd/2)·||θ||² satisfies θ = -(1/(n·wd)) Σ_i ∇θ CE_i, and with two classes
  -∇θ CE_i = (1 - p_i)·∇θ margin_i: the same equation with λ_i = (1 - p_i)/(n·wd) (for more
  classes the margin keeps only the strongest competitor, as in Buzaglo et al.).
* So candidate inputs x_1..x_M with labels y_i (round-robin over the classes) and coefficients
  λ_i are optimised to make the parameters explained by them, minimising the KKT loss
      Σ_layers || θ - (1/M) Σ_i λ_i ∇θ margin(x_i, y_i) ||²
  with Adam. The 1/M (as in the authors' code) and the weight-decay factor 1/(n·wd) are absorbed
  in the free λ_i: at an exact two-class stationary point, candidates equal to the training
  images explain θ with λ_i = M·(1 - p_i)/(n·wd). λ_i = λ_min + softplus(ρ_i) keeps every
  candidate contributing (the papers penalise λ_i < λ_min instead); a prior
  Σ relu(x - 1)² + relu(-x)² keeps x inside the image range [0, 1]; x starts as small Gaussian
  noise and λ_i - λ_min as U(0, 1), as in the authors' public code.
* ReLU has zero second derivative, so ∇x of ∇θ margin would ignore how x moves the activation
  pattern; the authors' code keeps ReLU's forward pass but back-propagates through sigmoid(α·z)
  (α ≈ 10..500). `mlp_apply_fn(sharpness=α)` does this for `unlearn_jax.models.mlp`
  parameters; with plain ReLU our reconstructions were far worse (mean best-SSIM to the training
  images 0.19 against 0.32 with α = 100, on the same model).
* The learning rate does not transfer between models (issue 5), so `select_lr` runs a short
  trial over a few rates and keeps the one with the lowest KKT loss that stayed finite.

The model it needs is small and trained to (near) stationarity: `train_mlp` trains an MLP full
batch by gradient descent with weight decay on ≤ a few hundred images, jitted with `lax.scan`
over chunks of steps. `invert_classes` is the weak model-inversion baseline of Fredrikson, Jha and
Ristenpart, "Model Inversion Attacks that Exploit Confidence Information and Basic
Countermeasures" (CCS 2015): one image per class that maximises the class probability under a
total-variation prior.

All images are float (N, H, W, C) in [0, 1]; `apply_fn(params, images)` returns logits.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from scipy import stats

from unlearn_jax import models, parallel
from unlearn_jax.train import DivergedError
from unlearn_jax.utils import format_seconds

ApplyFn = Callable[[Any, jax.Array], jax.Array]
# Adam learning rates tried by `select_lr`. Capped at 1e-2: on 784-H-H MLPs 3e-2 won 300-step
# trials yet gave lower SSIM after 3,000 steps, and 1e-2 worked on every model we tried.
DEFAULT_LRS = (1e-3, 3e-3, 1e-2)


def _scan_loop(run_chunk: Callable, carry: Any, num_steps: int, log_every: int,
               name: str) -> tuple[Any, np.ndarray]:
  """Runs `run_chunk(carry, length) -> (carry, losses (length, k))` for `num_steps` steps.

  Logs step, loss and steps/s after each chunk and raises DivergedError at the first chunk
  whose first metric is not finite. Returns the final carry and the (num_steps, k) metrics.
  """
  history, done, start = [], 0, time.perf_counter()
  while done < num_steps:
    length = min(log_every, num_steps - done)
    carry, metrics = run_chunk(carry, length)
    metrics = np.asarray(parallel.to_host(metrics), np.float64).reshape(length, -1)
    bad = np.flatnonzero(~np.isfinite(metrics[:, 0]))
    if len(bad):
      raise DivergedError(f"[{name}] loss became non-finite at step {done + bad[0] + 1}; "
                          "lower the learning rate", done + bad[0] + 1)
    history.append(metrics)
    done += length
    elapsed = time.perf_counter() - start
    eta = format_seconds(elapsed / done * (num_steps - done))
    logging.info("[%s] step %d/%d loss %.6g  %.1f steps/s  ETA %s", name, done, num_steps,
                 metrics[-1, 0], done / elapsed, eta)
  return carry, np.concatenate(history) if history else np.zeros((0, 1))


# ----------------------------------------------------------------------------------------------
# The small model.


@dataclasses.dataclass(frozen=True)
class MLPFit:
  """A trained MLP and how close it got to a stationary point."""
  model: nn.Module
  params: Any
  loss: float  # Final mean cross-entropy on the training images.
  grad_norm: float  # ||∇(loss + wd/2·||θ||²)||, 0 at a stationary point.
  accuracy: float  # Training accuracy.
  steps: int
  time_s: float


def _norm(tree: Any) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(tree)))


def _init_params(model: nn.Module, image_shape: Sequence[int], seed: int) -> Any:
  """Flax's default Dense initialisation (truncated LeCun normal kernels, zero biases), drawn
  with numpy: XLA:CPU takes seconds to compile each random initialiser, longer than training."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *image_shape)))["params"]
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if path[-1].key == "bias":
      return jnp.zeros(leaf.shape, leaf.dtype)
    # Unit-variance normal truncated at ±2 has std 0.8796; rescale to std 1/sqrt(fan_in).
    values = stats.truncnorm.rvs(-2.0, 2.0, size=leaf.shape, random_state=rng)
    return jnp.asarray(values / 0.87962566103423978 / np.sqrt(leaf.shape[0]), leaf.dtype)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def _ce(model: nn.Module, params: Any, images: jax.Array, labels: jax.Array) -> jax.Array:
  logits = model.apply({"params": params}, images)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _regularised_grad(model, params, images, labels, weight_decay):
  loss, grads = jax.value_and_grad(_ce, argnums=1)(model, params, images, labels)
  return loss, jax.tree.map(lambda g, p: g + weight_decay * p, grads, params)


@functools.partial(jax.jit, static_argnames=("model", "length"))
def _gd_chunk(params, images, labels, lr, weight_decay, *, model, length):
  def step(params, _):
    loss, grads = _regularised_grad(model, params, images, labels, weight_decay)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads), (loss, _norm(grads))
  params, (losses, norms) = jax.lax.scan(step, params, None, length=length)
  return params, jnp.stack([losses, norms], axis=1)


@functools.partial(jax.jit, static_argnames=("model",))
def _final_metrics(params, images, labels, weight_decay, *, model):
  """Loss, regularised gradient norm and accuracy (jitted: op-by-op dispatch compiles slowly)."""
  loss, grads = _regularised_grad(model, params, images, labels, weight_decay)
  accuracy = jnp.mean(model.apply({"params": params}, images).argmax(-1) == labels)
  return loss, _norm(grads), accuracy


def train_mlp(images: np.ndarray, labels: np.ndarray, num_classes: int, *,
              hidden: Sequence[int] = (256, 256), weight_decay: float = 1e-2, lr: float = 0.1,
              steps: int = 5000, init_scale: float = 1.0, grad_tol: float = 0.0, seed: int = 0,
              log_every: int = 1000, mesh: jax.sharding.Mesh | None = None) -> MLPFit:
  """Trains `models.get('mlp', num_classes, hidden=hidden)` full batch to a stationary point.

  Plain gradient descent on mean cross-entropy + (weight_decay/2)·||θ||² (biases included, so
  the stationarity θ = -(1/(n·wd)) Σ ∇θ CE_i that reconstruction relies on holds for every
  parameter).

  Args:
    images: (n, H, W, C) float images in [0, 1]; n should be small (≤ a few hundred).
    labels: (n,) int labels in [0, num_classes).
    num_classes: number of logits, at least 2.
    hidden: hidden-layer widths.
    weight_decay: L2 coefficient wd; larger reaches stationarity sooner (in ~1/(lr·wd) steps).
    lr: gradient-descent step size.
    steps: maximum number of steps.
    init_scale: factor on the default initial parameters (< 1 = small initialisation; with
      weight decay, 0.1–0.3 gave no better reconstructions than 1 in our runs).
    grad_tol: stop early once the regularised gradient norm is at most this (checked every
      `log_every` steps).
    seed: initialisation seed.
    log_every: steps per jitted chunk and progress line.
    mesh: when given, the images are split across its devices (parameters replicated) if their
      number divides evenly; results equal one device's to float tolerance.

  Returns:
    An `MLPFit` with the model, its params and the final loss, gradient norm and accuracy.

  Raises:
    ValueError: on inconsistent shapes or labels. DivergedError: if the loss becomes non-finite.
  """
  images, labels = jnp.asarray(images, jnp.float32), jnp.asarray(labels, jnp.int32)
  if images.ndim != 4 or labels.shape != images.shape[:1]:
    raise ValueError(f"images must be (n, H, W, C) and labels (n,); got {images.shape} and "
                     f"{labels.shape}.")
  if num_classes < 2 or int(labels.min()) < 0 or int(labels.max()) >= num_classes:
    raise ValueError(f"labels must lie in [0, num_classes) with num_classes ≥ 2; got "
                     f"num_classes={num_classes} and labels in [{int(labels.min())}, "
                     f"{int(labels.max())}].")
  model = models.get("mlp", num_classes, hidden=tuple(hidden))
  params = jax.tree.map(lambda p: p * init_scale, _init_params(model, images.shape[1:], seed))
  if mesh is not None:
    params = parallel.replicate(params, mesh)
    images, labels = parallel.shard_rows((images, labels), mesh, len(labels))
  start, done, grad_norm, loss = time.perf_counter(), 0, float("inf"), float("nan")
  while done < steps and grad_norm > grad_tol:
    length = min(log_every, steps - done)
    params, metrics = _gd_chunk(params, images, labels, lr, weight_decay, model=model,
                                length=length)
    # Measured before the chunk's last step.
    loss, grad_norm = (float(v) for v in parallel.to_host(metrics)[-1])
    done += length
    if not np.isfinite(loss):
      raise DivergedError(f"[train_mlp] loss became non-finite by step {done}; lower lr", done)
    logging.info("[train_mlp] step %d/%d loss %.3g grad_norm %.3g  %.0f steps/s", done, steps,
                 loss, grad_norm, done / (time.perf_counter() - start))
  loss, grad_norm, accuracy = (float(v) for v in parallel.to_host(
      _final_metrics(params, images, labels, weight_decay, model=model)))
  if mesh is not None:
    params = jax.tree.map(jnp.asarray, parallel.to_host(params))  # usable on any device
  return MLPFit(model=model, params=params, loss=loss, grad_norm=grad_norm, accuracy=accuracy,
                steps=done, time_s=time.perf_counter() - start)


@functools.lru_cache(maxsize=None)
def mlp_apply_fn(sharpness: float | None = 100.0) -> ApplyFn:
  """`apply_fn(params, images)` of `unlearn_jax.models.mlp` whose ReLUs back-propagate smoothly.

  The forward pass equals `MLP.apply` exactly; derivatives use sigmoid(sharpness·z) in place of
  ReLU's step (Haim et al.'s extraction model), so second derivatives see the activation
  pattern. `sharpness=None` keeps the plain ReLU. Cached, so jitted callers compile once.
  """
  @jax.custom_jvp
  def smooth_relu(z):
    return jnp.maximum(z, 0.0)

  @smooth_relu.defjvp
  def _smooth_relu_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    return jnp.maximum(z, 0.0), jax.nn.sigmoid(sharpness * z) * dz

  activation = jax.nn.relu if sharpness is None else smooth_relu

  def apply_fn(params, images):
    layers = sorted(params, key=lambda name: int(name.split("_")[-1]))
    if not all(name.startswith("Dense_") for name in layers):
      raise ValueError(f"mlp_apply_fn needs unlearn_jax.models.mlp params (Dense_0..Dense_k); "
                       f"got layers {layers}.")
    h = images.reshape(images.shape[0], -1)
    for index, name in enumerate(layers):
      h = h @ params[name]["kernel"] + params[name]["bias"]
      if index < len(layers) - 1:
        h = activation(h)
    return h
  return apply_fn


# ----------------------------------------------------------------------------------------------
# KKT-based reconstruction.


def margins(apply_fn: ApplyFn, params: Any, images: jax.Array, labels: jax.Array) -> jax.Array:
  """(M,) multiclass margins: the label's logit minus the largest other logit."""
  logits = apply_fn(params, images)
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
  others = jnp.where(jax.nn.one_hot(labels, logits.shape[1], dtype=bool), -jnp.inf, logits)
  return label_logit - jnp.max(others, axis=1)


def kkt_loss(apply_fn: ApplyFn, params: Any, images: jax.Array, labels: jax.Array,
             lambdas: jax.Array) -> jax.Array:
  """Σ_layers ||θ - (1/M) Σ_i λ_i ∇θ margin(x_i, y_i)||² (see the module docstring).

  Args:
    apply_fn: `apply_fn(params, images) -> logits`.
    params: the model's parameters θ.
    images: (M, H, W, C) candidate inputs.
    labels: (M,) int labels of the candidates.
    lambdas: (M,) coefficients λ_i.

  Returns:
    The scalar KKT stationarity residual.
  """
  combined = jax.grad(lambda p: jnp.sum(
      lambdas * margins(apply_fn, p, images, labels)) / images.shape[0])(params)
  return sum(jnp.sum((p - g) ** 2) for p, g in
             zip(jax.tree.leaves(params), jax.tree.leaves(combined)))


def _range_prior(images: jax.Array) -> jax.Array:
  return jnp.sum(jax.nn.relu(images - 1.0) ** 2) + jnp.sum(jax.nn.relu(-images) ** 2)


@functools.partial(jax.jit, static_argnames=("apply_fn", "length"))
def _kkt_chunk(carry, params, labels, lr, lambda_min, *, apply_fn, length):
  adam = optax.scale_by_adam()  # Times -lr below: Adam's step is linear in lr (one compile).

  def total(variables):
    images, rho = variables
    kkt = kkt_loss(apply_fn, params, images, labels, lambda_min + jax.nn.softplus(rho))
    prior = _range_prior(images)
    return kkt + prior, (kkt, prior)

  def step(carry, _):
    variables, opt_state = carry
    (_, (kkt, prior)), grads = jax.value_and_grad(total, has_aux=True)(variables)
    updates, opt_state = adam.update(grads, opt_state)
    variables = jax.tree.map(lambda v, u: v - lr * u, variables, updates)
    return (variables, opt_state), jnp.stack([kkt, prior])
  return jax.lax.scan(step, carry, None, length=length)


@dataclasses.dataclass(frozen=True)
class Reconstruction:
  """Candidates optimised by `kkt_reconstruct`."""
  images: np.ndarray  # (M, H, W, C) float32 in [0, 1] (the optimised inputs, clipped).
  labels: np.ndarray  # (M,) the label each candidate was optimised for.
  lambdas: np.ndarray  # (M,) the coefficients λ_i.
  kkt_loss: float  # Final KKT residual.
  history: np.ndarray  # (steps, 2): KKT residual and range prior at every step.
  lr: float
  steps: int
  time_s: float


def select_lr(apply_fn: ApplyFn, params: Any, *, num_classes: int,
              image_shape: Sequence[int], num_candidates: int,
              lrs: Sequence[float] = DEFAULT_LRS, trial_steps: int = 300,
              **kwargs: Any) -> tuple[float, dict[float, float]]:
  """Short trial runs of `kkt_reconstruct`; returns the best lr and each lr's final KKT loss.

  A run that becomes non-finite, or ends above its starting KKT loss, counts as diverged (inf).
  `kwargs` go to `kkt_reconstruct` (same seed, so the trials start from the same candidates).

  Raises:
    DivergedError: if every learning rate diverged.
  """
  results = {}
  for lr in lrs:
    try:
      trial = kkt_reconstruct(apply_fn, params, num_classes=num_classes,
                              image_shape=image_shape, num_candidates=num_candidates,
                              steps=trial_steps, lr=lr, **kwargs)
      diverged = trial.kkt_loss >= trial.history[0, 0]
      results[lr] = float("inf") if diverged else trial.kkt_loss
    except DivergedError:
      results[lr] = float("inf")
    logging.info("[select_lr] lr %g: KKT loss %.6g after %d steps", lr, results[lr], trial_steps)
  best = min(results, key=results.get)
  if not np.isfinite(results[best]):
    raise DivergedError(f"[select_lr] every learning rate in {tuple(lrs)} diverged; try smaller "
                        "ones", trial_steps)
  return best, results


def kkt_reconstruct(apply_fn: ApplyFn, params: Any, *, num_classes: int,
                    image_shape: Sequence[int], num_candidates: int, steps: int = 3000,
                    lr: float | None = None, lambda_min: float = 0.05,
                    init_scale: float = 1e-3, seed: int = 0, log_every: int = 500,
                    trial_lrs: Sequence[float] = DEFAULT_LRS,
                    trial_steps: int = 300,
                    mesh: jax.sharding.Mesh | None = None) -> Reconstruction:
  """Optimises candidate inputs and coefficients so the parameters satisfy the KKT conditions.

  Args:
    apply_fn: `apply_fn(params, images) -> logits`; use `mlp_apply_fn()` for MLPs so the ReLUs
      back-propagate smoothly.
    params: the trained model's parameters.
    num_classes: number of logits (≥ 2); candidate i is optimised for label i mod num_classes.
    image_shape: (H, W, C) of one input.
    num_candidates: M, about twice the number of training images (Haim et al.).
    steps: Adam steps.
    lr: Adam learning rate; None runs `select_lr` over `trial_lrs` first.
    lambda_min: lower bound λ_min of the coefficients.
    init_scale: standard deviation of the initial Gaussian candidates.
    seed: seed of the initial candidates and coefficients.
    log_every: steps per jitted chunk and progress line.
    trial_lrs, trial_steps: the learning-rate trial when `lr` is None.
    mesh: when given, the candidates are split across its devices (the model's parameters
      replicated) if M divides evenly; results equal one device's to float tolerance.

  Returns:
    A `Reconstruction`; its images are clipped to [0, 1].

  Raises:
    ValueError: for too few classes or candidates. DivergedError: if the loss becomes
      non-finite (or every trial lr diverged).
  """
  if num_classes < 2 or num_candidates < 1:
    raise ValueError(f"need num_classes ≥ 2 and num_candidates ≥ 1; got {num_classes} and "
                     f"{num_candidates}.")
  config = dict(lambda_min=lambda_min, init_scale=init_scale, seed=seed,
                log_every=log_every, mesh=mesh)
  if lr is None:
    lr, _ = select_lr(apply_fn, params, num_classes=num_classes, image_shape=image_shape,
                      num_candidates=num_candidates, lrs=trial_lrs, trial_steps=trial_steps,
                      **config)
  # numpy draws: XLA:CPU compiles each random kernel slowly, and these are tiny.
  rng = np.random.default_rng(seed)
  images = jnp.asarray(init_scale * rng.standard_normal((num_candidates, *image_shape)),
                       jnp.float32)
  # λ - λ_min ~ U(0.01, 1) as in the authors' code, through the inverse softplus.
  rho = jnp.asarray(np.log(np.expm1(rng.uniform(0.01, 1.0, num_candidates))), jnp.float32)
  labels = jnp.asarray(np.arange(num_candidates) % num_classes, jnp.int32)
  carry = ((images, rho), optax.scale_by_adam().init((images, rho)))
  if mesh is not None:
    params = parallel.replicate(params, mesh)
    carry, labels = parallel.shard_rows((carry, labels), mesh, num_candidates)
  run_chunk = lambda carry, length: _kkt_chunk(
      carry, params, labels, lr, lambda_min, apply_fn=apply_fn, length=length)
  start = time.perf_counter()
  ((images, rho), _), history = _scan_loop(run_chunk, carry, steps, log_every,
                                           f"kkt_reconstruct lr={lr:g}")
  images, rho, labels = parallel.to_host((images, rho, labels))
  return Reconstruction(
      images=np.clip(np.asarray(images, np.float32), 0.0, 1.0), labels=np.asarray(labels),
      lambdas=(lambda_min + np.logaddexp(0.0, np.asarray(rho, np.float64))).astype(np.float32),
      kkt_loss=float(history[-1, 0]) if steps else float("nan"), history=history, lr=lr,
      steps=steps, time_s=time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------
# Model inversion baseline.


def total_variation(images: jax.Array) -> jax.Array:
  """Anisotropic total variation per image: mean |vertical| + mean |horizontal| differences."""
  vertical = jnp.abs(images[:, 1:] - images[:, :-1]).mean(axis=(1, 2, 3))
  horizontal = jnp.abs(images[:, :, 1:] - images[:, :, :-1]).mean(axis=(1, 2, 3))
  return vertical + horizontal


@functools.partial(jax.jit, static_argnames=("apply_fn", "length"))
def _inversion_chunk(carry, params, lr, tv_weight, *, apply_fn, length):
  adam = optax.adam(lr)

  def cost(images):
    probs = jax.nn.softmax(apply_fn(params, images))
    # Fredrikson et al.'s cost 1 - p(class | x) per class image, plus the prior.
    return jnp.sum(1.0 - jnp.diagonal(probs) + tv_weight * total_variation(images))

  def step(carry, _):
    images, opt_state = carry
    value, grads = jax.value_and_grad(cost)(images)
    updates, opt_state = adam.update(grads, opt_state)
    return (jnp.clip(images + updates, 0.0, 1.0), opt_state), value[None] / images.shape[0]
  return jax.lax.scan(step, carry, None, length=length)


def invert_classes(apply_fn: ApplyFn, params: Any, *, num_classes: int,
                   image_shape: Sequence[int], steps: int = 300, lr: float = 0.05,
                   tv_weight: float = 0.05, log_every: int = 100) -> np.ndarray:
  """Model inversion (Fredrikson et al., CCS 2015): one image per class.

  Projected Adam steps from a grey image on 1 - p(class | x) + tv_weight·TV(x), x kept in
  [0, 1]. A weak baseline: it finds what the model finds typical of a class, not a training image.

  Returns:
    (num_classes, H, W, C) float32 images in [0, 1]; row k is class k's image.
  """
  images = jnp.full((num_classes, *image_shape), 0.5, jnp.float32)
  carry = (images, optax.adam(lr).init(images))
  run_chunk = lambda carry, length: _inversion_chunk(carry, params, lr, tv_weight,
                                                     apply_fn=apply_fn, length=length)
  (images, _), _ = _scan_loop(run_chunk, carry, steps, log_every, "invert_classes")
  return np.asarray(images, np.float32)
