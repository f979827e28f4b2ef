"""unlearn_jax: does unlearning remove a sample's influence when similar samples remain?

The package builds similarity-entailed datasets (SEDs), trains reference models, runs unlearning
methods from one trained checkpoint and measures how much of each target's influence is left.
Entry point for a whole study: `python -m unlearn_jax.main --config=configs/sed_mnist.py`.

From Python, `import unlearn_jax as uj` gives the public API (docs/api.md):

* functions, e.g. `uj.load_config`, `uj.build_sed`, `uj.train_references`, `uj.register_method`,
  `uj.run_method`, `uj.evaluate_states`, `uj.load_checkpoint`, `uj.run_study` (see
  `unlearn_jax.api`);
* modules, e.g. `uj.sed.build`, `uj.train.fit`, `uj.references.train`, `uj.methods.register`,
  `uj.models.register`, `uj.datasets.register`, `uj.pipeline.EpochSampler`, `uj.study.run`,
  `uj.metrics.kl_divergence`.

Attributes load on first use, so `import unlearn_jax` itself stays cheap (no JAX, no tfds).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public modules: attribute -> module path.
MODULES = {
    "api": "unlearn_jax.api",
    "config": "unlearn_jax.config",
    "datasets": "unlearn_jax.data.sources",
    "defaults": "unlearn_jax.defaults",
    "evaluator": "unlearn_jax.evaluate.evaluator",
    "methods": "unlearn_jax.methods",
    "metrics": "unlearn_jax.evaluate.metrics",
    "mia": "unlearn_jax.evaluate.mia",
    "models": "unlearn_jax.models",
    "pipeline": "unlearn_jax.data.pipeline",
    "references": "unlearn_jax.references",
    "residue": "unlearn_jax.evaluate.residue",
    "sed": "unlearn_jax.data.sed",
    "study": "unlearn_jax.study",
    "train": "unlearn_jax.train",
}
# Public functions and classes of `unlearn_jax.api`, re-exported here.
API = (
    "load_config", "read_config", "build_sed", "unlearn_data", "predict", "evaluate_states",
    "load_checkpoint", "register_method", "register_model", "register_dataset", "run_method",
    "train_references", "run_study", "evaluate_logits", "example_scores", "kl_divergence",
    "roc_auc", "tpr_at_fpr", "loss_attack_auc", "residue_ratio", "residue_absolute",
    "RunContext", "Spec", "TrainState", "SED",
)

__all__ = sorted(MODULES) + list(API) + ["__version__"]


def __getattr__(name: str) -> Any:
  """Loads a public module or API name on first access (PEP 562)."""
  if name in MODULES:
    value = importlib.import_module(MODULES[name])
  elif name in API:
    value = getattr(importlib.import_module("unlearn_jax.api"), name)
  else:
    raise AttributeError(f"module 'unlearn_jax' has no attribute {name!r}; public names: "
                         f"{', '.join(__all__)}")
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(__all__))
