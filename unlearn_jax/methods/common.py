"""Pieces shared by the gradient-based methods: an SGD run over step-addressed batches."""

from __future__ import annotations

from typing import Callable

import numpy as np

from unlearn_jax import train


def run_sgd(state: train.TrainState, batch_fn: Callable[[int], dict[str, np.ndarray]],
            num_steps: int, lr: float, data, name: str, config,
            momentum: float = 0.9) -> tuple[train.TrainState, dict]:
  """Runs `num_steps` SGD steps (constant lr) from `state` with a fresh optimiser.

  Progress, finite-loss checks and checkpoints come from `train.fit`; a non-finite loss raises
  FloatingPointError, which the study records as `diverged` for this method.
  """
  tx = train.make_optimizer("sgd", float(lr), int(num_steps), momentum=momentum)
  state = state.with_optimizer(tx)
  return train.fit(state, batch_fn, num_steps, name=f"{name}/seed_{data.seed}",
                   mesh=data.mesh, seed=data.seed,
                   checkpoint_dir=data.checkpoint_dir,
                   checkpoint_every=config.train.checkpoint_every,
                   log_every=config.train.log_every, writer=data.writer)
