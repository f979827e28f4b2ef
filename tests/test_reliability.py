"""Reliability: corrupted checkpoints and provenance, overwrite, exit status of failed runs."""

import os

import jax
import numpy as np
import pytest

from unlearn_jax import config as config_lib
from unlearn_jax import models, parallel, study, train
from unlearn_jax.data import pipeline
from unlearn_jax.data import sed as sed_lib


def _toy():
  rng = np.random.default_rng(0)
  data = {"image": rng.integers(0, 256, (24, 6, 6, 1), dtype=np.uint8),
          "label": rng.integers(0, 3, 24).astype(np.int32)}
  sampler = pipeline.EpochSampler(data, batch_size=8, seed=0)
  model = models.get("mlp", 3, hidden=(8,))
  tx = train.make_optimizer("sgd", 0.1, 12)
  return sampler, lambda: train.create_state(model, jax.random.key(0), (6, 6, 1), tx)


def _fit(init, sampler, directory, steps=12):
  return train.fit(init(), sampler.batch, steps, name="toy", mesh=parallel.make_mesh(), seed=0,
                   checkpoint_dir=str(directory), checkpoint_every=4, log_every=4)


def _damage(step_dir):
  """Truncates every file of a checkpoint step to half its size."""
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      size = os.path.getsize(path)
      with open(path, "r+b") as f:
        f.truncate(size // 2)


def test_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
  sampler, init = _toy()
  reference, _ = _fit(init, sampler, tmp_path / "ref")
  # A run that stopped after step 8 (checkpoints at 4 and 8), whose step-8 checkpoint is damaged.
  _fit(init, sampler, tmp_path / "run", steps=8)
  _damage(tmp_path / "run" / "8")
  resumed, info = _fit(init, sampler, tmp_path / "run")
  assert info["resumed_at"] == 4
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(reference.params),
               jax.device_get(resumed.params))


def test_no_readable_checkpoint_names_the_directory(tmp_path):
  sampler, init = _toy()
  _fit(init, sampler, tmp_path / "run", steps=4)
  _damage(tmp_path / "run" / "4")
  with pytest.raises(train.CorruptCheckpointError, match=str(tmp_path / "run")):
    _fit(init, sampler, tmp_path / "run")


def test_corrupted_provenance_is_rebuilt(tmp_path):
  rng = np.random.default_rng(0)
  splits = {"train": {"image": rng.integers(0, 256, (30, 8, 8, 1), dtype=np.uint8),
                      "label": np.arange(30) % 3, "id": np.arange(30)},
            "test": {"image": rng.integers(0, 256, (6, 8, 8, 1), dtype=np.uint8),
                     "label": np.arange(6) % 3, "id": np.arange(30, 36)}}
  from unlearn_jax import defaults  # pylint: disable=g-import-not-at-top
  sed_config = defaults.base_config().sed
  sed_config.num_targets, sed_config.similar_per_target = 3, 2
  sed = sed_lib.build(splits, sed_config)
  path = str(tmp_path / "provenance.npz")
  sed_lib.save_provenance(sed, path)
  with open(path, "r+b") as f:
    f.truncate(100)
  sed_lib.save_provenance(sed, path)  # detected, rebuilt
  np.testing.assert_array_equal(sed_lib.load_provenance(path)["id"],
                                sed_lib.provenance(sed)["id"])


def test_overwrite_replaces_a_study_made_with_another_config(tfds_data_dir, tmp_path):
  import tiny_study  # pylint: disable=g-import-not-at-top
  config = tiny_study.get_config(f"data_dir={tfds_data_dir}")
  config.methods = ("grad_ascent",)
  workdir = str(tmp_path / "wd")
  study.run(config, workdir)
  changed = tiny_study.get_config(f"data_dir={tfds_data_dir}")
  changed.methods = ("grad_ascent",)
  changed.sed.similar_per_target = 1
  with pytest.raises(config_lib.ConfigError, match="sed.similar_per_target.*overwrite"):
    study.run(changed, workdir)
  changed.overwrite = True
  summary = study.run(changed, workdir)
  assert summary["sed"]["similar_per_target"] == 1
  saved = sed_lib.load_provenance(os.path.join(workdir, "data", "provenance.npz"))
  assert np.sum(saved["kind"] == sed_lib.SIMILAR) == 4  # 4 targets × 1, not the old 4 × 3
