"""One process of the multi-host test (tests/test_multihost.py): fake CPU devices, a tiny study.

    python tests/multihost_worker.py --out=DIR --devices=4 --data_dir=TFDS_DIR \
        [--coordinator_address=127.0.0.1:PORT --num_processes=2 --process_id=I]

Sets the fake device count before JAX starts, joins the other processes through
`parallel.initialize`, runs the tiny study of tests/tiny_study.py with a small CNN in DIR/study
(orbax checkpoints written by all processes together), then restores its `original` model
from those checkpoints (`references.train_one`) and predicts every training example. Process 0
writes DIR/result.npz (parameters and logits) and DIR/summary.json; every process writes
DIR/process_<i>.json (what it saw, and the files it wrote through `utils.write_text`), so the
test can check who wrote what.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--devices", type=int, required=True)
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--coordinator_address", default=None)
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  return parser.parse_args(argv)


def study_config(data_dir: str):
  """tests/tiny_study.py with a small CNN, one method and no LiRA / reconstruction track."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  import tiny_study  # pylint: disable=g-import-not-at-top
  config = tiny_study.get_config(f"data_dir={data_dir}")
  config.model = "cnn"
  config.model_kwargs = ml_collections.ConfigDict({"features": (4, 8), "dense": 16})
  # Neither 30 nor the 4 targets' forget batches split over 8 devices: padded with weight-0 rows.
  config.train.batch_size = 30
  config.sed.num_targets = 4
  config.methods = ("finetune", "grad_ascent")
  config.eval.lira.num_models = 0
  config.recon.enabled = False
  return config


def main(argv: list[str]) -> None:
  args = parse_args(argv)
  # Before JAX initialises: the fake device count, and CPU only.
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
  os.environ["JAX_PLATFORMS"] = "cpu"
  sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
  from unlearn_jax import parallel  # pylint: disable=g-import-not-at-top

  distributed = parallel.initialize(args.coordinator_address, args.num_processes,
                                    args.process_id, initialization_timeout=120)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from unlearn_jax import references, study, train, utils  # pylint: disable=g-import-not-at-top
  from unlearn_jax.tasks import image  # pylint: disable=g-import-not-at-top

  assert jax.local_device_count() == args.devices, jax.local_devices()
  written = []  # every file this process writes through utils.write_text (JSON, CSV, reports)
  write_text = utils.write_text

  def recording_write_text(path: str, text: str) -> None:
    written.append(os.path.relpath(path, args.out))
    write_text(path, text)

  utils.write_text = recording_write_text
  config, workdir = study_config(args.data_dir), os.path.join(args.out, "study")
  summary = study.run(config, workdir)
  # The original model again, restored from the checkpoints both processes wrote.
  context = image.ImageTask.build(config, workdir)
  state, _ = references.train_one(context.sed, config, "original", 0, workdir=workdir,
                                  mesh=context.mesh)
  logits = train.predict(state, context.sed.train, batch_size=64, mesh=context.mesh)
  params = parallel.to_host(state.params)
  seen = {"process_index": jax.process_index(), "process_count": jax.process_count(),
          "device_count": jax.device_count(), "distributed": distributed,
          "logits_shape": list(logits.shape), "methods": sorted(summary["methods"]),
          "written": written}
  if utils.is_main_process():
    utils.write_json(os.path.join(args.out, "summary.json"), summary)
    flat = {jax.tree_util.keystr(path): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
    np.savez(os.path.join(args.out, "result.npz"), logits=logits, **flat)
  with open(os.path.join(args.out, f"process_{jax.process_index()}.json"), "w") as f:
    json.dump(seen, f)
  if distributed:
    jax.distributed.shutdown()


if __name__ == "__main__":
  main(sys.argv[1:])
