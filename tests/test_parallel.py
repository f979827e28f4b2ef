"""Data parallelism: training on a mesh of 4 fake CPU devices equals training on one device.

The device count must be set before JAX initialises, so the checks run in a subprocess: the
MLP with one step per call, and the CNN (custom conv/pool gradients) with several steps per
call (`lax.scan`, batches stacked and split along their second axis). Levels
(docs/reproducibility.md): 1 against 4 devices to float reduction order (rtol 1e-5, atol 1e-6
on the parameters: the devices sum their rows' gradients in another order); on 4 devices, a
second run and a run killed and resumed from its checkpoint bit for bit. Many processes: see
tests/test_multihost.py.
"""

import os
import textwrap

import jax
import numpy as np

from devices import run_on_cpu_devices
from unlearn_jax import parallel

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from unlearn_jax import models, parallel, train
    from unlearn_jax.data import pipeline
    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    data = {"image": rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8),
            "label": rng.integers(0, 4, 40).astype(np.int32)}
    sampler = pipeline.EpochSampler(data, batch_size=8, seed=0)
    for name, kwargs, steps_per_call in (("mlp", {"hidden": (16,)}, 1),
                                         ("cnn", {"features": (4, 8), "dense": 16}, 3)):
      model = models.get(name, 4, **kwargs)
      results = []
      for devices in (jax.devices()[:1], jax.devices()):
        mesh = parallel.make_mesh(devices)
        state = train.create_state(model, jax.random.key(0), (8, 8, 1),
                                   train.make_optimizer("sgd", 0.1, 10))
        state, _ = train.fit(state, sampler.batch, 10, name="mesh", mesh=mesh, seed=0,
                             log_every=5, steps_per_call=steps_per_call)
        logits = train.predict(state, data, batch_size=12, mesh=mesh)
        results.append((jax.device_get(state.params), logits))
        if len(devices) == 4:
          kernel = jax.tree.leaves(state.params)[0]
          assert len(kernel.sharding.device_set) == 4, kernel.sharding
      (p1, l1), (p4, l4) = results
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p1, p4)
      np.testing.assert_allclose(l1, l4, rtol=1e-5, atol=1e-5)
      print("EQUAL", name)
    # A batch size the device count does not divide (6 on 4): weight-0 filler rows, same model;
    # the vmapped ensemble pads each member's batch the same way.
    from unlearn_jax import defaults, ensemble
    recipe = defaults.base_config().train
    recipe.epochs, recipe.batch_size, recipe.log_every = 2, 6, 100
    model = models.get("mlp", 4, hidden=(16,))
    runs = []
    for devices in (jax.devices()[:1], jax.devices()):
      mesh = parallel.make_mesh(devices)
      init = train.create_state(model, ensemble.init_key(3), (8, 8, 1))
      state, _ = train.train_from_scratch(init, data, recipe, 3, name="odd", mesh=mesh)
      members, _ = ensemble.train_ensemble(model, [ensemble.Member(data, 3)], recipe,
                                           image_shape=(8, 8, 1), mesh=mesh, name="odd",
                                           vectorize=True)
      runs.append((jax.device_get(state.params), jax.device_get(members[0].params)))
    for other in (runs[0][1], *runs[1]):  # 1-device ensemble; 4-device model and ensemble
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                   runs[0][0], other)
    print("EQUAL odd batch")
    # Bit for bit on 4 devices: a second run gives the same parameters, and a run killed after
    # its step-4 checkpoint resumes to them (the checkpoint holds the exact sharded state).
    import tempfile
    model = models.get("cnn", 4, features=(4, 8), dense=16)
    mesh = parallel.make_mesh()
    init = lambda: train.create_state(model, jax.random.key(0), (8, 8, 1),
                                      train.make_optimizer("sgd", 0.1, 10))
    run = lambda batch_fn, directory: train.fit(init(), batch_fn, 10, name="resume", mesh=mesh,
                                                seed=0, checkpoint_dir=directory,
                                                checkpoint_every=4, log_every=5)
    first, _ = run(sampler.batch, None)
    again, _ = run(sampler.batch, None)
    class Killed(Exception):
      pass
    def dying(step):
      if step == 6:
        raise Killed()
      return sampler.batch(step)
    directory = tempfile.mkdtemp()
    try:
      run(dying, directory)
    except Killed:
      pass
    resumed, info = run(sampler.batch, directory)
    assert info["resumed_at"] == 4, info
    for other in (again, resumed):
      jax.tree.map(np.testing.assert_array_equal, jax.device_get(first.params),
                   jax.device_get(other.params))
    print("BIT FOR BIT rerun and resume")
    # A copy onto the mesh never shares the source's buffer (fit donates what it is given).
    x = jax.device_put(np.arange(4.0), jax.devices()[0])
    copied = parallel.replicate(x, parallel.make_mesh(), copy=True)
    pointers = {s.data.unsafe_buffer_pointer() for s in copied.addressable_shards}
    assert x.unsafe_buffer_pointer() not in pointers and len(pointers) == 4
    print("COPIED")
""")


def test_four_devices_match_one_device():
  stdout = run_on_cpu_devices(SCRIPT, num_devices=4)
  assert "EQUAL mlp" in stdout and "EQUAL cnn" in stdout
  assert "EQUAL odd batch" in stdout and "COPIED" in stdout
  assert "BIT FOR BIT rerun and resume" in stdout


def test_replicate_and_to_host_on_one_process():
  mesh = parallel.make_mesh()
  tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}
  placed = parallel.replicate(tree, mesh)
  assert all(leaf.sharding.is_equivalent_to(parallel.replicated(mesh), leaf.ndim)
             for leaf in jax.tree.leaves(placed))
  copied = parallel.replicate(placed, mesh, copy=True)
  assert copied["w"] is not placed["w"]
  host = parallel.to_host(placed)
  assert isinstance(host["w"], np.ndarray)
  np.testing.assert_array_equal(host["w"], tree["w"])
  batch = parallel.global_batch({"x": np.arange(8.0).reshape(4, 2)}, mesh)
  np.testing.assert_array_equal(parallel.to_host(batch)["x"], np.arange(8.0).reshape(4, 2))


def test_this_process_runs_convolutions_on_eigen():
  # parallel.py added the flag before JAX started (conftest imports nothing that starts it).
  assert parallel.EIGEN_CONVOLUTIONS_FLAG in os.environ.get("XLA_FLAGS", "").split()
  assert not parallel.ynn_convolutions()


def test_ynn_convolutions_reads_the_flag(monkeypatch):
  name = "--xla_cpu_experimental_ynn_fusion_type="
  for flags, expected in [("", True), ("--xla_force_host_platform_device_count=4", True),
                          (f"{name}-individual_convolution", False), (f"{name}", False),
                          (f"{name}-reduce", True), (f"{name}dot,individual_convolution", True),
                          (f"{name}dot,eltwise", False),
                          (f"{name}-reduce {name}-individual_convolution", False)]:
    monkeypatch.setenv("XLA_FLAGS", flags)
    assert parallel.ynn_convolutions() is expected, flags
  # A flag set by the user is left alone.
  monkeypatch.setenv("XLA_FLAGS", f"{name}-reduce")
  assert parallel.configure_xla_cpu() is False
  assert os.environ["XLA_FLAGS"] == f"{name}-reduce"
