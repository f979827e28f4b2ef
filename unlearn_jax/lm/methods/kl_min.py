"""KL minimisation: ascend the forget NLL while keeping the retain predictions of the original.

TOFU's `KL` loss (Maini et al., COLM 2024): forget_weight·(-NLL_forget) + retain_weight·
KL(π_orig ‖ π_θ) on retain batches, π_orig the frozen starting model. TOFU's code averages the
KL over every position of the retain sequences (pads and questions included); here it is the
mean over answer positions, the tokens the model is trained and judged on.
Config: `config.unlearn.kl_min.{epochs, lr, batch_size, weight_decay, forget_weight,
retain_weight}`; `epochs` counts passes over the forget set.
"""

from __future__ import annotations

import ml_collections

from unlearn_jax import methods
from unlearn_jax.lm import defaults as lm_defaults
from unlearn_jax.lm.methods import common

SPEC = methods.Spec(search_space={
    # Passes over T, each step with a retain batch (20 passes: ≤10% of retraining's 40 passes
    # over D); TOFU's 5 inside.
    "epochs": methods.Int(1, 20, log=True),
    # TOFU's 1e-5 (7B models) to 1e-2; lm/select_lr.py's grid 3e-5..1e-2 chose 3e-4.
    "lr": methods.Float(1e-5, 1e-2, log=True),
    # Retain-to-forget weight ratio (AdamW ignores a common scale, so the forget weight stays
    # 1): TOFU's 1 inside.
    "retain_weight": methods.Float(0.1, 10.0, log=True),
})


def default_config() -> ml_collections.ConfigDict:
  """KL hyper-parameters (TOFU: 5 epochs, AdamW, weight decay 0.01, both weights 1)."""
  config = ml_collections.ConfigDict()
  config.epochs = 5  # passes over the forget set (TOFU: 5).
  # Constant AdamW; chosen on held-out targets (lm/defaults.py; TOFU: 1e-5 on 7B models).
  config.lr = lm_defaults.METHOD_LR["kl_min"]
  config.batch_size = 32  # forget (≤ |forget|) and retain examples per step (TOFU: 32).
  config.weight_decay = 0.01  # AdamW decoupled weight decay (TOFU: 0.01).
  config.forget_weight = 1.0  # weight of -NLL on the forget batch (TOFU: 1).
  config.retain_weight = 1.0  # weight of KL(π_orig ‖ π_θ) on the retain batch (TOFU: 1).
  return config


def unlearn(state, run, cfg, rng):
  """Paired forget-ascent / retain-KL steps for `epochs` passes over the forget set."""
  del rng
  return common.run_objective(state, run, cfg, "kl_min", forget_loss="ascent",
                              retain_loss="kl", forget_weight=float(cfg.forget_weight),
                              retain_weight=float(cfg.retain_weight))
