"""NegGrad+, ℓ1-sparse, SalUn, Boundary Shrink/Expand: each method's defining behaviour on a toy.

One MLP is trained once (module fixture) on random 6x6 images; every test starts from it.
"""

import jax
import ml_collections
import numpy as np
import pytest

from conftest import make_toy_unlearning

from unlearn_jax import config as config_lib
from unlearn_jax import defaults, methods, train
from unlearn_jax.methods import boundary_shrink, l1_sparse, salun

NUM_CLASSES = 3
NAMES = ("neggrad_plus", "l1_sparse", "salun", "boundary_shrink", "boundary_expand")


@pytest.fixture(scope="module")
def toy():
  """An MLP fitted (partly memorised) on 60 random examples, with 6 forget examples."""
  return make_toy_unlearning(NUM_CLASSES, epochs=40, lr=0.05)


def _with(config, name, **values):
  config = config.copy_and_resolve_references()
  for key, value in values.items():
    config.unlearn[name][key] = value
  return config


def _loss_and_pred(state, data, mesh):
  logits = np.asarray(train.predict(state, data, 64, mesh))
  log_probs = np.asarray(jax.nn.log_softmax(logits))
  loss = -np.mean(np.take_along_axis(log_probs, data["label"][:, None], axis=1))
  return float(loss), logits.argmax(1)


def _run(name, state, data, config):
  before = jax.device_get(state.params)
  unlearned, info = methods.get(name)(state, data, config.unlearn[name], jax.random.key(1))
  assert info["steps"] > 0 and info["wall_s"] >= 0
  # The original state is left intact (methods start from a copy).
  jax.tree.map(np.testing.assert_array_equal, before, jax.device_get(state.params))
  return unlearned, info


def test_neggrad_plus_raises_forget_loss_and_keeps_retain_loss(toy):
  state, data, config, mesh = toy
  config = _with(config, "neggrad_plus", epochs=20, lr=0.05, alpha=0.8)
  forget_before, _ = _loss_and_pred(state, data.forget, mesh)
  retain_before, _ = _loss_and_pred(state, data.retain, mesh)
  unlearned, _ = _run("neggrad_plus", state, data, config)
  forget_after, _ = _loss_and_pred(unlearned, data.forget, mesh)
  retain_after, _ = _loss_and_pred(unlearned, data.retain, mesh)
  assert forget_after > forget_before + 0.4
  assert retain_after <= retain_before


def test_neggrad_plus_batch_weights_give_the_alpha_weighted_difference():
  retain = {"weight": np.array([1, 1, 1, 0], np.float32)}
  forget = {"weight": np.array([1, 1], np.float32)}
  from unlearn_jax.methods import neggrad_plus  # pylint: disable=g-import-not-at-top
  w_retain = neggrad_plus.weigh(retain, 0.9)["weight"]
  w_forget = neggrad_plus.weigh(forget, -0.1)["weight"]
  np.testing.assert_allclose(w_retain, [0.3, 0.3, 0.3, 0.0], rtol=1e-6)
  np.testing.assert_allclose(w_forget, [-0.05, -0.05], rtol=1e-6)
  # sum(w·ce)/sum(|w|) = 0.9·mean(ce_retain) - 0.1·mean(ce_forget) since sum(|w|) = 1.
  assert np.isclose(np.abs(w_retain).sum() + np.abs(w_forget).sum(), 1.0)


def test_l1_sparse_shrinks_the_l1_norm_more_than_plain_finetuning(toy):
  state, data, config, _ = toy
  plain, _ = _run("l1_sparse", state, data, _with(config, "l1_sparse", epochs=5, gamma=0.0))
  sparse, info = _run("l1_sparse", state, data, _with(config, "l1_sparse", epochs=5, gamma=0.05))
  assert info["l1_after"] == pytest.approx(l1_sparse.l1_norm(sparse.params))
  l1_before = l1_sparse.l1_norm(state.params)
  drop_plain = l1_before - l1_sparse.l1_norm(plain.params)
  drop_sparse = l1_before - l1_sparse.l1_norm(sparse.params)
  assert drop_sparse > drop_plain + 1.0


def test_salun_changes_exactly_the_masked_weights(toy):
  state, data, config, _ = toy
  ratio = 0.3
  config = _with(config, "salun", mask_ratio=ratio, epochs=2)
  unlearned, info = _run("salun", state, data, config)
  mask, _, _ = salun.saliency_mask(state, data.forget, ratio, chunk_size=4)
  total = sum(m.size for m in jax.tree.leaves(mask))
  assert sum(m.sum() for m in jax.tree.leaves(mask)) == int(total * ratio)
  assert info["mask_fraction"] == pytest.approx(int(total * ratio) / total)
  before, after = jax.device_get(state.params), jax.device_get(unlearned.params)
  changed = jax.tree.map(lambda a, b: np.asarray(a) != np.asarray(b), before, after)
  for moved, keep in zip(jax.tree.leaves(changed), jax.tree.leaves(mask)):
    assert not np.any(moved & (keep == 0))  # unmasked weights are bit-identical
  changed_fraction = sum(c.sum() for c in jax.tree.leaves(changed)) / total
  assert 0.8 * ratio <= changed_fraction <= ratio


def test_salun_mask_keeps_the_most_salient_weights(toy):
  state, data, _, _ = toy
  mask, threshold, _ = salun.saliency_mask(state, data.forget, 0.5, chunk_size=6)
  from unlearn_jax.methods import common  # pylint: disable=g-import-not-at-top
  grads = jax.device_get(common.per_example_grad_sum(state, data.forget, 6))
  for grad, keep in zip(jax.tree.leaves(grads), jax.tree.leaves(mask)):
    saliency = np.abs(np.asarray(grad))
    assert np.all(saliency[keep == 1] >= threshold)
    assert np.all(saliency[keep == 0] <= threshold)


def test_boundary_shrink_moves_forget_predictions_to_the_attacked_neighbour(toy):
  state, data, config, mesh = toy
  attacked, nearest = boundary_shrink.neighbour_labels(state, data.forget, 0.1)
  assert np.all(nearest != data.forget["label"])
  flipped = attacked != data.forget["label"]
  assert 0 < flipped.sum() < len(flipped)  # the toy has targets of both kinds
  for rule, expected in (("attack", attacked), ("nearest_wrong", nearest)):
    config = _with(config, "boundary_shrink", epochs=30, lr=0.05, label_rule=rule)
    unlearned, info = _run("boundary_shrink", state, data, config)
    assert info["attack_success"] == pytest.approx(np.mean(flipped))
    assert info["own_label_fraction"] == pytest.approx(np.mean(expected == data.forget["label"]))
    _, predictions = _loss_and_pred(unlearned, data.forget, mesh)
    np.testing.assert_array_equal(predictions, expected)


def test_boundary_shrink_trains_a_target_the_attack_cannot_flip_on_its_own_label(toy):
  state, data, config, mesh = toy
  # A step below half an 8-bit level rounds back to the image: no attack can cross a boundary.
  bound = 0.4 / 255
  _, before = _loss_and_pred(state, data.forget, mesh)
  correct = before == data.forget["label"]
  assert correct.sum() >= 3
  attacked, _ = boundary_shrink.neighbour_labels(state, data.forget, bound)
  np.testing.assert_array_equal(attacked, before)  # the neighbour label is the prediction
  config = _with(config, "boundary_shrink", epochs=30, lr=0.05, bound=bound)
  unlearned, info = _run("boundary_shrink", state, data, config)
  assert info["attack_success"] == pytest.approx(np.mean(~correct))
  _, after = _loss_and_pred(unlearned, data.forget, mesh)
  # Trained on their own labels, the targets the original model gets right stay right (the
  # nearest-wrong rule would move every one of them to another class).
  np.testing.assert_array_equal(after[correct], data.forget["label"][correct])
  np.testing.assert_array_equal(after, before)


def test_run_sgd_applies_the_train_weight_decay(toy):
  """A step on a zero-gradient batch (every weight 0) only decays: θ ← θ·(1 - lr·wd)."""
  state, data, config, _ = toy
  from unlearn_jax.methods import common  # pylint: disable=g-import-not-at-top
  lr, decay = 0.5, float(config.train.weight_decay)
  assert decay == 5e-4  # the reference recipe's weight decay (SalUn's code)

  def zero_batch(step):
    del step
    return {"image": data.forget["image"], "label": data.forget["label"],
            "weight": np.zeros(len(data.forget["label"]), np.float32)}

  before = jax.device_get(state.params)
  decayed, _ = common.run_sgd(state, zero_batch, 1, lr, data, "decay_check", config.train)
  jax.tree.map(lambda b, a: np.testing.assert_allclose(a, b * (1 - lr * decay), rtol=1e-6,
                                                       atol=1e-9),
               before, jax.device_get(decayed.params))
  plain, _ = common.run_sgd(state, zero_batch, 1, lr, data, "decay_check", config.train,
                            weight_decay=0.0)
  jax.tree.map(np.testing.assert_array_equal, before, jax.device_get(plain.params))
  # ℓ1-sparse chains its own optimiser: the same decay, after the (here zero) ℓ1 term.
  tx = l1_sparse.make_optimizer(lr, 0.9, 0.0, 10, decay)
  zeros = jax.tree.map(np.zeros_like, before)
  updates, _ = tx.update(zeros, tx.init(before), before)
  jax.tree.map(lambda b, u: np.testing.assert_allclose(u, -lr * decay * b, rtol=1e-6,
                                                       atol=1e-12), before, updates)


def test_boundary_expand_returns_original_shapes_and_changes_forget_predictions(toy):
  state, data, config, mesh = toy
  config = _with(config, "boundary_expand", epochs=20, lr=0.05)
  loss_before, pred_before = _loss_and_pred(state, data.forget, mesh)
  unlearned, info = _run("boundary_expand", state, data, config)
  shapes = lambda params: jax.tree.map(np.shape, params)
  assert shapes(unlearned.params) == shapes(state.params)
  assert info["head"] == "Dense_1" and info["shadow_fraction"] == 1.0
  loss_after, pred_after = _loss_and_pred(unlearned, data.forget, mesh)
  assert loss_after > loss_before
  assert np.any(pred_after != pred_before)


@pytest.mark.parametrize("name,field,value", [
    ("salun", "mask_ratio", 0.0), ("salun", "mask_ratio", 1.5), ("salun", "mask_ratio", -0.1),
    ("neggrad_plus", "alpha", 1.2), ("neggrad_plus", "proximal", -1.0),
    ("l1_sparse", "gamma", -1e-4), ("boundary_shrink", "bound", 0.0),
    ("boundary_shrink", "label_rule", "nearest"), ("salun", "sampling", "mixed_up"),
    ("salun", "label_draw", "wrong"), ("random_label", "sampling", "every"),
    ("boundary_expand", "epochs", 0), ("salun", "chunk_size", 0)])
def test_check_config_rejects_bad_values(name, field, value):
  config = methods.default_configs()[name]
  config[field] = value
  with pytest.raises(config_lib.ConfigError, match=f"unlearn.{name}.{field}"):
    methods.check_config(name, config)


def test_defaults_validate():
  config = defaults.base_config()
  config.methods = NAMES
  defaults.validate(config)
  for name in NAMES:
    assert isinstance(methods.default_configs()[name], ml_collections.ConfigDict)
    methods.check_config(name, methods.default_configs()[name])
