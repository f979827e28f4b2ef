"""The study on the full MNIST (tfds `mnist`: 60,000 training / 10,000 test digits), CNN.

    python -m unlearn_jax.main --config=configs/sed_mnist_full.py \
        --config.data_dir=/data/tfds --workdir=/tmp/sed_mnist_full

MNIST is one of the three image datasets of Xu et al. (arXiv 2601.06938, 2026). It must be
prepared once in the data dir (`tfds build mnist --data_dir=DIR --file_format=array_record`,
which needs network access and TensorFlow); nothing is downloaded at run time. The offline
default study (configs/sed_mnist.py) uses the 5,000-digit subset instead.

Cost: 4 reference models + 8 LiRA reference models, 10 epochs each over 60,000 images (CNN):
minutes on one GPU; hours on a laptop CPU (use :runlocal there). Not measured here: the dataset
is not prepared on the machine this was written on.

Variants after `:` (comma-separated; tuples take `+`-separated items), those of every study
config (`config.STUDY_VARIANTS`):

    :runlocal              2,000 training / 500 test images, 3 epochs
    :seeds=3               three training seeds (mean ± 95% CI)
    :methods=finetune+grad_ascent
    :similar=5,ratio=0.5   SED strength
"""

import ml_collections

from unlearn_jax import config as config_lib
from unlearn_jax import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The study config; `arg` selects a variant (see the module docstring)."""
  # The base's CNN and recipe; 10 epochs (4,690 steps of 128) fit MNIST's training split.
  return config_lib.full_dataset_study(defaults.base_config(), arg, dataset="mnist", epochs=10,
                                       runlocal_sizes=(2000, 500), runlocal_epochs=3)
