"""A language-model study small enough for tests: 3 targets × 3 paraphrases, a 1-layer model.

    python -m unlearn_jax.main --config=tests/tiny_qa.py --workdir=/tmp/tiny_qa
"""

import ml_collections

from unlearn_jax.lm import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = defaults.base_config()
  config.qa.num_targets, config.qa.similar_per_target = 3, 3
  config.qa.num_rest, config.qa.num_test, config.qa.probes_per_target = 40, 20, 2
  config.tokenizer.vocab_size, config.tokenizer.max_len = 700, 48
  config.model_kwargs.num_layers, config.model_kwargs.width = 1, 64
  config.train.epochs, config.train.batch_size, config.train.lr = 100, 16, 5e-3
  config.train.checkpoint_every, config.train.log_every = 200, 100
  config.methods = ("grad_ascent", "npo")
  config.eval.max_new_tokens = 12
  return config
