"""The similarity sweep: residue against |S(t)| (and the mask ratio r) for every method.

    python -m unlearn_jax.sweep --config=configs/sweep_similarity.py:runlocal --workdir=/tmp/sweep

Every point is an ordinary study (configs/sed_mnist.py and the dataset configs beside it) in
WORKDIR/points/<name>; WORKDIR/report gets sweep.csv, sweep.json, report.md and the figures.
Rerunning the command skips complete points and resumes an interrupted one.

Default: the embedded MNIST subset, |S(t)| ∈ {0, 1, 5, 20, 50} × r ∈ {0.25, 0.5} (the |S|=0
study is shared by both r: 9 studies), one seed, the study's default methods. `:runlocal`:
|S(t)| ∈ {0, 5, 20}, r = 0.25, `sed_mnist.py:runlocal` studies (1,000 training images, 3
epochs, its small reconstruction track) with finetune and grad_ascent and 4 LiRA reference
models, each tuned first (the comparison protocol): 1 min 19 s wall on the otherwise idle 2-core
CPU (2026-12-05; nothing is retrained on a rerun of a complete sweep, the report is rewritten).

Variants after `:` (comma-separated; tuples take `+`-separated items):

    :runlocal                  the small offline sweep above
    :dataset=cifar10           mnist_subset (default), mnist, fashion_mnist or cifar10: the base
                               study is configs/sed_<dataset>.py (mnist: sed_mnist_full.py); real
                               datasets must be prepared in --config.study.data_dir
    :study=path/to/config.py   any other study config file as the base
    :similar=0+5+20            the |S(t)| axis;  :ratio=0.25+0.5  the mask-ratio axis
    :block=2+4+7               a block-size axis (block_mask)
    :generator=gaussian_noise,sigma=0.05+0.1+0.2
                               another generator, with a noise axis (no ratio axis then)
    :seeds=3                   seeds per study (mean ± 95% CI over seeds)
    :methods=all               methods per study (`+`-separated names)
    :parallel=2                points at once (each in its own worker process)

Single fields: `--config.parallel=4`, `--config.devices_per_point=1` (one GPU per worker),
`--config.study.data_dir=/data/tfds`, `--config.grid.sed.similar_per_target=0,10,100`,
`--config.study.train.epochs=5`.

Where the points run (`--config.executor`): `local` (default; `parallel` at once on this
machine) or `slurm`, one SLURM job array of the missing points through submitit:

    python -m unlearn_jax.sweep --config=configs/sweep_similarity.py --workdir=/shared/sweep \
        --config.executor=slurm --config.slurm.partition=gpu --config.slurm.gpus_per_node=1 \
        --config.slurm.time_min=240 --config.slurm.array_parallelism=8 \
        --config.slurm.sbatch_options=qos=normal,account=lab

`slurm.partition` ('' = the default), `slurm.time_min` (per job; a job that reaches it, or is
preempted, is requeued and resumes from its checkpoints), `slurm.nodes` (> 1: each point's
study spans the nodes with jax.distributed), `slurm.gpus_per_node`, `slurm.cpus_per_point`,
`slurm.mem_gb`, `slurm.array_parallelism` (points at once) and `slurm.sbatch_options` (extra
sbatch options, `key=value` comma-separated). The command waits for the array and writes the
report; after a cancelled job (or a killed command) the same command submits only the points
without a report/summary.json. `--dry_run` prints what would be submitted and the sbatch
script. The workdir must be on a file system the nodes share.
"""

import ml_collections

from unlearn_jax import config as config_lib
from unlearn_jax import sweep

# The study config of each dataset (paths relative to the repository root).
STUDY_CONFIGS = {"mnist_subset": "configs/sed_mnist.py", "mnist": "configs/sed_mnist_full.py",
                 "fashion_mnist": "configs/sed_fashion_mnist.py",
                 "cifar10": "configs/sed_cifar10.py"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The sweep config; `arg` selects a variant (see the module docstring)."""
  arg = config_lib.parse_arg(
      arg, runlocal=False, dataset="mnist_subset", study="", similar=(), ratio=(), block=(),
      generator="", sigma=(), seeds=1, methods=(), parallel=1)
  if not arg.study and arg.dataset not in STUDY_CONFIGS:
    raise config_lib.ConfigError(
        f"config arg: dataset={arg.dataset!r}; valid: {', '.join(STUDY_CONFIGS)} (or study=PATH)")
  study_file = arg.study or STUDY_CONFIGS[arg.dataset]
  config = sweep.base_config()
  study = sweep.load_config_file(study_file, "runlocal" if arg.runlocal else None)
  study.seeds = tuple(range(arg.seeds))
  if arg.methods:
    study.methods = arg.methods
  if arg.generator:
    study.sed.generator = arg.generator
  if arg.runlocal:
    if not arg.methods:
      study.methods = ("finetune", "grad_ascent")
    # 8 by default: the LiRA reference models would dominate a small study.
    study.eval.lira.num_models = min(study.eval.lira.num_models, 4)
  config.study = study

  grid = ml_collections.ConfigDict()
  grid.sed = ml_collections.ConfigDict()
  default_similar = (0, 5, 20) if arg.runlocal else (0, 1, 5, 20, 50)
  grid.sed.similar_per_target = _numbers("similar", arg.similar, int) or default_similar
  if study.sed.generator == "block_mask":
    default_ratio = (0.25,) if arg.runlocal else (0.25, 0.5)
    grid.sed.ratio = _numbers("ratio", arg.ratio, float) or default_ratio
    if arg.block:
      grid.sed.block = _numbers("block", arg.block, int)
  elif study.sed.generator == "gaussian_noise":
    grid.sed.sigma = _numbers("sigma", arg.sigma, float) or (study.sed.sigma,)
  config.grid = grid
  config.parallel = arg.parallel
  return config


def _numbers(key: str, texts: tuple, kind: type) -> tuple:
  """Variant items ('0', '5') as numbers of `kind`; a typo names the key and the item."""
  numbers = []
  for text in texts:
    try:
      numbers.append(kind(text))
    except ValueError:
      raise config_lib.ConfigError(f"config arg: {key}={'+'.join(texts)}: {text!r} is not "
                                   f"a{'n' if kind is int else ''} {kind.__name__}") from None
  return tuple(numbers)
