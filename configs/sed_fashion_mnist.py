"""The study on Fashion-MNIST (tfds `fashion_mnist`: 60,000 training / 10,000 test), CNN.

    python -m unlearn_jax.main --config=configs/sed_fashion_mnist.py \
        --config.data_dir=/data/tfds --workdir=/tmp/sed_fashion_mnist

Fashion-MNIST is one of the three image datasets of Xu et al. (arXiv 2601.06938, 2026). It must
be prepared once in the data dir (`tfds build fashion_mnist --data_dir=DIR
--file_format=array_record`, which needs network access and TensorFlow); nothing is downloaded
at run time. Same 28×28 grey images as MNIST, so the SED's b=4 blocks and the CNN carry over,
and so do the variants and the cost of configs/sed_mnist_full.py (`:runlocal`: 2,000 training /
500 test images, 3 epochs), with 15 epochs instead of 10. Not measured here: the dataset is not
prepared on the machine this was written on.
"""

import ml_collections

from unlearn_jax import config as config_lib
from unlearn_jax import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The study config; `arg` selects a variant (see the module docstring)."""
  # The base's CNN and recipe; 15 epochs (7,035 steps of 128): clothing is harder to fit than
  # digits.
  return config_lib.full_dataset_study(defaults.base_config(), arg, dataset="fashion_mnist",
                                       epochs=15, runlocal_sizes=(2000, 500), runlocal_epochs=3)
