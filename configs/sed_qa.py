"""The language-model study: a small transformer on fictitious QA facts with paraphrases.

    python -m unlearn_jax.main --config=configs/sed_qa.py --workdir=/tmp/sed_qa

builds the embedded offline QA SED (10 targets × 10 paraphrases, 600 unrelated facts, 150
held-out facts, 4 held-out paraphrased questions per target), trains a sentencepiece tokenizer
on it, trains original / retrain / clean / clean_alt (a 2-layer transformer) and runs the LM
unlearning methods (finetune, grad_ascent, grad_diff, kl_min, npo, simnpo). Variants after `:`
(comma-separated; tuples take `+`-separated items):

    :runlocal              a smaller SED and model, fewer epochs (the 2-core CI budget)
    :seeds=3               three training seeds (mean ± 95% CI)
    :methods=npo+simnpo    a subset of the methods
    :similar=20            paraphrases per target
    :dataset=jsonl:/path/qa.jsonl   your own QA pairs with provenance (unlearn_jax/lm/data.py)
    :dataset=squad         a tfds QA dataset prepared in --config.data_dir
    :tune=1                tune every method on a tuning SED (the QA SED of qa.seed =
                           tune.sed_seed: other targets) before the seeds run, minimising
                           |res nll| + |res mia| within a 0.10 ROUGE-L utility budget
                           (unlearn_jax/tune.py): 12 TPE trials each, 3 under :runlocal

Single fields: `--config.qa.num_targets=20`, `--config.train.epochs=60`,
`--config.unlearn.npo.beta=0.1`.
"""

import ml_collections

from unlearn_jax import config as config_lib
from unlearn_jax.lm import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The LM study config; `arg` selects a variant (see the module docstring)."""
  arg = config_lib.parse_arg(arg, runlocal=False, seeds=1, methods=(), similar=-1, dataset="",
                             tune=False)
  config = defaults.base_config()
  config.seeds = tuple(range(arg.seeds))
  if arg.methods:
    config.methods = arg.methods
  if arg.similar >= 0:
    config.qa.similar_per_target = arg.similar
  if arg.dataset:
    config.dataset = arg.dataset
  if arg.runlocal:
    config.qa.num_targets, config.qa.similar_per_target = 6, 8
    config.qa.num_rest, config.qa.num_test = 240, 80
    config.model_kwargs.width, config.model_kwargs.heads = 64, 4
    config.train.log_every = 20
  if arg.tune:
    config.tune.enabled = True
    config.tune.trials, config.tune.startup_trials = (3, 2) if arg.runlocal else (12, 6)
    if arg.runlocal:  # clean trains in ~6 s: a tenth is below a method's compilation time
      config.tune.cost_cap = 1.0
  return config
