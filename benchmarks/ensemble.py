"""Training K models at once (`ensemble.train_ensemble`, vmapped) against a loop over K.

    python -m benchmarks.ensemble --model=mlp --members=8 --repeats=3

Same data (random MNIST-shaped images), same recipe, same seeds; both paths are compiled before
timing (one warm-up run each), then each is timed `--repeats` times, alternating, and the medians
are printed with their ratio. Not part of the test suite.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import app, flags

from unlearn_jax import defaults, ensemble, models, parallel

FLAGS = flags.DEFINE_string("model", "mlp", "model name (mlp, cnn, resnet18)")
_MEMBERS = flags.DEFINE_integer("members", 8, "models trained at once")
_EXAMPLES = flags.DEFINE_integer("examples", 2048, "training examples per model")
_EPOCHS = flags.DEFINE_integer("epochs", 2, "epochs per model")
_BATCH = flags.DEFINE_integer("batch_size", 128, "batch size")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed repetitions of each path")
_HIDDEN = flags.DEFINE_integer("hidden", 0, "mlp only: width of its two hidden layers (0: default)")


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  data = {"image": rng.integers(0, 256, (_EXAMPLES.value, 28, 28, 1), dtype=np.uint8),
          "label": rng.integers(0, 10, _EXAMPLES.value).astype(np.int32)}
  kwargs = {"hidden": (_HIDDEN.value,) * 2} if _HIDDEN.value else {}
  model = models.get(FLAGS.value, 10, **kwargs)
  mesh = parallel.make_mesh()
  recipe = defaults.base_config().train
  recipe.epochs, recipe.batch_size, recipe.log_every = _EPOCHS.value, _BATCH.value, 10**9
  members = [ensemble.Member(data, seed) for seed in range(_MEMBERS.value)]

  def run(vectorize: bool) -> float:
    start = time.perf_counter()
    states, _ = ensemble.train_ensemble(model, members, recipe, image_shape=(28, 28, 1),
                                        mesh=mesh, name="bench", vectorize=vectorize)
    jax.block_until_ready(jax.tree.leaves(states[-1].params))
    return time.perf_counter() - start

  run(True), run(False)  # compile both paths
  times = {True: [], False: []}
  for _ in range(_REPEATS.value):
    for vectorize in (True, False):
      times[vectorize].append(run(vectorize))
  vmapped, looped = np.median(times[True]), np.median(times[False])
  steps = _EPOCHS.value * -(-_EXAMPLES.value // _BATCH.value)
  print(f"{FLAGS.value}: {_MEMBERS.value} models × {steps} steps (batch {_BATCH.value}) on "
        f"{jax.devices()[0].platform}: vmapped {vmapped:.2f} s, loop {looped:.2f} s "
        f"(medians of {_REPEATS.value}); loop / vmapped = {looped / vmapped:.2f}")


if __name__ == "__main__":
  app.run(main)
