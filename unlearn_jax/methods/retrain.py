"""Exact unlearning: train a fresh model on the retained data with the study's recipe.

The gold standard of conventional unlearning. In a study its result is the `retrain` reference
model, so the study reuses that model rather than training it twice.
"""

from __future__ import annotations

import ml_collections

from unlearn_jax import train


def default_config() -> ml_collections.ConfigDict:
  """No own hyper-parameters: retraining uses the study's `config.train` recipe."""
  return ml_collections.ConfigDict()


def unlearn(state, data, config, rng):
  """Discards `state` and trains `config.train.epochs` epochs on `data.retain` from `rng`."""
  del state
  return train.train_from_scratch(data.init_state(rng), data.retain, config.train, data.seed,
                                  name=f"retrain/seed_{data.seed}", mesh=data.mesh,
                                  checkpoint_dir=data.checkpoint_dir, writer=data.writer)
