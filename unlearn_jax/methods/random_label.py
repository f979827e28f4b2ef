"""Random labelling (RL): train on the forget set with random wrong labels, plus retained data.

Each step combines a retain batch (true labels) with a forget batch whose labels are replaced by
a uniformly drawn *other* class, fresh at every step (Golatkar et al., CVPR 2020; run with the
retained data as in Fan et al., ICLR 2024). Config:
`config.unlearn.random_label.{epochs, lr, batch_size, forget_batch_size}`; epochs count passes
over the retained data.
"""

from __future__ import annotations

from typing import Callable

import ml_collections
import numpy as np

from unlearn_jax.data import pipeline
from unlearn_jax.methods import common


# `epochs` may be a fraction of a pass over the retained data.
FRACTIONAL_EPOCHS = True


def default_config() -> ml_collections.ConfigDict:
  """RL hyper-parameters (Fan et al., ICLR 2024 run RL for 10 epochs at lr 0.01 on CIFAR-10)."""
  config = ml_collections.ConfigDict()
  config.epochs = 0.9  # passes over the retained data (kept to ≤10% of retrain's cost).
  config.lr = 0.01  # constant SGD learning rate (momentum 0.9).
  config.batch_size = 128  # retain examples per step.
  config.forget_batch_size = 16  # randomly relabelled forget examples per step.
  return config


def relabel(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
  """Replaces each label by a uniformly random different class."""
  shift = rng.integers(1, num_classes, size=labels.shape)
  return ((labels + shift) % num_classes).astype(labels.dtype)


def relabelled_batches(data, cfg) -> tuple[Callable[[int], dict[str, np.ndarray]], int]:
  """(batch_fn, num_steps): retain batches joined with randomly relabelled forget batches.

  `cfg` holds epochs (over the retained data), batch_size and forget_batch_size.
  """
  retain = pipeline.EpochSampler(data.retain, int(cfg.batch_size), data.seed)
  forget_size = min(int(cfg.forget_batch_size), len(data.forget["label"]))
  forget = pipeline.EpochSampler(data.forget, forget_size, data.seed + 1)

  def batch_fn(step: int) -> dict[str, np.ndarray]:
    forget_batch = forget.batch(step)
    labels_rng = np.random.default_rng([data.seed, step, 7])
    forget_batch["label"] = relabel(forget_batch["label"], data.num_classes, labels_rng)
    return pipeline.concat(retain.batch(step), forget_batch)

  return batch_fn, retain.steps_for(cfg.epochs)


def unlearn(state, data, config, rng):
  """Trains on retain batches joined with randomly relabelled forget batches."""
  del rng
  cfg = config.unlearn.random_label
  batch_fn, num_steps = relabelled_batches(data, cfg)
  return common.run_sgd(state, batch_fn, num_steps, cfg.lr, data, "random_label", config)
