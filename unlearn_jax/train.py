"""Training: the optimiser, the train state, pure jitted steps, prediction, and the `fit` loop.

`train_step` minimises a per-example *weighted* cross-entropy, sum(w·ce) / sum(|w|): weight 1
is ordinary training, 0 masks filler rows, and negative weights ascend the loss on those rows,
so fine-tuning, gradient ascent, random labelling and NegGrad-style updates share one compiled
step. `fit` runs steps whose batches are a function of the step (see data/pipeline.py), saves
orbax checkpoints every N steps, and resumes from the latest one with identical results.
`make_optimizer` is the one optimiser factory (reference models, methods, the LM track): its
settings live in the optimiser state (`optax.inject_hyperparams`), so that step is compiled once
per model, whatever the learning rate, schedule or run length.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import time
from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax import struct

from unlearn_jax import config as config_lib
from unlearn_jax import parallel, preemption
from unlearn_jax.data import pipeline
from unlearn_jax.utils import MetricWriter, format_seconds


class DivergedError(FloatingPointError):
  """The loss became non-finite; `step` is the first such step (1-based)."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


class TrainState(struct.PyTreeNode):
  """Everything that changes during training; the model and optimiser are static fields."""
  step: jax.Array
  params: Any
  batch_stats: Any  # BatchNorm statistics ({} for models without them).
  opt_state: Any
  apply_fn: Callable = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  def variables(self) -> dict:
    """The Flax variables for `apply_fn`."""
    if self.batch_stats:
      return {"params": self.params, "batch_stats": self.batch_stats}
    return {"params": self.params}

  def apply_gradients(self, grads: Any, updates: dict | None = None) -> "TrainState":
    """One optimiser update with `grads`; `updates` may carry new BatchNorm statistics."""
    param_updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, opt_state=opt_state,
                        params=optax.apply_updates(self.params, param_updates),
                        batch_stats=(updates or {}).get("batch_stats", self.batch_stats))

  def with_optimizer(self, tx: "optax.GradientTransformation | Optimizer") -> "TrainState":
    """A state with a fresh optimiser and step 0.

    `tx` is an optax transformation or an `Optimizer` (`make_optimizer`), whose settings go in
    the optimiser state and whose shared transformation becomes the state's static part.
    """
    opt_state = tx.init(self.params)
    return self.replace(tx=tx.tx if isinstance(tx, Optimizer) else tx, opt_state=opt_state,
                        step=jnp.zeros((), jnp.int32))


# ----------------------------------------------------------------------------------------------
# The optimiser: one factory, its settings in the optimiser state.

OPTIMIZERS = config_lib.OPTIMIZERS
SCHEDULES = ("constant", "cosine")


class ProximalState(NamedTuple):
  """The parameters the optimiser started from (θ_start)."""
  start: optax.Params


def add_proximal(strength: jax.Array) -> optax.GradientTransformation:
  """Adds strength·(θ − θ_start): the gradient of (strength/2)·||θ − θ_start||².

  θ_start is the parameters passed to `init`, copied (so donating the train state is safe).
  """

  def init(params):
    return ProximalState(start=jax.tree.map(lambda p: jnp.array(p, copy=True), params))

  def update(updates, state, params=None):
    return jax.tree.map(lambda g, p, s: g + strength * (p - s), updates, params,
                        state.start), state

  return optax.GradientTransformation(init, update)


class L1State(NamedTuple):
  """Updates done (drives the linear decay of the ℓ1 weight)."""
  count: jax.Array


def add_decaying_l1(l1: jax.Array, total_steps: jax.Array) -> optax.GradientTransformation:
  """Adds l1_t·sign(θ), the subgradient of l1_t·||θ||_1, with l1_t = l1·max(1 − t/T, 0)."""

  def init(params):
    del params
    return L1State(count=jnp.zeros((), jnp.int32))

  def update(updates, state, params=None):
    # t·(1/T) rather than t/T: what XLA compiles a division by a constant T to, so the same
    # bits whether T is a constant or (here) a state array.
    strength = l1 * jnp.maximum(1.0 - state.count * (1.0 / total_steps.astype(jnp.float32)), 0.0)
    updates = jax.tree.map(lambda g, p: g + strength * jnp.sign(p), updates, params)
    return updates, L1State(count=state.count + 1)

  return optax.GradientTransformation(init, update)


def learning_rate(count: jax.Array, lr: jax.Array, total_steps: jax.Array, cosine: jax.Array,
                  lr_decay_steps: jax.Array, lr_decay_rate: jax.Array) -> jax.Array:
  """The learning rate after `count` updates.

  lr, times lr_decay_rate for each step of `lr_decay_steps` reached (the arithmetic of
  `optax.piecewise_constant_schedule`), times ½(1 + cos(π·min(t, T)/T)) when `cosine` (that of
  `optax.cosine_decay_schedule(lr, T)`).
  """
  rate = lr
  for i in range(lr_decay_steps.shape[0]):
    indicator = jnp.maximum(0.0, jnp.sign(lr_decay_steps[i] - count))
    rate = rate * indicator + (1 - indicator) * lr_decay_rate * rate
  total = total_steps.astype(jnp.float32)
  t = jnp.minimum(count.astype(jnp.float32), total)
  return rate * jnp.where(cosine, 0.5 * (1.0 + jnp.cos(jnp.pi * t / total)), 1.0)


def _transformation(lr, momentum, weight_decay, total_steps, cosine, lr_decay_steps,
                    lr_decay_rate, l1, proximal, *, kind: str, anchored: bool,
                    sparse: bool) -> optax.GradientTransformation:
  """The optax chain of one optimiser kind, for `optax.inject_hyperparams`.

  In order: the proximal pull (only when `anchored`), the decaying ℓ1 subgradient (only when
  `sparse`), L2 weight decay added to the gradient (sgd, adam: torch's `weight_decay`), the
  momentum trace (sgd) or Adam's scaling, decoupled weight decay (adamw), and
  −learning_rate(t). The two optional terms are left out, not zeroed, when unused: θ_start is a
  copy of the parameters, and even a zero term changes how XLA fuses (and rounds) Adam's update.
  """
  terms = [add_proximal(proximal)] if anchored else []
  if sparse:
    terms.append(add_decaying_l1(l1, total_steps))
  if kind != "adamw":
    terms.append(optax.add_decayed_weights(weight_decay))
  terms.append(optax.trace(decay=momentum) if kind == "sgd" else optax.scale_by_adam())
  if kind == "adamw":
    terms.append(optax.add_decayed_weights(weight_decay))
  terms.append(optax.scale_by_schedule(lambda count: -learning_rate(
      count, lr, total_steps, cosine, lr_decay_steps, lr_decay_rate)))
  return optax.chain(*terms)


_inject = optax.inject_hyperparams(_transformation, static_args=("kind", "anchored", "sparse"),
                                   hyperparam_dtype=jnp.float32)


# The decay step of a recipe without one (orbax cannot save an empty array): never reached, and
# rate·1 + 0·rate_decay·rate = rate exactly.
_NEVER = np.iinfo(np.int32).max


def _settings(kind: str = "sgd", lr: float = 0.0, total_steps: int = 1, *,
              momentum: float = 0.0, weight_decay: float = 0.0, schedule: str = "constant",
              lr_decay_steps=(), lr_decay_rate: float = 1.0, l1: float = 0.0,
              proximal: float = 0.0) -> dict[str, Any]:
  """Every argument of `_inject`, in the types that make each setting a state array."""
  if kind not in OPTIMIZERS:
    raise ValueError(f"optimizer={kind!r}: must be one of {', '.join(OPTIMIZERS)}")
  if schedule not in SCHEDULES:
    raise ValueError(f"schedule={schedule!r}: must be one of {', '.join(SCHEDULES)}")
  # numpy arrays give strongly typed state arrays (a Python int gives a weakly typed one, and a
  # restored checkpoint a strong one: the resumed run would compile its step again).
  real = lambda value: np.asarray(float(value), np.float32)
  return dict(kind=kind, anchored=float(proximal) != 0.0, sparse=float(l1) != 0.0, lr=real(lr),
              momentum=real(momentum if kind == "sgd" else 0.0),
              weight_decay=real(weight_decay),
              total_steps=np.asarray(max(int(total_steps), 1), np.int32),
              cosine=np.asarray(schedule == "cosine"),
              lr_decay_steps=np.asarray(sorted(int(s) for s in lr_decay_steps) or [_NEVER],
                                        np.int32),
              lr_decay_rate=real(lr_decay_rate), l1=real(l1), proximal=real(proximal))


# One transformation per kind (with or without the proximal and ℓ1 terms), whatever its
# settings: its `update` reads every setting from the state. The placeholder values are unused.
_SHARED = {(kind, anchored, sparse): _inject(**_settings(kind, proximal=float(anchored),
                                                         l1=float(sparse)))
           for kind in OPTIMIZERS for anchored in (False, True) for sparse in (False, True)}


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """An optimiser recipe: the transformation `tx` its kind shares, and its `settings`.

  `init` puts the settings in the optimiser state (`optax.inject_hyperparams`), where
  `tx.update` reads them. `TrainState.with_optimizer` keeps `tx` as the state's static part, so
  states of one model under any recipe of a kind (learning rate, momentum, weight decay,
  schedule, run length, ℓ1 or proximal weight) are one structure to `jax.jit`: one compiled
  train step serves the reference models and the methods alike.
  """
  tx: optax.GradientTransformationExtraArgs
  settings: dict[str, Any]

  def init(self, params: optax.Params) -> optax.OptState:
    """The initial optimiser state, with this recipe's settings in `hyperparams`."""
    return _inject(**self.settings).init(params)

  @property
  def update(self) -> Callable:
    """The shared update (settings come from the state)."""
    return self.tx.update


def make_optimizer(name: str, lr: float, total_steps: int = 1, *, momentum: float = 0.9,
                   weight_decay: float = 0.0, schedule: str = "constant",
                   lr_decay_steps=(), lr_decay_rate: float = 1.0, l1: float = 0.0,
                   proximal: float = 0.0) -> Optimizer:
  """The project's optimiser: SGD with momentum, Adam with L2 decay, or AdamW.

  Args:
    name: 'sgd' (heavy-ball momentum, torch's `SGD`), 'adam' (weight decay added to the
      gradient, torch's `Adam`) or 'adamw' (decoupled weight decay).
    lr: the peak learning rate.
    total_steps: the run's length T: the cosine schedule's horizon and the ℓ1 weight's.
    momentum: sgd's momentum (ignored by adam and adamw).
    weight_decay: L2 weight, added to the gradient (sgd, adam) or to the update (adamw).
    schedule: 'constant', or 'cosine' (decays to 0 over `total_steps`).
    lr_decay_steps: steps after which the learning rate is multiplied by `lr_decay_rate`
      (a step decay, e.g. at epoch boundaries). Their values live in the state, their number
      is the shape of a state array: recipes with other numbers of decays compile apart.
    lr_decay_rate: the factor of each such decay.
    l1: the weight of an ℓ1 penalty, decayed linearly to 0 over `total_steps`, whose
      subgradient is added to the gradient first (before the weight decay).
    proximal: λ of a pull (λ/2)·||θ − θ_start||² towards the parameters the optimiser started
      from (added to the gradient before everything else); 0: none (nor its copy of θ).

  Returns:
    An `Optimizer`. Every setting lives in the optimiser state; recipes of one kind share
    `tx`, hence one compiled step. A kind is the optimiser name and whether `proximal` and
    `l1` are non-zero (their terms are left out of the other kinds).
  """
  settings = _settings(name, lr, total_steps, momentum=momentum, weight_decay=weight_decay,
                       schedule=schedule, lr_decay_steps=lr_decay_steps,
                       lr_decay_rate=lr_decay_rate, l1=l1, proximal=proximal)
  return Optimizer(_SHARED[settings["kind"], settings["anchored"], settings["sparse"]], settings)


def optimizer_from_config(train_config, total_steps: int) -> Optimizer:
  """The optimiser of a `config.train` section (optimizer, lr, momentum, weight_decay,
  schedule) for a run of `total_steps`."""
  return make_optimizer(train_config.optimizer, float(train_config.lr), int(total_steps),
                        momentum=float(train_config.momentum),
                        weight_decay=float(train_config.weight_decay),
                        schedule=train_config.schedule)


@functools.partial(jax.jit, static_argnums=0)
def _jit_init(model: flax.linen.Module, rng: jax.Array, images: jax.Array) -> dict:
  # The model is static (Flax modules hash by their fields): one compile per model config,
  # however many reference models and teachers are initialised.
  return model.init(rng, images, train=False)


def create_state(model: flax.linen.Module, rng: jax.Array, image_shape: tuple[int, ...],
                 tx: "optax.GradientTransformation | Optimizer | None" = None) -> TrainState:
  """Initialises parameters (and BatchNorm statistics) for images of `image_shape` (H, W, C).

  Without `tx` the state carries a no-op optimiser; `with_optimizer` sets the real one.
  """
  variables = _jit_init(model, rng, jnp.zeros((1,) + tuple(image_shape), jnp.float32))
  identity = optax.identity()
  state = TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                     batch_stats=variables.get("batch_stats", {}), opt_state=identity.init(None),
                     apply_fn=model.apply, tx=identity)
  return state if tx is None else state.with_optimizer(tx)


def to_float(images: jax.Array) -> jax.Array:
  """uint8 images to float32 in [0, 1] (done on device: 4× less host-to-device traffic)."""
  return images.astype(jnp.float32) / 255.0


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array,
                           weights: jax.Array) -> jax.Array:
  """sum(w · ce) / sum(|w|); 0 when every weight is 0."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.sum(weights * losses) / jnp.maximum(jnp.sum(jnp.abs(weights)), 1e-12)


def forward(state: TrainState, params: Any, images: jax.Array,
            rng: jax.Array) -> tuple[jax.Array, dict]:
  """Train-mode logits of float `images` under `params`, and the new BatchNorm statistics.

  Returns (logits, updates) where updates is {} or {'batch_stats': ...}.
  """
  variables = {"params": params}
  if not state.batch_stats:
    return state.apply_fn(variables, images, train=True, rngs={"dropout": rng}), {}
  variables["batch_stats"] = state.batch_stats
  return state.apply_fn(variables, images, train=True, mutable=["batch_stats"],
                        rngs={"dropout": rng})


def weighted_loss(params: Any, state: TrainState, batch: dict[str, jax.Array],
                  rng: jax.Array) -> tuple[jax.Array, dict]:
  """The weighted cross-entropy of `batch` (image, label, weight) and the BatchNorm updates."""
  logits, updates = forward(state, params, to_float(batch["image"]), rng)
  return weighted_cross_entropy(logits, batch["label"], batch["weight"]), updates


def train_step(state: TrainState, batch: dict[str, jax.Array],
               base_key: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser step on the weighted cross-entropy of `batch` (image, label, weight)."""
  rng = jax.random.fold_in(base_key, state.step)
  (loss, updates), grads = jax.value_and_grad(weighted_loss, has_aux=True)(
      state.params, state, batch, rng)
  return state.apply_gradients(grads, updates), {"loss": loss,
                                                 "grad_norm": optax.tree.norm(grads)}


def predict_step(apply_fn: Callable, variables: dict, images: jax.Array) -> jax.Array:
  """Logits in evaluation mode (BatchNorm uses its running statistics)."""
  return apply_fn(variables, to_float(images), train=False)


jit_train_step = jax.jit(train_step, donate_argnums=0)
# The model is static and the optimiser is not an argument: every state of one model (whatever
# optimiser trained it) shares one compiled prediction.
jit_predict_step = jax.jit(predict_step, static_argnums=0)


def train_steps(state: TrainState, batches: dict[str, jax.Array],
                base_key: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
  """`train_step` on each batch along the leading axis of `batches` (steps, batch, ...).

  One `lax.scan`, so one call runs several steps: Python dispatch and the allocation (and page
  faulting) of XLA's temporary buffers are paid once per call, not once per step. The results
  equal as many calls of `train_step` (same order, same `fold_in(base_key, step)` randomness);
  metrics come back with a leading steps axis.

  Use it for models whose gradients avoid XLA's own convolution transposes (mlp, the cnn with
  its custom VJP): on XLA:CPU those fall back to a naive loop inside a scan body (resnet18's
  `nn.Conv` backward ran ~50x slower there).
  """
  return jax.lax.scan(lambda carry, batch: train_step(carry, batch, base_key), state, batches)


jit_train_steps = jax.jit(train_steps, donate_argnums=0)

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
  """Counts XLA compilations (and their seconds) while active: `with CompileCounter() as c:`.

  Listens to JAX's backend-compile monitoring event, so it sees every jit, pmap and eager-op
  compilation in the process (persistent-cache hits are not compilations). `names` lists the
  compiled functions in order (e.g. 'jit(train_step)'); reading `count` at two points
  attributes compilations to the code in between.
  """

  def __init__(self):
    self.names: list[str] = []
    self.seconds = 0.0

  @property
  def count(self) -> int:
    """Compilations seen so far."""
    return len(self.names)

  def _listen(self, event: str, duration: float, **kwargs) -> None:
    if event == BACKEND_COMPILE_EVENT:
      self.names.append(str(kwargs.get("fun_name", "?")))
      self.seconds += float(duration)

  def __enter__(self) -> "CompileCounter":
    jax.monitoring.register_event_duration_secs_listener(self._listen)
    return self

  def __exit__(self, *exc_info) -> None:
    jax.monitoring.unregister_event_duration_listener(self._listen)


def predict(state: TrainState, data: dict[str, np.ndarray], batch_size: int,
            mesh: jax.sharding.Mesh) -> np.ndarray:
  """Logits (N, classes) for every example of `data`, in order; padding rows are dropped."""
  batch_size = parallel.round_up(min(batch_size, max(len(data["image"]), 1)), mesh)
  variables = parallel.replicate(state.variables(), mesh)
  outputs = []
  for batch, real in pipeline.eval_batches(data, batch_size):
    logits = jit_predict_step(state.apply_fn, variables,
                              parallel.global_batch(batch, mesh)["image"])
    outputs.append(parallel.to_host(logits)[:real])  # gathered from every process
  if not outputs:
    return np.zeros((0, 0), np.float32)
  return np.concatenate(outputs)


# ----------------------------------------------------------------------------------------------
# Checkpoints.


def checkpoint_manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  """An orbax manager keeping the last `max_to_keep` steps under `directory`."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(directory, options=options)


def _saveable(state: TrainState) -> dict:
  return {"step": state.step, "params": state.params, "batch_stats": state.batch_stats,
          "opt_state": state.opt_state}


def step_of(state: TrainState) -> int:
  """The step of a state, or of a stacked ensemble state (whose members step together)."""
  return int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])


def save(manager: ocp.CheckpointManager, state: TrainState) -> None:
  """Saves `state` at its step (asynchronous; `manager.wait_until_finished()` to block)."""
  manager.save(step_of(state), args=ocp.args.Composite(
      state=ocp.args.StandardSave(_saveable(state))))


def restore(manager: ocp.CheckpointManager, like: TrainState,
            step: int | None = None) -> TrainState:
  """Restores the latest (or given) step into a state shaped like `like`."""
  step = manager.latest_step() if step is None else step
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _saveable(like))
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract)))["state"]
  return like.replace(**restored)


class CorruptCheckpointError(RuntimeError):
  """No checkpoint in a directory could be read back."""


def restore_latest_readable(manager: ocp.CheckpointManager, like: TrainState) -> TrainState:
  """Restores the newest checkpoint that reads back; unreadable newer ones are deleted.

  A checkpoint can be damaged after it was committed (a truncated copy, a disk fault). The
  newest readable step wins; a damaged step is removed so that training can save it again.
  """
  directory = str(manager.directory)
  errors = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return restore(manager, like, step)
    except Exception as error:  # pylint: disable=broad-except  (orbax raises many types)
      errors.append(f"step {step}: {type(error).__name__}: {str(error)[:200]}")
      logging.warning("checkpoint %s/%d is unreadable (%s); deleting it and trying an older one",
                      directory, step, errors[-1])
      shutil.rmtree(os.path.join(directory, str(step)), ignore_errors=True)
      manager.reload()
  raise CorruptCheckpointError(
      f"no readable checkpoint in {directory} ({'; '.join(errors)}); delete that directory to "
      "train this model again from scratch")


# ----------------------------------------------------------------------------------------------
# The loop.


def fit(state: TrainState, batch_fn: Callable[[int], dict[str, np.ndarray]], num_steps: int, *,
        name: str, mesh: jax.sharding.Mesh, seed: int, checkpoint_dir: str | None = None,
        checkpoint_every: int = 500, log_every: int = 50,
        writer: MetricWriter | None = None, step_fn: Callable | None = None,
        batch_axis: int = 0, steps_per_call: int = 1,
        multi_step_fn: Callable | None = None) -> tuple[TrainState, dict[str, Any]]:
  """Runs `num_steps` train steps, batch `batch_fn(step)` at each, resuming from checkpoints.

  Every host batch is padded with weight-0 rows to a multiple of the device count
  (`pipeline.mesh_batches`), so a step must give rows of weight 0 (every `weight` and
  `*_weight` field) no influence on the update.

  Args:
    state: the initial state (its step is ignored when a checkpoint is restored).
    batch_fn: maps a global step to a host batch (image uint8, label, weight).
    num_steps: total number of steps; a checkpoint at this step means the run is complete.
    name: label of the run in logs and metrics (e.g. 'original/seed_0').
    mesh: the device mesh; batches are split along it.
    seed: base seed of the per-step randomness (`fold_in(key, step)`).
    checkpoint_dir: orbax directory; None disables checkpointing.
    checkpoint_every: steps between checkpoints (a final one is always written).
    log_every: steps between progress lines, finite checks and metric records.
    writer: JSONL metric writer.
    step_fn: `(state, batch, base_key) -> (state, metrics)` with a scalar `metrics['loss']`;
      default `jit_train_step`. Methods with their own update pass a jitted step here, binding
      extra arrays (e.g. a teacher's parameters) with functools.partial so they stay arguments.
    batch_axis: the axis of a host batch split across the mesh (an ensemble's stacked batches,
      (members, batch, ...), pass 1).
    steps_per_call: run up to this many steps per call of `multi_step_fn`, on the host
      batches of those steps stacked along a new leading axis and split across the mesh along
      `batch_axis + 1` (see `train_steps`). A call never
      spans a logging or checkpoint step, so results, logs, checkpoints and resumption are those
      of one step per call; steps left over before such a boundary run one at a time.
    multi_step_fn: `(state, stacked_batches, base_key) -> (state, metrics)` with metrics of a
      leading steps axis; default `jit_train_steps` when `step_fn` is the default.

  Returns:
    The final state and info: steps run now, wall time, examples/s, final loss, resumed step.

  Raises:
    ValueError: `steps_per_call` > 1 with a custom `step_fn` but no `multi_step_fn`.
    DivergedError: naming the first step whose loss was not finite.
    preemption.Preempted: after SIGTERM (see unlearn_jax/preemption.py), once the state of
      the current step is checkpointed.
    CorruptCheckpointError: when no checkpoint in `checkpoint_dir` reads back.
  """
  steps_per_call = max(int(steps_per_call), 1)
  if steps_per_call > 1:
    if step_fn is not None and multi_step_fn is None:
      raise ValueError("fit: steps_per_call > 1 with a custom step_fn needs a multi_step_fn "
                       "(the update scanned over stacked batches)")
    multi_step_fn = multi_step_fn or jit_train_steps
  manager = checkpoint_manager(checkpoint_dir) if checkpoint_dir else None
  try:
    start = 0
    if manager is not None and manager.latest_step() is not None:
      state = restore_latest_readable(manager, state)
      start = step_of(state)
      logging.info("[%s] resumed from checkpoint at step %d/%d", name, start, num_steps)
    info = {"steps": num_steps, "resumed_at": start, "steps_run": num_steps - start}
    if start >= num_steps:
      info.update(wall_s=0.0, examples_per_s=0.0)
      return state, info
    # A copy: the step donates its input, and the caller's state (e.g. the original model an
    # unlearning method starts from) must survive.
    state = parallel.replicate(state, mesh, copy=True)
    loop = _Loop(name, num_steps, start, mesh, jax.random.key(seed), step_fn or jit_train_step,
                 batch_axis, manager, checkpoint_every, log_every, writer,
                 steps_per_call=steps_per_call, multi_step_fn=multi_step_fn)
    # Batches padded with weight-0 rows to a multiple of the device count: any batch size on
    # any mesh, with the real rows of each step that one device would see.
    state = loop.run(state, pipeline.mesh_batches(batch_fn, mesh, batch_axis))
    info.update(wall_s=loop.wall_s, examples_per_s=loop.examples / max(loop.wall_s, 1e-9),
                final_loss=loop.last_loss)
    return state, info
  finally:
    if manager is not None:  # also on errors: pending saves finish, orbax threads stop
      manager.wait_until_finished()
      manager.close()


@dataclasses.dataclass
class _Loop:
  """The step loop of `fit`: steps, finite checks, checkpoints, preemption and progress."""
  name: str
  num_steps: int
  start: int
  mesh: jax.sharding.Mesh
  base_key: jax.Array
  step_fn: Callable
  batch_axis: int
  manager: ocp.CheckpointManager | None
  checkpoint_every: int
  log_every: int
  writer: MetricWriter | None
  steps_per_call: int = 1
  multi_step_fn: Callable | None = None
  last_loss: float = float("nan")
  last_metrics: dict = dataclasses.field(default_factory=dict)
  examples: int = 0
  wall_s: float = 0.0

  def run(self, state: TrainState, batch_fn: Callable[[int], dict]) -> TrainState:
    pending: list[tuple[int, dict[str, jax.Array]]] = []
    t0 = last_time = time.perf_counter()
    last_examples = 0
    step = self.start
    while step < self.num_steps:
      count = self._steps_in_call(step)
      if count == 1:
        host_batch = batch_fn(step)
        state, metrics = self.step_fn(
            state, parallel.global_batch(host_batch, self.mesh, axis=self.batch_axis),
            self.base_key)
      else:
        host_batches = [batch_fn(s) for s in range(step, step + count)]
        host_batch = {key: np.stack([b[key] for b in host_batches]) for key in host_batches[0]}
        state, metrics = self.multi_step_fn(
            state, parallel.global_batch(host_batch, self.mesh, axis=self.batch_axis + 1),
            self.base_key)
      pending.append((step, metrics))
      # All members' examples for an ensemble (weight is (members, batch) there).
      self.examples += host_batch["weight" if "weight" in host_batch else "label"].size
      done = step = step + count
      stop = preemption.requested()
      should_log = done % self.log_every == 0 or done == self.num_steps
      should_save = self.manager is not None and (
          done % self.checkpoint_every == 0 or done == self.num_steps or stop)
      if (should_log or should_save) and pending:  # never checkpoint a diverged state
        self.last_loss = _check_finite(self.name, pending)
        self.last_metrics = pending[-1][1]
        pending = []
      if should_save:
        save(self.manager, state)
      if stop:
        raise preemption.Preempted(
            f"[{self.name}] preempted (SIGTERM) after step {done}/{self.num_steps}"
            + ("; checkpoint saved" if self.manager else "; no checkpoint directory"))
      if should_log:
        now = time.perf_counter()
        rate = (self.examples - last_examples) / max(now - last_time, 1e-9)
        self._log(done, rate, eta=(self.num_steps - done) * (now - t0) / (done - self.start),
                  state=state)
        last_time, last_examples = now, self.examples
    self.wall_s = time.perf_counter() - t0
    return state

  def _steps_in_call(self, step: int) -> int:
    """Steps of the call starting at `step`: `steps_per_call`, or 1 where a full call would
    pass the end or run over a logging/checkpoint step (so those happen exactly as with one
    step per call)."""
    count = self.steps_per_call
    if count == 1 or step + count > self.num_steps:
      return 1
    for done in range(step + 1, step + count):
      if done % self.log_every == 0 or (self.manager is not None
                                        and done % self.checkpoint_every == 0):
        return 1
    return count

  def _log(self, done: int, rate: float, eta: float, state: Any = None) -> None:
    logging.info("[%s] step %d/%d (%3.0f%%) loss %.4f  %.0f ex/s  ETA %s", self.name, done,
                 self.num_steps, 100 * done / self.num_steps, self.last_loss, rate,
                 format_seconds(eta))
    if self.writer is not None and getattr(self.writer, "active", True):
      extra = {}
      lr = current_lr(state)
      if lr is not None:
        extra["lr"] = lr
      if "member_loss" in self.last_metrics:  # an ensemble's members (ensemble.py)
        member = np.asarray(jax.device_get(self.last_metrics["member_loss"]), np.float64)
        extra["member_loss"] = member.reshape(-1, member.shape[-1])[-1]
      self.writer.write(run=self.name, step=done, loss=self.last_loss, examples_per_s=rate,
                        **extra)


def current_lr(state: Any) -> float | None:
  """The learning rate of the last update of `state` (`learning_rate` of its optimiser
  state's settings and count; member 0's for an ensemble's stacked state), or None for an
  optimiser that is not `make_optimizer`'s."""
  opt_state = getattr(state, "opt_state", None)
  settings = getattr(opt_state, "hyperparams", None)
  names = ("lr", "total_steps", "cosine", "lr_decay_steps", "lr_decay_rate")
  if not isinstance(settings, dict) or not all(name in settings for name in names):
    return None
  values = jax.device_get({"count": opt_state.count, **{n: settings[n] for n in names}})
  if np.ndim(values["lr"]):  # stacked (members, ...)
    values = {key: np.asarray(value)[0] for key, value in values.items()}
  values = {key: np.asarray(value) for key, value in values.items()}
  count = np.maximum(values.pop("count") - 1, 0)
  return float(learning_rate(count, **values))


def _check_finite(name: str, pending: list[tuple[int, dict[str, jax.Array]]]) -> float:
  """Raises at the first non-finite loss among the pending steps; returns the last loss.

  `pending` holds (first step, metrics) per call; a multi-step call's loss has one entry per step.
  """
  per_call = [np.asarray(loss, np.float64).reshape(-1)
              for loss in jax.device_get([m["loss"] for _, m in pending])]
  losses = np.concatenate(per_call)
  steps = np.concatenate([first + np.arange(len(loss))
                          for (first, _), loss in zip(pending, per_call)])
  bad = np.flatnonzero(~np.isfinite(losses))
  if len(bad):
    step = int(steps[bad[0]])
    raise DivergedError(f"[{name}] loss became non-finite ({losses[bad[0]]}) at step "
                        f"{step + 1}; lower the learning rate or check the data", step + 1)
  return float(losses[-1])


def train_from_scratch(init_state: TrainState, data: dict[str, np.ndarray], recipe, seed: int,
                       *, name: str, mesh: jax.sharding.Mesh,
                       checkpoint_dir: str | None = None,
                       writer: MetricWriter | None = None) -> tuple[TrainState, dict[str, Any]]:
  """Trains `init_state` on `data` with the `config.train` recipe (epochs, batch, optimiser).

  Batch order and per-step randomness come from `seed`; everything a reference model
  (original / retrain / clean) needs, and what the `retrain` method runs. A recipe field
  `steps_per_call` (default 1) runs that many steps per call (see `fit`, `train_steps`).
  """
  sampler = pipeline.EpochSampler(data, int(recipe.batch_size), seed)
  num_steps = int(recipe.epochs) * sampler.steps_per_epoch
  state = init_state.with_optimizer(optimizer_from_config(recipe, num_steps))
  return fit(state, sampler.batch, num_steps, name=name, mesh=mesh, seed=seed,
             checkpoint_dir=checkpoint_dir, checkpoint_every=recipe.checkpoint_every,
             log_every=recipe.log_every, writer=writer,
             steps_per_call=int(getattr(recipe, "steps_per_call", 1)))
