"""The study on CIFAR-10 (tfds `cifar10`: 50,000 training / 10,000 test), ResNet-18.

    python -m unlearn_jax.main --config=configs/sed_cifar10.py \
        --config.data_dir=/data/tfds --workdir=/tmp/sed_cifar10

CIFAR-10 with ResNet-18 is the colour-image setting of Xu et al. (arXiv 2601.06938, 2026). The
dataset must be prepared once in the data dir (`tfds build cifar10 --data_dir=DIR
--file_format=array_record`, which needs network access and TensorFlow); nothing is downloaded
at run time. The model is the CIFAR variant of ResNet-18 (3×3 stem, no max-pool, BatchNorm;
unlearn_jax/models/resnet18.py). The SED masks b=4 blocks of the 32×32 images (64 blocks).

Recipe: SGD with momentum 0.9, peak lr 0.1 with cosine decay, weight decay 5e-4, batch 128 —
the usual CIFAR ResNet-18 recipe of the unlearning literature (e.g. Jia et al., NeurIPS 2023) —
for 30 epochs (no augmentation, so the model memorises its training set). Cost: 4 reference
models + 8 LiRA reference models × 30 epochs of 391 steps: about an hour a study on one GPU;
do not run it on a CPU (XLA:CPU takes ~70 s just to compile ResNet-18). Not measured here: the
dataset is not prepared on the machine this was written on.

Variants after `:` (comma-separated; tuples take `+`-separated items):

    :runlocal              1,000 training / 500 test images, width 16, 2 epochs, 2 LiRA models
    :seeds=3               three training seeds (mean ± 95% CI)
    :methods=finetune+grad_ascent
    :similar=5,ratio=0.5   SED strength
"""

import ml_collections

from unlearn_jax import config as config_lib
from unlearn_jax import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The study config; `arg` selects a variant (see the module docstring)."""
  config = defaults.base_config()
  config.model = "resnet18"
  config.model_kwargs = ml_collections.ConfigDict({"width": 64})  # channels of the first stage
  # The recipe in full (the docstring's), whatever the base's defaults.
  config.train.batch_size = 128
  config.train.optimizer = "sgd"
  config.train.lr = 0.1
  config.train.momentum = 0.9
  config.train.weight_decay = 5e-4
  config.train.schedule = "cosine"
  config.train.checkpoint_every = 1000  # steps (~2.5 epochs)
  config_lib.full_dataset_study(config, arg, dataset="cifar10", epochs=30,
                                runlocal_sizes=(1000, 500), runlocal_epochs=2)
  if config_lib.parse_arg(arg, **config_lib.STUDY_VARIANTS).runlocal:
    config.model_kwargs.width = 16
    config.eval.lira.num_models = 2
  return config
