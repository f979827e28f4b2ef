"""Fine-tuning (FT): continue training on the retained data only.

Catastrophic forgetting of T is the hoped-for effect (Warnecke et al., NDSS 2023; the FT
baseline of Jia et al., NeurIPS 2023). SGD with momentum 0.9 and the study's weight decay
(`common.run_sgd`; 5e-4, as in the authors' code, OPTML-Group/Unlearn-Sparse unlearn/impl.py).
Config: `config.unlearn.finetune.{epochs, lr, batch_size}`.
"""

from __future__ import annotations

import ml_collections

from unlearn_jax import methods
from unlearn_jax.data import pipeline
from unlearn_jax.methods import common


# `epochs` may be a fraction of a pass over the retained data.
SPEC = methods.Spec(
    fractional_epochs=True,
    search_space={
        # Passes over R, at most the default's (kept ≤10% of retrain's cost; the authors' 10
        # epochs are past that budget).
        "epochs": methods.Float(0.25, 1.0),
        # Around Jia et al.'s FT lr (NeurIPS 2023: 0.01-0.1; Unlearn-Sparse README: 0.01).
        "lr": methods.Float(1e-3, 1e-1, log=True),
    })


def default_config() -> ml_collections.ConfigDict:
  """FT hyper-parameters (Jia et al., NeurIPS 2023 run FT for 10 epochs at lr 0.01-0.1)."""
  config = ml_collections.ConfigDict()
  config.epochs = 1.0  # passes over the retained data (kept to ≤10% of retrain's cost).
  config.lr = 0.01  # constant SGD learning rate (momentum 0.9).
  config.batch_size = 128  # examples per step.
  return config


def unlearn(state, run, cfg, rng):
  """Trains `epochs` passes over `run.retain` with SGD at a constant `lr`."""
  del rng  # batch order comes from run.seed
  sampler = pipeline.EpochSampler(run.retain, int(cfg.batch_size), run.seed)
  num_steps = sampler.steps_for(cfg.epochs)
  return common.run_sgd(state, sampler.batch, num_steps, cfg.lr, run, "finetune", run.recipe)
