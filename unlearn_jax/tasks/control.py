"""The control: every method again on the same targets without their similar samples
(docs/design.md §3.8).

The control SED is the study's SED with S removed from D: D_c = T ∪ R. With a synthetic generator
(similar samples appended to the split) D_c is the training split itself; with `nearest` (similar
samples are rows of the split, `data/sed.py`) it is the split without the chosen neighbours,
|T|·|S(t)| rows fewer, while the rows ranked just after them stay in R and in D_c: the control
removes a target's k most similar rows, not every similar one. Its `original` is trained on
D_c (`recipe.control_original`, folder control/original/seed_<s>); its `clean` is the study's
`clean` (R either way), and its `retrain` is that same model. Every method of `config.methods` (but
SISA, whose ensemble is scored against its own shard references) runs from the control original with
forget T and retain R (folder control/<method>/seed_<s>, with the study's tuned settings), and is
scored with the same residues against the control original and clean. The paper's effect is the
difference between a method's residue with its similar samples (the study) and without them
(`methods.<m>.control.residue.<score>`).
"""

from __future__ import annotations

import re
from typing import Any

from absl import logging

from unlearn_jax import methods, recipe, runner
from unlearn_jax import workdir as workdir_lib
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.evaluate import evaluator
from unlearn_jax.tasks import base

FOLDER = "control"


def diverged_result(key: str, text: str) -> bool:
  """Whether status entry `key` is a control run that diverged (a result the control reports);
  in a study of several SEDs the key starts with its SED's folder (`sed_<k>/control/...`)."""
  parts = key.split("/")
  if parts and re.fullmatch(r"sed_\d+", parts[0]):
    parts = parts[1:]
  return bool(parts) and parts[0] == FOLDER and text.startswith("diverged")


def control_sed(sed: sed_lib.SED) -> sed_lib.SED:
  """The SED without its similar samples (same targets, same rest, same test split), whether
  they were appended to the split or are rows of it (`nearest`): selected by kind, not id."""
  keep = sed.train["kind"] != sed_lib.SIMILAR
  return sed_lib.SED(train={key: value[keep] for key, value in sed.train.items()},
                     test=sed.test, target_ids=sed.target_ids)


class Control(base.Plugin):
  """Runs every method of `config.methods` on the control SED of each seed (`eval.control`)."""

  def _names(self, task: base.Task, names) -> list[str]:
    """The methods run on the control: not remedies, not references, not ensembles (SISA's
    residue needs its own shard references, which the control does not build)."""
    specs = {name: methods.spec(name, track=task.track) for name in names if "+" not in name}
    return [name for name, spec in specs.items()
            if not spec.reference and not spec.returns_ensemble]

  def models(self, task: base.Task, names: tuple[str, ...]) -> int:
    return 1 + len(self._names(task, names)) if task.config.eval.control else 0

  def after_runs(self, task: base.Task, run: base.SeedRun, status: dict[str, str]) -> None:
    if not task.config.eval.control:
      return
    sed = control_sed(task.sed)
    original, _ = task.fit(recipe.control_original(task.train, run.seed))
    task.progress.done += 1
    states = {"original": original, "clean": run.states["clean"]}
    for name in self._names(task, run.names):
      key = f"{FOLDER}/{name}/seed_{run.seed}"
      directory = workdir_lib.checkpoint_dir(task.workdir, f"{FOLDER}/{name}", run.seed)
      context = task.run_context(run.seed, directory, sed.forget, sed.retain)
      logging.info("stage: control %s/seed_%d (no similar samples; %s)", name, run.seed,
                   task.progress.line())
      with runner.method_status(status, key):
        states[name], _ = methods.call(name, original, context, task.method_config(name),
                                       recipe.method_rng(run.seed), track=task.track)
      task.progress.done += 1
    run.extra["control_states"] = states

  def extend(self, task: base.Task, run: base.SeedRun) -> None:
    states = run.extra.pop("control_states", None)
    if states is None:
      return
    sed = control_sed(task.sed)
    logits = {name: {"train": task.predict(state, sed.train),
                     "test": task.predict(state, sed.test)} for name, state in states.items()}
    records, _ = evaluator.evaluate_models(logits, sed, task.config.eval.min_gap,
                                           svc_max_train=0)
    for name in self._names(task, run.names):
      if name not in states and name in run.records:  # diverged (or failed) on the control
        run.records[name]["control"] = {"diverged": 1.0}
    for name, record in records.items():
      if name in run.records and name not in ("original", "clean"):
        run.records[name]["control"] = _summary(record)
    if "retrain" in run.records:  # without S, retraining without T is training on R: clean
      run.records["retrain"]["control"] = _summary(records["clean"])


def _summary(record: dict[str, Any]) -> dict[str, Any]:
  """What the control keeps of a record: residues and accuracies."""
  keys = ("residue", "residue_median", "residue_defined", "acc")
  return {key: record[key] for key in keys if key in record}

