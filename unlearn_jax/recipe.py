"""The recipe of every reference model, written once (docs/design.md §3.4, §4.1).

A reference model is trained from scratch with the study's recipe (`config.train`). What sets
one apart is a `Recipe`: the examples it trains on, its seed (batch order, per-step randomness
and, through `init_key`, its initialisation) and its checkpoint folder under
`WORKDIR/checkpoints`. This module says it for each of them:

- `reference`: `original` (D), `retrain` (D \\ T), `clean` (R) and `clean_alt` (R with seed +
  `config.floor_seed_offset`, the seed-noise floor), in `<name>/seed_<seed>`;
- `retrained`: a `retrain+...` remedy, trained as `clean` is on the rows a remedy keeps;
- `selection_probe`: the probe that ranks candidates for atypical targets (`selection/`);
- `neighbour_probe`: the probe whose features rank the `nearest` generator's candidates under
  `sed.similarity='embedding'` (`neighbours/`);
- `lira`: the LiRA members, complementary pairs on R plus half the target groups and half the
  held-out candidates (`lira/`, trained at once by `ensemble.train_ensemble`);
- `sisa_references`: SISA's shard ensembles on D and on R (their recipe is `methods/sisa.py`'s,
  from a `sisa` run's key `method_rng(seed)`, in that run's slice store).

The study (`study.py`), the API (`references.py`) and the ensembles (`ensemble.py`) build their
models from these, so a model a script trains is the study's own and each resumes the other's
checkpoints. Changing a seed or a folder here would orphan every existing workdir.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from unlearn_jax import methods, train, utils
from unlearn_jax import workdir as workdir_lib
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.methods import sisa

Arrays = dict[str, np.ndarray]

NAMES = ("original", "retrain", "clean", "clean_alt")
FLOOR = "clean_alt"  # the first model of the seed-noise floor; more are clean_alt_<j>
# The kinds of D's examples each reference trains on (order of D kept).
KINDS = {"original": (sed_lib.TARGET, sed_lib.SIMILAR, sed_lib.REST),
         "retrain": (sed_lib.SIMILAR, sed_lib.REST),
         "clean": (sed_lib.REST,), "clean_alt": (sed_lib.REST,)}


def init_key(seed: int) -> jax.Array:
  """The parameter-initialisation key of a model trained with seed `seed`."""
  return jax.random.fold_in(jax.random.key(int(seed)), 1)


def method_rng(seed: int) -> jax.Array:
  """The PRNG key every method run of study seed `seed` gets (SISA's shard keys come from it)."""
  return jax.random.fold_in(jax.random.key(int(seed)), 2)


def folder(name: str, seed: int) -> str:
  """The checkpoint folder of model `name` of study seed `seed`, relative to WORKDIR/checkpoints."""
  return os.path.join(name, f"seed_{int(seed)}")


@dataclasses.dataclass(frozen=True)
class Recipe:
  """One model trained from scratch with `config.train` on `data` with seed `seed`.

  `seed` orders the batches, seeds the per-step randomness and gives the initialisation key
  (`init_key`). `name` labels logs and metrics; `folder` is the checkpoint folder under
  WORKDIR/checkpoints (None: the caller places the checkpoints, as for ensemble members).
  """
  data: Arrays
  seed: int
  name: str = "model"
  folder: str | None = None

  @property
  def init_key(self) -> jax.Array:
    return init_key(self.seed)

  def checkpoint_dir(self, workdir: str | None) -> str | None:
    """WORKDIR/checkpoints/<folder>, or None without a workdir or a folder."""
    if workdir is None or self.folder is None:
      return None
    return os.path.join(workdir, "checkpoints", self.folder)


def select(train_arrays: Arrays, name: str) -> Arrays:
  """The examples of D (arrays with a `kind` column, image or token) reference `name` trains on.

  Raises:
    ValueError: `name` is not one of NAMES.
  """
  kinds = KINDS[FLOOR] if floor_index(name) else KINDS.get(name)
  if kinds is None:
    raise ValueError(f"unknown reference {name!r}; references: {', '.join(NAMES)}")
  keep = np.isin(train_arrays["kind"], kinds)
  return {key: value[keep] for key, value in train_arrays.items()}


def training_data(sed: sed_lib.SED, name: str) -> Arrays:
  """The data reference `name` trains on: D, D \\ T, or R (for both clean models).

  Raises:
    ValueError: `name` is not one of NAMES.
  """
  return select(sed.train, name)


def names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The references of every seed: NAMES, then `clean_alt_2` ... `clean_alt_<n>` for
  `eval.floor_seeds` = n > 1 (more models of the seed-noise floor, docs/design.md §3.7)."""
  count = int(config.eval.get("floor_seeds", 1))
  return NAMES + tuple(f"{FLOOR}_{j}" for j in range(2, count + 1))


def floor_index(name: str) -> int:
  """1 for clean_alt, j for clean_alt_<j>, 0 for any other name."""
  if name == FLOOR:
    return 1
  prefix, _, j = name.rpartition("_")
  return int(j) if prefix == FLOOR and j.isdigit() and int(j) >= 2 else 0


def model_seed(config: ml_collections.ConfigDict, name: str, seed: int) -> int:
  """The seed reference `name` trains with: `seed`, or seed + j × floor_seed_offset for the j-th
  floor model (clean_alt: j = 1, clean_alt_<j>: j)."""
  return int(seed) + floor_index(name) * int(config.floor_seed_offset)


def reference(train_arrays: Arrays, config: ml_collections.ConfigDict, name: str,
              seed: int) -> Recipe:
  """The recipe of reference `name` (one of NAMES) of study seed `seed`.

  Args:
    train_arrays: D (`sed.train`, or the LM track's encoded D), with its `kind` column.
    config: the study config (`floor_seed_offset` is read).
    name: 'original', 'retrain', 'clean' or 'clean_alt'.
    seed: the study seed (a `config.seeds` entry).

  Raises:
    ValueError: `name` is not one of NAMES.
  """
  return Recipe(select(train_arrays, name), model_seed(config, name, seed),
                f"{name}/seed_{int(seed)}", folder(name, seed))


def control_original(train_arrays: Arrays, seed: int) -> Recipe:
  """The control's `original` of study seed `seed`: D without the similar samples (T ∪ R),
  with the study's seed, in folder control/original/seed_<seed> (tasks/control.py)."""
  keep = np.isin(train_arrays["kind"], (sed_lib.TARGET, sed_lib.REST))
  return Recipe({key: value[keep] for key, value in train_arrays.items()}, int(seed),
                f"control_original/seed_{int(seed)}",
                os.path.join("control", "original", f"seed_{int(seed)}"))


def retrained(name: str, data: Arrays, seed: int) -> Recipe:
  """Model `name` retrained from scratch on `data` as `clean` is (seed, initialisation, batch
  order of study seed `seed`), in folder <name>/seed_<seed>: a `retrain+...` remedy, which with
  ground-truth neighbours reproduces `clean` exactly."""
  return Recipe(data, int(seed), f"{name}/seed_{int(seed)}", folder(name, seed))


def selection_probe(config: ml_collections.ConfigDict,
                    train_split: Arrays) -> tuple[Recipe, np.ndarray]:
  """The probe of `sed.selection='atypical'` and the rows of the split it scores.

  The probe trains on a random half of the training split (seeded by `sed.seed`, also its
  model seed); the other half are the candidates it scores.

  Returns:
    (the probe's recipe, in folder selection/seed_<sed.seed>; the candidate rows, sorted).
  """
  count = len(train_split["label"])
  seed = int(config.sed.seed)
  order = np.random.default_rng([seed, 13]).permutation(count)
  probe_rows, candidate_rows = np.sort(order[:count // 2]), np.sort(order[count // 2:])
  data = {key: train_split[key][probe_rows] for key in ("image", "label")}
  return Recipe(data, seed, "selection_probe", folder("selection", seed)), candidate_rows


def neighbour_probe(sed_config: ml_collections.ConfigDict, train_split: Arrays,
                    target_rows: np.ndarray) -> Recipe:
  """The probe of `sed.generator='nearest'` with `sed.similarity='embedding'`.

  It trains on the training split without the targets `target_rows` (every candidate
  neighbour, no target), so the targets' features are those of unseen examples and every
  candidate is embedded alike. Its seed is drawn from `sed.seed`: the split without T under a
  study seed is `retrain`'s recipe, and the probe is not that model.

  Returns:
    the probe's recipe, in folder neighbours/seed_<sed.seed>.
  """
  seed = int(sed_config.seed)
  keep = np.ones(len(train_split["label"]), bool)
  keep[np.asarray(target_rows, np.int64)] = False
  data = {key: train_split[key][keep] for key in ("image", "label")}
  probe_seed = int(np.random.default_rng([seed, 17]).integers(1 << 30))
  return Recipe(data, probe_seed, "neighbour_probe", folder("neighbours", seed))


@dataclasses.dataclass(frozen=True)
class Lira:
  """LiRA's reference models: member k trains on R, the target groups with `target_in[k]` and
  the held-out candidates (`heldout_rows` of the test split) with `heldout_in[k]`."""
  members: list[Recipe]
  target_in: np.ndarray  # bool (models, targets), targets in the order of `sed.target_ids`
  heldout_rows: np.ndarray
  heldout_in: np.ndarray  # bool (models, candidates)
  folder: str  # the ensemble's checkpoint folder under WORKDIR/checkpoints


def lira(sed: sed_lib.SED, config: ml_collections.ConfigDict) -> Lira:
  """The LiRA members of `config.eval.lira` (docs/design.md §3.5).

  Members come in complementary pairs: model 2i trains on R, a random half of the target groups
  (target + its similar samples) and a random half of the held-out candidates (seeded by
  `sed.seed` and i); model 2i+1 on R and the other halves. So every target is IN for exactly
  half of them. Member k's seed is `eval.lira.seed + k`.
  """
  cfg = config.eval.lira
  heldout = lira_candidates(sed, cfg.num_heldout)
  groups = [np.flatnonzero(sed.train["group"] == t) for t in sed.target_ids]
  target_in = np.zeros((cfg.num_models, len(groups)), bool)
  heldout_in = np.zeros((cfg.num_models, len(heldout)), bool)
  for pair in range(cfg.num_models // 2):
    rng = np.random.default_rng([int(config.sed.seed), 7, pair])
    first = rng.permutation(len(groups))[:len(groups) // 2]
    target_in[2 * pair, first] = True
    first = rng.permutation(len(heldout))[:len(heldout) // 2]
    heldout_in[2 * pair, first] = True
    target_in[2 * pair + 1] = ~target_in[2 * pair]
    heldout_in[2 * pair + 1] = ~heldout_in[2 * pair]
  rest = sed.rest
  members = []
  for k in range(cfg.num_models):
    rows = np.concatenate([groups[g] for g in np.flatnonzero(target_in[k])] + [
        np.zeros(0, np.int64)])
    extra = heldout[heldout_in[k]]
    members.append(Recipe(
        data={"image": np.concatenate([rest["image"], sed.train["image"][rows],
                                       sed.test["image"][extra]]),
              "label": np.concatenate([rest["label"], sed.train["label"][rows],
                                       sed.test["label"][extra]]).astype(np.int32)},
        seed=int(cfg.seed) + k, name=f"lira model {k}"))
  return Lira(members, target_in, heldout, heldout_in,
              os.path.join("lira", f"models{cfg.num_models}_heldout{len(heldout)}_seed{cfg.seed}"))


def lira_candidates(sed: sed_lib.SED, count: int) -> np.ndarray:
  """Rows of the test split of the targets' classes used as LiRA's non-member candidates."""
  target_labels = sed.train["label"][np.isin(sed.train["id"], sed.target_ids)]
  pool = np.flatnonzero(np.isin(sed.test["label"], target_labels))
  rng = np.random.default_rng([len(pool), 11])
  return np.sort(rng.permutation(pool)[:min(count, len(pool))])


def fit(recipe: Recipe, init_state: Callable[[jax.Array], train.TrainState],
        train_config: ml_collections.ConfigDict, *, mesh: jax.sharding.Mesh,
        workdir: str | None = None, writer: utils.MetricWriter | None = None,
        trainer: Callable[..., tuple[Any, dict]] = train.train_from_scratch
        ) -> tuple[train.TrainState, dict[str, Any]]:
  """Trains (or resumes, or restores) the model of `recipe` with `trainer`.

  Args:
    recipe: what to train.
    init_state: key -> a fresh state of the model (called with `recipe.init_key`).
    train_config: the recipe shared by every reference (`config.train`).
    mesh: the device mesh.
    workdir: the (absolute) workdir its checkpoints go to (None: no checkpoints).
    writer: JSONL metric writer.
    trainer: trains a state from scratch, with `train.train_from_scratch`'s signature (the
      language-model track passes `lm.steps.train_from_scratch`).

  Returns:
    (state, info) with info as from `train.fit` and `time_s`, the training time in seconds
    (kept in the checkpoint folder's info.json across resumptions).
  """
  directory = recipe.checkpoint_dir(workdir)
  start = time.perf_counter()
  state, info = trainer(
      init_state(recipe.init_key), recipe.data, train_config, recipe.seed, name=recipe.name,
      mesh=mesh, checkpoint_dir=directory, writer=writer)
  info["time_s"] = workdir_lib.record_time(directory, info, time.perf_counter() - start)
  return state, info


def sisa_references(sed: sed_lib.SED, config: ml_collections.ConfigDict, seed: int, *,
                    init_state: Callable[[jax.Array], train.TrainState], num_classes: int,
                    mesh: jax.sharding.Mesh, store: str | None,
                    writer: utils.MetricWriter | None = None
                    ) -> dict[str, tuple[train.TrainState, dict[str, Any]]]:
  """SISA's references (`sisa.REFERENCE_NAMES`) of study seed `seed`, as `sisa.references`.

  The shard ensembles a `sisa` run of that seed trains (same key `method_rng(seed)`, shards,
  slices and seeds) on D and without T ∪ S; `store` is that run's slice checkpoint folder
  (None: slices stay in memory), so each restores the other's slices.
  """
  run = methods.RunContext(
      forget=sed.forget, retain=sed.retain, mesh=mesh, seed=int(seed), num_classes=num_classes,
      init_state=init_state, recipe=config.train, checkpoint_dir=store, writer=writer,
      val=sed.test)
  return sisa.references(run, methods.method_config(config, "sisa"), method_rng(seed),
                         sed.train["id"][sed.train["kind"] != sed_lib.REST])
