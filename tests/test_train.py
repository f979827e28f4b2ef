"""Tests of the train state, the weighted step, batching, prediction and checkpoint resume."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax import models, parallel, train
from unlearn_jax.data import pipeline

NUM_CLASSES = 4


def _data(num=40, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (num, 8, 8, 1), dtype=np.uint8),
          "label": rng.integers(0, NUM_CLASSES, num).astype(np.int32)}


@pytest.fixture(scope="module")
def mesh():
  return parallel.make_mesh()


MODEL = models.get("mlp", NUM_CLASSES, hidden=(16,))  # one object: one static apply_fn


def _state(lr=0.1, steps=100):
  tx = train.make_optimizer("sgd", lr, steps, momentum=0.9)
  return train.create_state(MODEL, jax.random.key(0), (8, 8, 1), tx)


def _loss(state, batch):
  logits = train.jit_predict_step(state.apply_fn, state.variables(), jnp.asarray(batch["image"]))
  return float(train.weighted_cross_entropy(logits, batch["label"],
                                            jnp.ones(len(batch["label"]))))


def test_sampler_covers_every_example_once_per_epoch():
  data = _data(num=37)
  sampler = pipeline.EpochSampler(data, batch_size=8, seed=3)
  assert sampler.steps_per_epoch == 5
  for epoch in range(2):
    seen = []
    for index in range(5):
      batch = sampler.batch(epoch * 5 + index)
      assert batch["image"].shape == (8, 8, 8, 1)  # one shape: one compile
      real = batch["weight"] > 0
      seen.extend(map(bytes, batch["image"][real]))
    assert sorted(seen) == sorted(map(bytes, data["image"]))
  np.testing.assert_array_equal(sampler.batch(7)["image"], sampler.batch(7)["image"])
  assert not np.array_equal(sampler.batch(0)["image"], sampler.batch(5)["image"])


def test_descent_lowers_and_ascent_raises_the_loss(mesh):
  data = _data()
  batch = {**data, "weight": np.ones(len(data["label"]), np.float32)}
  for sign, compare in ((1.0, np.less), (-1.0, np.greater)):
    state = _state(lr=0.05)
    before = _loss(state, data)
    key = jax.random.key(0)
    for _ in range(5):
      state, _ = train.jit_train_step(state, {**batch, "weight": sign * batch["weight"]}, key)
    assert compare(_loss(state, data), before)


def test_zero_weight_rows_do_not_change_the_update():
  data = _data(num=16)
  weight = np.r_[np.ones(10), np.zeros(6)].astype(np.float32)
  other = {k: v.copy() for k, v in data.items()}
  other["image"][10:] = 255 - other["image"][10:]
  other["label"][10:] = (other["label"][10:] + 1) % NUM_CLASSES
  key = jax.random.key(0)
  out_a, _ = train.jit_train_step(_state(), {**data, "weight": weight}, key)
  out_b, _ = train.jit_train_step(_state(), {**other, "weight": weight}, key)
  jax.tree.map(np.testing.assert_allclose, out_a.params, out_b.params)


def test_predict_pads_and_drops_padding(mesh):
  state, data = _state(), _data(num=23)
  full = train.predict(state, data, batch_size=23, mesh=mesh)
  padded = train.predict(state, data, batch_size=5, mesh=mesh)
  assert padded.shape == (23, NUM_CLASSES)
  np.testing.assert_allclose(padded, full, rtol=1e-5, atol=1e-6)


def _fit(state, sampler, steps, mesh, directory, **kwargs):
  return train.fit(state, sampler.batch, steps, name="test", mesh=mesh, seed=1,
                   checkpoint_dir=directory, checkpoint_every=4, log_every=2, **kwargs)


def test_killed_training_resumes_to_identical_parameters(tmp_path, mesh):
  sampler = pipeline.EpochSampler(_data(), batch_size=8, seed=0)
  steps = 15
  reference, _ = _fit(_state(steps=steps), sampler, steps, mesh, str(tmp_path / "a"))

  class Killed(Exception):
    pass

  def dying_batch(step):
    if step == 10:  # after the checkpoint at step 8
      raise Killed()
    return sampler.batch(step)

  with pytest.raises(Killed):
    train.fit(_state(steps=steps), dying_batch, steps, name="test", mesh=mesh, seed=1,
              checkpoint_dir=str(tmp_path / "b"), checkpoint_every=4, log_every=2)
  with train.CompileCounter() as counter:
    resumed, info = _fit(_state(steps=steps), sampler, steps, mesh, str(tmp_path / "b"))
  assert info["resumed_at"] == 8 and info["steps_run"] == 7
  # The restored optimiser state (its settings included) has the types of a fresh one: the
  # train step compiled for the first run serves the resumed one.
  assert not [name for name in counter.names if "train_step" in name], counter.names
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(reference.params),
               jax.device_get(resumed.params))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(reference.opt_state),
               jax.device_get(resumed.opt_state))

  again, info = _fit(_state(steps=steps), sampler, steps, mesh, str(tmp_path / "b"))
  assert info["steps_run"] == 0  # complete: restored, not retrained
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(reference.params),
               jax.device_get(again.params))


def test_non_finite_loss_names_the_step(mesh):
  sampler = pipeline.EpochSampler(_data(), batch_size=8, seed=0)

  def batch_fn(step):  # 0-based step 6 (the 7th) has a NaN weight: its loss is the first NaN
    batch = sampler.batch(step)
    if step == 6:
      batch["weight"][0] = np.nan
    return batch

  # Checked every 5 steps: the 7th step's loss is checked with the 10th, yet the error names it.
  with pytest.raises(train.DivergedError, match=r"at step 7;") as error:
    train.fit(_state(), batch_fn, 20, name="boom", mesh=mesh, seed=0, log_every=5)
  assert error.value.step == 7


class _TinyBatchNormNet(nn.Module):
  """Conv + BatchNorm + dense: the smallest model with a batch_stats collection (ResNet-18
  itself takes over a minute to compile on a CPU)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(NUM_CLASSES)(nn.relu(x).mean(axis=(1, 2)))


def test_batch_norm_state_is_trained_and_checkpointed(tmp_path, mesh):
  model = _TinyBatchNormNet()
  tx = train.make_optimizer("sgd", 0.01, 4)
  state = train.create_state(model, jax.random.key(0), (8, 8, 1), tx)
  before = jax.device_get(state.batch_stats)
  sampler = pipeline.EpochSampler(_data(num=16), batch_size=8, seed=0)
  trained, _ = _fit(state, sampler, 4, mesh, str(tmp_path / "bn"))
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), before,
                         jax.device_get(trained.batch_stats))
  assert any(jax.tree.leaves(changed))
  restored, info = _fit(train.create_state(model, jax.random.key(5), (8, 8, 1), tx), sampler, 4,
                        mesh, str(tmp_path / "bn"))
  assert info["steps_run"] == 0
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(trained.batch_stats),
               jax.device_get(restored.batch_stats))
