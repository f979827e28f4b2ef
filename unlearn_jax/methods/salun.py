"""SalUn: random-label unlearning restricted to the weights salient for the forget set.

Fan, Liu, Zhang, Wei, Wong & Liu, "SalUn: Empowering Machine Unlearning via Gradient-based
Weight Saliency", ICLR 2024. Two stages:

1. Saliency mask. s = |∇θ L_forget(θ_original)|, the magnitude of the gradient of the forget
   loss at the trained parameters; the mask keeps the `mask_ratio` fraction of weights with the
   largest saliency, ranked *globally* over all parameter tensors (the authors' default keeps
   half of the weights, mask_ratio = 0.5).
2. Random labelling (as in `random_label`: one shuffled pass over the retained data and the
   randomly relabelled forget examples, each forget example once per pass) where only masked
   weights move.

Details from the authors' code (github.com/OPTML-Group/Unlearn-Saliency, Classification/
generate_mask.py `save_gradient_ratio`, unlearn/RL.py): the saliency is the gradient of the
*negated* batch-mean cross-entropy in eval mode, summed over forget batches (one batch when the
forget set fits, as here; the sign is irrelevant after |·|); the threshold is a global rank cut
keeping int(N·ratio) weights; the update masks the gradients, and their latest code also resets
masked-out weights after each step so that weight decay and momentum cannot move them. Here the
masked step applies new = where(mask, θ + update, θ), so unmasked weights stay bit-identical
whatever the optimiser (weight decay included: the study's 5e-4, as the authors' optimiser).
Their RL step draws random labels over all classes; on CIFAR-100 and TinyImageNet it trains on
one shuffled concatenation of the relabelled forget set and the retain set, on CIFAR-10 it runs
the forget batches before the retain batches; either way each forget example is used once per
epoch. Here the batches are `random_label`'s (`sampling`, `label_draw`: by default the shuffled
concatenation and labels over all classes). Per-example gradients come from
`common.per_example_grad_sum` (their sum ranks weights exactly like the batch mean).

Defaults and cost: the authors run 10 epochs of RL (CIFAR-10, lr 0.1 in their README); here the
budget is 0.75 of a pass over R ∪ T (one pass plus the saliency computation measured 0.12 ×
retrain on the default study, over the 10% budget) at random_label's lr 0.01; a partial pass keeps
every forget example (see `random_label`). Config: `config.unlearn.salun`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from unlearn_jax import config as config_lib
from unlearn_jax import methods, parallel, train
from unlearn_jax.methods import common
from unlearn_jax.methods import random_label


# `epochs` may be a fraction of a pass over R ∪ T.
SPEC = methods.Spec(
    fractional_epochs=True,
    search_space={
        # Passes over R ∪ T, at most the default's (one pass and the saliency measured 0.12 ×
        # retrain; the authors' 10 epochs are past the 10% budget).
        "epochs": methods.Float(0.25, 0.75),
        # The authors' lrs: 0.013 (Unlearn-Saliency Classification/README.md) and 0.1.
        "lr": methods.Float(1e-3, 1e-1, log=True),
        # The authors' masks keep 0.1-0.5 (generate_mask.py threshold_list; default 0.5).
        "mask_ratio": methods.Float(0.1, 0.9),
    })


def default_config() -> ml_collections.ConfigDict:
  """SalUn hyper-parameters (Fan et al., ICLR 2024, and their code)."""
  config = ml_collections.ConfigDict()
  config.epochs = 0.75  # passes over R ∪ T (the authors: 10; ≤10% of retrain's cost).
  config.lr = 0.01  # constant SGD learning rate (momentum 0.9), as `random_label`.
  config.batch_size = 128  # examples per step ('every_batch': retain examples per step).
  config.sampling = "mixed"  # as random_label: 'mixed' (authors) or 'every_batch'.
  config.label_draw = "any"  # as random_label: 'any' class (authors) or 'other' classes.
  config.forget_batch_size = 16  # 'every_batch' only: relabelled forget examples per step.
  config.mask_ratio = 0.5  # fraction of weights updated, the most salient (authors: 0.5).
  config.chunk_size = 64  # examples per vmap(grad) chunk of the saliency; bounds memory.
  return config


def check_config(cfg: ml_collections.ConfigDict) -> None:
  """mask_ratio must lie in (0, 1]; sampling and label_draw as in `random_label`."""
  config_lib.require_number("unlearn.salun.mask_ratio", cfg.mask_ratio, low=0, high=1,
                            low_open=True)
  random_label.check_config(cfg, "salun")


def saliency_mask(state: train.TrainState, forget: dict[str, np.ndarray], mask_ratio: float,
                  chunk_size: int) -> tuple[dict, float, float]:
  """The 0/1 float32 mask of the int(N·mask_ratio) weights with the largest |∇θ L_forget|.

  Returns the mask (a pytree shaped like `state.params`), the saliency threshold (the smallest
  saliency kept) and the fraction of weights with non-zero saliency. Ties are broken by parameter
  order, so exactly int(N·ratio) weights are kept. When the forget examples are memorised their
  softmax saturates and many gradients are exactly 0; a threshold of 0 then means the mask holds
  every weight with non-zero saliency plus zero-saliency weights taken in parameter order.
  """
  # A sum over examples of replicated parameters: replicated, so every process can fetch it.
  grads = jax.device_get(common.per_example_grad_sum(state, forget, chunk_size))
  leaves, treedef = jax.tree.flatten(grads)
  saliency = np.concatenate([np.abs(np.asarray(leaf, np.float32)).ravel() for leaf in leaves])
  keep = int(len(saliency) * mask_ratio)
  order = np.argsort(-saliency, kind="stable")
  flat_mask = np.zeros(len(saliency), np.float32)
  flat_mask[order[:keep]] = 1.0
  threshold = float(saliency[order[keep - 1]]) if keep else float("inf")
  masks, start = [], 0
  for leaf in leaves:
    masks.append(flat_mask[start:start + leaf.size].reshape(leaf.shape))
    start += leaf.size
  return jax.tree.unflatten(treedef, masks), threshold, float(np.mean(saliency > 0))


def masked_train_step(state: train.TrainState, batch: dict[str, jax.Array], base_key: jax.Array,
                      *, mask) -> tuple[train.TrainState, dict[str, jax.Array]]:
  """`train.train_step` whose gradients and updates touch only weights with mask 1."""
  rng = jax.random.fold_in(base_key, state.step)
  (loss, updates), grads = jax.value_and_grad(train.weighted_loss, has_aux=True)(
      state.params, state, batch, rng)
  grads = jax.tree.map(jnp.multiply, grads, mask)
  param_updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = jax.tree.map(lambda p, u, m: jnp.where(m > 0, p + u, p), state.params,
                        param_updates, mask)
  state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                        batch_stats=updates.get("batch_stats", state.batch_stats))
  return state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}


jit_masked_train_step = jax.jit(masked_train_step, donate_argnums=0)


def unlearn(state, run, cfg, rng):
  """Builds the saliency mask, then random-label unlearning on the masked weights only."""
  del rng  # batch order and random labels come from run.seed
  mask, threshold, nonzero = saliency_mask(state, run.forget, float(cfg.mask_ratio),
                                           int(cfg.chunk_size))
  batch_fn, num_steps = random_label.relabelled_batches(run, cfg)
  device_mask = parallel.replicate(mask, run.mesh)
  step_fn = functools.partial(jit_masked_train_step, mask=device_mask)
  state, info = common.run_sgd(state, batch_fn, num_steps, cfg.lr, run, "salun", run.recipe,
                               step_fn=step_fn)
  num_masked = int(sum(m.sum() for m in jax.tree.leaves(mask)))
  info.update(mask_fraction=num_masked / sum(m.size for m in jax.tree.leaves(mask)),
              num_masked=num_masked, saliency_threshold=threshold,
              saliency_nonzero_fraction=nonzero)
  return state, info
