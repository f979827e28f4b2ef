"""LM unlearning methods: the NPO / SimNPO losses against their papers' formulas, the paired
objective against a numpy recomputation, and every method run on a tiny memorising transformer.

Hand values come from the papers' formulas evaluated with `math` (the worked numbers are in the
comments); the objective is checked on made-up logits against numpy; retrain against training
on the retained data directly. Compiles dominate the time of this file, so the methods run once
(module fixture) with batch shapes chosen to share compiled steps.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from unlearn_jax import methods, models, parallel, train
from unlearn_jax.config import ConfigError
from unlearn_jax.lm import steps
from unlearn_jax.lm.methods import common, npo, simnpo
from unlearn_jax.lm.methods import grad_ascent as lm_grad_ascent
from unlearn_jax.methods import grad_ascent as image_grad_ascent

VOCAB, LENGTH = 20, 16


def _sigmoid(x):
  return 1.0 / (1.0 + math.exp(-x))


# ----------------------------------------------------------------------------------------------
# The losses, on made-up log-likelihoods.


def test_npo_loss_matches_the_paper_formula():
  # Zhang et al. (COLM 2024): L = -(2/β) log σ(-β (log π_θ - log π_ref)).
  cases = [  # (β, log π_θ, log π_ref)
      (0.1, -2.0, -1.0), (0.1, -10.0, -1.0), (0.1, -0.5, -3.0), (1.0, -4.0, -4.0),
      (0.5, -3.0, -1.0)]
  for beta, logprob, ref in cases:
    expected = -(2.0 / beta) * math.log(_sigmoid(-beta * (logprob - ref)))
    got = float(npo.loss(jnp.float32(logprob), jnp.float32(ref), beta))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Worked by hand: β = 0.5, Δ = -2: 4·log(1 + e^-1) = 4 · 0.313262 = 1.253047; Δ = 0: 2·log 2.
  np.testing.assert_allclose(float(npo.loss(jnp.float32(-3.0), jnp.float32(-1.0), 0.5)),
                             1.2530468, rtol=1e-6)
  np.testing.assert_allclose(float(npo.loss(jnp.float32(-4.0), jnp.float32(-4.0), 1.0)),
                             2 * math.log(2), rtol=1e-6)


def test_npo_loss_tends_to_gradient_ascent_as_beta_vanishes():
  # (2/β)·log(1 + e^{βΔ}) = (2/β)·log 2 + Δ + O(β): NPO's small-β limit is the GA loss Δ.
  delta = np.array([-3.0, -0.5, 2.0])
  beta = 1e-3
  losses = np.asarray(npo.loss(jnp.asarray(delta, jnp.float32), jnp.zeros(3), beta), np.float64)
  np.testing.assert_allclose(losses - 2 * math.log(2) / beta, delta, atol=1e-2)


def test_simnpo_loss_matches_the_paper_formula():
  # Fan et al. (2024): L = -(2/β) log σ(-(β/|y|) log π_θ(y|x) - γ).
  cases = [  # (log π_θ, |y|, β, γ)
      (-6.0, 3, 2.5, 0.0), (-6.0, 3, 2.5, 1.0), (-1.2, 4, 2.5, 0.0), (-30.0, 10, 1.0, 0.5)]
  for logprob, length, beta, gamma in cases:
    expected = -(2.0 / beta) * math.log(_sigmoid(-(beta / length) * logprob - gamma))
    got = float(simnpo.loss(jnp.float32(logprob), jnp.float32(length), beta, gamma))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Worked by hand: log π = -6 over 3 tokens, β 2.5, γ 0: 0.8·log(1 + e^-5) = 0.0053723.
  np.testing.assert_allclose(float(simnpo.loss(jnp.float32(-6.0), jnp.float32(3.0), 2.5, 0.0)),
                             0.0053723, rtol=1e-4)


def test_simnpo_is_npo_with_a_unit_reference_for_one_token():
  logprob = jnp.array([-0.3, -2.0, -7.0])
  np.testing.assert_allclose(np.asarray(simnpo.loss(logprob, jnp.ones(3), 0.7, 0.0)),
                             np.asarray(npo.loss(logprob, jnp.zeros(3), 0.7)), rtol=1e-6)


def _numpy_logprobs(logits, tokens, mask):
  logits = np.asarray(logits, np.float64)[:, :-1]
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  picked = np.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]
  return log_probs, (picked * mask[:, 1:]).sum(1), mask[:, 1:].sum(1)


def test_objective_parts_match_numpy_on_made_up_logits():
  rng = np.random.default_rng(0)
  num, length, vocab = 6, 7, 5
  tokens = rng.integers(0, vocab, (num, length)).astype(np.int32)
  mask = np.zeros((num, length), np.float32)
  mask[:, 3:6] = 1.0
  mask[2, 6] = 1.0
  logits = rng.normal(size=(num, length, vocab)).astype(np.float32)
  ref_logits = rng.normal(size=(num, length, vocab)).astype(np.float32)
  # Rows 0-2 forget (row 2 a filler row with share 0), rows 3-5 retain.
  forget = np.array([0.5, 0.5, 0.0, 0, 0, 0], np.float32)
  retain = np.array([0, 0, 0, 0.25, 0.25, 0.25], np.float32)
  beta, gamma = 0.3, 0.2
  log_probs, logprob, count = _numpy_logprobs(logits, tokens, mask)
  ref_log_probs, ref_logprob, _ = _numpy_logprobs(ref_logits, tokens, mask)
  nll = -logprob / count
  kl = (np.exp(ref_log_probs) * (ref_log_probs - log_probs)).sum(-1)
  kl = (kl * mask[:, 1:]).sum(1) / count
  expected = {
      "ascent": (forget * -nll).sum(),
      "npo": (forget * (2 / beta) * np.log1p(np.exp(beta * (logprob - ref_logprob)))).sum(),
      "simnpo": (forget * (2 / beta) * np.log1p(np.exp(beta * logprob / count + gamma))).sum(),
      "nll": (retain * nll).sum(),
      "kl": (retain * kl).sum()}
  batch = {"tokens": jnp.asarray(tokens), "loss_mask": jnp.asarray(mask)}
  objective_parts = jax.jit(common.objective_parts)
  for term in common.TERMS:
    shares = retain if term in common.RETAIN_LOSSES else forget
    batch_term = {**batch, **{f"{name}_share": jnp.asarray(shares if name == term else
                                                           np.zeros(num, np.float32))
                              for name in common.TERMS}}
    parts = objective_parts(jnp.asarray(logits), jnp.asarray(ref_logits), batch_term, beta,
                            gamma)
    np.testing.assert_allclose(float(sum(parts.values())), expected[term], rtol=1e-5,
                               err_msg=term)
  assert expected["kl"] > 0


def test_with_shares_splits_the_weight_over_real_rows():
  batch = {"weight": np.array([1.0, 1.0, 1.0, 0.0], np.float32)}
  shares = common.with_shares(batch, "npo", 0.6)
  np.testing.assert_allclose(shares["npo_share"], [0.2, 0.2, 0.2, 0.0])
  for name in ("ascent", "simnpo", "nll", "kl"):
    np.testing.assert_array_equal(shares[f"{name}_share"], 0.0)


# ----------------------------------------------------------------------------------------------
# Registry and configs.


LM_NAMES = ("finetune", "grad_ascent", "grad_diff", "kl_min", "npo", "retrain", "simnpo")


def test_the_lm_registry_lists_its_builtin_methods():
  assert methods.builtin_names("lm") == LM_NAMES
  assert methods.available("lm") == LM_NAMES
  assert "common" not in methods.available("lm")
  assert {"npo", "simnpo", "kl_min"}.isdisjoint(methods.builtin_names("image"))


def test_names_configs_and_unknown_name():
  configs = methods.default_configs(track="lm")
  assert set(configs.keys()) == set(LM_NAMES)
  assert (configs.npo.beta, configs.npo.retain_weight) == (0.1, 1.0)
  assert (configs.simnpo.beta, configs.simnpo.gamma, configs.simnpo.retain_weight) == (
      2.5, 0.0, 0.1375)
  for name in LM_NAMES:
    methods.check_config(name, configs[name], track="lm")
    assert callable(methods.get(name, track="lm"))
  with pytest.raises(ConfigError, match="language-model method; available: .*simnpo"):
    methods.get("simnop", track="lm")
  with pytest.raises(ConfigError, match="available: .*random_label"):
    methods.get("npo")  # an LM method is not an image method
  bad = configs.npo.copy_and_resolve_references()
  bad.beta = 0.0
  with pytest.raises(ConfigError, match="unlearn.npo.beta"):
    methods.check_config("npo", bad, track="lm")
  # A fraction of a pass: only methods whose spec allows it (finetune).
  bad = ml_collections.ConfigDict({**configs.grad_ascent.to_dict(), "epochs": 0.5})
  with pytest.raises(ConfigError, match="unlearn.grad_ascent.epochs=0.5: must be an integer"):
    methods.check_config("grad_ascent", bad, track="lm")
  good = configs.finetune.copy_and_resolve_references()
  good.epochs = 0.5
  methods.check_config("finetune", good, track="lm")


def test_an_lm_name_gets_the_lm_module_not_the_image_one():
  lm_fn = methods.get("grad_ascent", track="lm")
  assert lm_fn is lm_grad_ascent.unlearn
  assert lm_fn is not methods.get("grad_ascent") and methods.get("grad_ascent") is (
      image_grad_ascent.unlearn)
  assert methods.spec("retrain", track="lm").reference == "retrain"
  assert methods.spec("finetune", track="lm").fractional_epochs


def test_a_method_registered_on_lm_is_not_visible_on_image():
  def keep(state, run, cfg, rng):
    del run, cfg, rng
    return state, {"steps": 0, "wall_s": 0.0}

  methods.register("keep_lm", keep, default_config={"lr": 0.1}, track="lm")
  try:
    assert "keep_lm" in methods.available("lm") and "keep_lm" not in methods.available("image")
    assert methods.get("keep_lm", track="lm") is keep
    assert methods.default_configs("lm").keep_lm.lr == 0.1
    assert "keep_lm" not in methods.default_configs("image")
    with pytest.raises(ConfigError, match="unknown name"):
      methods.get("keep_lm")
    with pytest.raises(KeyError):
      methods.unregister("keep_lm")  # registered on the lm track only
  finally:
    methods.unregister("keep_lm", track="lm")
  assert "keep_lm" not in methods.available("lm")


# ----------------------------------------------------------------------------------------------
# Every method on a tiny memorising transformer.


def _data(num=8, seed=0):
  rng = np.random.default_rng(seed)
  tokens = np.zeros((num, LENGTH), np.int32)
  mask = np.zeros((num, LENGTH), np.float32)
  for row in range(num):
    answer = rng.integers(4, VOCAB, 5 + row % 2)
    seq = [1, *rng.integers(4, VOCAB, 3), 2, *answer, 3]
    tokens[row, :len(seq)] = seq
    mask[row, 5:len(seq)] = 1.0
  return {"tokens": tokens, "loss_mask": mask}


def _numpy_init(model):
  """A state initialiser that fills `model`'s parameter shapes with numpy draws seeded by the
  key (XLA:CPU compiles random initialisers slowly; create_state is tested in test_lm_model)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             jnp.zeros((1, LENGTH), jnp.int32)))["params"]

  def init(key):
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())

    def fill(path, leaf):
      name = jax.tree_util.keystr(path)
      if "scale" in name:
        return jnp.ones(leaf.shape, leaf.dtype)
      if "bias" in name:
        return jnp.zeros(leaf.shape, leaf.dtype)
      # Embedding rows of about unit norm; kernels scaled by their fan-in.
      scale = leaf.shape[-1] if "embedding" in name else int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(scale), leaf.dtype)

    params = jax.tree_util.tree_map_with_path(fill, shapes)
    tx = optax.identity()
    return train.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
                            opt_state=tx.init(params), apply_fn=model.apply, tx=tx)

  return init


@pytest.fixture(scope="module")
def toy():
  """A transformer memorising 8 QA rows; forget = the first 4, retain = the other 4."""
  model = models.get("transformer", VOCAB, num_layers=1, width=32, heads=2, max_len=LENGTH)
  mesh = parallel.make_mesh()
  init = _numpy_init(model)
  data = _data()
  config = ml_collections.ConfigDict()
  config.train = ml_collections.ConfigDict({
      "epochs": 60, "batch_size": 4, "optimizer": "adamw", "lr": 1e-2, "momentum": 0.9,
      "weight_decay": 0.01, "schedule": "constant", "checkpoint_every": 10_000,
      "log_every": 10_000})
  state, _ = steps.train_from_scratch(init(jax.random.key(0)), data, config.train, 0,
                                      name="original", mesh=mesh)
  config.unlearn = methods.default_configs(track="lm")
  for name in LM_NAMES:
    if name == "retrain":
      continue
    # The recipe's optimiser and batch size: original, retrain, finetune and grad_ascent share
    # one compiled step, grad_diff/simnpo another and kl_min/npo a third.
    config.unlearn[name].batch_size = 4
    config.unlearn[name].lr = 1e-2
  forget = {key: value[:4] for key, value in data.items()}
  retain = {key: value[4:] for key, value in data.items()}
  run = methods.RunContext(forget=forget, retain=retain, mesh=mesh, seed=0, num_classes=VOCAB,
                           init_state=init, recipe=config.train)
  original_params = jax.tree.map(np.asarray, state.params)
  results = {name: methods.call(name, state, run, config.unlearn[name], jax.random.key(5),
                                track="lm")
             for name in LM_NAMES}
  return {"state": state, "original_params": original_params, "data": run,
          "config": config, "mesh": mesh, "init": init, "results": results}


def _nll(state, data, mesh):
  return steps.score(state, data, 8, mesh)["nll"]


def test_every_method_returns_the_parameter_tree_and_its_info(toy):
  specs = jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), toy["original_params"])
  for name, (state, info) in toy["results"].items():
    assert jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), state.params) == specs, name
    assert info["steps"] >= 1 and info["wall_s"] >= 0, (name, info)
    moved = max(float(np.abs(np.asarray(a) - b).max()) for a, b in zip(
        jax.tree.leaves(state.params), jax.tree.leaves(toy["original_params"])))
    assert moved > 1e-4, name
  # The methods left the original state usable and unchanged (its copies were donated).
  for leaf, saved in zip(jax.tree.leaves(toy["state"].params),
                         jax.tree.leaves(toy["original_params"])):
    np.testing.assert_array_equal(np.asarray(leaf), saved)


def test_step_counts_follow_the_configs(toy):
  results = toy["results"]
  # Forget-set methods: epochs × ⌈4 / 4⌉ steps; finetune: 1 × ⌈4 / 4⌉; retrain: 60 × 1.
  assert results["grad_ascent"][1]["steps"] == 5
  assert results["grad_diff"][1]["steps"] == results["kl_min"][1]["steps"] == 5
  assert results["npo"][1]["steps"] == results["simnpo"][1]["steps"] == 10
  assert results["finetune"][1]["steps"] == 1
  assert results["retrain"][1]["steps"] == 60


def test_forget_methods_raise_the_forget_nll(toy):
  data, mesh = toy["data"], toy["mesh"]
  before = _nll(toy["state"], data.forget, mesh)
  assert before.max() < 0.1  # memorised
  for name in ("grad_ascent", "grad_diff", "kl_min", "npo", "simnpo"):
    after = _nll(toy["results"][name][0], data.forget, mesh)
    assert after.mean() > before.mean() + 0.2, (name, before, after)


def test_retrain_equals_training_on_the_retained_data(toy):
  data = toy["data"]
  expected, _ = steps.train_from_scratch(toy["init"](jax.random.key(5)), data.retain,
                                         toy["config"].train, data.seed, name="direct",
                                         mesh=toy["mesh"])
  for got, want in zip(jax.tree.leaves(toy["results"]["retrain"][0].params),
                       jax.tree.leaves(expected.params)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)
  # Trained on the retained rows only: it never memorised the forget rows.
  mesh = toy["mesh"]
  assert _nll(expected, data.forget, mesh).mean() > 5 * _nll(expected, data.retain, mesh).mean()


def test_call_refuses_an_lm_result_with_another_parameter_tree(toy):
  def widen(state, run, cfg, rng):
    del run, cfg, rng
    params = jax.tree.map(lambda leaf: jnp.concatenate([leaf, leaf]), state.params)
    return state.replace(params=params), {"steps": 1, "wall_s": 0.0}

  methods.register("widen", widen, track="lm")
  try:
    with pytest.raises(methods.MethodContractError, match="differ from the input's"):
      methods.call("widen", toy["state"], toy["data"], ml_collections.ConfigDict(),
                   jax.random.key(0), track="lm")
  finally:
    methods.unregister("widen", track="lm")
