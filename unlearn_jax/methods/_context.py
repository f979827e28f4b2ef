"""What a method runs with besides its state and hyper-parameters: `RunContext` and its `Clock`.

Imports no JAX at run time (the annotations name its types only), so the method registry stays
light to import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

import ml_collections
import numpy as np

if TYPE_CHECKING:
  import jax

Arrays = dict[str, np.ndarray]


class Clock:
  """Time spent in a run that is not unlearning (a method training its own model first).

  Attributes:
    excluded_s: seconds spent inside `untimed()` blocks (a nested block counts once).
  """

  def __init__(self):
    self.excluded_s = 0.0
    self._depth = 0

  @contextlib.contextmanager
  def untimed(self) -> Iterator[None]:
    """Adds the wall time spent inside the block to `excluded_s`."""
    self._depth += 1
    start = time.perf_counter()
    try:
      yield
    finally:
      self._depth -= 1
      if self._depth == 0:
        self.excluded_s += time.perf_counter() - start


@dataclasses.dataclass(frozen=True)
class RunContext:
  """What a method may use besides the trained state and its hyper-parameters.

  Attributes:
    forget: the forget set (image: image, label, id, kind, group arrays; lm: tokens, loss_mask,
      ...).
    retain: the retained training data D \\ forget.
    mesh: device mesh for the steps.
    seed: integer seed of this run (batch order, random labels).
    num_classes: number of classes (lm: the vocabulary size).
    init_state: returns a freshly initialised TrainState for a PRNG key (for retraining).
    recipe: the track's training recipe (the study's `config.train`: epochs, batch_size, lr,
      weight_decay, checkpoint_every, log_every, ...).
    checkpoint_dir: where the method may keep orbax checkpoints (None: no checkpoints).
    writer: JSONL metric writer (or None).
    val: optional held-out data.
    clock: time the run asks not to count as unlearning (see `untimed`).
  """
  forget: Arrays
  retain: Arrays
  mesh: jax.sharding.Mesh
  seed: int
  num_classes: int
  init_state: Callable[[jax.Array], Any]
  recipe: ml_collections.ConfigDict
  checkpoint_dir: str | None = None
  writer: Any = None
  val: Arrays | None = None
  clock: Clock = dataclasses.field(default_factory=Clock)

  def untimed(self) -> contextlib.AbstractContextManager[None]:
    """A block whose wall time is not unlearning time (e.g. SISA training its own ensemble):
    callers subtract `clock.excluded_s` from the time they measure around the method."""
    return self.clock.untimed()
