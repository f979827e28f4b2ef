"""Evaluate your own unlearning method: register it, run a study, read its influence residue.

The method below ("descend-ascend") takes SGD steps on batches that mix retained examples
(weight +1) with forget examples (weight -forget_weight): it repairs the model on D \\ T while
pushing the loss on T up. It follows the method contract (docs/design.md §5), so the study runs it
like a built-in method, from the same trained `original`, and reports it in the same table.

Two ways to run it, from the repository root:

    python -m examples.my_method --workdir=/tmp/my_method                  # registers it, runs
    python -m unlearn_jax.main \\
        --config=configs/sed_mnist.py:runlocal,methods=finetune+examples.my_method:unlearn \\
        --workdir=/tmp/my_method_cli

Either way it appears in WORKDIR/report/summary.json as `my_method` (the module's name, since
the function is called `unlearn`), its hyper-parameters as `config.unlearn.my_method` (from
`default_config` below, recorded in config.json; the study passes that section to `unlearn` as
`cfg`). `SPEC` below lets its `epochs` be a fraction of a pass. About a minute on a laptop CPU.
"""

from __future__ import annotations

import argparse
import json
import os

import ml_collections
import optax

import unlearn_jax as uj

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = uj.methods.Spec(fractional_epochs=True)  # `epochs` may be a fraction of a pass


def default_config() -> ml_collections.ConfigDict:
  """Hyper-parameters: they become `config.unlearn.my_method`."""
  config = ml_collections.ConfigDict()
  config.epochs = 1.0  # passes over the retained data.
  config.lr = 0.01  # constant SGD learning rate (momentum 0.9).
  config.batch_size = 128  # retained examples per step.
  config.forget_weight = 0.5  # loss weight of each forget example, negated (ascent).
  return config


def unlearn(state, run, cfg, rng):
  """Descends on retained batches and ascends on forget batches; returns (state, info).

  `run` is a `uj.RunContext` (the data and the run's seed, mesh, recipe, ...), `cfg` this
  method's `config.unlearn.my_method`.
  """
  del rng  # batch order comes from run.seed
  batch_size = int(cfg.batch_size)
  retain = uj.pipeline.EpochSampler(run.retain, batch_size, run.seed)
  forget = uj.pipeline.EpochSampler(run.forget, min(batch_size, len(run.forget["label"])),
                                    run.seed + 1, weight=-float(cfg.forget_weight))

  def batch_fn(step):  # the weighted loss of a batch is sum(w * ce) / sum(|w|)
    return uj.pipeline.concat(retain.batch(step), forget.batch(step))

  state = state.with_optimizer(optax.sgd(float(cfg.lr), momentum=0.9))
  # train.fit checkpoints into run.checkpoint_dir, so a rerun resumes or skips this method.
  return uj.train.fit(state, batch_fn, retain.steps_for(cfg.epochs),
                      name=f"my_method/seed_{run.seed}", mesh=run.mesh, seed=run.seed,
                      checkpoint_dir=run.checkpoint_dir,
                      checkpoint_every=run.recipe.checkpoint_every,
                      log_every=run.recipe.log_every, writer=run.writer)


def main(workdir: str, config: ml_collections.ConfigDict | None = None) -> dict:
  """Registers the method, runs a study with it next to fine-tuning, prints the residues.

  Args:
    workdir: the study's workdir (resumed if it exists).
    config: a study config (default: configs/sed_mnist.py:runlocal).

  Returns:
    The study summary, read from WORKDIR/report/summary.json.
  """
  uj.register_method("my_method", unlearn)  # default_config and SPEC: this module's
  if config is None:
    config = uj.load_config(os.path.join(ROOT, "configs", "sed_mnist.py:runlocal"))
  config.methods = ("finetune", "my_method")
  uj.run_study(config, workdir)
  with open(os.path.join(workdir, "report", "summary.json")) as f:
    summary = json.load(f)  # undefined residues (gap below eval.min_gap) read as None
  show = lambda value: "undefined" if value is None else f"{value:.2f}"
  floor = summary["floor"]["residue"]
  print(f"noise floor (clean_alt): margin residue {show(floor['margin'])}, "
        f"loss residue {show(floor['loss'])}")
  for name in ("original", "retrain", "finetune", "my_method"):
    residue = summary["methods"][name]["residue"]
    print(f"{name:<10} margin residue {show(residue['margin']):>9}   "
          f"loss residue {show(residue['loss']):>9}")
  return summary


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="study workdir (resumed if it exists)")
  parser.add_argument("--config", default=os.path.join(ROOT, "configs", "sed_mnist.py:runlocal"),
                      help="study config, path.py[:variant]")
  args = parser.parse_args()
  main(args.workdir, uj.load_config(args.config))
