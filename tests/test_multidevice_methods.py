"""Unlearning methods on many devices, and results gathered across processes.

* Every built-in method runs on a mesh of 8 fake CPU devices with 4 targets (batches of
  min(batch size, |T|) = 4 forget rows, or 10 retain rows plus 4 forget rows, do not split over
  8 devices by themselves) and gives the parameters it gives on one device, to float tolerance.
  All of them are deterministic for a fixed key and seed. One subprocess (the device count is
  fixed when JAX starts), a tiny MLP and 1-4 steps per method keep compilation short (~30 s).
* Two processes x 2 fake CPU devices (jax.distributed on 127.0.0.1, ~25 s): stacked-member
  predictions (`ensemble.predict`), similarity scores and embeddings (`remedies.detect`),
  language-model scores and greedy decoding (`lm.steps`) come back whole on every process, equal
  to the same computation on the process's own default device; two methods that fetch
  replicated values to the host (fisher, influence) run there and give the parameters of one
  process on one device.
"""

import json
import os
import sys
import textwrap

import jax
import numpy as np
import pytest

from devices import cpu_env, free_port, run_on_cpu_devices, run_processes
from unlearn_jax import methods, parallel
from unlearn_jax.data import pipeline


# The toy problem of every run: 40 random 6x6 images of 3 classes, the first 4 are T.
TOY = textwrap.dedent("""
    import jax, numpy as np
    from unlearn_jax import defaults, methods, models, parallel, train

    def toy_problem():
      rng = np.random.default_rng(0)
      data = {"image": rng.integers(0, 256, (40, 6, 6, 1), dtype=np.uint8),
              "label": rng.integers(0, 3, 40).astype(np.int32), "id": np.arange(40)}
      forget = {k: v[:4] for k, v in data.items()}
      retain = {k: v[4:] for k, v in data.items()}
      model = models.get("mlp", 3, hidden=(16,))
      init = lambda key: train.create_state(model, key, (6, 6, 1))
      config = defaults.base_config()
      config.train.epochs, config.train.batch_size, config.train.log_every = 1, 16, 1000
      # 1-4 steps per method; retain batches of 10 rows (not a multiple of the device count).
      u = config.unlearn
      for name in ("finetune", "l1_sparse", "random_label", "neggrad_plus", "salun"):
        u[name].epochs, u[name].batch_size = 0.5, 10
      for name in ("grad_ascent", "boundary_shrink", "boundary_expand"):
        u[name].epochs = 2
      u.scrub.epochs, u.scrub.msteps, u.scrub.retain_steps, u.scrub.batch_size = 1, 1, 1, 10
      u.bad_teacher.batch_size = 10
      u.fnn.batch_size, u.fnn.iterations = 10, 2
      u.fisher.max_examples = 16
      u.ssd.batch_size = 16
      u.influence.cg_steps, u.influence.batch_size = 3, 12
      u.sisa.num_shards, u.sisa.num_slices = 2, 2
      return data, forget, retain, init, config

    def run_method(name, original, forget, retain, init, config, mesh):
      run = methods.RunContext(forget=forget, retain=retain, mesh=mesh, seed=0, num_classes=3,
                               init_state=init, recipe=config.train)
      state = parallel.replicate(original, mesh, copy=True)
      unlearned, _ = methods.call(name, state, run, config.unlearn[name], jax.random.key(1))
      devices = len(jax.tree.leaves(unlearned.params)[0].sharding.device_set)
      return parallel.to_host(unlearned.params), devices
""")

# Prints one line `RESULT {json}` per method: how far the 8-device parameters are from the
# 1-device ones, and how far the method moved the parameters (the scale of a real difference).
EIGHT_DEVICES = TOY + textwrap.dedent("""
    import json
    assert jax.device_count() == 8, jax.devices()
    data, forget, retain, init, config = toy_problem()
    one, eight = parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()
    original, _ = train.train_from_scratch(init(jax.random.key(0)), data, config.train, 0,
                                           name="original", mesh=one)
    start = jax.tree.leaves(parallel.to_host(original.params))
    for name in methods.available():
      report = {"method": name}
      try:
        (single, _), (sharded, devices) = [
            run_method(name, original, forget, retain, init, config, mesh)
            for mesh in (one, eight)]
        leaves = jax.tree.leaves(single)
        # SISA returns its own ensemble: the size of its parameters is the scale there.
        moved = [np.abs(a) for a in leaves] if name == "sisa" else [
            np.abs(a - b) for a, b in zip(leaves, start)]
        report.update(devices=devices,
                      same_tree=jax.tree.structure(single) == jax.tree.structure(sharded),
                      max_abs=max(float(np.max(np.abs(a - b)))
                                  for a, b in zip(leaves, jax.tree.leaves(sharded))),
                      moved=max(float(np.max(m)) for m in moved))
      except Exception as error:  # reported per method, so one failure hides no other
        report["error"] = f"{type(error).__name__}: {str(error)[:300]}"
      print("RESULT", json.dumps(report), flush=True)
""")


def test_every_method_on_eight_devices_matches_one_device():
  output = run_on_cpu_devices(EIGHT_DEVICES, num_devices=8, timeout=400)
  reports = {r["method"]: r for r in (json.loads(line.split(" ", 1)[1])
                                      for line in output.splitlines()
                                      if line.startswith("RESULT "))}
  assert set(reports) == set(methods.builtin_names()), output[-3000:]
  errors = {name: r["error"] for name, r in reports.items() if "error" in r}
  assert not errors, errors
  for report in reports.values():
    assert report["devices"] == 8 and report["same_tree"], report
    assert report["moved"] > 1e-5, report  # the method did something
    # Reduction order aside, the runs agree: measured differences were ~1e-8 for the gradient
    # methods (updates ~1e-3) and 6e-5 for influence's CG solve (update ~10).
    assert report["max_abs"] <= 1e-3 * report["moved"] + 1e-7, report


# ----------------------------------------------------------------------------------------------
# Two processes.

# Each check runs on the global mesh (4 devices, 2 per process) and, as its reference, on this
# process's default device; every process writes DIR/process_<i>.npz.
TWO_PROCESSES = textwrap.dedent("""
    import sys
    from unlearn_jax import parallel
    parallel.initialize(f"127.0.0.1:{sys.argv[1]}", 2, int(sys.argv[2]), initialization_timeout=120)
""") + TOY + textwrap.dedent("""
    import jax.numpy as jnp
    from unlearn_jax import ensemble
    from unlearn_jax.lm import steps as lm_steps
    from unlearn_jax.remedies import detect
    assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
    out, errors = {}, []
    mesh = parallel.make_mesh()
    local = lambda tree: jax.tree.map(jnp.asarray, parallel.to_host(tree))  # default device

    def check(name, sharded, reference):
      try:
        out[name], out[name + "/reference"] = sharded(), reference()
      except Exception as error:  # every check runs; both processes fail alike
        errors.append(f"{name}: {type(error).__name__}: {str(error)[:300]}")

    data, forget, retain, init, config = toy_problem()
    original, _ = train.train_from_scratch(init(jax.random.key(0)), data, config.train, 0,
                                           name="original", mesh=mesh)
    other = parallel.replicate(init(jax.random.key(5)), mesh)
    images = data["image"]
    # References compiled (jit) rather than run op by op: far fewer compilations.
    forward = jax.jit(lambda variables, x: original.apply_fn(variables, x / 255.0, train=False))
    check("ensemble", lambda: ensemble.predict([original, other], data, 12, mesh,
                                               vectorize=True),
          lambda: np.stack([np.asarray(forward(local(s.variables()), images))
                            for s in (original, other)]))
    on_host = original.replace(params=local(original.params))
    check("embedding_scores",
          lambda: detect.scores("embedding", forget["image"], images, state=original,
                                mesh=mesh, batch_size=12),
          lambda: detect.scores("embedding", forget["image"], images, state=on_host))
    check("embeddings", lambda: detect.embeddings(original, images, mesh=mesh, batch_size=12),
          lambda: detect.embeddings(on_host, images))
    large = np.random.default_rng(3).integers(0, 256, (20, 12, 12, 1), dtype=np.uint8)
    check("ssim_scores",
          lambda: detect.scores("ssim", large[:3], large, mesh=mesh, batch_size=12),
          lambda: detect.scores("ssim", large[:3], large))

    rng = np.random.default_rng(1)
    model = models.get("transformer", 11, num_layers=1, width=8, heads=2, max_len=8)
    lm = parallel.replicate(lm_steps.create_state(model, jax.random.key(2), 8), mesh)
    lm_variables = local(lm.variables())
    tokens = rng.integers(2, 11, (6, 8)).astype(np.int32)
    mask = np.zeros((6, 8), np.float32)
    mask[:, 4:] = 1
    check("lm_logprobs",
          lambda: lm_steps.score(lm, {"tokens": tokens, "loss_mask": mask}, 4, mesh)[
              "token_logprobs"],
          lambda: np.asarray(jax.jit(lm_steps.token_logprobs, static_argnums=0)(
              lm.apply_fn, lm_variables, tokens)) * mask[:, 1:])
    lengths = np.array([1, 2, 3, 4, 4, 2], np.int32)
    buffer = np.zeros((6, 7), np.int32)  # max(lengths) + 3 new tokens
    buffer[:, :4] = tokens[:, :4]
    check("generated", lambda: lm_steps.generate(lm, tokens[:, :4], lengths, 3, 1, 4, mesh),
          lambda: np.asarray(lm_steps._jit_greedy(lm.apply_fn, 3, 1, lm_variables, buffer,
                                                  lengths)))

    out.update({"original" + jax.tree_util.keystr(path): leaf for path, leaf in
                jax.tree_util.tree_leaves_with_path(parallel.to_host(original.params))})
    for name in ("fisher", "influence"):
      try:
        params, _ = run_method(name, original, forget, retain, init, config, mesh)
        out.update({name + jax.tree_util.keystr(path): leaf
                    for path, leaf in jax.tree_util.tree_leaves_with_path(params)})
      except Exception as error:
        errors.append(f"{name}: {type(error).__name__}: {str(error)[:300]}")
    np.savez(f"{sys.argv[3]}/process_{jax.process_index()}.npz", errors=np.array(errors, str),
             **out)
    jax.distributed.shutdown()
""")
GATHERED = ("ensemble", "embedding_scores", "embeddings", "ssim_scores", "lm_logprobs",
            "generated")
HOST_METHODS = ("fisher", "influence")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("two_processes"))
  env = cpu_env(2)
  port = str(free_port())
  run_processes([[sys.executable, "-c", TWO_PROCESSES, port, str(index), out] for index in (0, 1)],
                env, timeout=300)
  return [dict(np.load(os.path.join(out, f"process_{i}.npz"))) for i in (0, 1)]


def test_sharded_results_come_back_whole_on_every_process(two_processes):
  for index, results in enumerate(two_processes):
    assert results["errors"].size == 0, (index, results["errors"].tolist())
    for name in GATHERED:
      got, expected = results[name], results[name + "/reference"]
      assert got.shape == expected.shape, (index, name, got.shape, expected.shape)
      np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=f"{index} {name}")
    assert results["ensemble"].shape == (2, 40, 3)
    assert results["embedding_scores"].shape == (4, 40)
    assert results["ssim_scores"].shape == (3, 20)
    assert results["generated"].shape == (6, 3)


def test_methods_on_two_processes_match_one_process(two_processes):
  namespace = {}
  exec(TOY, namespace)  # pylint: disable=exec-used  (the subprocesses' toy problem)
  _, forget, retain, init, config = namespace["toy_problem"]()
  first, second = two_processes
  template = init(jax.random.key(0))
  paths = [jax.tree_util.keystr(path)
           for path, _ in jax.tree_util.tree_leaves_with_path(template.params)]
  original = template.replace(params=jax.tree.unflatten(
      jax.tree.structure(template.params), [first["original" + path] for path in paths]))
  for name in HOST_METHODS:
    expected, _ = namespace["run_method"](name, original, forget, retain, init, config,
                                          parallel.make_mesh())
    for path, leaf in jax.tree_util.tree_leaves_with_path(expected):
      key = name + jax.tree_util.keystr(path)
      np.testing.assert_array_equal(first[key], second[key], err_msg=key)
      np.testing.assert_allclose(first[key], leaf, rtol=1e-4, atol=1e-5, err_msg=key)


# ----------------------------------------------------------------------------------------------
# Padding to the mesh size.


def test_pad_rows_repeats_rows_with_zero_weights():
  batch = {"image": np.arange(3)[:, None] * np.ones((3, 2)), "label": np.array([5, 6, 7]),
           "weight": np.array([1.0, -1.0, 0.5], np.float32),
           "kl_weight": np.array([0.25, 0.5, 0.75], np.float32)}
  padded = pipeline.pad_rows(batch, 8)
  np.testing.assert_array_equal(padded["label"], [5, 6, 7, 5, 6, 7, 5, 6])
  np.testing.assert_array_equal(padded["image"][:, 0], [0, 1, 2, 0, 1, 2, 0, 1])
  np.testing.assert_array_equal(padded["weight"], [1.0, -1.0, 0.5, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(padded["kl_weight"], [0.25, 0.5, 0.75, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(batch["weight"], [1.0, -1.0, 0.5])  # the input is intact
  assert pipeline.pad_rows(batch, 3) is batch
  with pytest.raises(ValueError, match="no 'weight' field"):
    pipeline.pad_rows({"image": np.zeros((3, 2))}, 4)


def test_mesh_batches_leave_one_device_alone():
  batch_fn = lambda step: {"label": np.arange(3), "weight": np.ones(3, np.float32)}
  assert pipeline.mesh_batches(batch_fn, parallel.make_mesh(jax.devices()[:1])) is batch_fn
