"""Pieces shared by the LM unlearning methods: the forget/retain objective step and its driver.

TOFU-style unlearning (Maini et al., COLM 2024; NPO, Zhang et al., COLM 2024; SimNPO, Fan et al.,
2024) pairs every forget batch with a retain batch and minimises

    forget_weight · mean_i ℓ_forget(i)  +  retain_weight · mean_j ℓ_retain(j)

over one optimiser (AdamW in the sources). The forget term is one of

    ascent:  -nll_i                                  (gradient ascent on the mean answer NLL)
    npo:     (2/β)·softplus(β·(log π_θ(y|x) - log π_ref(y|x)))              (NPO)
    simnpo:  (2/β)·softplus((β/|y|)·log π_θ(y|x) + γ)                       (SimNPO)

(-(2/β)·log σ(-z) = (2/β)·softplus(z), the papers' forms), and the retain term is the mean answer
NLL (`nll`) or the mean over answer positions of KL(π_ref ‖ π_θ) of the next-token distributions
(`kl`); π_ref is the frozen starting model. log π(y|x) sums the answer-token log-probs (the
`get_batch_loss` sums of the NPO and SimNPO reference code).

Both halves travel as one batch (forget rows, then retain rows) so one forward pass serves both;
each row carries its share of every term (`<term>_share`: the term's weight / the number of real
rows of its half, 0 on filler rows and for the other terms), so the step's loss is exactly the
objective, and the methods differ in data only (one compiled step serves them all, two when the
reference model is needed).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unlearn_jax import parallel, train
from unlearn_jax.data import pipeline
from unlearn_jax.lm import steps

FORGET_LOSSES = ("ascent", "npo", "simnpo")
RETAIN_LOSSES = ("nll", "kl")
TERMS = FORGET_LOSSES + RETAIN_LOSSES
REF_TERMS = ("npo", "kl")  # the terms that need the reference model's forward pass


def npo_loss(logprob: jax.Array, ref_logprob: jax.Array, beta: float) -> jax.Array:
  """Per-example NPO loss -(2/β)·log σ(-β·(log π_θ(y|x) - log π_ref(y|x))).

  Zhang, Lin, Bai & Mei, "Negative Preference Optimization", COLM 2024, Eq. 3 (the forget term;
  its mean over the forget set is the NPO objective). As β → 0 it tends to the gradient-ascent
  loss log π_θ - log π_ref, and it is bounded below by 0 as log π_θ → -∞.

  Args:
    logprob: log π_θ(y|x) per example (answer-token log-probs summed).
    ref_logprob: log π_ref(y|x) of the reference (starting) model.
    beta: inverse temperature β > 0.

  Returns:
    The per-example losses (same shape as `logprob`).
  """
  return (2.0 / beta) * jax.nn.softplus(beta * (logprob - ref_logprob))


def simnpo_loss(logprob: jax.Array, num_tokens: jax.Array, beta: float,
                gamma: float) -> jax.Array:
  """Per-example SimNPO loss -(2/β)·log σ(-(β/|y|)·log π_θ(y|x) - γ).

  Fan, Liu, Lin, Jia, Zhang, Mei & Liu, "Simplicity Prevails: Rethinking Negative Preference
  Optimization for LLM Unlearning", 2024 (arXiv 2410.07163), the SimNPO objective: NPO without a
  reference model and with the length-normalised reward (β/|y|)·log π_θ(y|x) and margin γ.
  The authors' code writes the margin as β·(nll/|y| - γ'), i.e. γ = β·γ'; both are 0 by default.

  Args:
    logprob: log π_θ(y|x) per example (answer-token log-probs summed).
    num_tokens: |y|, the number of answer tokens per example (> 0).
    beta: inverse temperature β > 0.
    gamma: reward margin γ >= 0.

  Returns:
    The per-example losses.
  """
  return (2.0 / beta) * jax.nn.softplus(beta * logprob / jnp.maximum(num_tokens, 1.0) + gamma)


def answer_kl(ref_logits: jax.Array, logits: jax.Array, loss_mask: jax.Array) -> jax.Array:
  """Per-row mean over answer positions of KL(softmax(ref_logits) ‖ softmax(logits)).

  Both logits are (N, L, V) for the same tokens; position j-1 is counted when loss_mask[:, j].
  """
  ref_logp = jax.nn.log_softmax(ref_logits[:, :-1])
  logp = jax.nn.log_softmax(logits[:, :-1])
  kl = jnp.sum(jnp.exp(ref_logp) * (ref_logp - logp), axis=-1)
  mask = loss_mask[:, 1:].astype(jnp.float32)
  return jnp.sum(kl * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)


def objective_parts(logits: jax.Array, ref_logits: jax.Array | None,
                    batch: dict[str, jax.Array], beta: jax.Array | float,
                    gamma: jax.Array | float) -> dict[str, jax.Array]:
  """Σ_rows share·ℓ_term for every term of TERMS (all but REF_TERMS when `ref_logits` is None).

  Args:
    logits: (N, L, V) logits of the model being unlearned on batch['tokens'].
    ref_logits: (N, L, V) logits of π_ref on the same tokens, or None.
    batch: tokens (N, L), loss_mask (N, L) and `<term>_share` (N,) for the terms computed.
    beta, gamma: NPO / SimNPO hyper-parameters.

  Returns:
    {term: weighted sum over rows}; the objective is the sum of the values.
  """
  tokens, loss_mask = batch["tokens"], batch["loss_mask"]
  logprob, count = steps.masked_sums(steps.next_token_logprobs(logits, tokens), loss_mask)
  nll = steps.mean_nll(logprob, count)
  terms = {"ascent": -nll, "simnpo": simnpo_loss(logprob, count, beta, gamma), "nll": nll}
  if ref_logits is not None:
    ref_logprob, _ = steps.masked_sums(steps.next_token_logprobs(ref_logits, tokens), loss_mask)
    terms["npo"] = npo_loss(logprob, ref_logprob, beta)
    terms["kl"] = answer_kl(ref_logits, logits, loss_mask)
  # jnp.where: a row whose share is 0 contributes exactly 0, even if its term is not finite.
  return {name: jnp.sum(jnp.where(batch[f"{name}_share"] != 0,
                                  batch[f"{name}_share"] * value, 0.0))
          for name, value in terms.items()}


def objective_step(state: train.TrainState, batch: dict[str, jax.Array], base_key: jax.Array,
                   *, ref_params: Any, beta: jax.Array, gamma: jax.Array,
                   use_ref: bool) -> tuple[train.TrainState, dict[str, jax.Array]]:
  """One optimiser step on Σ_rows Σ_terms share·ℓ_term over the rows of `batch`.

  Which terms a method optimises is data, not code: every row carries one share per term of
  TERMS (`<term>_share`, 0 where the term does not apply), so methods with equal `use_ref` share
  one compiled step. The reference model's forward pass runs only when `use_ref`.

  Args:
    state: the model being unlearned.
    batch: tokens, loss_mask, and the share of every term of TERMS (weight is ignored).
    base_key: base key of the dropout randomness (folded with the step).
    ref_params: parameters of the frozen reference model π_ref (NPO's reference, KL's teacher).
    beta, gamma: NPO / SimNPO hyper-parameters (arrays, so new values need no recompilation).
    use_ref: whether π_ref is evaluated (the npo and kl terms need it; their shares must be 0
      otherwise).

  Returns:
    The new state and metrics: loss, forget_loss and retain_loss (the weighted forget and
    retain terms), and grad_norm.
  """
  rng = jax.random.fold_in(base_key, state.step)
  tokens = batch["tokens"]
  ref_logits = None
  if use_ref:
    ref_logits = jax.lax.stop_gradient(
        state.apply_fn({"params": ref_params}, tokens, train=False))

  def loss_fn(params):
    parts = objective_parts(steps.forward(state, params, tokens, rng), ref_logits, batch, beta,
                            gamma)
    return sum(parts.values()), parts

  (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  forget = sum(value for name, value in parts.items() if name in FORGET_LOSSES)
  retain = sum(value for name, value in parts.items() if name in RETAIN_LOSSES)
  return state.apply_gradients(grads), {"loss": loss, "forget_loss": forget,
                                        "retain_loss": retain,
                                        "grad_norm": optax.tree.norm(grads)}


jit_objective_step = jax.jit(objective_step, donate_argnums=0, static_argnames=("use_ref",))


def with_shares(batch: dict[str, np.ndarray], term: str | None,
                total: float) -> dict[str, np.ndarray]:
  """Adds a `<t>_share` column for every term t of TERMS: `total` split equally over the real
  rows (weight != 0) for `term`, 0 for the others (and for every term when `term` is None)."""
  real = (batch["weight"] != 0).astype(np.float32)
  share = (total * real / max(float(real.sum()), 1.0)).astype(np.float32)
  for name in TERMS:
    batch[f"{name}_share"] = share if name == term else np.zeros_like(share)
  return batch


def batch_size_for(requested: int, num: int, mesh: jax.sharding.Mesh) -> int:
  """min(requested, num) rounded up to a multiple of the mesh size (filler rows weigh 0)."""
  return parallel.round_up(max(1, min(int(requested), int(num))), mesh)


def optimizer(cfg) -> optax.GradientTransformation:
  """AdamW at a constant `cfg.lr` with decoupled weight decay `cfg.weight_decay`.

  The project's optimiser (`train.make_optimizer`): its settings live in the optimiser state,
  so every such run shares the training recipe's compiled step.
  """
  return train.make_optimizer("adamw", float(cfg.lr), weight_decay=float(cfg.weight_decay))


def fit(state: train.TrainState, batch_fn, num_steps: int, tx: optax.GradientTransformation,
        run, name: str, recipe, step_fn=None) -> tuple[train.TrainState, dict]:
  """Runs `num_steps` steps from `state` with a fresh optimiser `tx` through `train.fit`.

  `run` (a `methods.RunContext`) gives the seed, mesh, checkpoint directory and metric writer,
  `recipe` (the track's training recipe, `run.recipe`) the checkpoint and log intervals.
  Progress, finite-loss checks (DivergedError) and checkpoints come from `train.fit`.
  """
  state = state.with_optimizer(tx)
  return train.fit(state, batch_fn, num_steps, name=f"{name}/seed_{run.seed}",
                   mesh=run.mesh, seed=run.seed, checkpoint_dir=run.checkpoint_dir,
                   checkpoint_every=recipe.checkpoint_every,
                   log_every=recipe.log_every, writer=run.writer,
                   step_fn=step_fn or steps.jit_train_step)


def run_objective(state: train.TrainState, run, cfg, name: str, *, forget_loss: str,
                  retain_loss: str, forget_weight: float, retain_weight: float,
                  beta: float = 1.0, gamma: float = 0.0) -> tuple[train.TrainState, dict]:
  """Runs `cfg.epochs` passes over the forget set with the paired objective (`cfg`: the
  method's `config.unlearn.<name>`, with epochs, batch_size, lr and weight_decay).

  Each step pairs `batch_size` forget rows (at most |forget|) with `batch_size` retain rows (at
  most |retain|), as TOFU pairs forget and retain batches; the retain sampler walks through the
  retained data at its own pace. π_ref is the starting `state`.

  Raises:
    ValueError: an unknown term.
  """
  if forget_loss not in FORGET_LOSSES or retain_loss not in RETAIN_LOSSES:
    raise ValueError(f"forget_loss={forget_loss!r} / retain_loss={retain_loss!r}: must be in "
                     f"{FORGET_LOSSES} / {RETAIN_LOSSES}")
  forget = pipeline.EpochSampler(
      run.forget, batch_size_for(cfg.batch_size, len(run.forget["tokens"]), run.mesh),
      run.seed + 1, keys=steps.BATCH_KEYS)
  retain = pipeline.EpochSampler(
      run.retain, batch_size_for(cfg.batch_size, len(run.retain["tokens"]), run.mesh),
      run.seed, keys=steps.BATCH_KEYS)

  def batch_fn(step: int) -> dict[str, np.ndarray]:
    return pipeline.concat(with_shares(forget.batch(step), forget_loss, forget_weight),
                           with_shares(retain.batch(step), retain_loss, retain_weight))

  num_steps = forget.steps_for(cfg.epochs)
  # π_ref: a replicated copy of the starting parameters (fit donates only the state it copies).
  ref_params = parallel.replicate(state.params, run.mesh, copy=True)
  step_fn = functools.partial(jit_objective_step, ref_params=ref_params,
                              beta=jnp.float32(beta), gamma=jnp.float32(gamma),
                              use_ref=forget_loss in REF_TERMS or retain_loss in REF_TERMS)
  state, info = fit(state, batch_fn, num_steps, optimizer(cfg), run, name, run.recipe,
                    step_fn=step_fn)
  info.update(forget_weight=float(forget_weight), retain_weight=float(retain_weight))
  return state, info
