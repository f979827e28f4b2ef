"""Exact unlearning for the language model: train a fresh model on the retained data.

The gold standard of conventional unlearning (and, in a study, the `retrain` reference model):
`data.init_state(rng)` trained on `data.retain` with the study's `config.train` recipe and
seed, exactly as the original model was trained on all of D.
"""

from __future__ import annotations

import ml_collections

from unlearn_jax.lm import steps


def default_config() -> ml_collections.ConfigDict:
  """No own hyper-parameters: retraining uses the study's `config.train` recipe."""
  return ml_collections.ConfigDict()


def unlearn(state, data, config, rng):
  """Discards `state` and trains `config.train.epochs` epochs on `data.retain` from `rng`."""
  del state
  return steps.train_from_scratch(data.init_state(rng), data.retain, config.train, data.seed,
                                  name=f"retrain/seed_{data.seed}", mesh=data.mesh,
                                  checkpoint_dir=data.checkpoint_dir, writer=data.writer)
