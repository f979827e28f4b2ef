"""Gradient ascent (GA): maximise the answer NLL of the forget set.

The GA baseline of LM unlearning (Jang et al., ACL 2023; TOFU, Maini et al., COLM 2024, whose
`grad_ascent` loss is -NLL on forget batches): the LM step with weight -1 on every forget row.
Unbounded, so it is run briefly. Config: `config.unlearn.grad_ascent.{epochs, lr, batch_size,
weight_decay}`; `epochs` counts passes over the forget set.
"""

from __future__ import annotations

import ml_collections

from unlearn_jax import methods
from unlearn_jax.data import pipeline
from unlearn_jax.lm import defaults as lm_defaults
from unlearn_jax.lm import steps
from unlearn_jax.lm.methods import common

SPEC = methods.Spec(search_space={
    # Passes over T only (≤1% of retraining at 20); TOFU's 5 inside.
    "epochs": methods.Int(1, 20, log=True),
    # TOFU's 1e-5 (7B models) to 1e-2; lm/select_lr.py's grid 3e-5..1e-2 chose 3e-4.
    "lr": methods.Float(1e-5, 1e-2, log=True),
})


def default_config() -> ml_collections.ConfigDict:
  """GA hyper-parameters (TOFU: 5 epochs over the forget set, AdamW, weight decay 0.01)."""
  config = ml_collections.ConfigDict()
  config.epochs = 5  # passes over the forget set (TOFU: 5).
  # Constant AdamW; chosen on held-out targets (lm/defaults.py; TOFU: 1e-5 on 7B models).
  config.lr = lm_defaults.METHOD_LR["grad_ascent"]
  config.batch_size = 32  # forget examples per step, capped at |forget| (TOFU: 32).
  config.weight_decay = 0.01  # AdamW decoupled weight decay (TOFU: 0.01).
  return config


def unlearn(state, run, cfg, rng):
  """Runs `epochs` passes over `run.forget` with weight -1 (ascent) and AdamW at `lr`."""
  del rng
  batch_size = common.batch_size_for(cfg.batch_size, len(run.forget["tokens"]), run.mesh)
  sampler = pipeline.EpochSampler(run.forget, batch_size, run.seed, weight=-1.0,
                                  keys=steps.BATCH_KEYS)
  num_steps = sampler.steps_for(cfg.epochs)
  return common.fit(state, sampler.batch, num_steps, common.optimizer(cfg), run,
                    "grad_ascent", run.recipe)
