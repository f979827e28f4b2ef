"""SCRUB, Bad Teacher, SSD and Fisher forgetting: each method's defining behaviour on a toy MLP."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

from conftest import make_toy_unlearning

from unlearn_jax import config as config_lib
from unlearn_jax import defaults, methods, train
from unlearn_jax.methods import fisher, scrub, ssd

NUM_CLASSES = 3
NAMES = ("scrub", "bad_teacher", "ssd", "fisher")


@pytest.fixture(scope="module")
def toy():
  """A small MLP that has memorised 60 random images (6 of them the forget set)."""
  state, data, config, _ = make_toy_unlearning(NUM_CLASSES, epochs=40, lr=0.1)
  return state, data, config


def _logits(state, data, split):
  return train.predict(state, getattr(data, split), 64, data.mesh)


def _kl(teacher_logits, student_logits):
  return float(np.mean(scrub.kl_divergence(teacher_logits, student_logits, 1.0)))


def _unchanged(before, state):
  jax.tree.map(np.testing.assert_array_equal, before, jax.device_get(state.params))


def test_scrub_keeps_retain_and_moves_forget_away_from_the_teacher(toy):
  state, data, config = toy
  cfg = config.unlearn.scrub.copy_and_resolve_references()
  cfg.epochs, cfg.msteps, cfg.retain_steps, cfg.batch_size, cfg.lr = 15, 15, 3, 16, 0.005
  cfg.lr_decay_epochs = ()
  # The authors' small-scale optimiser: the SGD default at this lr barely moves the toy.
  cfg.optimizer, cfg.temperature = "adam", 2.0
  # Without the cross-entropy term the retained data sees only the teacher's pull, so the
  # comparison isolates SCRUB's max (forget) and min (retain) KL steps.
  cfg.alpha, cfg.gamma = 1.0, 0.0
  before = jax.device_get(state.params)
  unlearned, info = methods.get("scrub")(state, data, cfg, jax.random.key(1))
  assert info["max_steps"] == 15 and info["min_steps"] == 45 and info["steps"] == 60
  _unchanged(before, state)
  retain_kl = _kl(_logits(state, data, "retain"), _logits(unlearned, data, "retain"))
  forget_kl = _kl(_logits(state, data, "forget"), _logits(unlearned, data, "forget"))
  assert retain_kl < 0.05
  assert forget_kl > 5 * retain_kl


def test_scrub_plan_alternates_max_and_min_steps():
  steps, starts = scrub.plan(epochs=3, msteps=2, forget_steps=2, retain_steps=1)
  assert steps == [("max", 0), ("max", 1), ("min", 0), ("max", 2), ("max", 3), ("min", 1),
                   ("min", 2)]
  assert starts == [0, 3, 6]


def test_scrub_default_optimiser_is_the_authors_sgd():
  # torch.optim.SGD(lr=5e-4, momentum=0.9, weight_decay=5e-4), as in the authors' large-scale
  # notebook: the decay is added to the gradient before the momentum buffer.
  cfg = defaults.base_config().unlearn.scrub
  tx = scrub._optimizer(cfg, [0, 5, 10])
  theta = {"w": jnp.array([1.0, -2.0, 0.5])}
  grads = [jnp.array([0.3, 0.1, -0.2]), jnp.array([-0.1, 0.4, 0.2])]
  opt_state = tx.init(theta)
  lr, momentum, decay = 5e-4, 0.9, 5e-4
  expected, buffer = np.asarray(theta["w"], np.float64), 0.0
  for grad in grads:
    updates, opt_state = tx.update({"w": grad}, opt_state, theta)
    theta = optax.apply_updates(theta, updates)
    buffer = momentum * buffer + np.asarray(grad, np.float64) + decay * expected
    expected = expected - lr * buffer
  np.testing.assert_allclose(theta["w"], expected, rtol=1e-6)


def test_scrub_default_schedule_is_the_authors(toy):
  # Authors' large-scale run: 3 epochs, the first 2 starting with a max pass over T (one step:
  # |T| = 6 fits a batch), then the budget's 5 min steps per epoch.
  state, data, config = toy
  _, info = methods.get("scrub")(state, data, config.unlearn.scrub, jax.random.key(1))
  assert info["max_steps"] == 2 and info["min_steps"] == 15 and info["steps"] == 17
  steps, starts = scrub.plan(3, 2, 1, 5)
  assert [kind for kind, _ in steps] == (["max"] + ["min"] * 5) * 2 + ["min"] * 5
  assert starts == [0, 6, 12]


def test_scrub_kl_is_teacher_to_student():
  teacher, student = jnp.array([[2.0, 0.0, -1.0]]), jnp.array([[0.0, 1.0, 0.0]])
  p, q = jax.nn.softmax(teacher / 2.0), jax.nn.softmax(student / 2.0)
  expected = float(jnp.sum(p * (jnp.log(p) - jnp.log(q))))
  np.testing.assert_allclose(scrub.kl_divergence(teacher, student, 2.0), [expected], rtol=1e-5)


def test_bad_teacher_moves_forget_towards_the_random_teacher(toy):
  state, data, config = toy
  cfg = config.unlearn.bad_teacher.copy_and_resolve_references()
  cfg.epochs, cfg.batch_size, cfg.lr, cfg.retain_fraction = 20, 16, 0.003, 1.0
  rng = jax.random.key(3)
  unlearned, info = methods.get("bad_teacher")(state, data, cfg, rng)
  assert info["forget_examples"] == 6 and info["retain_examples"] == 54
  random_teacher = data.init_state(rng)  # the incompetent teacher the method drew from rng
  random_forget = _logits(random_teacher, data, "forget")
  original_forget = _logits(state, data, "forget")
  before = _kl(random_forget, original_forget)
  after = _kl(random_forget, _logits(unlearned, data, "forget"))
  assert after < 0.4 * before
  # Retained predictions barely move compared with the forget set's.
  retain_kl = _kl(_logits(state, data, "retain"), _logits(unlearned, data, "retain"))
  assert retain_kl < 0.2 * _kl(original_forget, _logits(unlearned, data, "forget"))


@functools.partial(jax.jit, static_argnums=0)
def _squared_mean_grad(apply_fn, params, images, labels):
  def loss(p):
    logits = apply_fn({"params": p}, train.to_float(images), train=False)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
  return jax.tree.map(jnp.square, jax.grad(loss)(params))


def test_ssd_importance_is_the_mean_squared_batch_gradient(toy):
  state, data, _ = toy
  retain = data.retain  # 54 examples in batches of 27
  got, num_batches = ssd.importance(state, retain, 27)
  halves = [_squared_mean_grad(state.apply_fn, state.params, retain["image"][s:s + 27],
                               retain["label"][s:s + 27]) for s in (0, 27)]
  assert num_batches == 2
  jax.tree.map(lambda g, a, b: np.testing.assert_allclose(g, (a + b) / 2, rtol=1e-5, atol=1e-12),
               got, *halves)


def test_ssd_dampens_exactly_the_selected_parameters(toy):
  state, data, config = toy
  cfg = config.unlearn.ssd.copy_and_resolve_references()
  cfg.alpha, cfg.lam, cfg.batch_size = 2.0, 0.5, 64  # one batch each for T and for D
  unlearned, info = methods.get("ssd")(state, data, cfg, jax.random.key(1))
  # By hand: importances are squared mean gradients over T and over D = retain ∪ T.
  images = np.concatenate([data.retain["image"], data.forget["image"]])
  labels = np.concatenate([data.retain["label"], data.forget["label"]])
  forget_imp = _squared_mean_grad(state.apply_fn, state.params, data.forget["image"],
                                  data.forget["label"])
  global_imp = _squared_mean_grad(state.apply_fn, state.params, images, labels)
  before = jax.device_get(state.params)
  after = jax.device_get(unlearned.params)
  total_selected = 0
  for path, theta in jax.tree_util.tree_leaves_with_path(before):
    f = np.asarray(_get(forget_imp, path), np.float64)
    g = np.asarray(_get(global_imp, path), np.float64)
    selected = f > 2.0 * g
    expected = np.where(selected, theta * np.minimum(0.5 * g / np.where(selected, f, 1), 1),
                        theta)
    np.testing.assert_allclose(_get(after, path), expected, rtol=1e-5, atol=1e-7)
    # Untouched outside the selection; strictly shrunk (factor < 1) inside it.
    np.testing.assert_array_equal(_get(after, path)[~selected], theta[~selected])
    shrunk = np.abs(_get(after, path)[selected]) < np.abs(theta[selected])
    assert np.all(shrunk | (theta[selected] == 0))
    total_selected += int(selected.sum())
  num_params = sum(p.size for p in jax.tree.leaves(before))
  assert 0 < total_selected < num_params
  assert info["selected"] == total_selected


def _get(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


def test_fisher_noise_shrinks_with_retain_fisher_and_is_reproducible(toy):
  state, data, config = toy
  cfg = config.unlearn.fisher.copy_and_resolve_references()
  cfg.labels, cfg.max_examples, cfg.alpha = "true", 0, 1e-6  # deterministic F over all of D_r
  unlearned, info = methods.get("fisher")(state, data, cfg, jax.random.key(5))
  assert info["examples"] == 54
  again, _ = methods.get("fisher")(state, data, cfg, jax.random.key(5))
  other, _ = methods.get("fisher")(state, data, cfg, jax.random.key(6))
  before = jax.device_get(state.params)
  delta = jax.tree.map(np.subtract, jax.device_get(unlearned.params), before)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(again.params),
               jax.device_get(unlearned.params))
  assert not np.allclose(jax.device_get(other.params)["Dense_0"]["kernel"],
                         jax.device_get(unlearned.params)["Dense_0"]["kernel"])
  # By hand: F = mean of squared per-example gradients with the true labels.
  per_example = jax.vmap(lambda x, y: _squared_mean_grad(state.apply_fn, state.params, x[None],
                                                         y[None]))(data.retain["image"],
                                                                   data.retain["label"])
  info_diag = jax.tree.map(lambda t: np.asarray(t.mean(0), np.float64), per_example)
  # Hidden-layer biases (1 axis, 16 entries): var = 10·alpha·min(1/(F + 1e-8), 1e3) exactly,
  # so |Δ|/|n| falls as F grows.
  _, noise_generator = fisher.generators(jax.random.key(5))
  noise = fisher.standard_noise(before, noise_generator)
  bias_f = info_diag["Dense_0"]["bias"]
  std = np.sqrt(10 * 1e-6 * np.minimum(1 / (bias_f + 1e-8), 1e3))
  np.testing.assert_allclose(delta["Dense_0"]["bias"], std * noise["Dense_0"]["bias"],
                             rtol=1e-4, atol=1e-9)
  # Across every parameter, the noise std is non-increasing in the (input-averaged) Fisher.
  stds = jax.tree.map(np.abs, jax.tree.map(np.divide, delta, noise))
  kernel_f = info_diag["Dense_0"]["kernel"]
  unit_var = np.mean(np.minimum(1 / (kernel_f + 1e-8), 1e3), axis=0)  # per output unit
  order = np.argsort(unit_var)
  kernel_std = stds["Dense_0"]["kernel"][0]
  assert np.all(np.diff(kernel_std[order]) >= -1e-6 * kernel_std.max())
  high = bias_f > np.median(bias_f)
  assert np.mean(np.abs(delta["Dense_0"]["bias"])[high] / np.abs(noise["Dense_0"]["bias"])[high]
                 ) < np.mean(np.abs(delta["Dense_0"]["bias"])[~high]
                             / np.abs(noise["Dense_0"]["bias"])[~high])


def test_fisher_sample_labels_follows_the_softmax():
  # Every row has p = (0.6, 0.3, 0.1): the argmax (class 0) is the answer only 60% of the time.
  probs = np.array([0.6, 0.3, 0.1])
  logits = np.tile(np.log(probs) + 3.0, (3000, 1))
  labels = fisher.sample_labels(logits, np.random.default_rng(0))
  np.testing.assert_array_equal(labels, fisher.sample_labels(logits, np.random.default_rng(0)))
  assert labels.dtype == np.int32
  assert np.mean(labels != fisher.sample_labels(logits, np.random.default_rng(1))) > 0.3
  counts = np.bincount(labels, minlength=3)
  assert scipy.stats.chisquare(counts, 3000 * probs).pvalue > 0.01, counts
  # A certain row always gives its class.
  sure = np.tile([0.0, 60.0, 0.0], (100, 1))
  np.testing.assert_array_equal(fisher.sample_labels(sure, np.random.default_rng(2)), 1)


def test_fisher_data_draws_the_labels_from_the_model(toy):
  state, data, config = toy
  cfg = config.unlearn.fisher.copy_and_resolve_references()
  cfg.max_examples = 40

  def draw(model, labels, seed):
    cfg.labels = labels
    return fisher.fisher_data(model, data, cfg, fisher.generators(jax.random.key(seed))[0])

  # The stated number of distinct retained examples, the same rows in both label modes.
  true = draw(state, "true", 0)
  rows = [int(np.flatnonzero((data.retain["image"] == image).all(axis=(1, 2, 3)))[0])
          for image in true["image"]]
  assert len(set(rows)) == 40
  np.testing.assert_array_equal(true["label"], data.retain["label"][rows])
  # A fresh MLP is unsure: its draw differs from the true labels about as often as its
  # probabilities say (Σ 1 − p(y_i) rows), and the same key gives the same draw.
  unsure = data.init_state(jax.random.key(7))
  sampled = draw(unsure, "sampled", 0)
  np.testing.assert_array_equal(sampled["image"], true["image"])
  np.testing.assert_array_equal(sampled["label"], draw(unsure, "sampled", 0)["label"])
  assert not np.array_equal(sampled["label"], draw(unsure, "sampled", 1)["label"])
  probs = np.asarray(jax.nn.softmax(train.predict(unsure, true, 64, data.mesh)), np.float64)
  p_true = probs[np.arange(40), true["label"]]
  expected, spread = np.sum(1 - p_true), np.sqrt(np.sum(p_true * (1 - p_true)))
  mismatches = int(np.sum(sampled["label"] != true["label"]))
  assert expected > 15 and abs(mismatches - expected) < 3 * spread, (mismatches, expected)
  # The run reports the stated sample size.
  assert methods.get("fisher")(state, data, cfg, jax.random.key(0))[1]["examples"] == 40


@pytest.mark.parametrize("name,field,value,match", [
    ("scrub", "msteps", 9, "unlearn.scrub.msteps"),
    ("scrub", "optimizer", "rmsprop", "unlearn.scrub.optimizer"),
    ("scrub", "alpha", -0.5, "unlearn.scrub.alpha"),
    ("scrub", "lr_decay_rate", 0.0, "unlearn.scrub.lr_decay_rate"),
    ("scrub", "temperature", 0.0, "unlearn.scrub.temperature"),
    ("bad_teacher", "retain_fraction", 1.5, "unlearn.bad_teacher.retain_fraction"),
    ("bad_teacher", "retain_fraction", 0.0, "unlearn.bad_teacher.retain_fraction"),
    ("ssd", "alpha", 0.0, "unlearn.ssd.alpha"),
    ("ssd", "lam", -1.0, "unlearn.ssd.lam"),
    ("fisher", "labels", "expected", "unlearn.fisher.labels"),
    ("fisher", "max_examples", -1, "unlearn.fisher.max_examples"),
    ("fisher", "chunk_size", 0, "unlearn.fisher.chunk_size"),
])
def test_check_config_names_the_field(name, field, value, match):
  cfg = defaults.base_config().unlearn[name]
  cfg[field] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    methods.check_config(name, cfg)


def test_default_configs_validate():
  config = defaults.base_config()
  config.methods = NAMES
  defaults.validate(config)
