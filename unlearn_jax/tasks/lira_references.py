"""LiRA's reference models of an image study, trained once per study (docs/design.md §3.5).

The members (`recipe.lira`) come in complementary pairs so that every target is IN for exactly
half of them; `train` trains (or restores) them at once and scores the targets and the held-out
candidates for `evaluator.LiraReferences`.
"""

from __future__ import annotations

import os

from absl import logging

from unlearn_jax import ensemble, recipe
from unlearn_jax.evaluate import evaluator, mia


def train(task) -> evaluator.LiraReferences | None:
  """Trains (or restores) the LiRA reference models of an `ImageTask` and scores the targets and
  the held-out candidates (None when `eval.lira.num_models` is 0)."""
  cfg, sed = task.config.eval.lira, task.sed
  if cfg.num_models == 0:
    return None
  plan = recipe.lira(sed, task.config)
  heldout = plan.heldout_rows
  logging.info("stage: LiRA references (%d models on R + half the target groups and %d "
               "held-out candidates; %s)", cfg.num_models, len(heldout), task.progress.line())
  states, _ = ensemble.train_ensemble(
      task.model, plan.members, task.config.train, image_shape=sed.train["image"].shape[1:],
      mesh=task.mesh, name="lira",
      checkpoint_dir=os.path.join(task.workdir, "checkpoints", plan.folder), writer=task.writer)
  task.progress.done += cfg.num_models
  batch_size = task.config.eval.batch_size
  target_rows = evaluator.split_rows(sed)["target"]
  targets = {"image": sed.train["image"][target_rows], "label": sed.train["label"][target_rows]}
  candidates = {"image": sed.test["image"][heldout], "label": sed.test["label"][heldout]}
  target_logits = ensemble.predict(states, targets, batch_size, task.mesh)
  heldout_logits = ensemble.predict(states, candidates, batch_size, task.mesh)
  return evaluator.LiraReferences(
      target_phi=mia.logit_scaled_confidence(target_logits, targets["label"][None]),
      target_in=plan.target_in, heldout_rows=heldout,
      heldout_phi=mia.logit_scaled_confidence(heldout_logits, candidates["label"][None]),
      heldout_in=plan.heldout_in, fix_variance=bool(cfg.fix_variance), fpr=float(cfg.fpr),
      per_example_min=int(cfg.get("per_example_min", mia.LIRA_PER_EXAMPLE_MIN)))
