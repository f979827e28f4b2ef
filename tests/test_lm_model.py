"""The decoder-only transformer and the LM steps: causality, the answer-only loss, training,
scoring and greedy decoding.

References are independent of the code under test: losses are recomputed in numpy from the raw
logits, greedy decoding is compared with a one-row-at-a-time Python loop (argmax at the last
prefix position of a zero-padded row; exact because the causal mask is tested on its own), and
memorisation is judged against the untrained model. Forward passes are jitted once per shape:
XLA:CPU compiles are the cost of this file.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from unlearn_jax import models, parallel
from unlearn_jax.lm import steps
from unlearn_jax.models import transformer

VOCAB, LENGTH = 24, 20
BOS, SEP, EOS = 1, 2, 3
KWARGS = {"num_layers": 1, "width": 32, "heads": 2, "max_len": LENGTH}


def _sequences(num=4, seed=0):
  """`num` rows `[bos] q(4) [sep] a(len 4..6) [eos] [pad ...]` and their answer masks."""
  rng = np.random.default_rng(seed)
  tokens = np.zeros((num, LENGTH), np.int32)
  mask = np.zeros((num, LENGTH), np.float32)
  for row in range(num):
    question = rng.integers(4, VOCAB, 4)
    answer = rng.integers(4, VOCAB, 4 + row % 3)
    seq = [BOS, *question, SEP, *answer, EOS]
    tokens[row, :len(seq)] = seq
    mask[row, 6:len(seq)] = 1.0  # the answer and the eos
  return {"tokens": tokens, "loss_mask": mask}


def _recipe(**overrides):
  recipe = ml_collections.ConfigDict({
      "epochs": 150, "batch_size": 4, "optimizer": "adam", "lr": 1e-2, "momentum": 0.9,
      "weight_decay": 0.0, "schedule": "constant", "checkpoint_every": 10_000,
      "log_every": 10_000})
  recipe.update(overrides)
  return recipe


def _numpy_answer_nll(logits, tokens, mask):
  """Mean over answer targets of -log softmax(logits[j-1])[tokens[j]], per row (float64)."""
  logits = np.asarray(logits, np.float64)[:, :-1]
  logits = logits - logits.max(-1, keepdims=True)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  picked = np.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]
  weights = mask[:, 1:]
  return -(picked * weights).sum(1) / weights.sum(1)


@pytest.fixture(scope="module")
def model():
  return models.get("transformer", VOCAB, **KWARGS)


@pytest.fixture(scope="module")
def apply(model):
  """The jitted evaluation-mode forward pass (variables, tokens) -> logits."""
  return jax.jit(lambda variables, tokens: model.apply(variables, tokens, train=False))


@pytest.fixture(scope="module")
def init_state(model):
  return steps.create_state(model, jax.random.key(0), LENGTH)


@pytest.fixture(scope="module")
def mesh():
  return parallel.make_mesh()


@pytest.fixture(scope="module")
def trained(init_state, mesh):
  """The init state trained to memorise 4 sequences, with its training info."""
  data = _sequences()
  state, info = steps.train_from_scratch(init_state, data, _recipe(), 0, name="memorise",
                                         mesh=mesh)
  return data, state, info


def test_registry_builds_the_transformer_with_its_fields():
  assert "transformer" in models.available()
  model = models.get("transformer", 50, num_layers=3, width=48, heads=6, max_len=32)
  assert isinstance(model, transformer.Transformer)
  assert (model.vocab_size, model.num_layers, model.width, model.heads, model.max_len) == (
      50, 3, 48, 6, 32)
  assert models.default_kwargs("transformer")["dropout"] == 0.0


def test_logits_shape_and_parameters(apply, init_state):
  tokens = _sequences()["tokens"]
  logits = apply(init_state.variables(), tokens)
  assert logits.shape == (4, LENGTH, VOCAB) and logits.dtype == jnp.float32
  assert init_state.params["position_embedding"].shape == (LENGTH, 32)
  assert init_state.params["output"]["kernel"].shape == (32, VOCAB)
  assert init_state.batch_stats == {}


def test_tied_embeddings_have_no_output_layer():
  model = models.get("transformer", VOCAB, tie_embeddings=True, **KWARGS)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             jnp.zeros((1, LENGTH), jnp.int32)))["params"]
  assert "output" not in shapes and "token_embedding" in shapes


def test_too_long_sequence_is_rejected(model, init_state):
  with pytest.raises(ValueError, match="max_len"):
    model.apply(init_state.variables(), jnp.zeros((1, LENGTH + 1), jnp.int32))


def test_causal_mask_later_tokens_do_not_change_earlier_logits(apply, init_state):
  tokens = _sequences()["tokens"]
  logits = np.asarray(apply(init_state.variables(), tokens))
  for position in (3, 9, LENGTH - 1):
    changed = tokens.copy()
    changed[:, position] = (changed[:, position] + 7) % VOCAB
    changed_logits = np.asarray(apply(init_state.variables(), changed))
    np.testing.assert_allclose(changed_logits[:, :position], logits[:, :position], atol=1e-5)
    # ...and the position itself does see its own token.
    assert np.abs(changed_logits[:, position] - logits[:, position]).max() > 1e-3


def test_loss_is_the_masked_answer_nll(apply, init_state):
  data = _sequences()
  tokens, mask = data["tokens"], data["loss_mask"]
  logits = apply(init_state.variables(), tokens)
  expected = _numpy_answer_nll(logits, tokens, mask)
  weights = np.array([1.0, 0.0, -1.0, 2.0], np.float32)
  batch = {"tokens": jnp.asarray(tokens), "loss_mask": jnp.asarray(mask),
           "weight": jnp.asarray(weights)}
  lm_loss = jax.jit(steps.lm_loss)
  loss, updates = lm_loss(init_state.params, init_state, batch, jax.random.key(0))
  assert updates == {}
  np.testing.assert_allclose(float(loss), (weights * expected).sum() / np.abs(weights).sum(),
                             rtol=1e-5)
  # Question positions do not count: with every position in the mask the loss differs.
  full = {**batch, "loss_mask": jnp.ones_like(batch["loss_mask"])}
  assert abs(float(lm_loss(init_state.params, init_state, full, jax.random.key(0))[0])
             - float(loss)) > 1e-3
  # The last position is only a target: a masked (pad) target there leaves the loss unchanged.
  assert mask[:, -1].sum() == 0
  padded = tokens.copy()
  padded[:, -1] = 5
  changed = lm_loss(init_state.params, init_state, {**batch, "tokens": padded},
                    jax.random.key(0))[0]
  np.testing.assert_allclose(float(changed), float(loss), rtol=1e-6)
  # ...while an unmasked target there counts.
  counted = {"tokens": padded, "loss_mask": np.asarray(mask).copy(), "weight": weights}
  counted["loss_mask"][:, -1] = 1.0
  counted_loss = lm_loss(init_state.params, init_state, counted, jax.random.key(0))[0]
  assert abs(float(counted_loss) - float(loss)) > 1e-4


def test_sequence_logprob_and_score_match_numpy(apply, init_state, mesh):
  data = _sequences(num=6, seed=3)
  tokens, mask = data["tokens"], data["loss_mask"]
  expected_nll = np.concatenate([
      _numpy_answer_nll(apply(init_state.variables(), tokens[rows]), tokens[rows], mask[rows])
      for rows in (slice(0, 4), slice(2, 6))])[[0, 1, 2, 3, 6, 7]]
  counts = mask[:, 1:].sum(1)
  sequence_logprob = jax.jit(steps.sequence_logprob, static_argnums=0)
  logprob_sum, num_tokens = sequence_logprob(init_state.apply_fn, init_state.variables(),
                                             tokens[:4], mask[:4])
  np.testing.assert_allclose(np.asarray(num_tokens), counts[:4])
  np.testing.assert_allclose(np.asarray(logprob_sum), -expected_nll[:4] * counts[:4], rtol=1e-5)
  # Batches of 4 over 6 rows: the last batch is padded, padding rows are dropped.
  scores = steps.score(init_state, data, 4, mesh)
  np.testing.assert_allclose(scores["nll"], expected_nll, rtol=1e-5)
  np.testing.assert_allclose(scores["num_tokens"], counts)
  np.testing.assert_allclose(scores["token_logprobs"].sum(1), scores["logprob_sum"], rtol=1e-5)
  assert scores["token_logprobs"].shape == (6, LENGTH - 1)
  assert np.all(scores["token_logprobs"][mask[:, 1:] == 0] == 0)
  assert np.all(scores["token_logprobs"][mask[:, 1:] == 1] < 0)


def test_train_from_scratch_memorises_four_sequences(init_state, trained, mesh):
  data, state, info = trained
  before = steps.score(init_state, data, 4, mesh)["nll"]
  after = steps.score(state, data, 4, mesh)["nll"]
  assert info["steps"] == 150 and np.isfinite(info["final_loss"])
  assert before.mean() > 2.5  # about log(24) = 3.2 at initialisation
  assert after.max() < 0.05 * before.mean(), (before, after)


def _slow_greedy(apply, variables, prompt, max_new_tokens):
  """Greedy decoding of one row, one token at a time: argmax at the prefix's last position of
  the prefix zero-padded to LENGTH (a Python loop; no buffer updates inside a compiled loop)."""
  sequence = list(prompt)
  out = []
  for _ in range(max_new_tokens):
    if len(sequence) == LENGTH:  # the model's max_len: no room for another token
      break
    row = np.zeros((1, LENGTH), np.int32)
    row[0, :len(sequence)] = sequence
    logits = apply(variables, row)
    token = int(np.argmax(np.asarray(logits[0, len(sequence) - 1])))
    out.append(token)
    if token == EOS:
      break
    sequence.append(token)
  return out + [0] * (max_new_tokens - len(out))


def test_generate_reproduces_memorised_answers_and_matches_slow_reference(apply, trained, mesh):
  data, state, _ = trained
  tokens, mask = data["tokens"], data["loss_mask"]
  # [bos] question [sep] in full-length rows, garbage after (as a tokenizer's prompts come).
  prompts = tokens.copy()
  prompts[:, 6:] = 9
  max_new = 16  # more than fit after a 6-token prompt: decoding stops at max_len (20)
  # Batch size 3 over 4 rows: a padded last batch.
  generated = steps.generate(state, prompts, np.full(4, 6), max_new, EOS, 3, mesh)
  assert generated.shape == (4, max_new) and generated.dtype == np.int32
  for row in range(4):
    answer = tokens[row, mask[row] == 1]  # answer tokens and the eos
    np.testing.assert_array_equal(generated[row, :len(answer)], answer)
    assert np.all(generated[row, len(answer):] == 0)  # pad after the eos
    reference = _slow_greedy(apply, state.variables(), prompts[row, :6], max_new)
    np.testing.assert_array_equal(generated[row], reference)


def test_generate_with_ragged_prompts_matches_slow_reference(apply, init_state, mesh):
  # Prompts of 2..5 tokens; the buffer shape (20 = max_len) equals the test above's, so the
  # decoder compiles once.
  rng = np.random.default_rng(7)
  lengths = np.array([2, 5, 3, 4])
  prompts = np.zeros((4, 6), np.int32)
  for row, length in enumerate(lengths):
    prompts[row, :length] = rng.integers(4, VOCAB, length)
    prompts[row, length:] = 9  # garbage after the prompt must be ignored
  max_new = 16  # the 5-token prompt reaches max_len = 20 after 15 tokens
  generated = steps.generate(init_state, prompts, lengths, max_new, EOS, 3, mesh)
  for row, length in enumerate(lengths):
    reference = _slow_greedy(apply, init_state.variables(), prompts[row, :length], max_new)
    np.testing.assert_array_equal(generated[row], reference)
  assert generated[1, -1] == 0  # the row of the 5-token prompt was stopped by max_len


def test_generate_rejects_bad_lengths(init_state, mesh):
  with pytest.raises(ValueError, match="prompt lengths"):
    steps.generate(init_state, np.ones((2, 4), np.int32), np.array([0, 4]), 3, EOS, 2, mesh)
