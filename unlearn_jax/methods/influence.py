"""Influence-function (Newton) removal: one second-order step that takes the forget set out.

The study trains θ* to minimise L_D(θ) = (1/n)·Σ_{i∈D} ℓ_i(θ) + (w/2)·||θ||², where ℓ_i is the
cross-entropy and w = `config.train.weight_decay` (optax's add_decayed_weights(w) adds w·θ to the
gradient, i.e. the L2 term (w/2)·||θ||²; with `adamw` the decay is decoupled and the same w is
an approximation). Retraining minimises L_R, the same objective over the
r = |D \\ T| retained examples. One Newton step on L_R from θ* gives

    θ_new = θ* − H_R⁻¹ ∇L_R(θ*) = θ* + H_R⁻¹ · (1/r) · Σ_{i∈T} [∇ℓ_i(θ*) + w·θ*],

using ∇L_D(θ*) = 0, where H_R = (1/r)·Σ_{i∈R} ∇²ℓ_i(θ*) + w·I is the Hessian of the retained
objective. This is the one-step Newton update of Guo et al., "Certified Data Removal from Machine
Learning Models" (ICML 2020, their Δ = λw* + ∇ℓ(w*, x) in our normalisation) and of Izzo et al.,
"Approximate Data Deletion from Machine Learning Models" (AISTATS 2021); the first-order view of
the same quantity is the influence function of Koh & Liang, "Understanding Black-box Predictions
via Influence Functions" (ICML 2017), removing T by up-weighting it by −1/n. It is exact for a
quadratic objective and close to exact for an L2-regularised logistic regression at its optimum.

H_R is never formed: the solve uses Hessian-vector products (forward-over-reverse, `jax.jvp` of
`jax.grad`) of the cross-entropy summed over batches of retained data, in evaluation mode
(BatchNorm uses its running statistics), plus (w + damping)·v. `damping` regularises the
non-convex case as in Koh & Liang's code (kohpangwei/influence-release: damping 1e-2 for their
CNN in scripts/train_mnist.py, 0 for logistic regression). Two solvers:

- `cg`: conjugate gradients on (H_R + damping·I) x = b from x = 0, at most `cg_steps` HVPs, stopping
  at relative residual `tol` or at the first direction of non-positive curvature (the truncation
  of Newton-CG, which Koh & Liang run through scipy's fmin_ncg); there the iterate with the
  smallest residual is kept, as the quadratic model no longer holds (on the runlocal study's
  undertrained CNN the last iterate had a residual ~100× that of b and hurt accuracy).
- `lissa`: the stochastic recursion of Agarwal et al. (JMLR 2017) as coded by Koh & Liang
  (genericNeuralNet.get_inverse_hvp_lissa): x_0 = b, x_{j+1} = b + x_j − (H_j + damping·I)·x_j /
  scale with H_j the Hessian on the j-th retained batch, result x_depth / scale. Their `damping`
  argument d multiplies x_j by (1 − d); here damping is added to H for both solvers, so their d
  equals damping / scale. It converges when scale exceeds half the largest eigenvalue of
  H_R + damping·I (hence a larger default than their 10, see `default_config`); a non-finite
  iterate raises FloatingPointError. Koh & Liang's averaging over repeated recursions
  (num_samples) is not done: one recursion.

Cost and defaults: one CG step is one HVP pass over the Hessian examples (on the study's CNN an
HVP costs about two to three training steps per example: ~480 vs ~1,060 examples/s on CPU).
Koh & Liang's damping 1e-2 (their CNN) is kept. Departures forced by the budget (~10% of
retraining's cost, ~6 s on the default study): they run CG to convergence (fmin_ncg, up to 100
iterations, `get_inverse_hvp_cg` in genericNeuralNet.py) over the full training set and LiSSA
to depth 10,000 at scale 10; here H_R is estimated on `hessian_examples` = 256 retained
examples (a fixed random subset; 0 = all) and CG runs at most `cg_steps` = 8 steps (8 × 256
HVPs ≈ 4 s), LiSSA `depth` = 32 steps of `batch_size` examples (scale 50 for convergence, see
above). The Unlearn-Saliency IU baseline (`Wfisher.py`) likewise uses a subset: a WoodFisher
(empirical Fisher) inverse over its first ~1,000 retained examples. On a non-convex network the
step is an approximation of unknown quality, so `info` reports the solver residual, whether
negative curvature stopped CG, and the update norm.
"""

from __future__ import annotations

import functools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.flatten_util import ravel_pytree

from unlearn_jax import config as config_lib
from unlearn_jax import methods, parallel, train
from unlearn_jax.data import pipeline

SOLVERS = ("cg", "lissa")

SPEC = methods.Spec(search_space={
    # Both solvers cost about the same HVPs with the defaults.
    "solver": methods.Choice(SOLVERS),
    # Two decades around Koh & Liang's CNN damping 1e-2 (influence-release train_mnist.py).
    "damping": methods.Float(1e-4, 1.0, log=True),
    # lissa: Koh & Liang's 10 up to 1000 (convergence needs > half the top eigenvalue).
    "scale": methods.Float(10.0, 1000.0, log=True),
    # HVP passes, at most the defaults (≤10% of retraining; Koh & Liang's 100 CG iterations and
    # LiSSA depth 10,000 are past it).
    "cg_steps": methods.Int(2, 8, log=True),
    "depth": methods.Int(8, 32, log=True),
})


def default_config() -> ml_collections.ConfigDict:
  """Influence-removal hyper-parameters (sources in the module docstring)."""
  config = ml_collections.ConfigDict()
  config.solver = "cg"  # inverse-HVP solver: 'cg' or 'lissa'.
  config.cg_steps = 8  # cg: most HVP passes (Koh & Liang: up to 100; here ≤10% of retrain).
  config.tol = 1e-3  # cg: stop when ||residual|| ≤ tol·||b||.
  config.damping = 0.01  # added to the Hessian's diagonal (Koh & Liang's CNN: 1e-2).
  # lissa: divides the Hessian; must exceed half its largest eigenvalue. Koh & Liang's default
  # is 10, but SGD at lr η with momentum β trains up to a sharpness of 2(1+β)/η (76 for the
  # study recipe; Cohen et al., ICLR 2021), and the study's CNN measured ~21 after 3 epochs.
  config.scale = 50.0
  config.depth = 32  # lissa: recursion steps, one batch each (Koh & Liang: 10,000).
  # Retained examples per HVP batch (cg) or per recursion step (lissa); 64 measured the fastest
  # per example for the study's CNN on CPU.
  config.batch_size = 64
  config.hessian_examples = 256  # retained examples H_R is estimated on (0 = all).
  return config


def check_config(cfg: ml_collections.ConfigDict) -> None:
  """Solver name, non-negative damping, positive scale/depth/tol, hessian_examples ≥ 0."""
  config_lib.require_choice("unlearn.influence.solver", cfg.solver, SOLVERS)
  config_lib.require_number("unlearn.influence.damping", cfg.damping, low=0)
  config_lib.require_number("unlearn.influence.scale", cfg.scale, low=0, low_open=True)
  config_lib.require_number("unlearn.influence.tol", cfg.tol, low=0, low_open=True)
  config_lib.require_number("unlearn.influence.depth", cfg.depth, low=1, integer=True)
  config_lib.require_number("unlearn.influence.hessian_examples", cfg.hessian_examples, low=0,
                            integer=True)


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def grad_hvp_sum(apply_fn: Callable, params, batch_stats, images: jax.Array, labels: jax.Array,
                 weights: jax.Array, vector: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(Σ w_i ∇ℓ_i, Σ w_i ∇²ℓ_i · vector) over a batch, flat, in evaluation mode.

  Forward-over-reverse: `jax.jvp` of `jax.grad`, so no Hessian is formed. `vector` and the results
  are flat (the order of `ravel_pytree(params)`).
  """
  _, unravel = ravel_pytree(params)

  def loss_sum(p):
    variables = {"params": p, **({"batch_stats": batch_stats} if batch_stats else {})}
    logits = apply_fn(variables, train.to_float(images), train=False)
    return jnp.sum(weights * optax.softmax_cross_entropy_with_integer_labels(logits, labels))

  grad, hvp = jax.jvp(jax.grad(loss_sum), (params,), (unravel(vector),))
  return ravel_pytree(grad)[0], ravel_pytree(hvp)[0]


def fixed_batches(data: dict[str, np.ndarray], batch_size: int,
                  mesh: jax.sharding.Mesh) -> list[dict[str, jax.Array]]:
  """`data` in order as device batches of exactly `batch_size` (padding rows weigh 0).

  Every batch of a run has one shape, so one compiled HVP serves the forget and retained sets.
  """
  num = len(data["label"])
  batches = []
  for start in range(0, num, batch_size):
    rows = np.arange(start, min(start + batch_size, num))
    weight = np.r_[np.ones(len(rows)), np.zeros(batch_size - len(rows))].astype(np.float32)
    rows = np.r_[rows, np.full(batch_size - len(rows), rows[-1])]
    batches.append(parallel.global_batch(
        {"image": data["image"][rows], "label": data["label"][rows], "weight": weight}, mesh))
  return batches


class _Objective:
  """Gradients and HVPs of Σ ℓ_i over device batches at fixed parameters.

  Vectors are flat host (numpy) arrays in `jax.tree.leaves(params)` order, as `ravel_pytree`
  lays them out: the solvers' vector arithmetic then needs no compiled operations.
  """

  def __init__(self, state: train.TrainState, mesh: jax.sharding.Mesh):
    self.apply_fn = state.apply_fn
    # `replicate` also places arrays that live on this process's devices only (multi-host).
    self.params = parallel.replicate(state.params, mesh)
    self.batch_stats = parallel.replicate(state.batch_stats, mesh)
    # Replicated values: every process can fetch them from its own devices.
    leaves, self.treedef = jax.tree.flatten(jax.device_get(self.params))
    self.shapes = [leaf.shape for leaf in leaves]
    self.flat_params = np.concatenate([np.ravel(leaf) for leaf in leaves])

  def unravel(self, flat: np.ndarray):
    bounds = np.cumsum([0] + [int(np.prod(shape)) for shape in self.shapes])
    return jax.tree.unflatten(self.treedef, [flat[a:b].reshape(shape) for a, b, shape in
                                             zip(bounds[:-1], bounds[1:], self.shapes)])

  def _run(self, batch, vector: np.ndarray):
    return grad_hvp_sum(self.apply_fn, self.params, self.batch_stats, batch["image"],
                        batch["label"], batch["weight"], vector)

  def grad_sum(self, batches) -> np.ndarray:
    zeros = np.zeros_like(self.flat_params)
    return sum(np.asarray(self._run(b, zeros)[0]) for b in batches)

  def hvp_sum(self, batches, vector: np.ndarray) -> np.ndarray:
    return sum(np.asarray(self._run(b, vector)[1]) for b in batches)


def _check_finite(name: str, step: int, *values: np.ndarray) -> None:
  if not all(np.all(np.isfinite(v)) for v in values):
    raise train.DivergedError(f"[{name}] the inverse-HVP iterate became non-finite at step "
                              f"{step}; raise damping (or scale for lissa)", step)


def solve_cg(matvec: Callable[[np.ndarray], np.ndarray], b: np.ndarray, steps: int, tol: float,
             name: str, log_every: int = 5) -> tuple[np.ndarray, dict]:
  """Conjugate gradients for A x = b from x = 0.

  Stops at relative residual `tol` or after `steps` products, returning the last iterate: each
  minimises ½xᵀAx − bᵀx over a growing Krylov space, even when the residual norm (reported) does
  not fall monotonically. At a direction of non-positive curvature (A is not positive definite:
  the non-convex case) that model is no longer trustworthy, and the iterate with the smallest
  residual so far is returned instead (x = 0 if none improved on it).
  """
  x = best = np.zeros_like(b)
  best_residual = 1.0
  residual, direction = b, b
  rs = float(np.dot(residual, residual))
  b_norm = max(np.sqrt(rs), 1e-30)
  info = {"steps": 0, "negative_curvature": False, "residual": 1.0}
  for step in range(1, steps + 1):
    a_direction = matvec(direction)
    info["steps"] = step
    curvature = float(np.dot(direction, a_direction))
    _check_finite(name, step, a_direction)
    if curvature <= 0:
      info["negative_curvature"] = True
      logging.warning("[%s] CG met non-positive curvature at step %d; keeping the iterate with "
                      "relative residual %.3e", name, step, best_residual)
      return best, {**info, "residual": best_residual}
    alpha = rs / curvature
    x = x + alpha * direction
    residual = residual - alpha * a_direction
    rs_new = float(np.dot(residual, residual))
    info["residual"] = np.sqrt(rs_new) / b_norm
    if info["residual"] < best_residual:
      best, best_residual = x, info["residual"]
    if step % log_every == 0 or step == steps:
      logging.info("[%s] CG step %d/%d relative residual %.3e", name, step, steps,
                   info["residual"])
    if info["residual"] <= tol:
      break
    direction = residual + (rs_new / rs) * direction
    rs = rs_new
  return x, info


def solve_lissa(batch_matvec: Callable[[int, np.ndarray], np.ndarray], b: np.ndarray, depth: int,
                scale: float, name: str) -> tuple[np.ndarray, dict]:
  """Koh & Liang's LiSSA recursion (damping inside `batch_matvec`); returns x_depth / scale."""
  estimate = b
  log_every = max(depth // 10, 1)
  for step in range(1, depth + 1):
    estimate = b + estimate - batch_matvec(step - 1, estimate) / scale
    if step % log_every == 0 or step == depth:
      _check_finite(name, step, estimate)
      logging.info("[%s] LiSSA step %d/%d norm %.4e", name, step, depth,
                   float(np.linalg.norm(estimate)))
  return estimate / scale, {"steps": depth}


def hessian_subset(retain: dict[str, np.ndarray], num: int, seed: int) -> dict[str, np.ndarray]:
  """A fixed random subset of `num` retained examples (all of them when num is 0 or ≥ |R|)."""
  total = len(retain["label"])
  if num <= 0 or num >= total:
    return retain
  rows = np.sort(np.random.default_rng([seed, 17]).choice(total, num, replace=False))
  return {key: value[rows] for key, value in retain.items()}


def unlearn(state, run, cfg, rng):
  """θ + (H_R + damping·I)⁻¹ · (1/r)·Σ_T [∇ℓ_i + w·θ], solved by CG or LiSSA (see above)."""
  del rng  # the Hessian subset and LiSSA batches come from run.seed
  name = f"influence/seed_{run.seed}"
  start = time.perf_counter()
  weight_decay = float(run.recipe.weight_decay)
  num_retain, num_forget = len(run.retain["label"]), len(run.forget["label"])
  objective = _Objective(state, run.mesh)
  theta = objective.flat_params

  hessian_data = hessian_subset(run.retain, int(cfg.hessian_examples), run.seed)
  num_hessian = len(hessian_data["label"])
  # LiSSA batches hold `real` examples, padded with weight-0 rows to a multiple of the mesh
  # size (the same on any number of devices); CG sums over chunks of the padded size.
  real = min(int(cfg.batch_size), num_hessian)
  batch_size = parallel.round_up(real, run.mesh)
  forget_batches = fixed_batches(run.forget, batch_size, run.mesh)
  b = (objective.grad_sum(forget_batches) + num_forget * weight_decay * theta) / num_retain

  shift = weight_decay + float(cfg.damping)
  if cfg.solver == "cg":
    batches = fixed_batches(hessian_data, batch_size, run.mesh)
    matvec = lambda v: objective.hvp_sum(batches, v) / num_hessian + shift * v
    delta, info = solve_cg(matvec, b, int(cfg.cg_steps), float(cfg.tol), name)
  else:
    sampler = pipeline.EpochSampler(hessian_data, real, run.seed)

    def batch_matvec(step, v):
      host = pipeline.pad_rows(sampler.batch(step), batch_size)
      batch = parallel.global_batch(host, run.mesh)
      hvp = objective.hvp_sum([batch], v) / float(np.sum(host["weight"]))
      return hvp + shift * v

    delta, info = solve_lissa(batch_matvec, b, int(cfg.depth), float(cfg.scale), name)

  _check_finite(name, info["steps"], delta)
  params = objective.unravel(theta + delta)
  new_state = state.replace(params=parallel.replicate(params, run.mesh))
  jax.block_until_ready(new_state.params)
  wall = time.perf_counter() - start
  info.update(wall_s=wall, steps_run=info["steps"], solver=cfg.solver,
              hessian_examples=num_hessian, update_norm=float(np.linalg.norm(delta)),
              forget_term_norm=float(np.linalg.norm(b)))
  logging.info("[%s] %s: %d steps, |update| %.4e, %.1fs", name, cfg.solver, info["steps"],
               info["update_norm"], wall)
  if run.writer is not None:
    run.writer.write(run=name, step=info["steps"], update_norm=info["update_norm"],
                     residual=info.get("residual"))
  return new_state, info
