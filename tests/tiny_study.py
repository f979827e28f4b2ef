"""A study small enough for tests: MLP, 300 training images, 2 epochs, 4 targets × 3 similar.

    python -m unlearn_jax.main --config=tests/tiny_study.py --workdir=/tmp/tiny
"""

import ml_collections

from unlearn_jax import config as config_lib
from unlearn_jax import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The tiny study; `arg` may set `data_dir=PATH`."""
  arg = config_lib.parse_arg(arg, data_dir="")
  config = defaults.base_config()
  config.data_dir = arg.data_dir
  config.model = "mlp"
  config.model_kwargs = ml_collections.ConfigDict({"hidden": (32,)})
  config.train_size, config.test_size = 300, 100
  config.sed.num_targets, config.sed.similar_per_target = 4, 3
  config.train.epochs, config.train.batch_size = 2, 32
  config.train.checkpoint_every, config.train.log_every = 5, 2
  for name in ("finetune", "grad_ascent", "random_label"):
    config.unlearn[name].epochs = 1
  config.eval.lira.num_models, config.eval.lira.num_heldout = 4, 20
  # Two epochs leave ~1 nat on T (original 1.02, clean 1.6): a level only the original meets.
  config.eval.relearn.lr = 0.1
  config.eval.relearn.target_loss, config.eval.relearn.max_steps = 1.1, 20
  config.eval.svc_max_train = 100
  config.recon.num_targets, config.recon.similar_per_target, config.recon.num_rest = 2, 2, 10
  config.recon.hidden, config.recon.train_steps = (16,), 200
  config.recon.steps, config.recon.trial_steps = 100, 20
  return config
