"""Device mesh and shardings: one 1-D data-parallel mesh over all devices of all processes.

Every jitted step in the package takes its batch sharded along the mesh axis `data` and its
state replicated, so the same code runs on one CPU, eight fake CPU devices or a pod slice.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
  """Batch axis `axis` (default the leading one) split across the mesh."""
  return NamedSharding(mesh, PartitionSpec(*([None] * axis), DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole value (parameters, optimiser state)."""
  return NamedSharding(mesh, PartitionSpec())


def global_batch(batch: dict[str, np.ndarray], mesh: Mesh,
                 axis: int = 0) -> dict[str, jax.Array]:
  """Places a host batch on the mesh, split along its batch axis `axis`.

  `axis=1` is for stacked ensemble batches (members, batch, ...): every device then holds all
  members and a slice of each member's examples. With several processes each one passes the
  same global batch and contributes only the rows that belong to its devices, so every process
  can use the same deterministic batch order.
  """
  sharding = data_sharding(mesh, axis)
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  index, count = jax.process_index(), jax.process_count()

  def local(value):
    rows = value.shape[axis] // count
    part = np.take(value, np.arange(index * rows, (index + 1) * rows), axis=axis)
    return jax.make_array_from_process_local_data(sharding, part, value.shape)

  return jax.tree.map(local, batch)


def round_up(size: int, mesh: Mesh) -> int:
  """The smallest multiple of the mesh size that is >= size (batches must split evenly)."""
  devices = mesh.devices.size
  return -(-size // devices) * devices
