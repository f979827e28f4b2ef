"""Negative Preference Optimization (NPO) with a retain NLL term (NPO+RT).

Zhang, Lin, Bai & Mei, "Negative Preference Optimization: From Catastrophic Collapse to
Effective Unlearning", COLM 2024. The forget term is DPO with the forget answers as the only,
dispreferred responses:

    L_NPO = -(2/β) · E_forget[ log σ(-β · log(π_θ(y|x) / π_ref(y|x))) ]

with log π(y|x) the summed answer-token log-probs and π_ref the frozen starting model. Its
gradient is GA's reweighted by 2·π_θ^β / (π_θ^β + π_ref^β), which goes to 0 as the answer is
forgotten, so NPO slows down instead of collapsing. The paper's best TOFU variant adds the retain
NLL ("NPO+RT", the authors' `npo_grad_diff`: npo_coeff·L_NPO + grad_diff_coeff·NLL_retain).
Config: `config.unlearn.npo.{epochs, lr, batch_size, weight_decay, beta, forget_weight,
retain_weight}`; `epochs` counts passes over the forget set.
"""

from __future__ import annotations

import ml_collections

from unlearn_jax import config as config_lib
from unlearn_jax import methods
from unlearn_jax.lm import defaults as lm_defaults
from unlearn_jax.lm.methods import common

SPEC = methods.Spec(search_space={
    # Passes over T, each step with a retain batch (20 passes: ≤10% of retraining's 40 passes
    # over D); the authors' 10 inside.
    "epochs": methods.Int(1, 20, log=True),
    # TOFU's 1e-5 (7B models) to 1e-2; lm/select_lr.py's grid 3e-5..1e-2 chose 1e-4.
    "lr": methods.Float(1e-5, 1e-2, log=True),
    # β: two decades around the authors' 0.1 (config/forget.yaml; OpenUnlearning's too).
    "beta": methods.Float(0.01, 1.0, log=True),
    # Retain-to-forget weight ratio (AdamW ignores a common scale): the authors' 1.
    "retain_weight": methods.Float(0.1, 10.0, log=True),
})

loss = common.npo_loss  # the per-example forget loss, for tests and users


def default_config() -> ml_collections.ConfigDict:
  """NPO+RT hyper-parameters from the authors' TOFU config (github.com/licong-lin/
  negative-preference-optimization, config/forget.yaml: β 0.1, npo_coeff 1, grad_diff_coeff 1,
  10 epochs, AdamW with weight decay 0.01)."""
  config = ml_collections.ConfigDict()
  config.epochs = 10  # passes over the forget set (authors: 10).
  # Constant AdamW; chosen on held-out targets (lm/defaults.py; authors: 1e-5 on 7B models).
  config.lr = lm_defaults.METHOD_LR["npo"]
  config.batch_size = 32  # forget (≤ |forget|) and retain examples a step (authors: 4×4×2).
  config.weight_decay = 0.01  # AdamW decoupled weight decay (authors: 0.01).
  config.beta = 0.1  # inverse temperature β (authors: 0.1).
  config.forget_weight = 1.0  # weight of L_NPO (authors' npo_coeff: 1).
  config.retain_weight = 1.0  # weight of the retain NLL (authors' grad_diff_coeff: 1).
  return config


def check_config(cfg: ml_collections.ConfigDict) -> None:
  """β must be positive; the two weights non-negative."""
  config_lib.require_number("unlearn.npo.beta", cfg.beta, low=0, low_open=True)
  config_lib.require_number("unlearn.npo.forget_weight", cfg.forget_weight, low=0)
  config_lib.require_number("unlearn.npo.retain_weight", cfg.retain_weight, low=0)


def unlearn(state, run, cfg, rng):
  """Paired NPO (against the starting model) / retain-NLL steps over the forget set."""
  del rng
  state, info = common.run_objective(
      state, run, cfg, "npo", forget_loss="npo", retain_loss="nll",
      forget_weight=float(cfg.forget_weight), retain_weight=float(cfg.retain_weight),
      beta=float(cfg.beta))
  info.update(beta=float(cfg.beta))
  return state, info
