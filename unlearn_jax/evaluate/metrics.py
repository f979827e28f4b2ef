"""Per-example behavioural scores, divergences and distances between models, relearn time.

Scores (docs/design.md §3.5): every per-example score the registry declares
(evaluate/registry.py, evaluate/scores/: cross-entropy `loss`, `confidence`, logit `margin`,
`correct`, the predictive `entropy`, ...). Computed in float64 numpy on host from logits that
the study's `predict` computed exactly over padded batches: evaluation sets are small and
exactness matters more than speed here.

`relearn_steps` is the other kind of metric: how many fine-tuning steps on the targets bring
their loss down to a fixed level (`eval.relearn.target_loss`). A model that only hides the
targets (its parameters still close to the original's) relearns them fast; a model that never
saw them needs as long as learning them afresh. The level is one configured loss for every
model, not the original model's own loss on the targets: that is ~1e-7 on the default study, a
level no other model reaches within the cap, so every count but the original's was censored.
The training step and the optimiser come from the caller: evaluation does not import training.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np

from unlearn_jax import parallel
from unlearn_jax.evaluate import registry


def log_softmax(logits: np.ndarray) -> np.ndarray:
  """Numerically stable log-softmax over the last axis."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def example_scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
  """Every per-example score of the registry (loss, confidence, margin, correct, entropy, ...).

  Returns:
    {score: float64 array of shape (N,)}, in the registry's order (evaluate/registry.py).
  """
  return {metric.name: metric.score(logits, labels) for metric in registry.needing("logits")}


def kl_divergence(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
  """Per-example KL(p ‖ q) between the predictive distributions of two models (nats)."""
  log_p, log_q = log_softmax(p_logits), log_softmax(q_logits)
  return np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)


def js_divergence(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
  """Per-example Jensen–Shannon divergence (nats, in [0, ln 2])."""
  log_p, log_q = log_softmax(p_logits), log_softmax(q_logits)
  p, q = np.exp(log_p), np.exp(log_q)
  log_m = np.log(0.5 * (p + q))
  return 0.5 * np.sum(p * (log_p - log_m), axis=-1) + 0.5 * np.sum(q * (log_q - log_m), axis=-1)


def mean_or_nan(values: np.ndarray) -> float:
  """Mean of an array, NaN (reported as undefined) when it is empty."""
  return float(np.mean(values)) if len(values) else float("nan")


def param_distance(params_a: Any, params_b: Any) -> float:
  """Euclidean (L2) distance between two parameter trees of the same structure and shapes.

  Raises:
    ValueError: the trees differ in structure or in a leaf's shape (e.g. a shard ensemble's
      stacked parameters against one model's), instead of broadcasting one against the other.
  """
  named_a = [(jax.tree_util.keystr(path), np.shape(leaf))
             for path, leaf in jax.tree_util.tree_leaves_with_path(params_a)]
  named_b = [(jax.tree_util.keystr(path), np.shape(leaf))
             for path, leaf in jax.tree_util.tree_leaves_with_path(params_b)]
  if [name for name, _ in named_a] != [name for name, _ in named_b]:
    raise ValueError("param_distance: the two parameter trees differ in structure "
                     f"({[n for n, _ in named_a]} vs {[n for n, _ in named_b]})")
  for (name, shape_a), (_, shape_b) in zip(named_a, named_b):
    if shape_a != shape_b:
      raise ValueError(f"param_distance: leaf {name} has shape {shape_a} in one tree and "
                       f"{shape_b} in the other (different architectures, e.g. an ensemble "
                       "against a single model)")
  leaves_a, leaves_b = jax.tree.leaves(params_a), jax.tree.leaves(params_b)
  total = sum(float(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
              for a, b in zip(leaves_a, leaves_b))
  return float(np.sqrt(total))


def _relearn_losses(state, forget: dict[str, np.ndarray], *, optimizer, train_step: Callable,
                    mesh: jax.sharding.Mesh) -> Iterator[float]:
  """The forget set's loss before each full-batch relearning step (the first: before any)."""
  state = jax.device_put(state.with_optimizer(optimizer), parallel.replicated(mesh),
                         may_alias=False)  # the step donates its state: never the caller's
  batch = {"image": forget["image"], "label": forget["label"].astype(np.int32),
           "weight": np.ones(len(forget["label"]), np.float32)}
  batch = jax.device_put(batch, parallel.replicated(mesh))  # forget sets are small
  key = jax.random.key(0)
  while True:  # dispatch a chunk of steps, then fetch their losses at once (one host sync)
    losses = []
    for _ in range(_RELEARN_CHUNK):
      state, step_metrics = train_step(state, batch, key)
      losses.append(step_metrics["loss"])
    yield from (float(loss) for loss in jax.device_get(losses))


# Relearning steps run between two fetches of their losses; the steps after the level is reached
# are computed and discarded (the count is that of the first loss at or below the level).
_RELEARN_CHUNK = 32


def relearn_steps(state, forget: dict[str, np.ndarray], target_loss: float, *, optimizer,
                  train_step: Callable, max_steps: int, mesh: jax.sharding.Mesh) -> int:
  """Full-batch steps on the forget set until its mean loss is <= `target_loss`.

  Args:
    state: the model to fine-tune (a train state with `with_optimizer`; it is not modified).
    forget: the forget set (image uint8, label).
    target_loss: the level in nats (mean train-mode cross-entropy on the forget set, before
      the step's update), the same for every compared model and reachable by all of them
      (the study's `eval.relearn.target_loss`); a model already at or below it needs 0 steps.
    optimizer: what relearning trains with (the study: SGD at `eval.relearn.lr`, no momentum,
      no weight decay).
    train_step: (state, batch, key) -> (state, {'loss': the loss before the update, ...}): the
      study's training step, given by the caller (evaluation does not import training).
    max_steps: the cap.
    mesh: device mesh.

  Returns:
    The number of steps taken before the loss first reached `target_loss` (0 when it already
    does), or `max_steps + 1` when it never did within the cap (reported as censored).
  """
  # A level measured by another compiled loss may differ from the step's in the last bits.
  level = target_loss + 1e-5 * abs(target_loss) + 1e-7
  losses = _relearn_losses(state, forget, optimizer=optimizer, train_step=train_step, mesh=mesh)
  for step, loss in zip(range(max_steps + 1), losses):
    if loss <= level:  # the loss before this step's update
      return step
  return max_steps + 1


def relearn_counts(states: Mapping[str, Any], forget: dict[str, np.ndarray], relearn: Any,
                   mesh: jax.sharding.Mesh, *, optimizer, train_step: Callable) -> dict[str, int]:
  """`relearn_steps` of every model to the one configured level.

  Args:
    states: {model name: train state}.
    forget: the forget set (image uint8, label).
    relearn: the study's `eval.relearn` section (`target_loss` in nats, `max_steps`; `lr` is
      the caller's, in `optimizer`).
    mesh: device mesh.
    optimizer, train_step: as `relearn_steps`'.

  Returns:
    {model name: steps}; 0 for a model already at or below the level, cap + 1 for never.
  """
  return {name: relearn_steps(state, forget, float(relearn.target_loss), optimizer=optimizer,
                              train_step=train_step, max_steps=int(relearn.max_steps),
                              mesh=mesh)
          for name, state in states.items()}


def forget_loss(state, forget: dict[str, np.ndarray], mesh: jax.sharding.Mesh, *, optimizer,
                train_step: Callable) -> float:
  """Mean train-mode loss on the forget set, measured as `relearn_steps` measures it."""
  return next(_relearn_losses(state, forget, optimizer=optimizer, train_step=train_step,
                              mesh=mesh))
