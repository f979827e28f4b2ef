"""Training K models at once (`ensemble.train_ensemble`, vmapped) against a loop over K.

    python -m benchmarks.ensemble --model=mlp --members=8 --repeats=3

Same data (random MNIST-shaped images), same recipe, same seeds; both paths are compiled before
timing (one warm-up run each), then each is timed `--repeats` times, alternating, and the medians
are printed with their ratio. Not part of the test suite; `python -m benchmarks.run
--only=ensemble` runs the same comparison among the other benchmarks.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from absl import app, flags

from benchmarks import timing
from unlearn_jax import defaults, ensemble, models, parallel

def compare(model_name: str, members: int = 8, examples: int = 2048, epochs: int = 2,
            batch_size: int = 128, repeats: int = 3, model_kwargs: dict | None = None,
            steps_per_call: int = 1) -> dict[str, Any]:
  """Median seconds to train `members` models vmapped and in a loop, and their ratio.

  Returns:
    {'vmapped': {...}, 'loop': {...}} timing dicts (see timing.interleaved), the number of
    steps per model, and `loop_over_vmapped` (> 1: the vmapped ensemble is faster).
  """
  rng = np.random.default_rng(0)
  data = {"image": rng.integers(0, 256, (examples, 28, 28, 1), dtype=np.uint8),
          "label": rng.integers(0, 10, examples).astype(np.int32)}
  model = models.get(model_name, 10, **(model_kwargs or {}))
  mesh = parallel.make_mesh()
  recipe = defaults.base_config().train
  recipe.epochs, recipe.batch_size, recipe.log_every = epochs, batch_size, 10**9
  recipe.checkpoint_every = 10**9
  recipe.steps_per_call = steps_per_call  # both paths: a lax.scan over this many steps per call
  ensemble_members = [ensemble.Member(data, seed) for seed in range(members)]

  def run(vectorize: bool) -> None:
    states, _ = ensemble.train_ensemble(model, ensemble_members, recipe,
                                        image_shape=(28, 28, 1), mesh=mesh, name="bench",
                                        vectorize=vectorize)
    jax.block_until_ready(jax.tree.leaves(states[-1].params))

  times = timing.interleaved({"vmapped": lambda: run(True), "loop": lambda: run(False)},
                             repeats=repeats)
  return {**times, "steps": epochs * -(-examples // batch_size), "members": members,
          "loop_over_vmapped": times["loop"]["median"] / times["vmapped"]["median"]}


def main(argv):
  del argv
  flag = flags.FLAGS
  kwargs = {"hidden": (flag.hidden,) * 2} if flag.hidden else {}
  result = compare(flag.model, flag.members, flag.examples, flag.epochs, flag.batch_size,
                   flag.repeats, kwargs, flag.steps_per_call)
  print(f"{flag.model}: {flag.members} models × {result['steps']} steps (batch "
        f"{flag.batch_size}) on {jax.devices()[0].platform}: vmapped "
        f"{result['vmapped']['median']:.2f} s, loop {result['loop']['median']:.2f} s (medians of "
        f"{flag.repeats}); loop / vmapped = {result['loop_over_vmapped']:.2f}")


if __name__ == "__main__":
  # Defined here, not at import: benchmarks/run.py imports `compare` and has its own flags.
  flags.DEFINE_string("model", "mlp", "model name (mlp, cnn, resnet18)")
  flags.DEFINE_integer("members", 8, "models trained at once")
  flags.DEFINE_integer("examples", 2048, "training examples per model")
  flags.DEFINE_integer("epochs", 2, "epochs per model")
  flags.DEFINE_integer("batch_size", 128, "batch size")
  flags.DEFINE_integer("repeats", 3, "timed repetitions of each path")
  flags.DEFINE_integer("hidden", 0, "mlp only: width of its two hidden layers (0: default)")
  flags.DEFINE_integer("steps_per_call", 1, "train steps per jitted call, on both paths")
  app.run(main)
