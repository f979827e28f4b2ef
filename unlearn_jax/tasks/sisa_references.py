"""SISA's own residue references in an image study (methods/sisa.py, docs/design.md §3.4).

SISA's model is an ensemble of shard models (log of the mean softmax), so its residue is
measured against ensembles with the same shards, initialisations and seeds (`sisa.references`):
`sisa_original` on D (the ensemble the first SISA run trained, restored from that run's slice
checkpoints; its time is the training that run left out of its unlearning time) and
`sisa_clean` on R (the shards without T ∪ S, checkpointed beside them; its time is this extra
training, kept in checkpoints/sisa_clean/seed_<s>/info.json). When they cannot be built, the
SISA runs are marked failed rather than scored against single models.
"""

from __future__ import annotations

import os

from absl import logging

from unlearn_jax import recipe, remedy_track, runner, utils
from unlearn_jax import workdir as workdir_lib
from unlearn_jax.methods import sisa
from unlearn_jax.tasks import base


def sisa_runs(names) -> list[str]:
  """The runs whose model is SISA's shard ensemble: `sisa` and its remedies (`sisa+nbr`, ...)."""
  return [name for name in names if remedy_track.parse(name)[0] == "sisa"]


class SisaReferences(base.Plugin):
  """Adds `sisa_original` and `sisa_clean` to a seed whose SISA run succeeded."""

  def models(self, task: base.Task, names: tuple[str, ...]) -> int:
    return len(sisa.REFERENCE_NAMES) if sisa_runs(names) else 0

  def after_runs(self, task: base.Task, run: base.SeedRun,
                 status: dict[str, str]) -> None:
    runs = [name for name in sisa_runs(run.names) if name in run.states]
    if not runs:
      return
    store = task.checkpoint_dir(runs[0], run.seed)
    logging.info("stage: SISA references %s/seed_%d (%s)", " and ".join(sisa.REFERENCE_NAMES),
                 run.seed, task.progress.line())
    outcome: dict[str, str] = {}
    with runner.method_status(outcome, "references"):
      built = recipe.sisa_references(
          task.sed, task.config, run.seed, init_state=task.init_state,
          num_classes=task.num_classes, mesh=task.mesh, store=store, writer=task.writer)
    if outcome["references"] != "ok":
      for name in runs:
        run.states.pop(name)
        status[f"{name}/seed_{run.seed}"] = (f"{outcome['references']} (building the SISA "
                                             "references)")
      return
    (original, original_info), (clean, clean_info) = (built[n] for n in sisa.REFERENCE_NAMES)
    run_info = os.path.join(store, "info.json")
    run.states["sisa_original"], run.times["sisa_original"] = original, float(
        utils.read_json(run_info)["train_s"] if os.path.exists(run_info)
        else original_info["wall_s"])
    run.states["sisa_clean"] = clean
    run.times["sisa_clean"] = workdir_lib.record_time(
        task.checkpoint_dir("sisa_clean", run.seed), clean_info, clean_info["wall_s"])
    task.progress.done += len(sisa.REFERENCE_NAMES)
    pair = tuple(sisa.REFERENCE_NAMES)
    run.references.update({name: pair for name in runs + list(sisa.REFERENCE_NAMES)})
