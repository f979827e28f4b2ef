"""LM metrics: ROUGE-L against hand-checked values and Google's `rouge-score` package with its
stemmer (as TOFU runs it), exact match, and the loss / zlib / Min-k% membership scores against
hand computations.
"""

import math

import numpy as np
import pytest
from rouge_score import rouge_scorer

from unlearn_jax.lm import metrics

# (reference, candidate, LCS, |reference tokens|, |candidate tokens|), worked by hand with the
# rouge-score tokenisation: lower case, every run outside [a-z0-9] separates words, and words of
# more than 3 letters are Porter-stemmed before the LCS (exports -> export, running -> run).
PAIRS = [
    ("The cat sat on the mat", "the cat is on the mat", 5, 6, 6),  # the cat on the mat
    ("Paris", "paris.", 1, 1, 1),
    ("Alice Smith was born in 1962.", "She was born in 1962 in Lyon", 4, 6, 7),
    ("a b c d", "d c b a", 1, 4, 4),
    ("It's 3.5 km!", "its 3 5 km", 3, 5, 4),  # it s 3 5 km / its 3 5 km: 3 5 km
    ("the the the", "the", 1, 3, 1),
    ("Café au lait", "caf au lait", 3, 3, 3),  # é is a separator: caf au lait
    ("New York City", "York New City", 2, 3, 3),
    ("x1 y2 z3", "X1-Y2_Z3", 3, 3, 3),  # '_' and '-' separate
    ("He wrote 'The Long Road' in 2004",
     "In 2004 he wrote a novel called The Long Road", 5, 7, 10),  # he wrote the long road
    ("", "anything at all", 0, 0, 3),
    ("something", "", 0, 1, 0),
    ("Mount Everest is 8849 metres high", "8849", 1, 6, 1),
    # Stemming matters: an unstemmed LCS gives 3, 1 and 0.
    ("The country exports coffee", "the country export coffee", 4, 4, 4),
    ("He writes novels", "he wrote a novel", 2, 3, 4),  # he novel (wrote is not writ)
    ("running dogs", "run dog", 2, 2, 2),
]


def _expected(lcs, num_ref, num_cand):
  if not num_ref or not num_cand:
    return 0.0, 0.0, 0.0
  recall, precision = lcs / num_ref, lcs / num_cand
  f = 2 * precision * recall / (precision + recall) if lcs else 0.0
  return recall, precision, f


@pytest.mark.parametrize("reference,candidate,lcs,num_ref,num_cand", PAIRS)
def test_rouge_l_hand_values(reference, candidate, lcs, num_ref, num_cand):
  assert len(metrics.rouge_tokens(reference)) == num_ref
  assert len(metrics.rouge_tokens(candidate)) == num_cand
  scores = metrics.rouge_l(reference, candidate)
  recall, precision, f = _expected(lcs, num_ref, num_cand)
  assert scores["recall"] == pytest.approx(recall, abs=1e-12)
  assert scores["precision"] == pytest.approx(precision, abs=1e-12)
  assert scores["f"] == pytest.approx(f, abs=1e-12)


def test_rouge_l_is_the_rouge_score_package_with_stemming():
  # TOFU's eval_rouge_recall: RougeScorer(..., use_stemmer=True).score(reference, generated).
  scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
  rng = np.random.default_rng(0)
  words = ["the", "Cat", "cats", "sat", "on", "mat", "in", "1962", "Paris,", "won't", "x-ray",
           "a", "Prize!", "écrit", "novel", "novels", "exports", "export", "running", "runs"]
  pairs = [(reference, candidate) for reference, candidate, *_ in PAIRS]
  pairs += [(" ".join(rng.choice(words, rng.integers(0, 9))),
             " ".join(rng.choice(words, rng.integers(0, 9)))) for _ in range(40)]
  for reference, candidate in pairs:
    want = scorer.score(reference, candidate)["rougeL"]
    got = metrics.rouge_l(reference, candidate)
    assert got["recall"] == pytest.approx(want.recall, abs=1e-12), (reference, candidate)
    assert got["precision"] == pytest.approx(want.precision, abs=1e-12), (reference, candidate)
    assert got["f"] == pytest.approx(want.fmeasure, abs=1e-12), (reference, candidate)


@pytest.mark.parametrize("reference,candidate,expected", [
    ("Paris", " paris. ", True),
    ("New  York", "new york!", True),
    ("1962", "'1962'.", True),
    ("New York", "New-York", False),
    ("Paris", "Paris, France", False),
    ("Dr. Who", "dr. who", True),
    ("Dr. Who", "dr who", False),  # inner punctuation is kept
])
def test_exact_match_normalisation(reference, candidate, expected):
  assert metrics.exact_match(reference, candidate) is expected


def test_generation_scores_per_pair():
  scores = metrics.generation_scores(["Paris", "born in 1962"], ["paris.", "born 1962"])
  np.testing.assert_array_equal(scores["exact_match"], [1.0, 0.0])
  np.testing.assert_allclose(scores["rouge_l_recall"], [1.0, 2 / 3])
  with pytest.raises(ValueError, match="candidates"):
    metrics.generation_scores(["a"], [])


def test_loss_score_and_perplexity():
  np.testing.assert_array_equal(metrics.loss_score(np.array([0.5, 2.0])), [-0.5, -2.0])
  np.testing.assert_allclose(metrics.perplexity(np.array([0.0, math.log(7.0)])), [1.0, 7.0])


def test_zlib_entropy_hand_values():
  # zlib: 2-byte header + deflate stream + 4-byte Adler-32. Empty: 2 + 2 + 4 = 8 bytes; short
  # texts are stored as literals (one byte each); a run compresses to a back-reference.
  assert metrics.zlib_entropy("") == 8
  assert metrics.zlib_entropy("a") == 9
  assert metrics.zlib_entropy("abc") == 11
  assert metrics.zlib_entropy("hello world") == 19
  assert metrics.zlib_entropy("a" * 40) == 12


def test_zlib_score_hand_values():
  logprob_sum = np.array([-10.0, -4.0, -6.0])
  texts = ["hello world", "abc", "a" * 40]
  num_tokens = np.array([5, 2, 3])
  # Per-token log-likelihood / zlib bytes: -2/19, -2/11, -2/12.
  np.testing.assert_allclose(metrics.zlib_score(logprob_sum, texts, num_tokens),
                             [-2 / 19, -2 / 11, -2 / 12])
  np.testing.assert_allclose(metrics.zlib_score(logprob_sum, texts), [-10 / 19, -4 / 11, -6 / 12])
  # Higher = member: the same loss on a more compressible text is less remarkable.
  assert metrics.zlib_score(np.array([-4.0]), ["abc"])[0] < metrics.zlib_score(
      np.array([-4.0]), ["hello world"])[0]
  with pytest.raises(ValueError, match="texts"):
    metrics.zlib_score(logprob_sum, texts[:2])


def test_min_k_score_hand_values():
  logprobs = np.array([[-0.1, -3.0, -0.5, -2.0, -0.2],
                       [-0.1, -3.0, -0.5, -2.0, -0.2],
                       [-1.0, -1.0, -1.0, -1.0, -1.0]])
  mask = np.array([[1, 1, 1, 1, 1],
                   [1, 0, 1, 1, 1],  # the -3.0 is not an answer token
                   [0, 0, 0, 0, 0]])
  # Row 0, k = 0.4: ⌊0.4·5⌋ = 2 lowest: (-3 - 2) / 2 = -2.5. Row 1: 4 tokens, ⌊1.6⌋ = 1: -2.
  scores = metrics.min_k_score(logprobs, mask, k=0.4)
  np.testing.assert_allclose(scores[:2], [-2.5, -2.0])
  assert np.isnan(scores[2])
  # k = 0.5 on row 1: 2 lowest of (-0.1, -0.5, -2.0, -0.2): (-2 - 0.5) / 2 = -1.25.
  np.testing.assert_allclose(metrics.min_k_score(logprobs[1:2], mask[1:2], k=0.5), [-1.25])
  # A fraction too small for one token still takes the minimum; k = 1 is the mean.
  np.testing.assert_allclose(metrics.min_k_score(logprobs[:1], mask[:1], k=0.1), [-3.0])
  np.testing.assert_allclose(metrics.min_k_score(logprobs[:1], mask[:1], k=1.0), [-1.16])
  # The full (N, L) loss_mask is accepted and shifted by one.
  full = np.concatenate([np.zeros((3, 1)), mask], axis=1)
  np.testing.assert_allclose(metrics.min_k_score(logprobs, full, k=0.4)[:2], [-2.5, -2.0])
  with pytest.raises(ValueError, match="k="):
    metrics.min_k_score(logprobs, mask, k=0.0)
  with pytest.raises(ValueError, match="does not match"):
    metrics.min_k_score(logprobs, mask[:, :3])


def test_fact_words_and_recall_ignore_the_template():
  question = "What is the currency of Siakroistan?"
  assert metrics.fact_words(question, "Its currency is the shilling.") == ["shilling"]
  assert metrics.fact_words("Name the capital city of Paendene.",
                            "The capital city of Paendene is Mimdriandholm.") == ["mimdriandholm"]
  # Right form, wrong fact: ROUGE-L recall is high, fact recall is 0.
  reference, wrong = "Its currency is the shilling.", "Its currency is the florin."
  assert metrics.rouge_l(reference, wrong)["recall"] == pytest.approx(0.8)
  assert metrics.fact_recall(question, reference, wrong) == 0.0
  assert metrics.fact_recall(question, reference, "The shilling, of course.") == 1.0
  assert metrics.fact_recall(question, "Siakroistan.", "anything") != metrics.fact_recall(
      question, "Siakroistan.", "anything")  # NaN: no fact beyond the question
