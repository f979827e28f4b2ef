"""Several SEDs in one study: `config.sed_seeds` × `config.seeds` (docs/design.md §4.3).

Each SED seed k draws other targets and other similar samples from the same training data. The
study runs one complete study per SED seed in WORKDIR/sed_<k> (its own references, tuning,
methods, control and report, with `sed.seed = k`), then pools them in WORKDIR/report: every
number of `summary.json` is the mean over the (SED seed, training seed) units with its 95%
t-interval over them, every residue gets its bootstrap interval over targets × units and its
paired tests against the floor and `retrain` (evaluate/stats.py), and per_target.csv carries a
`sed_seed` column. The across-seed attacks (ε, U-LiRA) need the same targets in every model, so
they stay in each SED seed's own report.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import ml_collections
from absl import logging

from unlearn_jax import config as config_lib
from unlearn_jax import runner, tune, utils
from unlearn_jax import workdir as workdir_lib
from unlearn_jax.evaluate import evaluator, stats
from unlearn_jax.report import protocol, tables


def sub_config(config: ml_collections.ConfigDict, sed_seed: int) -> ml_collections.ConfigDict:
  """The config of SED seed `sed_seed`'s study: `sed.seed` set, no `sed_seeds`."""
  sub = copy.deepcopy(config)
  with sub.unlocked():
    sub.sed.seed = int(sed_seed)
    sub.sed_seeds = ()
  return sub


def run(task_type, config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) the study of every SED seed, then writes the pooled report.

  Raises:
    config_lib.ConfigError: an invalid config, before anything is written.
  """
  utils.quiet_library_logs()
  task_type.validate(config)
  tune.preflight(config, task_type.track)
  workdir = os.path.abspath(workdir)
  workdir_lib.prepare(config, workdir)
  sed_seeds = [int(k) for k in config_lib.as_tuple(config.sed_seeds)]
  records, rows, status, tuned = {}, [], {}, {}
  for index, sed_seed in enumerate(sed_seeds):
    logging.info("stage: SED seed %d (%d of %d)", sed_seed, index + 1, len(sed_seeds))
    sub = sub_config(config, sed_seed)
    task_type.validate(sub)
    _, task, runs, sub_status = runner.execute(task_type, sub,
                                               os.path.join(workdir, f"sed_{sed_seed}"))
    for seed, seed_run in runs.items():
      records[f"sed_{sed_seed}/seed_{seed}"] = {
          name: record for name, record in seed_run.records.items()
          if name not in seed_run.residue_only}
      rows.extend({"sed_seed": sed_seed, "seed": seed, **row} for row in seed_run.rows)
    status.update({f"sed_{sed_seed}/{key}": text for key, text in sub_status.items()})
    for name, chosen in task.tuned.items():
      tuned.setdefault(name, {})[str(sed_seed)] = chosen
  summary = pooled_summary(config, records, rows, status, tuned)
  text = tables.write(workdir, summary, records, rows)
  if utils.is_main_process():
    print(text, flush=True)
  return summary


def pooled_summary(config: ml_collections.ConfigDict, records: dict[str, dict],
                   rows: list[dict], status: dict[str, str],
                   tuned: dict[str, dict]) -> dict[str, Any]:
  """summary.json over the (SED seed, seed) units."""
  per_unit = {}  # '<model>/sed_<k>.seed_<s>': the runs of the methods table
  for key, text in status.items():
    sed_part, rest = key.split("/", 1)
    name, _, seed_part = rest.rpartition("/")
    if "/" not in name:  # plugin-internal runs (control/...) stay in their SED seed's report
      per_unit[f"{name}/{sed_part}.{seed_part}"] = text
  summary = tables.build_summary(config, records, per_unit)
  summary["seeds"] = [int(s) for s in config_lib.as_tuple(config.seeds)]
  summary["sed_seeds"] = [int(k) for k in config_lib.as_tuple(config.sed_seeds)]
  summary["units"] = list(records)
  summary["status"] = status
  summary["replicates"] = {str(k): os.path.join(f"sed_{k}", "report", "summary.json")
                           for k in summary["sed_seeds"]}
  stats.add_residue_statistics(
      summary, rows,
      scores=evaluator.RESIDUE_SCORES + evaluator.EXTRA_RESIDUE_SCORES + ("recon_ssim",))
  protocol.add_damaged(summary)
  for name, record in summary["methods"].items():
    if name in tuned:
      record["tuning"] = {"per_sed_seed": tuned[name]}
  return summary
