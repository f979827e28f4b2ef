"""The workdir of a study: its config.json, where each model's checkpoints go, and its times.

Every model a study, a sweep point or a script trains keeps its checkpoints in
`WORKDIR/checkpoints/<name>/seed_<seed>` (docs/design.md §6.1) with an info.json holding its
training time, so a rerun resumes or restores it and reports the time of the run that trained
it. `prepare` makes a directory the workdir of one config and refuses one made with another.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import ml_collections
from absl import logging

from unlearn_jax import config as config_lib
from unlearn_jax import utils

# Config fields that may change between runs into the same workdir: they do not affect any
# checkpoint (methods may be added; their own settings must stay the same). `steps_per_call`
# changes how steps are dispatched, not their results (and workdirs from before it lack it).
RERUN_SAFE_FIELDS = ("methods", "data_dir", "train.log_every", "train.checkpoint_every",
                     "train.steps_per_call", "eval", "overwrite")
# What a study writes into its workdir (deleted by `overwrite=True`).
ENTRIES = ("config.json", "data", "checkpoints", "metrics.jsonl", "tensorboard", "report", "recon",
           "tuning")


def checkpoint_dir(workdir: str, name: str, seed: int) -> str:
  """Where model `name` of seed `seed` is kept: WORKDIR/checkpoints/<name>/seed_<seed>."""
  return os.path.join(workdir, "checkpoints", name, f"seed_{seed}")


def prepare(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Creates the workdir and writes config.json; refuses a workdir made with another config.

  Raises:
    config_lib.ConfigError: the workdir holds a study made with a config that differs in a
      field outside RERUN_SAFE_FIELDS (and not in a section or field added since, at its
      default), and
      `config.overwrite` is False (with it, that study's results are deleted).
  """
  path = os.path.join(workdir, "config.json")
  resolved = json.loads(config.to_json())
  if os.path.exists(path):
    previous = utils.read_json(path)
    differing = _differing_keys(previous, resolved)
    # A method added since (its `unlearn.<name>` section is new), or a config section the
    # workdir's version did not have yet, changes no existing result.
    new_sections = [f"unlearn.{name}" for name in resolved.get("unlearn", {})
                    if name not in previous.get("unlearn", {})]
    new_sections += [name for name in resolved if name not in previous]
    differing = [k for k in differing if not k.startswith(RERUN_SAFE_FIELDS) and not any(
        k == section or k.startswith(section + ".") for section in new_sections)]
    # A field added since, at its default value, changes no existing result either.
    differing = [k for k in differing if not _added_at_default(k, previous, resolved, config)]
    if differing and not config.overwrite:
      raise config_lib.ConfigError(
          f"{workdir} holds a study made with a different config (fields: "
          f"{', '.join(differing)}); use a new --workdir, restore those values, or pass "
          "--config.overwrite=True to delete its results and start again")
    if differing and utils.is_main_process():
      logging.warning("overwrite=True: deleting the results of the old config in %s (%s)",
                      workdir, ", ".join(differing))
      for entry in ENTRIES:
        target = os.path.join(workdir, entry)
        if os.path.isdir(target):
          shutil.rmtree(target)
        elif os.path.exists(target):
          os.remove(target)
  if utils.is_main_process():
    utils.write_json(path, resolved)


_ABSENT = object()


def _lookup(tree: Any, dotted: str) -> Any:
  for part in dotted.split("."):
    if not isinstance(tree, dict) or part not in tree:
      return _ABSENT
    tree = tree[part]
  return tree


def _added_at_default(key: str, previous: dict, resolved: dict,
                      config: ml_collections.ConfigDict) -> bool:
  """Whether `key` is absent from the old config.json and holds its track's default now."""
  if _lookup(previous, key) is not _ABSENT:
    return False
  from unlearn_jax import defaults  # pylint: disable=g-import-not-at-top  (defaults imports us)
  from unlearn_jax.lm import defaults as lm_defaults  # pylint: disable=g-import-not-at-top
  base = lm_defaults if config.get("track", "image") == lm_defaults.TRACK else defaults
  default = _lookup(json.loads(base.base_config().to_json()), key)
  return default is not _ABSENT and default == _lookup(resolved, key)


def _differing_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
  """Dotted paths whose values differ between two JSON trees."""
  if isinstance(old, dict) and isinstance(new, dict):
    keys = list(dict.fromkeys(list(old) + list(new)))
    return [path for key in keys
            for path in _differing_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
  return [] if old == new else [prefix.rstrip(".")]


def record_time(directory: str | None, info: dict, elapsed: float) -> float:
  """The wall time of a model's whole training, kept in info.json across resumptions.

  A restored model (no steps run now) keeps its recorded time; None: nothing is recorded.
  """
  if directory is None:
    return elapsed
  path = os.path.join(directory, "info.json")
  previous = utils.read_json(path) if os.path.exists(path) else {}
  if info.get("steps_run", 1) == 0 and "time_s" in previous:
    return float(previous["time_s"])  # complete checkpoint: report the original training time
  if utils.is_main_process():
    utils.write_json(path, {**info, "time_s": elapsed})
  return elapsed
