"""The reference models of a SED, trained outside a study exactly as a study trains them.

Residue is measured against reference models (docs/design.md §3.4): `original` (trained on D),
`retrain` (D \\ T), `clean` (R) and `clean_alt` (R with another seed: the seed-noise floor). A
user evaluating their own method from a script needs them without running a whole study, and
they must be the *same* models a study would train, so that numbers from a script and from
`python -m unlearn_jax.main` can be compared. Hence this module trains them from the study's
own recipes (`recipe.reference`: data, seed — `clean_alt`: seed + `config.floor_seed_offset` —,
initialisation key and checkpoint folder) with `recipe.fit`; given a workdir, checkpoints go to
the study's place (`WORKDIR/checkpoints/<name>/seed_<seed>`) with the study's config.json and
info.json (training time), so training resumes there, a study run in that workdir finds them
complete, and a workdir made with another config is refused as a study refuses it.

SISA's ensembles have references of their own (`train_sisa`: `sisa_original` on D and
`sisa_clean` on R, same shards; see methods/sisa.py), built as a study with the `sisa` method
builds them (`recipe.sisa_references`).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import ml_collections
from absl import logging

from unlearn_jax import defaults, models, parallel, recipe, utils
from unlearn_jax import train as train_lib
from unlearn_jax import workdir as workdir_lib
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.data import sources

NAMES = recipe.NAMES
# Where the recipe of each reference is written (unlearn_jax/recipe.py), under the names this
# module has always offered.
training_data = recipe.training_data
model_seed = recipe.model_seed
init_key = recipe.init_key
checkpoint_dir = workdir_lib.checkpoint_dir


def make_model(config: ml_collections.ConfigDict, num_classes: int | None = None) -> Any:
  """The study's model: `config.model` with `config.model_kwargs`.

  Args:
    config: a study config.
    num_classes: number of classes (default: that of `config.dataset`).

  Returns:
    The flax module.
  """
  if num_classes is None:
    num_classes = sources.num_classes(config.dataset, config.data_dir or None)
  kwargs = {key: _hashable(value) for key, value in config.model_kwargs.to_dict().items()}
  return models.get(config.model, int(num_classes), **kwargs)


def _hashable(value: Any) -> Any:
  """Lists (as JSON configs hold them) to tuples: flax modules are hashed as jit static args."""
  return tuple(_hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


def train_one(sed: sed_lib.SED, config: ml_collections.ConfigDict, name: str, seed: int = 0, *,
              model: Any = None, workdir: str | None = None,
              mesh: jax.sharding.Mesh | None = None,
              writer: utils.MetricWriter | None = None) -> tuple[train_lib.TrainState, dict]:
  """Trains (or restores from `workdir`) one reference model; arguments as for `train`.

  Args:
    sed: the SED.
    config: the study config.
    name: one of NAMES.
    seed: the training seed.
    model, workdir, mesh, writer: see `train`.

  Returns:
    (state, info) with info as from `train.fit` (steps, steps_run, wall_s, ...) and `time_s`,
    the training time in seconds (kept across resumptions when a workdir is given).

  Raises:
    As `train`.
  """
  if workdir is not None:
    _prepare(config, workdir)
  return _train_one(sed, config, name, seed, model=model, workdir=workdir, mesh=mesh,
                    writer=writer)


def _train_one(sed, config, name, seed, *, model, workdir, mesh, writer):
  """`train_one` for a prepared workdir (or none)."""
  reference = recipe.reference(sed.train, config, name, seed)
  model = model if model is not None else make_model(config)
  mesh = mesh if mesh is not None else parallel.make_mesh()
  image_shape = sed.train["image"].shape[1:]
  logging.info("reference %s: %d examples", reference.name, len(reference.data["label"]))
  return recipe.fit(reference, lambda key: train_lib.create_state(model, key, image_shape),
                    config.train, mesh=mesh, workdir=os.path.abspath(workdir) if workdir else None,
                    writer=writer)


def _prepare(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Validates the config and makes `workdir` a study workdir for it (config.json)."""
  defaults.validate(config)
  workdir_lib.prepare(config, os.path.abspath(workdir))


def train(sed: sed_lib.SED, config: ml_collections.ConfigDict, seed: int = 0, *,
          names: Sequence[str] = NAMES, model: Any = None, workdir: str | None = None,
          mesh: jax.sharding.Mesh | None = None,
          writer: utils.MetricWriter | None = None) -> dict[str, train_lib.TrainState]:
  """Trains the reference models of `sed` with the study's recipe; equal to a study's models.

  Args:
    sed: the SED (e.g. from `unlearn_jax.api.build_sed(config)`).
    config: a study config: `train` (recipe), `model`, `model_kwargs`, `dataset` (for the
      number of classes) and `floor_seed_offset` are read.
    seed: the training seed (a study's `config.seeds` entry).
    names: which references, any of NAMES ('original', 'retrain', 'clean', 'clean_alt').
    model: a flax module to use instead of `config.model` (must match the data's classes).
    workdir: if given, the config is validated and written to WORKDIR/config.json (a workdir
      made with another config is refused), and checkpoints go to
      WORKDIR/checkpoints/<name>/seed_<seed> (the study's layout): an interrupted call resumes,
      a finished one restores without training.
    mesh: the device mesh (default: every device).
    writer: optional JSONL metric writer for the training progress.

  Returns:
    {name: trained TrainState}, in the order of `names`.

  Raises:
    ValueError: an unknown reference name.
    unlearn_jax.config.ConfigError: with a workdir, an invalid config or a workdir made with
      another config.
    train.DivergedError: a loss became non-finite (lower config.train.lr).
  """
  unknown = [name for name in names if name not in NAMES]
  if unknown:
    raise ValueError(f"unknown reference(s) {unknown}; references: {', '.join(NAMES)}")
  if workdir is not None:
    _prepare(config, workdir)
  model = model if model is not None else make_model(config)
  mesh = mesh if mesh is not None else parallel.make_mesh()
  return {name: _train_one(sed, config, name, seed, model=model, workdir=workdir, mesh=mesh,
                           writer=writer)[0]
          for name in names}


def train_sisa(sed: sed_lib.SED, config: ml_collections.ConfigDict, seed: int = 0, *,
               model: Any = None, workdir: str | None = None,
               mesh: jax.sharding.Mesh | None = None,
               writer: utils.MetricWriter | None = None) -> dict[str, train_lib.TrainState]:
  """SISA's residue references, the ensembles a study with the `sisa` method scores it against.

  `sisa_original`: the shard ensemble on D, the one the `sisa` method trains before unlearning;
  `sisa_clean`: the same shards, slices, initialisations and seeds without T ∪ S (see
  `methods.sisa.references`). Settings from `config.unlearn.sisa` and `config.train`.

  Args:
    sed, config, seed, model, mesh, writer: as for `train`.
    workdir: if given (validated as for `train`), slice checkpoints go to the study's SISA
      slice store WORKDIR/checkpoints/sisa/seed_<seed>: a study's `sisa` run and this call
      restore each other's slices, and an interrupted call resumes.

  Returns:
    {'sisa_original': ensemble state, 'sisa_clean': ensemble state}.
  """
  if workdir is not None:
    _prepare(config, workdir)
  model = model if model is not None else make_model(config)
  mesh = mesh if mesh is not None else parallel.make_mesh()
  image_shape = sed.train["image"].shape[1:]
  built = recipe.sisa_references(
      sed, config, seed, init_state=lambda key: train_lib.create_state(model, key, image_shape),
      num_classes=int(getattr(model, "num_classes", 0)), mesh=mesh,
      store=checkpoint_dir(os.path.abspath(workdir), "sisa", seed) if workdir else None,
      writer=writer)
  return {name: state for name, (state, _) in built.items()}
