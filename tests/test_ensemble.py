"""The vmapped ensemble trains each member exactly as `train_from_scratch` would."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from unlearn_jax import defaults, ensemble, models, parallel, recipe, train


def _recipe(epochs=2, batch_size=16):
  train_config = defaults.base_config().train
  train_config.epochs, train_config.batch_size, train_config.log_every = epochs, batch_size, 1000
  train_config.checkpoint_every = 3
  return train_config


def _data(n, seed):
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (n, 6, 6, 1), dtype=np.uint8),
          "label": rng.integers(0, 3, n).astype(np.int32)}


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = models.get("mlp", 3, hidden=(16,))
MESH = parallel.make_mesh()
# Sizes 40 and 44 give 3 steps per epoch (batch 16), 70 gives 5: two groups.
MEMBERS = [ensemble.Member(_data(40, 0), 0), ensemble.Member(_data(44, 1), 7),
           ensemble.Member(_data(70, 2), 3), ensemble.Member(_data(40, 0), 5)]


def _alone(member, train_config):
  """The member trained alone from its recipe, as the study trains a reference model."""
  state, _ = recipe.fit(member, lambda key: train.create_state(MODEL, key, (6, 6, 1)),
                        train_config, mesh=MESH)
  return state


def _max_diff(a, b):
  return max(float(np.max(np.abs(x - y)))
             for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)))


@pytest.fixture(scope="module")
def trained():
  states, info = ensemble.train_ensemble(MODEL, MEMBERS, _recipe(), image_shape=(6, 6, 1),
                                         mesh=MESH, name="ens", vectorize=True)
  return states, info


def test_vmapped_members_equal_training_one_by_one(trained):
  states, info = trained
  assert info["vectorized"]
  assert sorted(len(g["members"]) for g in info["groups"]) == [1, 3]  # grouped by length
  for member, state in zip(MEMBERS, states):
    alone = _alone(member, _recipe())
    assert int(state.step) == int(alone.step)
    assert _max_diff(state, alone) < 1e-5
  # Members on the same data with different seeds really differ.
  assert _max_diff(states[0], states[3]) > 1e-3


def test_loop_path_gives_the_same_models(trained):
  states, _ = trained
  looped, info = ensemble.train_ensemble(MODEL, MEMBERS, _recipe(), image_shape=(6, 6, 1),
                                         mesh=MESH, name="loop", vectorize=False)
  assert not info["vectorized"]
  for a, b in zip(states, looped):
    assert _max_diff(a, b) < 1e-5


def test_several_steps_per_call_give_the_same_models(trained, monkeypatch):
  states, _ = trained
  calls = []
  scan = ensemble._jit_ensemble_steps  # pylint: disable=protected-access
  monkeypatch.setattr(ensemble, "_jit_ensemble_steps",
                      lambda *args: calls.append(1) or scan(*args))
  train_config = _recipe()
  train_config.steps_per_call = 2  # checkpoint_every=3: calls of 2 and of 1 step around the saves
  scanned, info = ensemble.train_ensemble(MODEL, MEMBERS, train_config, image_shape=(6, 6, 1),
                                          mesh=MESH, name="scan", vectorize=True)
  assert info["vectorized"] and calls  # some calls ran several steps
  for a, b in zip(states, scanned):
    assert int(a.step) == int(b.step)
    assert _max_diff(a, b) < 1e-6


def test_predict_matches_each_model(trained):
  states, _ = trained
  data = _data(23, 9)
  logits = ensemble.predict(states, data, batch_size=8, mesh=MESH)
  assert logits.shape == (4, 23, 3)
  for k, state in enumerate(states):
    np.testing.assert_allclose(logits[k], train.predict(state, data, 8, MESH), atol=1e-5)
  np.testing.assert_allclose(ensemble.predict(states, data, 8, MESH, vectorize=False), logits,
                             atol=1e-5)


# Trains MEMBERS into the directory argv[1], blocking (until killed) when the second group (10
# steps) asks for the batch of step STOP: after its checkpoint at step 6, between checkpoints.
KILLED_RUN = """
import sys, time
sys.path.insert(0, "tests")
import test_ensemble as t
from unlearn_jax import ensemble
from unlearn_jax.data import pipeline
real_batch = pipeline.EpochSampler.batch
def batch(self, step):
  if step >= t.STOP:
    time.sleep(600)
  return real_batch(self, step)
pipeline.EpochSampler.batch = batch
ensemble.train_ensemble(t.MODEL, t.MEMBERS, t._recipe(), image_shape=(6, 6, 1), mesh=t.MESH,
                        name="ens", checkpoint_dir=sys.argv[1], vectorize=True)
"""
STOP = 8  # the 6-step group never gets there; the 10-step one has checkpointed step 6


def _committed_steps(directory):
  """Steps orbax has finished writing in `directory` (unfinished saves have other names)."""
  names = os.listdir(directory) if os.path.isdir(directory) else []
  return sorted(int(name) for name in names if name.isdigit())


def test_killed_mid_training_resumes_to_the_uninterrupted_members(tmp_path, trained):
  states, _ = trained
  directory = str(tmp_path / "ens")
  group = os.path.join(directory, "steps_10")
  with open(tmp_path / "stderr.txt", "w") as stderr:
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, directory], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=stderr)
    try:
      deadline = time.monotonic() + 240
      while 6 not in _committed_steps(group) and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint at step 6 within 240 s"
        time.sleep(0.05)
      assert process.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
      time.sleep(0.5)  # the run is blocked in step 8's batch; let the last save settle
      process.send_signal(signal.SIGKILL)
    finally:
      process.kill()
      code = process.wait(timeout=60)
  assert code == -signal.SIGKILL
  assert _committed_steps(os.path.join(directory, "steps_6"))[-1] == 6  # first group done
  assert _committed_steps(group)[-1] == 6  # killed before step 9's checkpoint

  resumed, info = ensemble.train_ensemble(MODEL, MEMBERS, _recipe(), image_shape=(6, 6, 1),
                                          mesh=MESH, name="ens", checkpoint_dir=directory,
                                          vectorize=True)
  groups = {g["steps"]: g for g in info["groups"]}
  assert groups[6]["steps_run"] == 0  # restored complete
  assert groups[10]["resumed_at"] == 6 and groups[10]["steps_run"] == 4  # resumed mid-way
  # The step is deterministic and checkpoints hold the exact state: bit-identical members.
  for a, b in zip(states, resumed):
    assert int(a.step) == int(b.step)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(a.params),
                 jax.device_get(b.params))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(a.opt_state),
                 jax.device_get(b.opt_state))
  again, info = ensemble.train_ensemble(MODEL, MEMBERS, _recipe(), image_shape=(6, 6, 1),
                                        mesh=MESH, name="ens", checkpoint_dir=directory,
                                        vectorize=True)
  assert info["steps_run"] == 0  # complete checkpoints: nothing trained again
  for a, b in zip(states, again):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(a.params),
                 jax.device_get(b.params))


def test_auto_loops_over_conv_models_on_cpu():
  cnn = models.get("cnn", 3, features=(4,), dense=8)
  if jax.default_backend() == "cpu":
    assert not ensemble.should_vectorize(cnn, (8, 8, 1))
  assert ensemble.should_vectorize(MODEL, (6, 6, 1))


def test_empty_ensemble_is_an_error():
  with pytest.raises(ValueError, match="no members"):
    ensemble.train_ensemble(MODEL, [], _recipe(), image_shape=(6, 6, 1), mesh=MESH, name="x")
