"""ℓ1-sparse unlearning: fine-tune on the retained data with a decaying ℓ1 penalty.

Jia, Liu, Ram, Yao, Liu, Liu, Sharma & Liu, "Model Sparsity Can Simplify Machine Unlearning",
NeurIPS 2023 ("sparsity-aware unlearning"). The objective is

    CE(retain batch) + gamma_t · ||θ||_1,

where the paper's point is that the sparsity prior helps fine-tuning forget, and that gamma_t
should *decrease* over the run (strong sparsity pressure first, plain fine-tuning at the end).
Details from the authors' code (github.com/OPTML-Group/Unlearn-Sparse, unlearn/FT.py: `FT_l1`,
`l1_regularization`): the norm covers every parameter (biases included), and the weight decays
linearly per *epoch*, gamma·(1 - e/E) for epoch e of E. This module decays it per *step*,
gamma·(1 - t/T) for step t of T, so that the schedule still exists when the run is a single epoch
(with the per-epoch rule one epoch would be a constant penalty).

Their optimiser is SGD with momentum 0.9 and weight decay 5e-4 (unlearn/impl.py, arg_parser.py);
here the weight decay is the study's `config.train.weight_decay` (5e-4 by default).

How it runs here: the penalty's (sub)gradient gamma_t·sign(θ) and the weight decay wd·θ are added
to the cross-entropy gradient, in that order, before SGD (the order of torch's SGD), by the
optimiser's `l1` term and weight decay (`train.make_optimizer`; gamma and T live in the optimiser
state), so the shared weighted cross-entropy step runs unchanged; the logged loss is the
cross-entropy, and `info` reports ||θ||_1 before and after.

Defaults and cost: the authors fine-tune for 10 epochs at lr 0.01 and tune gamma per setting.
Here: 0.6 of an epoch at lr 0.01 with momentum 0.9 (measured on the default study: one epoch
plus the penalty and compilation cost 0.11 × retrain, over the 10% budget), and gamma = 5e-4
(our choice): with momentum's ~10× gain and the default study's T = 20 steps, the penalty alone
shrinks each weight by ~10·lr·gamma·T/2 ≈ 1e-3 (a few percent of a typical CNN weight), a
visible sparsity pressure that does not swamp the retain loss. Config: `config.unlearn.l1_sparse`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from unlearn_jax import config as config_lib
from unlearn_jax import methods, train
from unlearn_jax.data import pipeline
from unlearn_jax.methods import common


# `epochs` may be a fraction of a pass over the retained data.
SPEC = methods.Spec(
    fractional_epochs=True,
    search_space={
        # Passes over R: one epoch measured 0.11 × retrain, so at most 0.8 (the authors: 10).
        "epochs": methods.Float(0.25, 0.8),
        # Two decades around the authors' 0.01 (Unlearn-Sparse README, FT_prune).
        "lr": methods.Float(1e-3, 1e-1, log=True),
        # The authors' script's 1e-4 (as rerun in JingWu321/Scissorhands) and our 5e-4.
        "gamma": methods.Float(1e-5, 1e-3, log=True),
    })


def default_config() -> ml_collections.ConfigDict:
  """ℓ1-sparse hyper-parameters (Jia et al., NeurIPS 2023, and their code)."""
  config = ml_collections.ConfigDict()
  config.epochs = 0.6  # passes over the retained data (the authors: 10; ≤10% of retrain's cost).
  config.lr = 0.01  # constant SGD learning rate (the authors: 0.01).
  config.momentum = 0.9  # SGD momentum (the authors' code: 0.9).
  config.gamma = 5e-4  # initial ℓ1 weight (nats per unit of ||θ||_1), decayed linearly to 0.
  config.batch_size = 128  # retain examples per step.
  return config


def check_config(cfg: ml_collections.ConfigDict) -> None:
  """gamma must be ≥ 0 and momentum in [0, 1)."""
  config_lib.require_number("unlearn.l1_sparse.gamma", cfg.gamma, low=0)
  config_lib.require_number("unlearn.l1_sparse.momentum", cfg.momentum, low=0, high=1,
                            high_open=True)


def make_optimizer(lr: float, momentum: float, gamma: float, total_steps: int,
                   weight_decay: float = 0.0) -> train.Optimizer:
  """SGD on the gradient plus gamma_t·sign(θ) (gamma_t = gamma·(1 - t/T), the subgradient of
  gamma_t·||θ||_1) plus weight_decay·θ, in that order (`train.make_optimizer`'s `l1`)."""
  return train.make_optimizer("sgd", lr, total_steps, momentum=momentum,
                              weight_decay=weight_decay, l1=gamma)


def l1_norm(params) -> float:
  """||θ||_1 over every parameter leaf."""
  return float(sum(jnp.sum(jnp.abs(leaf)) for leaf in jax.tree.leaves(params)))


def unlearn(state, run, cfg, rng):
  """Fine-tunes `epochs` passes over `run.retain` with the linearly decaying ℓ1 penalty."""
  del rng  # batch order comes from run.seed
  sampler = pipeline.EpochSampler(run.retain, int(cfg.batch_size), run.seed)
  num_steps = sampler.steps_for(cfg.epochs)
  tx = make_optimizer(float(cfg.lr), float(cfg.momentum), float(cfg.gamma), num_steps,
                      float(run.recipe.weight_decay))
  l1_before = l1_norm(state.params)
  state, info = common.run_sgd(state, sampler.batch, num_steps, cfg.lr, run, "l1_sparse",
                               run.recipe, tx=tx)
  info.update(l1_before=l1_before, l1_after=l1_norm(state.params))
  return state, info
