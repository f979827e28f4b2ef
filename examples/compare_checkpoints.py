"""Run one metric on two checkpoints: how far apart are two models on the targets?

Prints, for two models saved by studies (any reference or method checkpoint), the KL divergence
between their predictive distributions on each target (KL(first ‖ second), nats) and each
model's loss-attack AUC (targets against test samples of the targets' classes; 0.5 = the
targets look unseen). The targets come from the first checkpoint's study:

    python -m examples.compare_checkpoints /tmp/study/checkpoints/finetune/seed_0 \\
        /tmp/study/checkpoints/clean/seed_0

The mean KL against `clean` is the study's `kl_to_clean.target`, and each AUC its
`mia_auc.target`: the same functions (`uj.kl_divergence`, `uj.loss_attack_auc`) on the same data.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import unlearn_jax as uj


def workdir_of(checkpoint: str) -> str:
  """WORKDIR of a checkpoint directory WORKDIR/checkpoints/<name>/seed_<seed>."""
  return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(checkpoint))))


def main(first: str, second: str) -> dict:
  """Loads both checkpoints and prints the per-target KL and both loss-attack AUCs.

  Args:
    first: a checkpoint directory WORKDIR/checkpoints/<name>/seed_<seed>.
    second: another one (of a study with the same dataset and targets, e.g. the same study).

  Returns:
    {'kl': per-target KL(first ‖ second) (|T|,), 'auc': (AUC of first, AUC of second)}.
  """
  workdir = workdir_of(first)
  sed = uj.build_sed(uj.read_config(workdir), workdir)
  targets = sed.forget
  # Non-members: test samples of the targets' classes (as the study's attack uses).
  heldout = {key: value[np.isin(sed.test["label"], targets["label"])]
             for key, value in sed.test.items()}
  states = [uj.load_checkpoint(path) for path in (first, second)]
  target_logits = [uj.predict(state, targets) for state in states]
  kl = uj.kl_divergence(target_logits[0], target_logits[1])
  auc = tuple(
      uj.loss_attack_auc(uj.example_scores(logits, targets["label"])["loss"],
                         uj.example_scores(uj.predict(state, heldout), heldout["label"])["loss"])
      for state, logits in zip(states, target_logits))
  print(f"KL(first ‖ second) on {len(kl)} targets: mean {kl.mean():.4f} nats, "
        f"max {kl.max():.4f}")
  print(f"loss-attack AUC on the targets: first {auc[0]:.3f}, second {auc[1]:.3f}")
  return {"kl": kl, "auc": auc}


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("first", help="checkpoint dir WORKDIR/checkpoints/<name>/seed_<seed>")
  parser.add_argument("second", help="another checkpoint dir")
  args = parser.parse_args()
  main(args.first, args.second)
