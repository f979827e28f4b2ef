"""Gradient ascent (GA): maximise the loss on the forget set.

Steps along +∇ of the cross-entropy on T (Thudi et al., EuroS&P 2022; the GA baseline of
Jia et al., NeurIPS 2023). Unbounded by nature, so it is run for few epochs at a small lr. SGD
with momentum 0.9 and the study's weight decay (`common.run_sgd`; 5e-4, as in the authors' code,
OPTML-Group/Unlearn-Sparse unlearn/impl.py), which still pulls the weights towards 0 while the
loss is ascended.
Config: `config.unlearn.grad_ascent.{epochs, lr, batch_size}`.
"""

from __future__ import annotations

import ml_collections

from unlearn_jax import methods
from unlearn_jax.data import pipeline
from unlearn_jax.methods import common

SPEC = methods.Spec(search_space={
    # Passes over T only (a ten-example T: one step each, far below 10% of retrain's cost);
    # the authors' 5 (OPTML-Group/Unlearn-Sparse README) inside.
    "epochs": methods.Int(1, 20, log=True),
    # The authors' 1e-4 (Unlearn-Sparse README, 5 epochs) up to the default 0.01 and past it.
    "lr": methods.Float(1e-5, 1e-1, log=True),
})


def default_config() -> ml_collections.ConfigDict:
  """GA hyper-parameters: few epochs at a small lr, as GA diverges when run long."""
  config = ml_collections.ConfigDict()
  config.epochs = 5  # passes over the forget set.
  config.lr = 0.01  # constant SGD learning rate (momentum 0.9).
  config.batch_size = 128  # forget examples per step (capped at |forget|).
  return config


def unlearn(state, run, cfg, rng):
  """Runs `epochs` passes over `run.forget` with weight -1 (ascent) and SGD at `lr`."""
  del rng
  batch_size = min(int(cfg.batch_size), len(run.forget["label"]))
  sampler = pipeline.EpochSampler(run.forget, batch_size, run.seed, weight=-1.0)
  num_steps = int(cfg.epochs) * sampler.steps_per_epoch
  return common.run_sgd(state, sampler.batch, num_steps, cfg.lr, run, "grad_ascent", run.recipe)
