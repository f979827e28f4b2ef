"""Fine-tuning (FT): keep training on the retained data only, hoping T is forgotten on the way.

The fine-tuning baseline of TOFU-style LM unlearning (Maini et al., COLM 2024, "retain-only";
Warnecke et al., NDSS 2023 for the idea): next-token NLL on answers of `run.retain`, AdamW.
Config: `config.unlearn.finetune.{epochs, lr, batch_size, weight_decay}`; `epochs` counts passes
over the retained data and may be a fraction.
"""

from __future__ import annotations

import ml_collections

from unlearn_jax import methods
from unlearn_jax.data import pipeline
from unlearn_jax.lm import defaults as lm_defaults
from unlearn_jax.lm import steps
from unlearn_jax.lm.methods import common

# `epochs` may be a fraction of a pass over the retained data.
SPEC = methods.Spec(
    fractional_epochs=True,
    search_space={
        # Passes over R: 3 cost about 7% of retraining's 40 passes over D.
        "epochs": methods.Float(0.25, 3.0),
        # TOFU's 1e-5 (7B models) to 1e-2; lm/select_lr.py's grid 3e-5..1e-2 chose 1e-3.
        "lr": methods.Float(1e-5, 1e-2, log=True),
    })


def default_config() -> ml_collections.ConfigDict:
  """FT hyper-parameters: a short pass over the retained data at the unlearning lr."""
  config = ml_collections.ConfigDict()
  config.epochs = 1.0  # passes over the retained data (kept to a small share of retraining).
  # Constant AdamW; chosen on held-out targets (lm/defaults.py; sources: 1e-5 on 7B models).
  config.lr = lm_defaults.METHOD_LR["finetune"]
  config.batch_size = 32  # retained examples per step (TOFU: 32 = 4 × 4 accumulation × 2 GPUs).
  config.weight_decay = 0.01  # AdamW decoupled weight decay (TOFU / NPO code: 0.01).
  return config


def unlearn(state, run, cfg, rng):
  """Trains `epochs` passes over `run.retain` on the answer NLL with AdamW at `lr`."""
  del rng  # batch order comes from run.seed
  batch_size = common.batch_size_for(cfg.batch_size, len(run.retain["tokens"]), run.mesh)
  sampler = pipeline.EpochSampler(run.retain, batch_size, run.seed, keys=steps.BATCH_KEYS)
  num_steps = sampler.steps_for(cfg.epochs)
  return common.fit(state, sampler.batch, num_steps, common.optimizer(cfg), run,
                    "finetune", run.recipe)
