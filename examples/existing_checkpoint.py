"""Reuse a finished study: restore its trained models and try a method on them, no retraining.

A study keeps every model it trained under WORKDIR/checkpoints/<name>/seed_<seed>. This script
restores `original`, `retrain` and `clean` from there, rebuilds the same SED from the study's
config.json (it is deterministic in the config), runs one unlearning method from `original` and
evaluates it against the restored references, exactly as the study would have:

    python -m unlearn_jax.main --config=configs/sed_mnist.py:runlocal --workdir=/tmp/study
    python -m examples.existing_checkpoint --workdir=/tmp/study --method=grad_ascent

`--method` takes a built-in name or an import path (`examples.my_method:unlearn`). Run with a
method the study already ran and the numbers equal the study's (same model, data and seed).
"""

from __future__ import annotations

import argparse
import os

import jax

import unlearn_jax as uj

REFERENCES = ("original", "retrain", "clean")


def main(workdir: str, method: str = "grad_ascent", seed: int = 0) -> dict:
  """Restores the references of `seed`, runs `method` from `original`, prints its record.

  Args:
    workdir: a study's workdir (with config.json and checkpoints/).
    method: a method name or import path.
    seed: which of the study's seeds.

  Returns:
    The evaluation record of every model ({name: record}, as in summary.json).
  """
  config = uj.read_config(workdir)
  sed = uj.build_sed(config, workdir)  # workdir: where an atypical selection probe is kept
  states = {name: uj.load_checkpoint(os.path.join(workdir, "checkpoints", name, f"seed_{seed}"))
            for name in REFERENCES}
  run = uj.unlearn_data(sed, config, seed)
  cfg = uj.methods.method_config(config, method)  # config.unlearn.<its name>
  rng = jax.random.fold_in(jax.random.key(seed), 2)  # the key a study gives its methods
  states[method], info = uj.run_method(method, states["original"], run, cfg, rng)
  records, _ = uj.evaluate_states(states, sed, config)
  name = uj.methods.resolve([method])[0]  # an import path's method name
  records[name] = records.pop(method)
  print(f"{name}: {info.get('steps', '?')} steps")
  for model in (*REFERENCES, name):
    record = records[model]
    print(f"{model:<12} acc target {record['acc']['target']:.2f}  test {record['acc']['test']:.2f}"
          f"  margin residue {record['residue']['margin']:.2f}"
          f"  loss-attack AUC {record['mia_auc']['target']:.2f}")
  return records


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="workdir of a finished study")
  parser.add_argument("--method", default="grad_ascent", help="method name or import path")
  parser.add_argument("--seed", type=int, default=0, help="which of the study's seeds")
  args = parser.parse_args()
  main(args.workdir, args.method, args.seed)
