"""Data parallelism: training on a mesh of 4 fake CPU devices equals training on one device.

The device count must be set before JAX initialises, so the check runs in a subprocess.
"""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from unlearn_jax import models, parallel, train
    from unlearn_jax.data import pipeline
    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    data = {"image": rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8),
            "label": rng.integers(0, 4, 40).astype(np.int32)}
    sampler = pipeline.EpochSampler(data, batch_size=8, seed=0)
    model = models.get("mlp", 4, hidden=(16,))
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
      mesh = parallel.make_mesh(devices)
      state = train.create_state(model, jax.random.key(0), (8, 8, 1),
                                 train.make_optimizer("sgd", 0.1, 10))
      state, _ = train.fit(state, sampler.batch, 10, name="mesh", mesh=mesh, seed=0)
      logits = train.predict(state, data, batch_size=12, mesh=mesh)
      results.append((jax.device_get(state.params), logits))
      if len(devices) == 4:
        kernel = jax.tree.leaves(state.params)[0]
        assert len(kernel.sharding.device_set) == 4, kernel.sharding
    (p1, l1), (p4, l4) = results
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p1, p4)
    np.testing.assert_allclose(l1, l4, rtol=1e-5, atol=1e-5)
    print("EQUAL")
""")


def test_four_devices_match_one_device():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "EQUAL" in result.stdout
