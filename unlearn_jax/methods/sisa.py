"""SISA: sharded, isolated, sliced, aggregated training, and unlearning by partial retraining.

Bourtoule et al., "Machine Unlearning" (IEEE S&P 2021; code: cleverhans-lab/machine-unlearning).
D (here retain ∪ forget ordered by `id`, so the result does not depend on the inputs' order) is
split into `num_shards` disjoint shards by a permutation seeded from `run.seed`, each shard into
`num_slices` slices. One model per shard trains slice by slice: at slice k on slices 1..k together
(the official `sisa.py` trains on the shard prefix `until=(sl+1)*slice_size`), with a checkpoint
after every slice. To unlearn, each shard holding a forget example restarts from the checkpoint
taken just before its earliest slice holding one (a fresh initialisation when that is slice 1)
and trains the remaining slices without the forget examples; other shards are kept. Slice
boundaries stay those of D, as in the official code (removed points leave their slice,
`sharded.py`).

From the official code where the paper is silent: slice k trains int(k·a) − int((k−1)·a) epochs,
a = 2·e/(R+1), so a shard costs e epochs over the shard (`sisa.py`, `avg_epochs_per_slice`); with
e = `config.train.epochs` the ensemble costs one model's training. Shards use the study recipe
(`config.train`); optimiser state and schedule run on across a shard's slices (one schedule over
the largest shard's nominal steps, fixed at training time). Aggregation: the paper votes with the
shard labels (`aggregation.py`, uniform weights); to give the study logits the ensemble returns
log of the mean shard softmax, and `vote` gives the majority label (ties: lowest class).

Evaluation: the ensemble's output (log of a mean of S shard softmaxes, each shard trained on
1/S of D) is not on the scale of one model's logits, so a study scores SISA against SISA
references with
the same shards, slices, initialisations and seeds (`references`): `sisa_original`, the ensemble
on D that `unlearn` trains first (restored from its slice checkpoints, no extra training), and
`sisa_clean`, the same shards without T ∪ S (trained from each shard's last slice state without
any of them: about one more ensemble's training when T ∪ S reaches every shard's first slice).
Residue = (f(sisa) − f(sisa_clean)) / (f(sisa_original) − f(sisa_clean)). The ensemble's
parameters (stacked over shards) have no distance to a single model's: reported as n/a.

Defaults: S = 5 shards, R = 4 slices, a project choice for ~4,200 training images (~840 per
shard); the paper's simple-task experiments use more shards on far larger data.

Timing: SISA trains its own ensemble inside `unlearn`, within `run.untimed()` (so a study does
not count it as unlearning time; `info['train_s']`, `info['train_steps']` report it); `wall_s` and
`steps` cover only the unlearning part (restoring restart checkpoints, retraining the
affected shards), so unlearning cost compares with retraining. Checkpoints: one orbax directory per
shard and slice under `run.checkpoint_dir`, named by a hash of the slice's training ids and
recipe (like the official slice hashes), so a rerun restores instead of retraining; without a
checkpoint directory every slice state is kept in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from unlearn_jax import config as config_lib
from unlearn_jax import methods, train
from unlearn_jax.data import pipeline


# The unlearned model is the shard ensemble (its own parameter tree and apply function), not the
# original architecture: `methods.call` skips its same-architecture check for this method.
SPEC = methods.Spec(returns_ensemble=True)

Arrays = dict[str, np.ndarray]


def default_config() -> ml_collections.ConfigDict:
  """SISA hyper-parameters (Bourtoule et al., S&P 2021; see the module docstring)."""
  config = ml_collections.ConfigDict()
  config.num_shards = 5  # S: disjoint shards, one model each.
  config.num_slices = 4  # R: slices per shard, a checkpoint after each.
  # Epochs per slice; 0: int(k·a) − int((k−1)·a) at slice k, a = 2·train.epochs/(R+1) (official
  # code), so the ensemble costs one model's training.
  config.epochs_per_slice = 0
  return config


def check_config(cfg: ml_collections.ConfigDict) -> None:
  """epochs_per_slice must be an integer ≥ 0 (num_shards/num_slices: shared checks)."""
  config_lib.require_number("unlearn.sisa.epochs_per_slice", cfg.epochs_per_slice, low=0,
                            integer=True)


def training_set(run) -> Arrays:
  """D = retain ∪ forget ordered by `id`."""
  joined = pipeline.concat(run.retain, run.forget)
  order = np.argsort(joined["id"], kind="stable")
  return {key: value[order] for key, value in joined.items()}


def partition(num_examples: int, num_shards: int, num_slices: int,
              seed: int) -> list[list[np.ndarray]]:
  """Rows of D per shard and slice: a seeded permutation cut into equal parts."""
  if num_examples < num_shards * num_slices:
    raise ValueError(f"sisa: {num_examples} examples cannot fill {num_shards} shards × "
                     f"{num_slices} slices; lower unlearn.sisa.num_shards/num_slices")
  order = np.random.default_rng([seed, 5154]).permutation(num_examples)
  return [np.array_split(shard, num_slices) for shard in np.array_split(order, num_shards)]


def slice_epochs(epochs_per_slice: int, train_epochs: int, num_slices: int) -> list[int]:
  """Epochs of each slice (fixed, or the official code's split of `train_epochs`)."""
  if epochs_per_slice:
    return [int(epochs_per_slice)] * num_slices
  average = 2.0 * train_epochs / (num_slices + 1)
  return [int((k + 1) * average) - int(k * average) for k in range(num_slices)]


def without(slices: list[np.ndarray], ids: np.ndarray, drop_ids: np.ndarray) -> list[np.ndarray]:
  """The slices with the rows whose id is in `drop_ids` removed."""
  return [rows[~np.isin(ids[rows], drop_ids)] for rows in slices]


def slice_key(ids: np.ndarray, rows: np.ndarray, shard: int, k: int, epochs: list[int],
              recipe, seed: int, init_key: jax.Array) -> str:
  """Names a slice state by everything it depends on (its training ids, recipe, seeds)."""
  digest = hashlib.sha256()
  recipe_items = sorted((field, value) for field, value in recipe.items()
                        if field not in ("log_every", "checkpoint_every"))
  digest.update(repr((seed, epochs[:k + 1], recipe_items)).encode())
  digest.update(np.asarray(jax.random.key_data(init_key)).tobytes())
  digest.update(np.asarray(ids[rows], np.int64).tobytes())
  return f"shard_{shard}/slice_{k}_{digest.hexdigest()[:16]}"


def train_slice(state: train.TrainState, data: Arrays, rows: np.ndarray, epochs: int, recipe,
                *, seed: int, name: str, mesh, checkpoint_dir: str | None, key: str,
                writer=None) -> tuple[train.TrainState, dict]:
  """`epochs` passes over data[rows] from `state` (optimiser state carried on).

  Checkpointed in `checkpoint_dir/key` (None: no checkpoint); a complete checkpoint is restored
  instead of training.
  """
  if epochs == 0 or len(rows) == 0:
    return state, _no_steps()
  sampler = pipeline.EpochSampler({k: data[k][rows] for k in pipeline.BATCH_KEYS},
                                  int(recipe.batch_size), seed)
  directory = os.path.join(checkpoint_dir, key) if checkpoint_dir else None
  state = state.replace(step=jnp.zeros((), jnp.int32))
  state, info = train.fit(state, sampler.batch,
                          epochs * sampler.steps_per_epoch, name=name, mesh=mesh, seed=seed,
                          checkpoint_dir=directory, checkpoint_every=recipe.checkpoint_every,
                          log_every=recipe.log_every, writer=writer)
  return state, info


def train_shard(state: train.TrainState, data: Arrays, slices: list[np.ndarray],
                epochs: list[int], recipe, *, start: int, shard: int, seed: int,
                init_key: jax.Array, mesh, checkpoint_dir: str | None, writer=None,
                stop: int | None = None) -> tuple[list[train.TrainState], dict]:
  """Trains slices start..stop−1 (default: to the last) of one shard from `state`.

  `state` is the state after slice start−1 (a fresh one for start = 0); slice k trains on the
  union of slices 0..k. Returns the state after each trained slice and the summed fit info.
  """
  states, total = [], _no_steps()
  slice_seed = lambda k: int(np.random.SeedSequence([seed, shard, k]).generate_state(1)[0])
  for k in range(start, len(slices) if stop is None else stop):
    rows = np.concatenate(slices[:k + 1])
    key = slice_key(data["id"], rows, shard, k, epochs, recipe, seed, init_key)
    state, info = train_slice(state, data, rows, epochs[k], recipe, seed=slice_seed(k),
                              name=f"sisa/seed_{seed}/shard_{shard}/slice_{k}", mesh=mesh,
                              checkpoint_dir=checkpoint_dir, key=key, writer=writer)
    states.append(state)
    total = _add(total, info)
  return states, total


def shard_optimizer(slices: list[list[np.ndarray]], epochs: list[int], recipe):
  """The study optimiser, its schedule over the nominal (pre-removal) steps of the largest shard.

  One optimiser for every shard, so all shards share one compiled train step.
  """
  batch = int(recipe.batch_size)
  steps = max(sum(e * -(-sum(len(s) for s in shard[:k + 1]) // batch)
                  for k, e in enumerate(epochs)) for shard in slices)
  return train.optimizer_from_config(recipe, max(steps, 1))


def initial_states(init_state, keys: list[jax.Array],
                   image_shape: tuple[int, ...]) -> list[train.TrainState]:
  """What `init_state(key)` returns for every key, with one compile of the initialisation.

  The model and optimiser come from an abstract evaluation of `init_state`; parameters come
  from `train._jit_init` (what `train.create_state` runs), compiled once per model
  configuration and shared with every other initialisation of that model, so a second SISA
  run compiles nothing.
  """
  abstract = jax.eval_shape(init_state, keys[0])
  model = abstract.apply_fn.__self__
  images = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  states = []
  for key in keys:
    variables = train._jit_init(model, key, images)  # pylint: disable=protected-access
    params = variables["params"]
    states.append(abstract.replace(step=jnp.zeros((), jnp.int32), params=params,
                                   batch_stats=variables.get("batch_stats", {}),
                                   opt_state=abstract.tx.init(params)))
  return states


class ShardEnsemble(nn.Module):
  """The shard models side by side (`nn.vmap` over the base model, parameters stacked on axis 0).

  Calling it gives log(mean_s softmax(logits_s)): log-probabilities, usable as logits.
  """
  base_cls: Any  # the single model's class, e.g. models.cnn.CNN.
  base_fields: tuple  # ((field, value), ...) of the single model.
  num_shards: int

  def setup(self):
    self.members = nn.vmap(self.base_cls, variable_axes={"params": 0, "batch_stats": 0},
                           split_rngs={"params": True}, in_axes=None,
                           axis_size=self.num_shards)(**dict(self.base_fields))

  def member_logits(self, x: jax.Array, train: bool = False) -> jax.Array:
    """(num_shards, N, classes) logits of every shard model."""
    return self.members(x, train)

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    log_probs = jax.nn.log_softmax(self.member_logits(x, train))
    return jax.nn.logsumexp(log_probs, axis=0) - jnp.log(self.num_shards)


def ensemble_state(states: list[train.TrainState]) -> train.TrainState:
  """A TrainState whose `apply_fn` runs every shard model and averages their probabilities."""
  base = states[0].apply_fn.__self__
  fields = tuple((f.name, getattr(base, f.name)) for f in dataclasses.fields(base)
                 if f.name not in ("parent", "name"))
  module = ShardEnsemble(type(base), fields, len(states))
  stack = lambda trees: jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)
  params = {"members": stack([s.params for s in states])}
  batch_stats = {"members": stack([s.batch_stats for s in states])} if states[0].batch_stats else {}
  tx = optax.identity()
  return train.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                          opt_state=tx.init(params), apply_fn=module.apply, tx=tx)


def member_params(state: train.TrainState, shard: int) -> Any:
  """The parameters of one shard model of an ensemble state."""
  return jax.tree.map(lambda leaf: leaf[shard], state.params["members"])


def vote(member_logits: np.ndarray) -> np.ndarray:
  """Majority vote of the shard labels (S, N, C) -> (N,); ties go to the lowest class."""
  member_logits = np.asarray(member_logits)
  labels = np.argmax(member_logits, axis=-1)
  counts = np.stack([(labels == c).sum(axis=0) for c in range(member_logits.shape[-1])], -1)
  return np.argmax(counts, axis=-1)


@dataclasses.dataclass
class _Plan:
  """What every training run of one SISA setting shares: D, its shards and slices, the slice
  epochs, each shard's initial state and the shared optimiser."""
  dataset: Arrays
  slices: list[list[np.ndarray]]
  epochs: list[int]
  recipe: Any
  init_keys: list[jax.Array]
  initial: list[train.TrainState]
  tx: Any
  shared: dict[str, Any]
  keep_all: bool  # no checkpoint directory: every slice state stays in memory

  def fresh(self, shard: int) -> train.TrainState:
    return self.initial[shard].with_optimizer(self.tx)

  def run(self, shard: int, begin: train.TrainState, shard_slices: list[np.ndarray], **kwargs):
    return train_shard(begin, self.dataset, shard_slices, self.epochs, self.recipe, shard=shard,
                       init_key=self.init_keys[shard], **self.shared, **kwargs)


def _plan(run, cfg, rng) -> _Plan:
  """The SISA setting of `run` (D = retain ∪ forget, the recipe `run.recipe`) under `cfg`, the
  method's `config.unlearn.sisa`."""
  recipe = run.recipe
  num_shards, num_slices = int(cfg.num_shards), int(cfg.num_slices)
  dataset = training_set(run)
  slices = partition(len(dataset["id"]), num_shards, num_slices, run.seed)
  epochs = slice_epochs(int(cfg.epochs_per_slice), int(recipe.epochs), num_slices)
  init_keys = [jax.random.fold_in(rng, shard) for shard in range(num_shards)]
  return _Plan(dataset=dataset, slices=slices, epochs=epochs, recipe=recipe, init_keys=init_keys,
               initial=initial_states(run.init_state, init_keys, dataset["image"].shape[1:]),
               tx=shard_optimizer(slices, epochs, recipe),
               shared=dict(seed=run.seed, mesh=run.mesh, checkpoint_dir=run.checkpoint_dir,
                           writer=run.writer),
               # With checkpoints, restart states are restored from disk when needed (S·R
               # copies of a large model would not fit on the device).
               keep_all=not run.checkpoint_dir)


def _train_on_d(plan: _Plan) -> tuple[list[list], dict[str, int]]:
  """Every shard trained on all its slices of D: per shard, the state after each slice (only
  the last one when slice states are checkpointed), and the summed fit info."""
  trained, total = [], _no_steps()
  num_slices = len(plan.epochs)
  for shard in range(len(plan.slices)):
    states, info = plan.run(shard, plan.fresh(shard), plan.slices[shard], start=0)
    trained.append(states if plan.keep_all else [None] * (num_slices - 1) + states[-1:])
    total = _add(total, info)
  return trained, total


def _remove(plan: _Plan, trained: list[list], drop_ids: np.ndarray
            ) -> tuple[list[train.TrainState], dict[int, int], dict[str, int]]:
  """The shard models without the examples `drop_ids`: each shard holding one restarts from the
  state after its last slice without any and trains the remaining slices without them.

  Returns the final shard states, the restart slice of each retrained shard and the summed fit
  info of the retraining.
  """
  finals, restarts, total = [], {}, _no_steps()
  ids = plan.dataset["id"]
  for shard, shard_slices in enumerate(plan.slices):
    holds = [bool(np.isin(ids[rows], drop_ids).any()) for rows in shard_slices]
    if not any(holds):
      finals.append(trained[shard][-1])
      continue
    first = restarts[shard] = holds.index(True)
    begin = plan.fresh(shard)
    if first > 0:  # the checkpoint after the last clean slice
      begin = trained[shard][first - 1] if plan.keep_all else plan.run(
          shard, begin, shard_slices, start=0, stop=first)[0][-1]
    states, info = plan.run(shard, begin, without(shard_slices, ids, drop_ids), start=first)
    finals.append(states[-1])
    total = _add(total, info)
  return finals, restarts, total


def unlearn(state, run, cfg, rng):
  """Trains the SISA ensemble on D, then retrains the shards holding forget examples.

  `state` (the study's original model) is not used: SISA's models are its own ensemble; shard s
  starts from `run.init_state(fold_in(rng, s))`. SISA's own training runs in `run.untimed()`,
  so it is not counted as unlearning time. info: `steps` and `wall_s` of the unlearning part
  only; `train_s`, `train_steps` of SISA's own training; `steps_run` of both (0 when all was
  restored); `restart_slices` (0-based) of the retrained shards.
  """
  del state
  start = time.perf_counter()
  with run.untimed():
    plan = _plan(run, cfg, rng)
    trained, train_info = _train_on_d(plan)
  train_s = time.perf_counter() - start

  start = time.perf_counter()
  finals, restarts, unlearn_info = _remove(plan, trained, np.asarray(run.forget["id"]))
  ensemble = ensemble_state(finals)
  jax.block_until_ready(ensemble.params)
  wall = time.perf_counter() - start
  return ensemble, {"steps": unlearn_info["steps"], "wall_s": wall, "train_s": train_s,
                    "train_steps": train_info["steps"],
                    "steps_run": unlearn_info["steps_run"] + train_info["steps_run"],
                    "restart_slices": {str(s): k for s, k in restarts.items()},
                    "slice_epochs": plan.epochs}


REFERENCE_NAMES = ("sisa_original", "sisa_clean")


def references(run, cfg, rng, clean_drop_ids: np.ndarray
               ) -> dict[str, tuple[train.TrainState, dict[str, Any]]]:
  """SISA's own residue references, on the scale of its ensemble output.

  A SISA ensemble (log of the mean shard softmax) is compared with SISA ensembles built with
  the same shards, slices, initialisations and seeds as `unlearn(state, run, cfg, rng)`:

  - `sisa_original`: the ensemble trained on D, exactly the one `unlearn` trains before it
    removes anything (restored from the same slice checkpoints when `run.checkpoint_dir` is
    the method's).
  - `sisa_clean`: the same shards without the examples `clean_drop_ids` (in a study T ∪ S,
    so each shard trains on its part of R; slice boundaries stay those of D, as in unlearning).
    By SISA's exactness this is each shard trained from scratch on its slices without those
    examples; it is built the way `unlearn` removes them, from the state after each shard's
    last slice without any.

  Returns {name: (ensemble state, info)}; info: `steps` and `steps_run` of that model's training
  (`sisa_clean`: the retraining only, what it costs beyond `sisa_original`), `wall_s`, and
  `restart_slices` for `sisa_clean`.
  """
  start = time.perf_counter()
  plan = _plan(run, cfg, rng)
  trained, train_info = _train_on_d(plan)
  original = ensemble_state([states[-1] for states in trained])
  jax.block_until_ready(original.params)
  original_s = time.perf_counter() - start
  start = time.perf_counter()
  finals, restarts, clean_info = _remove(plan, trained, np.asarray(clean_drop_ids))
  clean = ensemble_state(finals)
  jax.block_until_ready(clean.params)
  clean_s = time.perf_counter() - start
  return {"sisa_original": (original, {**train_info, "wall_s": original_s}),
          "sisa_clean": (clean, {**clean_info, "wall_s": clean_s,
                                 "restart_slices": {str(s): k for s, k in restarts.items()}})}


def _no_steps() -> dict[str, int]:
  return {"steps": 0, "steps_run": 0}


def _add(total: dict[str, int], info: dict) -> dict[str, int]:
  return {name: total[name] + int(info.get(name, 0)) for name in total}
