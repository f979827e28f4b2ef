"""SimNPO: reference-free, length-normalised NPO, with a retain NLL term.

Fan, Liu, Lin, Jia, Zhang, Mei & Liu, "Simplicity Prevails: Rethinking Negative Preference
Optimization for LLM Unlearning", 2024 (arXiv 2410.07163). NPO's reward log(π_θ/π_ref) is
replaced by SimPO's length-normalised (β/|y|)·log π_θ(y|x) with a margin γ, removing the
reference model (whose bias lets NPO under-weight strongly memorised and short answers):

    L_SimNPO = -(2/β) · E_forget[ log σ(-(β/|y|) · log π_θ(y|x) - γ) ]

plus λ·NLL_retain, the variant the paper reports (the authors' `simnpo_grad_diff`).
Config: `config.unlearn.simnpo.{epochs, lr, batch_size, weight_decay, beta, gamma,
forget_weight, retain_weight}`; `epochs` counts passes over the forget set.
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
    # β: the authors' grids (OPTML-Group/Unlearn-Simple TOFU/run_scripts.py: 1-4.5 on forget05,
    # 10-15 on forget10; MUSE/README.md: 0.7 and 0.75).
    "beta": methods.Float(0.5, 15.0, log=True),
    # γ = β·γ' for their code's margin γ': their TOFU grid γ' 0-2.5 (γ ≤ 6.25 at β 2.5) and
    # MUSE News's 0.75·3.
    "gamma": methods.Float(0.0, 8.0),
    # λ: the authors' 0.1375 (TOFU forget05), 0.1 (forget10, MUSE) and 5 (WMDP).
    "retain_weight": methods.Float(0.05, 5.0, log=True),
})

loss = common.simnpo_loss  # the per-example forget loss, for tests and users


def default_config() -> ml_collections.ConfigDict:
  """SimNPO hyper-parameters (authors' TOFU forget05 settings, github.com/OPTML-Group/
  Unlearn-Simple TOFU/run_scripts.py and config/forget.yaml: β 2.5, γ 0, λ 0.1375, 10 epochs)."""
  config = ml_collections.ConfigDict()
  config.epochs = 10  # passes over the forget set (authors: 10).
  # Constant AdamW; chosen on held-out targets (lm/defaults.py; authors: 1e-5 on 7B models).
  config.lr = lm_defaults.METHOD_LR["simnpo"]
  config.batch_size = 32  # forget (≤ |forget|) and retain examples per step (authors: 32).
  config.weight_decay = 0.01  # AdamW decoupled weight decay (authors: 0.01).
  config.beta = 2.5  # inverse temperature β (authors, TOFU forget05: 2.5).
  config.gamma = 0.0  # reward margin γ (authors, TOFU: 0).
  config.forget_weight = 1.0  # weight of L_SimNPO (authors' npo_coeff: 1).
  config.retain_weight = 0.1375  # λ, weight of the retain NLL (authors' grad_diff_coeff: 0.1375).
  return config


def check_config(cfg: ml_collections.ConfigDict) -> None:
  """β must be positive; γ and the two weights non-negative."""
  config_lib.require_number("unlearn.simnpo.beta", cfg.beta, low=0, low_open=True)
  config_lib.require_number("unlearn.simnpo.gamma", cfg.gamma, low=0)
  config_lib.require_number("unlearn.simnpo.forget_weight", cfg.forget_weight, low=0)
  config_lib.require_number("unlearn.simnpo.retain_weight", cfg.retain_weight, low=0)


def unlearn(state, run, cfg, rng):
  """Paired SimNPO / retain-NLL steps over the forget set."""
  del rng
  state, info = common.run_objective(
      state, run, cfg, "simnpo", forget_loss="simnpo", retain_loss="nll",
      forget_weight=float(cfg.forget_weight), retain_weight=float(cfg.retain_weight),
      beta=float(cfg.beta), gamma=float(cfg.gamma))
  info.update(beta=float(cfg.beta), gamma=float(cfg.gamma))
  return state, info
