"""Device mesh, shardings and multi-host start-up: one 1-D data-parallel mesh over all devices of
all processes.

Every jitted step in the package takes its batch sharded along the mesh axis `data` and its
state replicated, so the same code runs on one CPU, eight fake CPU devices or a pod slice.

Many hosts: `initialize` starts JAX's distributed runtime (before any other JAX call) from
explicit values, environment variables or the cluster JAX detects (TPU pod slices, SLURM,
Open MPI); afterwards `jax.devices()` lists every process's devices, each process builds the
same global batches and contributes only its own rows (`global_batch`), and `to_host` gathers
sharded results (e.g. logits) so that every process sees the full arrays. Only process 0
writes reports (`utils.is_main_process`); orbax checkpoints are written by all processes
together.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

# XLA:CPU (jaxlib 0.10) sends convolutions to YNNPACK, which runs them on one thread and
# computes kernel gradients (a convolution with a 14x14 window over the batch) ~6x slower than
# Eigen's multi-threaded convolutions: the CNN's train step took ~260 ms instead of ~100 ms at
# batch 256 on 2 cores. This flag keeps YNNPACK for everything else and gives convolutions back
# to Eigen. It is added to XLA_FLAGS when this module is imported, before JAX starts its
# backend, unless XLA_FLAGS already sets the YNNPACK fusion types or
# UNLEARN_JAX_XLA_CPU_DEFAULTS=0.
EIGEN_CONVOLUTIONS_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_YNN_FLAG_NAME = "--xla_cpu_experimental_ynn_fusion_type="

# Environment variables read by `initialize` when an argument is None (JAX itself also reads
# JAX_COORDINATOR_ADDRESS).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _jaxlib_at_least(major: int, minor: int) -> bool:
  try:
    import jaxlib  # pylint: disable=g-import-not-at-top
    parts = jaxlib.__version__.split(".")
    return (int(parts[0]), int(parts[1])) >= (major, minor)
  except (ImportError, ValueError, IndexError, AttributeError):
    return False


def configure_xla_cpu() -> bool:
  """Adds EIGEN_CONVOLUTIONS_FLAG to XLA_FLAGS if JAX's backend has not started yet.

  Runs when this module is imported. Returns True if the flag is (now) in effect for this
  process. Skipped (False) when UNLEARN_JAX_XLA_CPU_DEFAULTS=0, when XLA_FLAGS already chooses
  the YNNPACK fusion types, for a jaxlib without the flag, or once the backend is running
  (XLA reads its flags once).
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if _YNN_FLAG_NAME in flags:
    return EIGEN_CONVOLUTIONS_FLAG in flags.split()
  # Older jaxlibs may not know the flag, and XLA aborts on unknown flags.
  if os.environ.get("UNLEARN_JAX_XLA_CPU_DEFAULTS", "1") == "0" or not _jaxlib_at_least(0, 10):
    return False
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  if xla_bridge.backends_are_initialized():
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {EIGEN_CONVOLUTIONS_FLAG}".strip()
  return True


def ynn_convolutions() -> bool:
  """Whether XLA:CPU runs convolutions with YNNPACK (single-threaded) in this process.

  Read from XLA_FLAGS as `configure_xla_cpu` left it; models choose their gradient formulas by
  it (see models/cnn.py).
  """
  if not _jaxlib_at_least(0, 10):
    return False  # assumed: no YNNPACK convolutions before jaxlib 0.10 (not checked)
  values = None
  for flag in os.environ.get("XLA_FLAGS", "").split():
    if flag.startswith(_YNN_FLAG_NAME):
      values = flag[len(_YNN_FLAG_NAME):].split(",")
  if values is None:
    return True  # the default set includes individual convolutions
  if "-individual_convolution" in values:
    return False
  if any(v.startswith("-") for v in values if v):
    return True  # removals from the default set, convolutions kept
  return "individual_convolution" in values


XLA_CPU_CONFIGURED = configure_xla_cpu()


def detected_cluster() -> str | None:
  """The name of the cluster environment JAX would auto-detect (TPU pod, SLURM, ...), or None.

  Uses JAX's own detectors, so it agrees with what `jax.distributed.initialize()` would pick;
  opt-in detectors (mpi4py) are skipped, as JAX skips them.
  """
  try:
    from jax._src import clusters  # pylint: disable=g-import-not-at-top
    for env in clusters.ClusterEnv._cluster_types:  # pylint: disable=protected-access
      if not getattr(env, "opt_in_only_method", False) and env.is_env_present():
        return env.__name__
  except Exception as error:  # pylint: disable=broad-except  (private API: never fatal)
    logging.warning("cluster auto-detection unavailable (%s: %s)", type(error).__name__, error)
  return None


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"environment variable {name}={value!r}: must be an integer") from None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *,
               initialization_timeout: int = 300) -> bool:
  """Starts JAX's multi-process runtime when this run is one process of several.

  Each value comes from its argument, else from the environment (JAX_COORDINATOR_ADDRESS,
  JAX_NUM_PROCESSES, JAX_PROCESS_ID), else from the cluster JAX detects. With none of them
  set and no cluster detected this is a no-op (a single-process run), as it is for
  `num_processes=1` without a coordinator. Must run before any other JAX call.

  Args:
    coordinator_address: HOST:PORT of process 0's coordinator service (any free port, the same
      on every process).
    num_processes: how many processes take part.
    process_id: this process's index, 0 .. num_processes-1.
    initialization_timeout: seconds to wait for all processes to connect.

  Returns:
    True if the distributed runtime is running (started now or before), False for a
    single-process run.

  Raises:
    ValueError: a partial or inconsistent set of values (e.g. a process count but no
      coordinator address outside a detected cluster), naming the missing ones.
    RuntimeError: JAX was already used in this process (its backend is initialised).
  """
  if jax.distributed.is_initialized():
    logging.info("jax.distributed already initialised: process %d of %d", jax.process_index(),
                 jax.process_count())
    return True
  coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
  num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
  process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
  cluster = detected_cluster()
  given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
           "process_id": process_id}
  if cluster is None:
    if all(value is None for value in given.values()) or (
        coordinator_address is None and num_processes == 1 and process_id in (None, 0)):
      logging.info("single process: no coordinator address, process count or cluster found")
      return False
    missing = [name for name, value in given.items() if value is None]
    if missing:
      raise ValueError(f"multi-host start-up needs {', '.join(missing)} (flags --{missing[0]} "
                       f"..., or environment variables {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, "
                       f"{ENV_PROCESS_ID}); got {given} and no cluster JAX can detect")
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"num_processes={num_processes}: must be >= 1")
  if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
    raise ValueError(f"process_id={process_id}: must be in [0, {num_processes})")
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=initialization_timeout)
  except RuntimeError as error:
    raise RuntimeError(f"{error} (call parallel.initialize first thing in the program)") from None
  logging.info("jax.distributed initialised%s: process %d of %d, %d local / %d global devices, "
               "coordinator %s", f" ({cluster})" if cluster else "", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               coordinator_address or "auto-detected")
  return True


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


@jax.jit
def _copy_arrays(arrays: list) -> list:
  return [jnp.copy(array) for array in arrays]


def replicate(tree, mesh: Mesh, *, copy: bool = False):
  """Every leaf of `tree` replicated on the mesh (parameters, optimiser state).

  With several processes, arrays that live on this process's devices only (fresh from
  `create_state`, or restored from a checkpoint) are placed from their host values, which every
  process holds identically; `jax.device_put` would refuse the cross-host transfer. `copy=True`
  never aliases the input (the caller keeps a state the next step may donate).
  """
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    if copy:
      # `device_put(..., may_alias=False)` still reuses the buffer of an array that already
      # sits on one of the mesh's devices (1 device -> many); a fresh copy first is never
      # aliased. One jitted copy of the whole tree: one compilation per tree structure.
      leaves, treedef = jax.tree.flatten(tree)
      arrays = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.Array)]
      for i, fresh in zip(arrays, _copy_arrays([leaves[i] for i in arrays])):
        leaves[i] = fresh
      tree = jax.tree.unflatten(treedef, leaves)
    return jax.device_put(tree, sharding, may_alias=not copy)

  # Several processes: local arrays go through host memory below (a copy by construction).
  def put(leaf):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      return jax.device_put(leaf, sharding, may_alias=not copy)  # already global
    return jax.device_put(np.asarray(leaf), sharding)

  return jax.tree.map(put, tree)


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


def to_host(value):
  """A global array (or a pytree of them) as numpy on this host, whole on every process.

  Arrays sharded across processes (e.g. the logits of a batch split over every host's devices)
  are gathered from all processes; this is then a collective that every process must call.
  """

  def fetch(leaf):
    if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable or leaf.is_fully_replicated:
      return np.asarray(jax.device_get(leaf))
    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

  return jax.tree.map(fetch, value)


def shard_rows(tree, mesh: Mesh | None, rows: int):
  """Host values of `tree` on the mesh: leaves with `rows` leading rows split across it, the
  rest replicated.

  For full-batch computations (reconstruction) whose row count is fixed by the problem: when
  `rows` does not divide evenly over the devices everything is replicated (same results, no
  speed-up). Every process must pass the same values. `mesh=None` leaves `tree` as it is.
  """
  if mesh is None:
    return tree
  split = rows % mesh.devices.size == 0
  if not split and mesh.devices.size > 1:
    logging.info("%d rows do not split over %d devices: replicated", rows, mesh.devices.size)

  def put(leaf):
    host = np.asarray(leaf)
    sharded = split and host.ndim > 0 and host.shape[0] == rows
    sharding = data_sharding(mesh) if sharded else replicated(mesh)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(put, tree)


def round_up(size: int, mesh: Mesh) -> int:
  """The smallest multiple of the mesh size that is >= size (batches must split evenly)."""
  devices = mesh.devices.size
  return -(-size // devices) * devices
