"""One study: data -> reference models -> unlearning methods -> evaluation -> report.

`run(config, workdir)` runs the study of `config.track` (an image study when the config has no
`track` field) with the runner (`runner.py`) over its task (`tasks/`): it builds the SED, trains
`original` (D), `retrain` (D \\ T), `clean` (R) and `clean_alt` (R, another seed: the noise
floor) for every seed, runs each configured method from `original`, evaluates every model on
target / similar / rest / test, and writes the report files. Every model is checkpointed, so
rerunning the same command resumes where it stopped and skips what is complete. A method that
fails is recorded and the others go on.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from unlearn_jax import config as config_lib
from unlearn_jax import replicates, runner
from unlearn_jax.tasks import image, lm

# The task of each track (`config.track`; a config without the field is an image study).
TASKS = {"image": image.ImageTask, "lm": lm.LMTask}


def track(config: ml_collections.ConfigDict) -> str:
  """The track of a study config: its `track` field, 'image' when it has none.

  Raises:
    config_lib.ConfigError: an unknown track.
  """
  name = config.get("track", None) or "image"
  if name not in TASKS:
    raise config_lib.ConfigError(f"config.track={name!r}: unknown track; tracks: "
                                 f"{', '.join(sorted(TASKS))}")
  return name


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) the study of `config` in `workdir`; returns its summary (also written
  to WORKDIR/report/).

  Raises:
    config_lib.ConfigError: for an invalid config, before anything is written.
    preemption.Preempted: after SIGTERM, once the running model is checkpointed.
  """
  if config.get("sed_seeds"):  # several SEDs: one study each, pooled (replicates.py)
    return replicates.run(TASKS[track(config)], config, workdir)
  return runner.run(TASKS[track(config)], config, workdir)
