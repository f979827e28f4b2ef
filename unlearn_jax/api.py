"""The public Python API: what a user's script needs around their own method, model or attack.

Most users bring one new piece (an unlearning method, a model, a dataset, a metric) and want the
rest — the SED, the reference models, the study's evaluation — without forking the code. The
functions here are thin, documented entry points over the modules that do the work, under names
that stay stable when those modules change. `import unlearn_jax as uj` exposes every name below
as `uj.<name>`; `docs/api.md` shows them in use.

Typical script (see examples/):

    config = uj.load_config("configs/sed_mnist.py:runlocal")
    uj.register_method("my_method", my_unlearn, default_config={"lr": 0.01})
    config.methods = ("finetune", "my_method")
    summary = uj.run_study(config, "/tmp/my_study")          # the whole study, report included

or piece by piece:

    sed = uj.build_sed(config)                                # D with provenance, T, S, R, test
    refs = uj.train_references(sed, config, seed=0)           # original / retrain / clean / ...
    run = uj.unlearn_data(sed, config, seed=0)              # a RunContext
    cfg = uj.methods.method_config(config, "my_method")      # config.unlearn.my_method
    state, info = uj.run_method("my_method", refs["original"], run, cfg, jax.random.key(2))
    records, rows = uj.evaluate_states({**refs, "my_method": state}, sed, config)
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import sys
import tempfile
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from unlearn_jax import methods, models, parallel, references, study, train, utils
from unlearn_jax.tasks import image
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.data import sources
from unlearn_jax.evaluate import evaluator, metrics, mia, residue

# ----------------------------------------------------------------------------------------------
# Stable names for functions that live elsewhere (their docstrings are the originals').

register_method = methods.register
register_model = models.register
register_dataset = sources.register
run_method = methods.call
train_references = references.train
run_study = study.run
evaluate_logits = evaluator.evaluate_models
example_scores = metrics.example_scores
kl_divergence = metrics.kl_divergence
roc_auc = mia.roc_auc
tpr_at_fpr = mia.tpr_at_fpr
loss_attack_auc = mia.loss_attack_auc
residue_ratio = residue.ratio
residue_absolute = residue.absolute
RunContext = methods.RunContext
Spec = methods.Spec
TrainState = train.TrainState
SED = sed_lib.SED

__all__ = [
    "load_config", "read_config", "build_sed", "unlearn_data", "predict", "evaluate_states",
    "load_checkpoint", "register_method", "register_model", "register_dataset", "run_method",
    "train_references", "run_study", "evaluate_logits", "example_scores", "kl_divergence",
    "roc_auc", "tpr_at_fpr", "loss_attack_auc", "residue_ratio", "residue_absolute",
    "RunContext", "Spec", "TrainState", "SED",
]

_CONFIG_SPEC = re.compile(r"^(?P<path>.*?\.py)(?::(?P<arg>.*))?$")


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads a study config the way `--config=` does: `path/to/config.py[:variant]`.

  Args:
    spec: a config file path, optionally followed by `:` and its variant string, e.g.
      'configs/sed_mnist.py:runlocal,seeds=3'. Relative paths are relative to the working
      directory.

  Returns:
    The (unlocked) ConfigDict returned by the file's `get_config(arg)`; change fields freely,
    `run_study` validates it.

  Raises:
    ValueError: `spec` does not name a .py file.
    FileNotFoundError: the file does not exist.
  """
  match = _CONFIG_SPEC.match(spec)
  if not match:
    raise ValueError(f"config spec {spec!r}: expected path/to/config.py[:variant]")
  path = os.path.abspath(match["path"])
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path} does not exist")
  module_name = f"_unlearn_jax_config_{abs(hash(path))}"
  module_spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(module_spec)
  sys.modules[module_name] = module
  module_spec.loader.exec_module(module)
  arg = match["arg"]
  return module.get_config(arg) if arg is not None else module.get_config()


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a study ran with, read from WORKDIR/config.json (lists become tuples).

  Args:
    workdir: a study's workdir.

  Returns:
    The resolved config as a ConfigDict.

  Raises:
    FileNotFoundError: the workdir has no config.json.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: {workdir} is not a study workdir")
  return ml_collections.ConfigDict(_tuples(utils.read_json(path)))


def _tuples(value: Any) -> Any:
  if isinstance(value, dict):
    return {key: _tuples(item) for key, item in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(item) for item in value)
  return value


def build_sed(config: ml_collections.ConfigDict, workdir: str | None = None) -> sed_lib.SED:
  """Loads `config.dataset` and builds the SED exactly as a study does (same examples, same ids).

  Args:
    config: a study config (`dataset`, `data_dir`, `train_size`, `test_size`, `sed`).
    workdir: the study's workdir, used only by `sed.selection='atypical'`: its selection probe
      model is restored from WORKDIR/checkpoints/selection (or trained there); without a
      workdir the probe is trained in a temporary directory.

  Returns:
    The SED: `sed.train` is D (image uint8 (N, H, W, C), label, id, kind, group), `sed.test` the
    held-out split, `sed.target_ids` the ids of T; `sed.forget` (T), `sed.retain` (D \\ T) and
    `sed.rest` (R) select from D.

  Raises:
    ValueError: an unknown dataset or SED parameters it cannot satisfy.
    sources.DatasetNotPreparedError: a tfds dataset that is not prepared in `config.data_dir`.
  """
  data_dir = config.data_dir or None
  splits = sources.load(config.dataset, data_dir)
  splits = {
      "train": sed_lib.stratified_subset(splits["train"], config.train_size, config.sed.seed),
      "test": sed_lib.stratified_subset(splits["test"], config.test_size, config.sed.seed),
  }
  if config.sed.selection != "atypical":
    return sed_lib.build(splits, config.sed)
  # Atypical targets are ranked by a probe model trained as the study trains it.
  model, mesh = references.make_model(config), parallel.make_mesh()
  with tempfile.TemporaryDirectory() as scratch:
    margins = image.probe_margins(config, workdir or scratch, splits["train"], model, mesh,
                                  utils.MetricWriter(None))
  return sed_lib.build(splits, config.sed, margins)


def unlearn_data(sed: sed_lib.SED, config: ml_collections.ConfigDict, seed: int = 0, *,
                 model: Any = None, mesh: jax.sharding.Mesh | None = None,
                 checkpoint_dir: str | None = None,
                 writer: utils.MetricWriter | None = None) -> methods.RunContext:
  """What a method receives besides the trained state and its hyper-parameters, as a study
  builds it.

  Args:
    sed: the SED.
    config: the study config (model, dataset and the training recipe `train` are read).
    seed: the run's seed (methods use it for batch order).
    model: the flax module (default: `config.model`); `init_state` initialises it.
    mesh: the device mesh (default: every device).
    checkpoint_dir: where the method may checkpoint (None: nowhere).
    writer: optional JSONL metric writer.

  Returns:
    A RunContext with forget = T, retain = D \\ T, val = the test split and recipe =
    `config.train`.
  """
  num_classes = sources.num_classes(config.dataset, config.data_dir or None)
  model = model if model is not None else references.make_model(config, num_classes)
  image_shape = sed.train["image"].shape[1:]
  return methods.RunContext(
      forget=sed.forget, retain=sed.retain,
      mesh=mesh if mesh is not None else parallel.make_mesh(), seed=int(seed),
      num_classes=num_classes, init_state=lambda key: train.create_state(model, key, image_shape),
      recipe=config.train, checkpoint_dir=checkpoint_dir, writer=writer, val=sed.test)


def predict(state: train.TrainState, data: Mapping[str, np.ndarray], *, batch_size: int = 1000,
            mesh: jax.sharding.Mesh | None = None) -> np.ndarray:
  """Logits of a model on every example of `data`, in order (evaluation mode).

  Args:
    state: the model.
    data: arrays with `image` uint8 (N, H, W, C).
    batch_size: examples per compiled call (the last batch is padded, the padding dropped).
    mesh: the device mesh (default: every device).

  Returns:
    float32 logits of shape (N, num_classes).
  """
  mesh = mesh if mesh is not None else parallel.make_mesh()
  return train.predict(state, dict(data), batch_size, mesh)


def evaluate_states(states: Mapping[str, train.TrainState], sed: sed_lib.SED,
             config: ml_collections.ConfigDict, *,
             mesh: jax.sharding.Mesh | None = None) -> tuple[dict[str, dict], list[dict]]:
  """The study's per-model records and per-target rows for models given as states.

  Args:
    states: {name: model}; must include 'original' and 'clean' (the residue references) and
      may include 'retrain' (for kl_to_retrain).
    sed: the SED the models were trained on.
    config: the study config (`eval.batch_size` and `eval.min_gap` are read).
    mesh: the device mesh (default: every device).

  Returns:
    ({name: record}, rows): a record holds acc / loss / confidence / margin per split
    ('target', 'similar', 'rest', 'test'), mia_auc, kl_to_clean, kl_to_retrain, and per score
    residue (mean over the defined targets) / residue_median / residue_ratio_of_sums /
    residue_defined / residue_undefined / residue_abs (as in summary.json); rows hold one dict per
    (model, target) with its raw scores and residue ratios.

  Raises:
    ValueError: 'original' or 'clean' is missing.
  """
  missing = [name for name in ("original", "clean") if name not in states]
  if missing:
    raise ValueError(f"evaluate_states: states lacks {missing}; the residue is measured against "
                     "'original' and 'clean' (see train_references)")
  batch_size = int(config.eval.batch_size)
  logits = {name: {"train": predict(state, sed.train, batch_size=batch_size, mesh=mesh),
                   "test": predict(state, sed.test, batch_size=batch_size, mesh=mesh)}
            for name, state in states.items()}
  return evaluator.evaluate_models(logits, sed, config.eval.min_gap)


class _DropMessages(logging.Filter):
  """Drops the log records whose unformatted message starts with one of `prefixes`."""

  def __init__(self, prefixes: tuple[str, ...]):
    super().__init__()
    self.prefixes = prefixes

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(self.prefixes)


@contextlib.contextmanager
def _without_log_records(*prefixes: str):
  """Within the block, absl log records starting with `prefixes` are dropped; nothing else is.

  Scoped to the block and to those messages: every other record, of absl or any other logger,
  still shows.
  """
  logger = logging.getLogger("absl")
  drop = _DropMessages(prefixes)
  logger.addFilter(drop)
  try:
    yield
  finally:
    logger.removeFilter(drop)


def load_checkpoint(directory: str, config: ml_collections.ConfigDict | None = None, *,
                    step: int | None = None) -> train.TrainState:
  """Restores a model a study saved, read-only, whatever method or optimiser produced it.

  Args:
    directory: a checkpoint directory WORKDIR/checkpoints/<name>/seed_<seed> (orbax steps).
    config: the study config; default: WORKDIR/config.json three levels up.
    step: the step to restore (default: the newest that reads back).

  Returns:
    A TrainState with the saved parameters (and BatchNorm statistics) and step, the model of
    `config`, and a no-op optimiser (`state.with_optimizer(tx)` sets one).

  Raises:
    FileNotFoundError: no config.json (pass `config`) or no checkpoint in `directory`.
    train.CorruptCheckpointError: no checkpoint step reads back (nothing is deleted).
    ValueError: the saved parameters do not fit the config's model.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = os.path.abspath(directory)
  if config is None:
    config = read_config(os.path.dirname(os.path.dirname(os.path.dirname(directory))))
  model = references.make_model(config)
  like = train.create_state(model, jax.random.key(0),
                            sources.image_shape(config.dataset, config.data_dir or None))
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoint directory {directory}")
  # read_only: nothing is saved, deleted or created. save_interval_steps=0 is what read_only
  # implies (orbax warns when it has to set it itself); the notice that the directory is read
  # only is what was asked for, so it is not shown.
  options = ocp.CheckpointManagerOptions(create=False, read_only=True, save_interval_steps=0)
  with _without_log_records("Given directory is read only"):
    manager = ocp.CheckpointManager(directory, options=options)
  try:
    steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {directory} (a method that does not save "
                              "checkpoints leaves only info.json)")
    errors = []
    fallback = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    for candidate in steps:
      try:
        restored = manager.restore(candidate, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(fallback_sharding=fallback)))["state"]
        break
      except Exception as error:  # pylint: disable=broad-except  (orbax raises many types)
        errors.append(f"step {candidate}: {type(error).__name__}: {str(error)[:200]}")
    else:
      raise train.CorruptCheckpointError(f"no readable checkpoint in {directory} "
                                         f"({'; '.join(errors)})")
  finally:
    manager.close()
  parts = {part: _fit(getattr(like, part), restored.get(part) or {}, part, directory)
           for part in ("params", "batch_stats")}
  return like.replace(step=jnp.asarray(restored["step"]), **parts)


def _fit(like: Any, saved: Any, part: str, directory: str) -> Any:
  """`saved` arrays arranged in the tree of `like`; ValueError naming what does not fit."""
  saved_leaves = {jax.tree_util.keystr(path): leaf
                  for path, leaf in jax.tree_util.tree_flatten_with_path(saved)[0]}
  paths, treedef = jax.tree_util.tree_flatten_with_path(like)
  leaves, problems = [], []
  for path, leaf in paths:
    key = jax.tree_util.keystr(path)
    value = saved_leaves.get(key)
    if value is None:
      problems.append(f"missing {key}")
    elif np.shape(value) != np.shape(leaf):
      problems.append(f"{key} is {np.shape(value)}, the model's {np.shape(leaf)}")
    leaves.append(value)
  problems += [f"unexpected {key}" for key in saved_leaves
               if key not in {jax.tree_util.keystr(p) for p, _ in paths}]
  if problems:
    raise ValueError(f"{directory}: the saved {part} do not fit the config's model "
                     f"({'; '.join(problems[:3])}); pass the config it was trained with")
  return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(v) for v in leaves])
