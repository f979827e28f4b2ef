"""The study on Fashion-MNIST (60,000 training / 10,000 test images), CNN, with the comparison
protocol.

    sudo apt-get install -y dataset-fashion-mnist
    python -m unlearn_jax.main --config=configs/sed_fashion_mnist.py --workdir=/tmp/sed_fashion

Fashion-MNIST is one of the three image datasets of Xu et al. (arXiv 2601.06938, 2026). Debian's
`dataset-fashion-mnist` installs its four original idx files under
/usr/share/datasets/fashion-mnist; `dataset=fashion_mnist` reads them when no tfds-prepared copy
is in the data dir (unlearn_jax/data/sources.py; checked, prepared once, files and sha256
recorded in summary.json `data_source`). Without either, the study stops at once with the
command that installs the files. Nothing is downloaded at run time.

The default study is that of configs/sed_mnist.py (30 targets, every method tuned on a tuning
SED, the control and the specificity check) on a stratified subset of 10,000 training and 2,000
test images, 15 epochs (clothing is harder to fit than digits); docs/results.md gives its measured
time on a 2-core CPU. Same 28×28 grey images as MNIST, so the SED's b=4 blocks and the CNN carry
over. Variants after `:` (comma-separated; tuples take `+`-separated items):

    :runlocal              2,000 training / 500 test images, 3 epochs, fewer tuning trials
    :full                  every image: 60,000 / 10,000 (about six times the default's cost)
    :protocol=0            a plain study: 10 targets, no tuning, control or specificity
    :seeds=3               three training seeds (mean ± 95% CI)
    :methods=finetune+grad_ascent
    :similar=5,ratio=0.5   SED strength
    :dataset=idx:/path     another folder of Fashion-MNIST idx files
"""

import ml_collections

from unlearn_jax import config as config_lib
from unlearn_jax import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The study config; `arg` selects a variant (see the module docstring)."""
  return config_lib.grey_digit_study(defaults.base_config(), arg, dataset="fashion_mnist",
                                     epochs=15, sizes=(10_000, 2_000))
