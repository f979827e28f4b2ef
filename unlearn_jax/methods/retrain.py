"""Exact unlearning: train a fresh model on the retained data with the study's recipe.

The gold standard of conventional unlearning. In a study its result is the `retrain` reference
model, so the study reuses that model rather than training it twice.
"""

from __future__ import annotations

import ml_collections

from unlearn_jax import methods, train


# In a study this method's model is the `retrain` reference: the study reports that model.
SPEC = methods.Spec(reference="retrain")


def default_config() -> ml_collections.ConfigDict:
  """No own hyper-parameters: retraining uses the study's `config.train` recipe."""
  return ml_collections.ConfigDict()


def unlearn(state, run, cfg, rng):
  """Discards `state` and trains `run.recipe.epochs` epochs on `run.retain` from `rng`."""
  del state, cfg
  return train.train_from_scratch(run.init_state(rng), run.retain, run.recipe, run.seed,
                                  name=f"retrain/seed_{run.seed}", mesh=run.mesh,
                                  checkpoint_dir=run.checkpoint_dir, writer=run.writer)
