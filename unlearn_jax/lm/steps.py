"""Language-model steps: state, answer-only losses, scoring and greedy decoding.

The image track's machinery (`train.TrainState`, `train.fit` with its checkpoints, resume,
finite-loss checks and sharding) runs the language model unchanged; this module supplies what
differs. An example is a row of `tokens` (int32, `[bos] question [sep] answer [eos] [pad=0 ...]`)
with a `loss_mask` that is 1 exactly at the answer and eos positions. The logit at position j-1
predicts token j, so every per-token quantity pairs `logits[:, :-1]` with `tokens[:, 1:]` and is
weighted by `loss_mask[:, 1:]`: the model is trained and scored on answers only, never on the
question it is asked (as in TOFU, Maini et al., COLM 2024).

The training loss is the image track's weighted mean over examples, sum(w·nll_i) / sum(|w|), with
nll_i the mean answer-token negative log-likelihood of example i: weight 1 trains, 0 masks filler
rows and -1 ascends, so fine-tuning and gradient ascent share one compiled step.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unlearn_jax import parallel, train
from unlearn_jax.data import pipeline
from unlearn_jax.utils import MetricWriter

Arrays = dict[str, np.ndarray]
BATCH_KEYS = ("tokens", "loss_mask")


@functools.partial(jax.jit, static_argnums=(0, 2))
def _jit_init(model: flax.linen.Module, rng: jax.Array, max_len: int) -> dict:
  # Static model and length: one compile per model config, however many states are initialised.
  return model.init(rng, jnp.zeros((1, max_len), jnp.int32), train=False)


def create_state(model: flax.linen.Module, rng: jax.Array, max_len: int,
                 tx: optax.GradientTransformation | train.Optimizer | None = None
                 ) -> train.TrainState:
  """Initialises a language model's parameters for sequences of up to `max_len` tokens.

  Args:
    model: a flax module mapping int32 tokens (N, L) to logits (N, L, vocab).
    rng: PRNG key of the initialisation.
    max_len: the sequence length to trace the initialisation with (the model's max_len).
    tx: the optimiser; None gives a no-op one (`with_optimizer` sets the real one).

  Returns:
    A `train.TrainState` at step 0 (no BatchNorm statistics).
  """
  identity = optax.identity()
  state = train.TrainState(step=jnp.zeros((), jnp.int32),
                           params=_jit_init(model, rng, int(max_len))["params"], batch_stats={},
                           opt_state=identity.init(None), apply_fn=model.apply, tx=identity)
  return state if tx is None else state.with_optimizer(tx)


# ----------------------------------------------------------------------------------------------
# Per-token and per-sequence log-likelihoods.


def next_token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """log p(tokens[:, j] | tokens[:, :j]) for j = 1..L-1, from logits (N, L, V): (N, L-1)."""
  return -optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:])


def token_logprobs(apply_fn: Callable, variables: dict, tokens: jax.Array) -> jax.Array:
  """Evaluation-mode log-probability of each next token: (N, L-1), entry j scores token j+1.

  Args:
    apply_fn: the model's apply function.
    variables: its variables ({'params': ...}).
    tokens: int32 (N, L).

  Returns:
    float32 (N, L-1) log-probabilities (unmasked).
  """
  return next_token_logprobs(apply_fn(variables, tokens, train=False), tokens)


def masked_sums(logprobs: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Sum of the answer-token log-probs and the number of answer tokens of each row.

  `logprobs` is (N, L-1) from `next_token_logprobs`; `loss_mask` is the full (N, L) mask.
  """
  mask = loss_mask[:, 1:].astype(jnp.float32)
  return jnp.sum(logprobs * mask, axis=1), jnp.sum(mask, axis=1)


def sequence_logprob(apply_fn: Callable, variables: dict, tokens: jax.Array,
                     loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """log π(answer | question) of each row, and its number of answer tokens.

  Args:
    apply_fn: the model's apply function.
    variables: its variables.
    tokens: int32 (N, L).
    loss_mask: float (N, L), 1 at the answer (and eos) positions.

  Returns:
    (sum over answer tokens of log p, (N,)), (number of answer tokens, (N,)).
  """
  return masked_sums(token_logprobs(apply_fn, variables, tokens), loss_mask)


def mean_nll(logprob_sum: jax.Array, num_tokens: jax.Array) -> jax.Array:
  """Mean answer-token negative log-likelihood per row (0 for a row without answer tokens)."""
  return -logprob_sum / jnp.maximum(num_tokens, 1.0)


# ----------------------------------------------------------------------------------------------
# Training.


def forward(state: train.TrainState, params: Any, tokens: jax.Array,
            rng: jax.Array) -> jax.Array:
  """Train-mode logits (dropout active, keyed by `rng`) of `tokens` under `params`."""
  return state.apply_fn({"params": params}, tokens, train=True, rngs={"dropout": rng})


def lm_loss(params: Any, state: train.TrainState, batch: dict[str, jax.Array],
            rng: jax.Array) -> tuple[jax.Array, dict]:
  """sum(w·nll_i) / sum(|w|) over the rows of `batch` (tokens, loss_mask, weight), and {}.

  nll_i is row i's mean answer-token negative log-likelihood (train mode); the loss is 0 when
  every weight is 0. The empty dict stands for the (absent) BatchNorm updates.
  """
  logits = forward(state, params, batch["tokens"], rng)
  logprob_sum, count = masked_sums(next_token_logprobs(logits, batch["tokens"]),
                                   batch["loss_mask"])
  weights = batch["weight"]
  loss = jnp.sum(weights * mean_nll(logprob_sum, count)) / jnp.maximum(
      jnp.sum(jnp.abs(weights)), 1e-12)
  return loss, {}


def train_step(state: train.TrainState, batch: dict[str, jax.Array],
               base_key: jax.Array) -> tuple[train.TrainState, dict[str, jax.Array]]:
  """One optimiser step on `lm_loss` (the contract of `train.train_step`, for `train.fit`)."""
  rng = jax.random.fold_in(base_key, state.step)
  (loss, updates), grads = jax.value_and_grad(lm_loss, has_aux=True)(
      state.params, state, batch, rng)
  return state.apply_gradients(grads, updates), {"loss": loss,
                                                 "grad_norm": optax.tree.norm(grads)}


jit_train_step = jax.jit(train_step, donate_argnums=0)


def train_from_scratch(init_state: train.TrainState, data: Arrays, recipe, seed: int, *,
                       name: str, mesh: jax.sharding.Mesh, checkpoint_dir: str | None = None,
                       writer: MetricWriter | None = None) -> tuple[train.TrainState, dict]:
  """Trains `init_state` on the token data with a `config.train` recipe (as the image track).

  Args:
    init_state: the freshly initialised state.
    data: arrays with at least `tokens` and `loss_mask`.
    recipe: epochs, batch_size, optimizer, lr, momentum, weight_decay, schedule,
      checkpoint_every, log_every.
    seed: batch order and per-step randomness.
    name: the run's label in logs, metrics and checkpoints.
    mesh: device mesh (the batch is rounded up to a multiple of its size; filler rows weigh 0).
    checkpoint_dir: orbax directory to resume from and save to (None: no checkpoints).
    writer: JSONL metric writer.

  Returns:
    The trained state and `train.fit`'s info (steps, wall_s, examples_per_s, final_loss, ...).
  """
  batch_size = parallel.round_up(int(recipe.batch_size), mesh)
  sampler = pipeline.EpochSampler(data, batch_size, seed, keys=BATCH_KEYS)
  num_steps = int(recipe.epochs) * sampler.steps_per_epoch
  state = init_state.with_optimizer(train.optimizer_from_config(recipe, num_steps))
  return train.fit(state, sampler.batch, num_steps, name=name, mesh=mesh, seed=seed,
                   checkpoint_dir=checkpoint_dir, checkpoint_every=recipe.checkpoint_every,
                   log_every=recipe.log_every, writer=writer, step_fn=jit_train_step)


# ----------------------------------------------------------------------------------------------
# Evaluation: scores and greedy decoding, in padded batches sharded over the mesh.


def padded_batches(data: Arrays, keys: tuple[str, ...],
                   batch_size: int) -> Iterator[tuple[Arrays, int]]:
  """Yields (batch of `keys`, number of real rows) in order; the last batch repeats its last row."""
  num = len(data[keys[0]])
  for start in range(0, num, batch_size):
    rows = np.arange(start, min(start + batch_size, num))
    real = len(rows)
    rows = np.concatenate([rows, np.full(batch_size - real, rows[-1])])
    yield {key: data[key][rows] for key in keys}, real


def _score_batch(apply_fn: Callable, variables: dict, tokens: jax.Array,
                 loss_mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  logprobs = token_logprobs(apply_fn, variables, tokens)
  logprob_sum, count = masked_sums(logprobs, loss_mask)
  return logprobs * loss_mask[:, 1:], logprob_sum, count


_jit_score_batch = jax.jit(_score_batch, static_argnums=0)


def score(state: train.TrainState, data: Arrays, batch_size: int,
          mesh: jax.sharding.Mesh) -> dict[str, np.ndarray]:
  """Answer log-likelihood statistics of every example of `data`, in order.

  Args:
    state: the model.
    data: arrays with `tokens` (N, L) and `loss_mask` (N, L).
    batch_size: examples per evaluation batch (rounded up to the mesh size).
    mesh: device mesh.

  Returns:
    numpy arrays: `nll` (N,) mean answer-token NLL (perplexity = exp(nll)), `logprob_sum` (N,),
    `num_tokens` (N,), and `token_logprobs` (N, L-1), the log-prob of token j+1 in column j at
    answer positions and 0 elsewhere.
  """
  num, length = data["tokens"].shape
  if num == 0:
    empty = np.zeros((0,), np.float32)
    return {"nll": empty, "logprob_sum": empty, "num_tokens": empty,
            "token_logprobs": np.zeros((0, max(length - 1, 0)), np.float32)}
  batch_size = parallel.round_up(min(int(batch_size), num), mesh)
  variables = parallel.replicate(state.variables(), mesh)
  parts: dict[str, list[np.ndarray]] = {"token_logprobs": [], "logprob_sum": [],
                                        "num_tokens": []}
  for batch, real in padded_batches(data, BATCH_KEYS, batch_size):
    batch = parallel.global_batch(batch, mesh)
    # Split over the mesh: gathered from every process (a collective all processes call).
    outputs = parallel.to_host(_jit_score_batch(state.apply_fn, variables, batch["tokens"],
                                                batch["loss_mask"]))
    for key, value in zip(("token_logprobs", "logprob_sum", "num_tokens"), outputs):
      parts[key].append(np.asarray(value, np.float32)[:real])
  result = {key: np.concatenate(value) for key, value in parts.items()}
  result["nll"] = -result["logprob_sum"] / np.maximum(result["num_tokens"], 1.0)
  return result


def _greedy(apply_fn: Callable, max_new_tokens: int, eos_id: int, variables: dict,
            prompts: jax.Array, lengths: jax.Array) -> jax.Array:
  """Greedy continuation of each prompt row inside the (N, W) buffer `prompts`.

  A full forward pass per new token (fixed shapes); a row stops after eos or when its next
  position would fall outside the buffer, and emits pad 0 from then on.
  """
  num, width = prompts.shape
  rows = jnp.arange(num)
  lengths = lengths.astype(jnp.int32)

  def body(step, carry):
    buffer, out, done = carry
    position = lengths + step  # where row i's new token goes
    logits = apply_fn(variables, buffer, train=False)
    # Row i's next token is predicted at its last filled position.
    nxt = jnp.argmax(logits[rows, jnp.minimum(position, width) - 1], axis=-1).astype(jnp.int32)
    done = done | (position >= width)
    nxt = jnp.where(done, 0, nxt)
    buffer = buffer.at[rows, position].set(nxt, mode="drop")
    out = out.at[:, step].set(nxt)
    return buffer, out, done | (nxt == eos_id)

  out = jnp.zeros((num, max_new_tokens), jnp.int32)
  _, out, _ = jax.lax.fori_loop(0, max_new_tokens, body,
                                (prompts.astype(jnp.int32), out, jnp.zeros((num,), bool)))
  return out


def _model_max_len(state: train.TrainState) -> int | None:
  """The `max_len` field of the state's flax module (None when its model has none)."""
  return getattr(getattr(state.apply_fn, "__self__", None), "max_len", None)


_jit_greedy = jax.jit(_greedy, static_argnums=(0, 1, 2))


def generate(state: train.TrainState, prompts: np.ndarray, lengths: np.ndarray,
             max_new_tokens: int, eos_id: int, batch_size: int,
             mesh: jax.sharding.Mesh) -> np.ndarray:
  """Greedy decoding of `max_new_tokens` tokens after each prompt.

  The decoding buffer holds max(lengths) + max_new_tokens positions, capped at the model's
  `max_len` (when its module has that field): a row whose continuation reaches the cap stops
  there, like a row that emits eos.

  Args:
    state: the model.
    prompts: int32 (N, P); row i's prompt (e.g. `[bos] question [sep]`) fills its first
      `lengths[i]` positions, the rest is ignored (overwritten by the continuation).
    lengths: int (N,) prompt lengths, each in [1, P].
    max_new_tokens: tokens to generate per row (at most).
    eos_id: the end-of-sequence token: a row stops after emitting it.
    batch_size: rows per decoding batch (rounded up to the mesh size).
    mesh: device mesh.

  Returns:
    int32 (N, max_new_tokens): the generated tokens, the eos included, and pad 0 after it.

  Raises:
    ValueError: a length outside [1, P] or mismatched shapes.
  """
  prompts = np.asarray(prompts, np.int32)
  lengths = np.asarray(lengths, np.int32)
  if prompts.ndim != 2 or lengths.shape != (prompts.shape[0],):
    raise ValueError(f"generate: prompts must be (N, P) and lengths (N,), got {prompts.shape} "
                     f"and {lengths.shape}")
  num = prompts.shape[0]
  if num == 0:
    return np.zeros((0, max_new_tokens), np.int32)
  if lengths.min() < 1 or lengths.max() > prompts.shape[1]:
    raise ValueError(f"generate: prompt lengths must lie in [1, {prompts.shape[1]}], got "
                     f"[{lengths.min()}, {lengths.max()}]")
  width = int(lengths.max()) + int(max_new_tokens)
  max_len = _model_max_len(state)
  if max_len is not None:
    width = min(width, int(max_len))
  # The buffer: the prompts cut or zero-padded to `width` (only the first lengths[i] count).
  buffer = np.zeros((num, width), np.int32)
  buffer[:, :min(width, prompts.shape[1])] = prompts[:, :width]
  batch_size = parallel.round_up(min(int(batch_size), num), mesh)
  variables = parallel.replicate(state.variables(), mesh)
  outputs = []
  for batch, real in padded_batches({"prompts": buffer, "lengths": lengths},
                                    ("prompts", "lengths"), batch_size):
    batch = parallel.global_batch(batch, mesh)
    tokens = _jit_greedy(state.apply_fn, int(max_new_tokens), int(eos_id), variables,
                         batch["prompts"], batch["lengths"])
    outputs.append(np.asarray(parallel.to_host(tokens), np.int32)[:real])
  return np.concatenate(outputs)
