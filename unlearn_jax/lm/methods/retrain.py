"""Exact unlearning for the language model: train a fresh model on the retained data.

The gold standard of conventional unlearning (and, in a study, the `retrain` reference model):
`run.init_state(rng)` trained on `run.retain` with the study's `config.train` recipe
(`run.recipe`) and seed, exactly as the original model was trained on all of D.
"""

from __future__ import annotations

import ml_collections

from unlearn_jax import methods
from unlearn_jax.lm import steps


# In a study this method's model is the `retrain` reference: the study reports that model.
SPEC = methods.Spec(reference="retrain")


def default_config() -> ml_collections.ConfigDict:
  """No own hyper-parameters: retraining uses the study's `config.train` recipe."""
  return ml_collections.ConfigDict()


def unlearn(state, run, cfg, rng):
  """Discards `state` and trains `run.recipe.epochs` epochs on `run.retain` from `rng`."""
  del state, cfg
  return steps.train_from_scratch(run.init_state(rng), run.retain, run.recipe, run.seed,
                                  name=f"retrain/seed_{run.seed}", mesh=run.mesh,
                                  checkpoint_dir=run.checkpoint_dir, writer=run.writer)
