"""The fast paths: compile once, several steps per call, and the CNN's hand-written gradients.

* No recompilation after the first step: a training run compiles its step once (and nothing
  after its first step), a second run of the same model compiles nothing, and a second call
  of every built-in unlearning method compiles nothing (counted with `train.CompileCounter`).
* `fit(steps_per_call=k)` (a `lax.scan` over k steps per call) gives the parameters of one step
  per call, also across a logging boundary and a resumed checkpoint.
* The CNN's custom VJPs (kernel gradient as an im2col matrix product, pool gradient in one
  pass) give the values and gradients of Flax's own `nn.Conv` + `nn.max_pool` layers, ties
  included, under `vmap` and forward-over-reverse too; and PyTorch's, only where PyTorch is
  installed (the `bench` extra: the documented test command skips that comparison).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks import baseline
from conftest import make_toy_unlearning
from unlearn_jax import defaults, methods, models, parallel, train
from unlearn_jax.data import pipeline
from unlearn_jax.models import cnn

TINY = {"mlp": {"hidden": (16,)}, "cnn": {"features": (4, 8), "dense": 16}}


def _data(num: int, seed: int = 0, size: int = 12) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (num, size, size, 1), dtype=np.uint8),
          "label": rng.integers(0, 4, num).astype(np.int32)}


def _recipe(epochs: int = 2, batch_size: int = 16, steps_per_call: int = 1):
  recipe = defaults.base_config().train
  recipe.epochs, recipe.batch_size, recipe.log_every = epochs, batch_size, 1000
  recipe.steps_per_call = steps_per_call
  return recipe


# ----------------------------------------------------------------------------------------------
# Compilations.


@pytest.mark.parametrize("name,steps_per_call", [("mlp", 1), ("cnn", 1), ("cnn", 4)])
def test_training_compiles_only_before_its_first_step(name, steps_per_call):
  model = models.get(name, 4, **TINY[name])
  mesh = parallel.make_mesh()
  recipe = _recipe(steps_per_call=steps_per_call)
  data = _data(96)
  sampler = pipeline.EpochSampler(data, recipe.batch_size, 0)
  marks = {}

  with train.CompileCounter() as counter:
    def batch_fn(step):
      marks.setdefault(step, counter.count)  # compilations before this step's batch
      return sampler.batch(step)

    init = train.create_state(model, jax.random.key(0), (12, 12, 1))
    state = init.with_optimizer(train.optimizer_from_config(recipe, 12))
    train.fit(state, batch_fn, 12, name="compile", mesh=mesh, seed=0,
              steps_per_call=steps_per_call)
    first_call = sorted(marks)[1] if steps_per_call == 1 else steps_per_call
    after_first_step = counter.count - marks[first_call]
    compiled_steps = [n for n in counter.names if "train_step" in n]
    # A second model of the same architecture and recipe, on other data: nothing new.
    before = counter.count
    train.train_from_scratch(train.create_state(model, jax.random.key(1), (12, 12, 1)),
                             _data(96, seed=1), recipe, seed=1, name="again", mesh=mesh)
    again = counter.names[before:]
  assert after_first_step == 0, counter.names
  assert compiled_steps == ["jit(train_step)" if steps_per_call == 1 else "jit(train_steps)"]
  assert again == []


def test_runs_of_other_lengths_and_settings_share_one_train_step():
  model = models.get("mlp", 4, **TINY["mlp"])
  mesh = parallel.make_mesh()
  recipe = _recipe()
  recipe.schedule = "cosine"
  data = _data(96)
  sampler = pipeline.EpochSampler(data, recipe.batch_size, 0)
  init = train.create_state(model, jax.random.key(0), (12, 12, 1))
  short, _ = train.fit(init.with_optimizer(train.optimizer_from_config(recipe, 6)), sampler.batch,
                       6, name="short", mesh=mesh, seed=0)
  with train.CompileCounter() as counter:
    long, _ = train.fit(init.with_optimizer(train.optimizer_from_config(recipe, 10)),
                        sampler.batch, 10, name="long", mesh=mesh, seed=0)
    # What a method runs: another lr, no momentum or weight decay, a constant schedule.
    other = train.make_optimizer("sgd", 0.01, 4, momentum=0.0)
    train.fit(init.with_optimizer(other), sampler.batch, 4, name="method", mesh=mesh, seed=0)
  assert counter.names == []
  # Each run still decays over its own length: the first 6 steps of the 10-step run took
  # larger steps than the 6-step run, which reached lr 0 at its end.
  long6, _ = train.fit(init.with_optimizer(train.optimizer_from_config(recipe, 10)),
                       sampler.batch, 6, name="long6", mesh=mesh, seed=0)
  assert not np.allclose(jax.tree.leaves(short.params)[0], jax.tree.leaves(long6.params)[0])
  assert int(long.opt_state.hyperparams["total_steps"]) == 10
  assert int(short.opt_state.hyperparams["total_steps"]) == 6


def _run(tx, params, grads):
  """The parameters after one update per gradient of `grads` (eager: op by op)."""
  p, state = params, tx.init(params)
  for g in grads:
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
  return p


def _params_and_grads():
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.ones(3)}
  grads = [jax.tree.map(lambda x, i=i: jnp.sin(x * (i + 1.0)) + 0.1 * i, params) for i in range(8)]
  return params, grads


def test_optimisers_equal_optax_chains_bit_for_bit():
  params, grads = _params_and_grads()
  lr, total, wd = 0.1, 5, 1e-3  # 8 updates past a length of 5: the lr stays at 0 after step 5.
  cases = []
  for schedule in ("cosine", "constant"):
    rate = optax.cosine_decay_schedule(lr, total) if schedule == "cosine" else lr
    for momentum in (0.9, 0.0):
      cases.append((("sgd", schedule, momentum), optax.chain(
          optax.add_decayed_weights(wd), optax.sgd(rate, momentum=momentum or None))))
    cases.append((("adam", schedule, 0.0),
                  optax.chain(optax.add_decayed_weights(wd), optax.adam(rate))))
    cases.append((("adamw", schedule, 0.0), optax.adamw(rate, weight_decay=wd)))
  for (name, schedule, momentum), reference in cases:
    ours = train.make_optimizer(name, lr, total, momentum=momentum, weight_decay=wd,
                                schedule=schedule)
    jax.tree.map(lambda a, b, n=name, s=schedule: np.testing.assert_array_equal(
        a, b, err_msg=f"{n} {s}"), _run(ours, params, grads), _run(reference, params, grads))


def test_step_decay_l1_and_proximal_terms_equal_their_optax_chains():
  params, grads = _params_and_grads()
  # A step decay (SCRUB's epoch-boundary decay): optax's piecewise-constant schedule.
  for name, base in (("sgd", lambda rate: optax.sgd(rate, momentum=0.9)), ("adam", optax.adam)):
    ours = train.make_optimizer(name, 0.1, 8, weight_decay=1e-3, lr_decay_steps=(5, 2),
                                lr_decay_rate=0.1)
    reference = optax.chain(optax.add_decayed_weights(1e-3), base(
        optax.piecewise_constant_schedule(0.1, {2: 0.1, 5: 0.1})))
    jax.tree.map(np.testing.assert_array_equal, _run(ours, params, grads),
                 _run(reference, params, grads))
  # ℓ1 (decaying linearly over the run) before the weight decay, as ℓ1-sparse unlearning needs:
  # gamma_t·sign(θ) + wd·θ added to the gradient, then SGD.
  total, gamma, wd = 6, 0.05, 1e-3
  gamma_t = lambda t: gamma * max(1.0 - t / total, 0.0)
  expected, trace = jax.device_get(params), jax.tree.map(np.zeros_like, jax.device_get(params))
  for t, g in enumerate(jax.device_get(grads)):
    trace = jax.tree.map(lambda tr, gi, p: gi + gamma_t(t) * np.sign(p) + wd * p + 0.9 * tr,
                         trace, g, expected)
    expected = jax.tree.map(lambda p, tr: p - 0.1 * tr, expected, trace)
  ours = train.make_optimizer("sgd", 0.1, total, weight_decay=wd, l1=gamma)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               _run(ours, params, grads), expected)
  # The proximal pull λ·(θ − θ_start), before SGD (NegGrad+).
  start = jax.device_get(params)
  expected, trace = start, jax.tree.map(np.zeros_like, start)
  for g in jax.device_get(grads):
    trace = jax.tree.map(lambda tr, gi, p, s: gi + 0.3 * (p - s) + 0.9 * tr, trace, g, expected,
                         start)
    expected = jax.tree.map(lambda p, tr: p - 0.1 * tr, expected, trace)
  ours = train.make_optimizer("sgd", 0.1, 4, proximal=0.3)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               _run(ours, params, grads), expected)


def test_recipes_of_one_kind_share_one_transformation():
  # Settings live in the optimiser state: every recipe of a kind is one static structure (the
  # train state's `tx`) to jit, and their states differ only in the values of `hyperparams`.
  one = train.make_optimizer("sgd", 0.1, 5, weight_decay=1e-3, schedule="cosine")
  other = train.make_optimizer("sgd", 0.2, 9, momentum=0.0, schedule="constant")
  assert one.tx is other.tx
  params = {"w": jnp.ones(3)}
  states = one.init(params), other.init(params)
  assert jax.tree.structure(states[0]) == jax.tree.structure(states[1])
  assert float(states[1].hyperparams["lr"]) == np.float32(0.2)
  assert int(states[1].hyperparams["total_steps"]) == 9
  assert not bool(states[1].hyperparams["cosine"])
  kinds = [train.make_optimizer("adam", 0.1).tx, train.make_optimizer("adamw", 0.1).tx,
           train.make_optimizer("sgd", 0.1, l1=0.01).tx,
           train.make_optimizer("sgd", 0.1, proximal=0.1).tx]
  assert len({id(tx) for tx in kinds + [one.tx]}) == 5
  with pytest.raises(ValueError, match="optimizer='lion'"):
    train.make_optimizer("lion", 0.1)
  with pytest.raises(ValueError, match="schedule='linear'"):
    train.make_optimizer("sgd", 0.1, schedule="linear")


def test_compile_counter_sees_each_new_shape_once():
  double = jax.jit(lambda x: 2 * x)
  three, four = np.ones(3, np.float32), np.ones(4, np.float32)
  with train.CompileCounter() as counter:
    double(three)
    double(three)
    double(four)
  assert counter.count == 2 and counter.seconds > 0
  assert all("lambda" in name for name in counter.names)
  double(np.ones(5, np.float32))  # after the block: not counted
  assert counter.count == 2


@pytest.fixture(scope="module")
def toy():
  return make_toy_unlearning(3, epochs=2)


@pytest.mark.parametrize("name", sorted(methods.builtin_names()))
def test_a_second_run_of_a_method_compiles_nothing(toy, name):
  state, data, config, _ = toy
  methods.call(name, state, data, config.unlearn[name], jax.random.key(0))
  with train.CompileCounter() as counter:
    methods.call(name, state, data, config.unlearn[name], jax.random.key(0))
  assert counter.names == [], f"{name} recompiled {counter.names}"


# ----------------------------------------------------------------------------------------------
# Several steps per call.


class Killed(Exception):
  pass


def _fit(model_name, steps_per_call, *, num_steps=11, log_every=1000, checkpoint_dir=None,
         kill_at=None):
  model = models.get(model_name, 4, **TINY[model_name])
  sampler = pipeline.EpochSampler(_data(80), 16, 3)

  def batch_fn(step):
    if step == kill_at:
      raise Killed(step)
    return sampler.batch(step)

  state = train.create_state(model, jax.random.key(2), (12, 12, 1),
                             train.make_optimizer("sgd", 0.1, num_steps, schedule="cosine",
                                                  weight_decay=5e-4))
  return train.fit(state, batch_fn, num_steps, name="multi", mesh=parallel.make_mesh(),
                   seed=5, steps_per_call=steps_per_call, log_every=log_every,
                   checkpoint_dir=checkpoint_dir, checkpoint_every=4)


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_several_steps_per_call_equal_one_step_per_call(model_name):
  single, single_info = _fit(model_name, 1, log_every=5)
  multi, multi_info = _fit(model_name, 3, log_every=5)  # calls: 0-2, 3, 4 | 5-7, 8, 9 | 10
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(multi.params),
               jax.device_get(single.params))
  assert int(multi.step) == int(single.step) == 11
  assert multi_info["final_loss"] == single_info["final_loss"]


def test_several_steps_per_call_resume_from_their_checkpoints(tmp_path):
  whole, _ = _fit("mlp", 4, num_steps=10)
  with pytest.raises(Killed):  # checkpoints at 4 and 8 (calls 0-3, 4-7), killed at step 8
    _fit("mlp", 4, num_steps=10, checkpoint_dir=str(tmp_path), kill_at=8)
  resumed, info = _fit("mlp", 4, num_steps=10, checkpoint_dir=str(tmp_path))
  assert info["resumed_at"] == 8 and info["steps_run"] == 2
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.params),
               jax.device_get(whole.params))


def test_a_diverged_multi_step_call_names_the_step():
  model = models.get("mlp", 4, **TINY["mlp"])
  sampler = pipeline.EpochSampler(_data(80), 16, 3)

  def batch_fn(step):  # 0-based step 5 (the 6th) has a NaN weight: its loss is the first NaN
    batch = sampler.batch(step)
    if step == 5:
      batch["weight"][0] = np.nan
    return batch

  state = train.create_state(model, jax.random.key(2), (12, 12, 1),
                             train.make_optimizer("sgd", 0.1, 12))
  with pytest.raises(train.DivergedError, match=r"at step 6;") as error:
    train.fit(state, batch_fn, 12, name="boom", mesh=parallel.make_mesh(), seed=0,
              steps_per_call=4)
  assert error.value.step == 6  # the second step of the second call (steps 5-8)


def test_steps_per_call_refuses_a_custom_step_without_its_scan():
  with pytest.raises(ValueError, match="multi_step_fn"):
    train.fit(None, None, 3, name="x", mesh=parallel.make_mesh(), seed=0,
              step_fn=train.jit_train_step, steps_per_call=2)


# ----------------------------------------------------------------------------------------------
# The CNN's gradients against Flax's layers.


class ReferenceCNN(nn.Module):
  """The CNN written with Flax's own layers (autodiff through XLA's conv and reduce_window)."""
  num_classes: int
  features: tuple = (4, 8)
  dense: int = 16

  @nn.compact
  def __call__(self, x, train=False):
    del train
    for channels in self.features:
      x = nn.Conv(channels, (3, 3), padding="SAME")(x)
      x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2), padding="VALID")
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.dense)(x))
    return nn.Dense(self.num_classes)(x)


def _loss(model):
  def loss(params, images, labels):
    logits = model.apply({"params": params}, images)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))
  return loss


@pytest.fixture(scope="module")
def cnn_pair():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(size=(6, 13, 11, 2)), jnp.float32)  # odd sizes: cropping
  labels = jnp.asarray(rng.integers(0, 5, 6), jnp.int32)
  fast, reference = cnn.make(5, (4, 8), 16), ReferenceCNN(5)
  # Parameters from numpy (random initialisers compile slowly on XLA:CPU), fan-in scaled, with
  # biases that matter.
  shapes = jax.eval_shape(fast.init, jax.random.key(3), images)["params"]
  params = jax.tree.map(lambda p: (rng.normal(size=p.shape) / np.sqrt(np.prod(p.shape[:-1]))
                                   ).astype(np.float32), shapes)
  return fast, reference, params, images, labels


def test_cnn_initialises_like_flax_layers(cnn_pair):
  fast, reference, _, images, _ = cnn_pair
  # One program: XLA merges the two models' identical random draws (one slow compile).
  ours, theirs = jax.jit(lambda key: (fast.init(key, images), reference.init(key, images)))(
      jax.random.key(7))
  assert jax.tree.structure(ours) == jax.tree.structure(theirs)
  jax.tree.map(np.testing.assert_array_equal, ours, theirs)


def test_cnn_values_and_gradients_equal_flax_layers(cnn_pair):
  fast, reference, params, images, labels = cnn_pair
  @jax.jit
  def everything(params, images, labels):
    out = {}
    for name, model in (("fast", fast), ("reference", reference)):
      out[name] = (model.apply({"params": params}, images),
                   jax.grad(_loss(model))(params, images, labels),
                   # Input gradients too (reconstruction attacks differentiate the model).
                   jax.grad(lambda x, m=model: jnp.sum(m.apply({"params": params}, x) ** 2))(
                       images))
    return out

  out = everything(params, images, labels)
  np.testing.assert_allclose(out["fast"][0], out["reference"][0], rtol=1e-6, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
               out["fast"][1:], out["reference"][1:])


def test_cnn_per_example_gradients_and_hessian_vector_products(cnn_pair):
  fast, reference, params, images, labels = cnn_pair

  def per_example(model):
    grad = jax.grad(_loss(model))
    return jax.vmap(lambda x, y: grad(params, x[None], y[None]))(images, labels)

  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
               jax.jit(lambda: per_example(fast))(), jax.jit(lambda: per_example(reference))())
  tangent = jax.tree.map(jnp.ones_like, params)

  def hvp(model):
    return jax.jvp(lambda p: jax.grad(_loss(model))(p, images, labels), (params,), (tangent,))[1]

  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               jax.jit(lambda: hvp(fast))(), jax.jit(lambda: hvp(reference))())


def test_cnn_second_order_input_gradients(cnn_pair):
  # Reverse over reverse, as gradient-matching reconstruction attacks differentiate the
  # parameter gradient with respect to the images.
  fast, reference, params, images, labels = cnn_pair

  def gradient_norm(model):
    def norm(x):
      grads = jax.grad(_loss(model))(params, x, labels)
      return sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads))
    return jax.grad(norm)

  ours, theirs = jax.jit(lambda x: (gradient_norm(fast)(x), gradient_norm(reference)(x)))(images)
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


def test_max_pool_shares_ties_like_jnp_max():
  # Integer-valued inputs tie often; the custom VJP must split them as autodiff of jnp.max.
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.integers(0, 3, (2, 7, 9, 3)), jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=(2, 3, 4, 3)), jnp.float32)

  ours, ours_vjp = jax.vjp(cnn.max_pool_2x2, x)
  theirs, theirs_vjp = jax.vjp(baseline.autodiff_max_pool_2x2, x)
  np.testing.assert_array_equal(ours, theirs)
  np.testing.assert_array_equal(ours_vjp(cotangent)[0], theirs_vjp(cotangent)[0])


def test_cnn_gradients_equal_pytorch(cnn_pair):
  """Logits and parameter gradients of the CNN equal PyTorch's for the same weights.

  Runs only where PyTorch is installed: it is in the `bench` extra (`pip install -e '.[bench]'`),
  not in `test`, so the documented test command (README, .ci/run) always skips this test.
  """
  torch = pytest.importorskip(
      "torch", reason="PyTorch is not installed: it comes with the `bench` extra "
      "(pip install -e '.[bench]'), which the documented test command does not install")
  fast, _, params, images, labels = cnn_pair
  p = jax.tree.map(lambda a: torch.tensor(np.asarray(a)), params)
  conv = lambda x, name: torch.nn.functional.conv2d(
      x, p[name]["kernel"].permute(3, 2, 0, 1), p[name]["bias"], padding=1)
  for leaf in jax.tree.leaves(p):
    leaf.requires_grad_(True)
  x = torch.tensor(np.asarray(images)).permute(0, 3, 1, 2)
  for name in ("Conv_0", "Conv_1"):
    x = torch.nn.functional.max_pool2d(torch.relu(conv(x, name)), 2)
  x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # NHWC flattening, as Flax
  x = torch.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  logits = x @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
  torch.nn.functional.cross_entropy(logits, torch.tensor(np.asarray(labels)).long()).backward()
  ours_logits, ours = jax.jit(lambda p: (fast.apply({"params": p}, images),
                                         jax.grad(_loss(fast))(p, images, labels)))(params)
  np.testing.assert_allclose(ours_logits, logits.detach().numpy(), rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b.grad.numpy(), rtol=1e-4, atol=1e-6),
               ours, p)
