"""The default study: a CNN on the embedded MNIST subset, 30 targets × 20 similar samples, under
the comparison protocol (docs/design.md §3.8, §3.9, §4.2).

    python -m unlearn_jax.main --config=configs/sed_mnist.py --workdir=/tmp/sed_mnist

trains eight LiRA reference models, tunes finetune, grad_ascent and random_label (12 TPE trials
each on a tuning SED with its own original and clean), trains original / retrain / clean /
clean_alt (15 epochs each on ~4,600 images), runs the three methods with their tuned settings
and again on the control SED (no similar samples), scores specificity, and runs the
reconstruction track: 4 min 04 s on a 2-core CPU (2026-12-05). Variants after `:`
(comma-separated; tuples take `+`-separated items):

    :runlocal              ~1,000 training images, 3 epochs, 4 LiRA models, 4 tuning trials,
                           a small reconstruction track: 37 s on a 2-core CPU (2026-12-05)
    :seeds=3               three training seeds (mean ± 95% CI)
    :methods=finetune+grad_ascent
    :similar=5,ratio=0.5   SED strength
    :dataset=fashion_mnist the installed Fashion-MNIST files (scripts/install_datasets.sh) or a
                           tfds copy in --config.data_dir; `idx:/path` for any idx folder
    :recon=thorough        a longer reconstruction track (6,000 steps, 3 candidates per
                           image, D_r of 124 images; several times the default track's 37 s,
                           not timed here); :recon=off skips it
    :model=resnet18        another model; naming the model here also exposes its fields, e.g.
                           `:model=cnn --config.model_kwargs.dense=64`
    :protocol=0            a plain study: 10 targets, no tuning, control nor specificity
    :paper                 every method, SED seeds 0-2 × training seeds 0-2, 3 floor models
                           (15 methods without the reconstruction track: 1 h 57 min on a
                           2-core CPU shared with other studies, 2026-12-05; see README.md)
    :selection=atypical    targets the study's probe finds hardest (or class_balanced)

Single fields: `--config.sed.ratio=0.5`, `--config.methods=finetune,grad_ascent`,
`--config.train.epochs=5`.
"""

import ml_collections

from unlearn_jax import config as config_lib
from unlearn_jax import defaults, models


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The study config; `arg` selects a variant (see the module docstring)."""
  arg = config_lib.parse_arg(arg, **config_lib.STUDY_VARIANTS, dataset="", model="", recon="",
                             protocol=True, paper=False, selection="")
  config = defaults.base_config()
  # 1,000 of the 4,000 training images (stratified), 500 test images, 3 epochs under :runlocal.
  config_lib.apply_study_variants(config, arg, runlocal_sizes=(1000, 500), runlocal_epochs=3)
  if arg.protocol:  # tuning, control, specificity, 30 targets; `protocol=0`: a plain study
    config_lib.apply_protocol(config, runlocal=arg.runlocal)
  if arg.paper:  # the README's headline study: every method, 3 SEDs × 3 seeds, 3 floor models
    config.methods = ("all",)
    config.seeds, config.sed_seeds, config.eval.floor_seeds = (0, 1, 2), (0, 1, 2), 3
  if arg.selection:
    config.sed.selection = arg.selection
  if arg.dataset:
    config.dataset = arg.dataset
  if arg.model:
    config.model = arg.model
    # The model's own fields with their defaults, so `--config.model_kwargs.<field>=...` works.
    config.model_kwargs = ml_collections.ConfigDict(models.default_kwargs(config.model))
  if arg.recon == "thorough":  # longer optimisation, more candidates and a larger D_r
    config.recon.num_rest, config.recon.candidates_per_image = 100, 3.0
    config.recon.train_steps, config.recon.steps, config.recon.trial_steps = 10000, 6000, 300
  elif arg.recon == "off":
    config.recon.enabled = False
  elif arg.recon:
    raise config_lib.ConfigError(f"config variant recon={arg.recon!r}: must be 'thorough' or "
                                 "'off'")
  return config
