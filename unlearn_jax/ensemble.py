"""Many models of one architecture trained at once: one jitted step `vmap`-ed over the members.

Membership attacks (LiRA, U-LiRA, the ε estimate) need many reference models trained with the
same recipe on different subsets or seeds. Training them one after the other pays K times for
per-step dispatch and for small matrix products that leave the cores idle; here the K members'
states are stacked along a leading axis and `train.train_step` is `vmap`-ed over it, so one call
advances every member by one step.

Member k is a `recipe.Recipe` (LiRA's members: `recipe.lira`): the model
`train.train_from_scratch` would give on its data with its seed (same initialisation key
`recipe.init_key`, same batch order, same per-step randomness); the tests check this to float
tolerance. Members whose runs have different lengths are trained in separate groups (a member
cannot take a step the others skip without its optimiser state drifting).

`vmap` of a convolution whose kernel differs per member becomes a grouped convolution, which
XLA:CPU runs far slower than K separate ones (measured: the CNN's gradient step 8 members at
once took ~20× one member's time, against 8× for a loop). `vectorize='auto'` therefore loops
over the members of convolutional models on CPU and vmaps everything else.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from unlearn_jax import parallel, train
from unlearn_jax import recipe as recipe_lib
from unlearn_jax.data import pipeline
from unlearn_jax.utils import MetricWriter


# One model of an ensemble: its training data (image, label) and its seed (`Member(data, seed)`).
Member = recipe_lib.Recipe
init_key = recipe_lib.init_key


def stack(states: Sequence[train.TrainState]) -> train.TrainState:
  """Stacks states of one model and optimiser along a new leading (member) axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


@jax.jit
def _split_members(stacked: train.TrainState) -> list[train.TrainState]:
  count = stacked.step.shape[0]
  return [jax.tree.map(lambda leaf, k=k: leaf[k], stacked) for k in range(count)]


def unstack(stacked: train.TrainState) -> list[train.TrainState]:
  """The members of a stacked state, in order (one jitted call: indexing leaf by leaf took a
  quarter of a small ensemble's training time)."""
  return _split_members(stacked)


def _ensemble_step(state: train.TrainState, batch: dict[str, jax.Array],
                   member_keys: jax.Array) -> tuple[train.TrainState, dict[str, jax.Array]]:
  """One train step of every member on its own batch (axis 0 of state, batch and keys)."""
  state, metrics = jax.vmap(train.train_step)(state, batch, member_keys)
  # The mean keeps a NaN of any member, so `fit`'s finite check still names the step.
  return state, {"loss": jnp.mean(metrics["loss"]), "member_loss": metrics["loss"]}


_jit_ensemble_step = jax.jit(_ensemble_step, donate_argnums=0)


def _ensemble_steps(state: train.TrainState, batches: dict[str, jax.Array],
                    member_keys: jax.Array) -> tuple[train.TrainState, dict[str, jax.Array]]:
  """`_ensemble_step` on each batch along the leading (steps) axis: one `lax.scan`."""
  return jax.lax.scan(lambda carry, batch: _ensemble_step(carry, batch, member_keys), state,
                      batches)


_jit_ensemble_steps = jax.jit(_ensemble_steps, donate_argnums=0)


def train_ensemble(model: flax.linen.Module, members: Sequence[Member], recipe, *,
                   image_shape: tuple[int, ...], mesh: jax.sharding.Mesh, name: str,
                   checkpoint_dir: str | None = None, writer: MetricWriter | None = None,
                   vectorize: bool | str = "auto"
                   ) -> tuple[list[train.TrainState], dict[str, Any]]:
  """Trains every member with the `config.train` recipe, all members of equal length at once.

  Args:
    model: the Flax module shared by the members.
    members: each member's data and seed.
    recipe: a `config.train` section (epochs, batch_size, optimiser, lr, ...).
    image_shape: (H, W, C) of the inputs.
    mesh: device mesh; each member's batch is split across it (axis 1 of the stacked batch).
    name: label in logs and metrics: member k's records are run `<name>/model_<k>` (loss, lr;
      examples/s when it trains alone); members of n steps trained at once also write the
      group's run `<name>/steps_<n>` (mean loss, examples/s of the group).
    checkpoint_dir: orbax directory (one sub-directory per group); None disables checkpoints.
    writer: JSONL metric writer.
    vectorize: True (vmap), False (a loop over the members, each `train.train_from_scratch`)
      or 'auto' (see the module docstring).

  Returns:
    (one trained state per member, in order; info with wall time, steps, groups and whether
    the members were vectorised).

  Raises:
    ValueError: for an empty ensemble or a member without data.
    train.DivergedError: when any member's loss becomes non-finite.
  """
  if not members:
    raise ValueError("train_ensemble: no members")
  if vectorize == "auto":
    vectorize = should_vectorize(model, image_shape)
  if not vectorize:
    return _train_loop(model, members, recipe, image_shape=image_shape, mesh=mesh, name=name,
                       checkpoint_dir=checkpoint_dir, writer=writer)
  batch_size = int(recipe.batch_size)
  samplers = [pipeline.EpochSampler(m.data, batch_size, int(m.seed)) for m in members]
  lengths = [int(recipe.epochs) * s.steps_per_epoch for s in samplers]
  groups: dict[int, list[int]] = {}
  for index, length in enumerate(lengths):
    groups.setdefault(length, []).append(index)

  states: list[train.TrainState | None] = [None] * len(members)
  info: dict[str, Any] = {"groups": [], "wall_s": 0.0, "steps": 0, "steps_run": 0,
                          "vectorized": True}
  for num_steps, indices in sorted(groups.items()):
    tx = train.optimizer_from_config(recipe, num_steps)
    stacked = stack([train.create_state(model, members[k].init_key, image_shape, tx)
                     for k in indices])
    member_keys = jax.device_put(jnp.stack([jax.random.key(int(members[k].seed))
                                            for k in indices]), parallel.replicated(mesh))
    group_samplers = [samplers[k] for k in indices]

    def batch_fn(step: int, group_samplers=group_samplers) -> dict[str, np.ndarray]:
      batches = [sampler.batch(step) for sampler in group_samplers]
      return {key: np.stack([b[key] for b in batches]) for key in batches[0]}

    step_fn = functools.partial(_drop_base_key, member_keys=member_keys,
                                step=_jit_ensemble_step)
    multi_step_fn = functools.partial(_drop_base_key, member_keys=member_keys,
                                      step=_jit_ensemble_steps)
    label = f"{name}/steps_{num_steps}"  # its metrics hold each member's loss (member_loss)
    logging.info("[%s] training %d models at once, %d steps each", name, len(indices), num_steps)
    directory = os.path.join(checkpoint_dir, f"steps_{num_steps}") if checkpoint_dir else None
    stacked, group_info = train.fit(
        stacked, batch_fn, num_steps, name=label, mesh=mesh, seed=0, checkpoint_dir=directory,
        checkpoint_every=int(recipe.checkpoint_every), log_every=int(recipe.log_every),
        writer=_MemberWriter(writer, [f"{name}/model_{k}" for k in indices]) if writer else None,
        step_fn=step_fn, multi_step_fn=multi_step_fn, batch_axis=1,
        steps_per_call=int(getattr(recipe, "steps_per_call", 1)))
    for k, state in zip(indices, unstack(stacked)):
      states[k] = state
    info["groups"].append({"members": indices, "steps": num_steps, **group_info})
    info["wall_s"] += float(group_info.get("wall_s", 0.0))
    info["steps"] += num_steps
    info["steps_run"] += int(group_info.get("steps_run", 0))
  return states, info  # type: ignore[return-value]


class _MemberWriter:
  """Writes a group's records as they come, and each member's loss (`member_loss`, in the
  order of `runs`) as a record of the member's own run, so every model has its own curve."""

  def __init__(self, writer: MetricWriter, runs: Sequence[str]):
    self.writer, self.runs = writer, tuple(runs)

  @property
  def active(self) -> bool:
    return self.writer.active

  def write(self, **record: Any) -> None:
    losses = record.pop("member_loss", None)
    self.writer.write(**record)
    if losses is None:
      return
    shared = {key: record[key] for key in ("step", "lr") if key in record}
    for run, loss in zip(self.runs, np.asarray(losses).reshape(-1)):
      self.writer.write(run=run, **shared, loss=float(loss))


def should_vectorize(model: flax.linen.Module, image_shape: tuple[int, ...]) -> bool:
  """False for models with convolution kernels (4-D parameters) on CPU, True otherwise."""
  if jax.default_backend() != "cpu":
    return True
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1,) + tuple(image_shape)), train=False))
  return not any(leaf.ndim >= 4 for leaf in jax.tree.leaves(shapes))


def _train_loop(model, members, recipe, *, image_shape, mesh, name, checkpoint_dir, writer):
  """The members one after the other (same results as the vmapped path, to float tolerance)."""
  states, info = [], {"groups": [], "wall_s": 0.0, "steps": 0, "steps_run": 0,
                      "vectorized": False}
  for k, member in enumerate(members):
    directory = os.path.join(checkpoint_dir, f"member_{k}") if checkpoint_dir else None
    state, member_info = train.train_from_scratch(
        train.create_state(model, member.init_key, image_shape), member.data, recipe,
        int(member.seed), name=f"{name}/model_{k}", mesh=mesh,
        checkpoint_dir=directory, writer=writer)
    states.append(state)
    info["groups"].append({"members": [k], **member_info})
    info["wall_s"] += float(member_info.get("wall_s", 0.0))
    info["steps"] += int(member_info["steps"])
    info["steps_run"] += int(member_info.get("steps_run", 0))
  return states, info


def _drop_base_key(state, batch, base_key, *, member_keys, step):
  del base_key  # each member has its own seed's key
  return step(state, batch, member_keys)


@functools.partial(jax.jit, static_argnums=0)
def _predict_members(apply_fn, variables: dict, images: jax.Array) -> jax.Array:
  return jax.vmap(lambda v: train.predict_step(apply_fn, v, images))(variables)


def predict(states: Sequence[train.TrainState], data: dict[str, np.ndarray], batch_size: int,
            mesh: jax.sharding.Mesh, vectorize: bool | None = None) -> np.ndarray:
  """Logits (K, N, classes) of K models of one architecture on every example of `data`.

  `vectorize=None` vmaps over the models unless they hold convolution kernels and run on CPU
  (see the module docstring).
  """
  if vectorize is None:
    vectorize = jax.default_backend() != "cpu" or not any(
        leaf.ndim >= 4 for leaf in jax.tree.leaves(states[0].params))
  if not vectorize:
    return np.stack([train.predict(state, data, batch_size, mesh) for state in states])
  # Only the variables are stacked: members of different groups have different optimisers.
  variables = parallel.replicate(
      jax.tree.map(lambda *leaves: jnp.stack(leaves), *[s.variables() for s in states]), mesh)
  batch_size = parallel.round_up(min(batch_size, max(len(data["image"]), 1)), mesh)
  outputs = []
  for batch, real in pipeline.eval_batches(data, batch_size):
    logits = _predict_members(states[0].apply_fn, variables,
                              parallel.global_batch(batch, mesh)["image"])
    outputs.append(parallel.to_host(logits)[:, :real])  # gathered from every process
  return np.concatenate(outputs, axis=1)
