"""Host-side metrics of the language-model track: answer overlap and membership scores.

What a study asks of an unlearned LM about a target question–answer pair:

* does it still *say* the answer? Greedy generation compared with the target answer by exact
  match and ROUGE-L recall with stemming (the TOFU measure, Maini et al., COLM 2024, computed
  by Google's `rouge-score` package as there), when asked the original question and when asked
  paraphrases of it;
* does it still *assign* the answer high likelihood? The mean answer-token NLL (and perplexity)
  from `steps.score`;
* does a membership attack still tell it apart from unseen pairs? Loss, zlib-normalised loss
  (Carlini et al., USENIX Security 2021) and Min-k% Prob (Shi et al., ICLR 2024) scores, every
  one oriented so that higher = more likely a training member.

Everything here is numpy, plain Python or `rouge-score` on small per-example arrays.
"""

from __future__ import annotations

import functools
import re
import string
import zlib
from typing import Sequence

import numpy as np

_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")
_SPACES = re.compile(r"\s+")


def rouge_tokens(text: str) -> list[str]:
  """ROUGE word tokens without stemming: lower case, every run outside [a-z0-9] separates words.

  The tokenisation of Google's `rouge-score` package before its stemmer (after Lin's original
  ROUGE): "It's 3.5 km!" -> ['it', 's', '3', '5', 'km']. Letters outside ASCII separate words too
  ("café" -> ['caf']), as there. `fact_words` uses these; `rouge_l` uses the package itself.
  """
  return [token for token in _NON_ALPHANUMERIC.split(text.lower()) if token]


@functools.cache
def _rouge_l_scorer():
  # Imported on first use: rouge-score pulls in nltk's Porter stemmer.
  from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top
  return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(reference: str, candidate: str) -> dict[str, float]:
  """ROUGE-L of `candidate` against `reference` (Lin, ACL Workshop 2004), as TOFU computes it.

  Google's `rouge-score` package, `RougeScorer(['rougeL'], use_stemmer=True).score(reference,
  candidate)`: lower-cased [a-z0-9] word tokens, Porter-stemmed (words longer than 3 letters), and
  the longest common subsequence of the two token lists. This is TOFU's `eval_rouge_recall`
  (Maini et al., COLM 2024; github.com/locuslab/tofu evaluate_util.py), which reports the recall.

  Args:
    reference: the target text (e.g. the target answer).
    candidate: the text to score (e.g. the model's greedy answer).

  Returns:
    {'recall': LCS/|reference|, 'precision': LCS/|candidate|, 'f': their harmonic mean}; all 0
    when either side has no tokens. The study's ROUGE-L scores and residues use the recall
    (`generation_scores`, lm/evaluate.py), as TOFU does.
  """
  score = _rouge_l_scorer().score(reference, candidate)["rougeL"]
  return {"recall": float(score.recall), "precision": float(score.precision),
          "f": float(score.fmeasure)}


def normalize_answer(text: str) -> str:
  """Lower case, whitespace runs collapsed to one space, punctuation stripped at both ends."""
  return _SPACES.sub(" ", text.lower()).strip(string.punctuation + string.whitespace)


def exact_match(reference: str, candidate: str) -> bool:
  """Whether the two texts are equal after `normalize_answer` ("Paris." matches " paris")."""
  return normalize_answer(reference) == normalize_answer(candidate)


def generation_scores(references: Sequence[str],
                      candidates: Sequence[str]) -> dict[str, np.ndarray]:
  """Per-pair exact match (0/1) and ROUGE-L recall, as float arrays of len(references).

  Raises:
    ValueError: the two sequences differ in length.
  """
  if len(references) != len(candidates):
    raise ValueError(f"generation_scores: {len(references)} references but {len(candidates)} "
                     "candidates")
  return {"exact_match": np.array([exact_match(r, c) for r, c in zip(references, candidates)],
                                  np.float64),
          "rouge_l_recall": np.array([rouge_l(r, c)["recall"]
                                      for r, c in zip(references, candidates)], np.float64)}


# Function words of English QA templates: never the fact an answer carries.
_FUNCTION_WORDS = frozenset(
    "a an the is are was were be been it its it's of in on at to for by with from and or as "
    "that this which what who whom whose when where how their there they them he she his her "
    "has have had do does did main official called known name named".split())


def fact_words(question: str, answer: str) -> list[str]:
  """The words of `answer` that carry its fact: not in `question`, not function words.

  "What is the currency of Siakroistan?" / "Its currency is the shilling." gives ['shilling'].
  Template words shared by every answer of a kind would let ROUGE-L credit a model that states a
  *different* fact in the right form; these words do not.
  """
  asked = set(rouge_tokens(question))
  return [w for w in dict.fromkeys(rouge_tokens(answer))
          if w not in asked and w not in _FUNCTION_WORDS]


def fact_recall(question: str, reference: str, candidate: str) -> float:
  """Share of the reference answer's fact words (`fact_words`) that the candidate says.

  NaN when the reference has no fact word beyond the question.
  """
  words = fact_words(question, reference)
  if not words:
    return float("nan")
  said = set(rouge_tokens(candidate))
  return float(np.mean([w in said for w in words]))


def perplexity(nll: np.ndarray) -> np.ndarray:
  """exp(mean answer-token NLL): the answer perplexity per example."""
  return np.exp(np.asarray(nll, np.float64))


# ----------------------------------------------------------------------------------------------
# Membership scores (higher = more likely a member).


def loss_score(nll: np.ndarray) -> np.ndarray:
  """The loss attack (Yeom et al., CSF 2018): -(mean answer-token NLL); members have low loss."""
  return -np.asarray(nll, np.float64)


def zlib_entropy(text: str) -> int:
  """Bytes of the zlib-compressed UTF-8 text (default level): the text's generic complexity."""
  return len(zlib.compress(text.encode("utf-8")))


def zlib_score(logprob_sum: np.ndarray, texts: Sequence[str],
               num_tokens: np.ndarray | None = None) -> np.ndarray:
  """The zlib membership score: the model's log-likelihood relative to the zlib entropy.

  Carlini, Tramèr, Wallace, Jagielski, Herbert-Voss, Lee, Roberts, Brown, Song, Erlingsson,
  Oprea & Raffel, "Extracting Training Data from Large Language Models", USENIX Security 2021:
  the ratio of the log-perplexity to the zlib entropy flags text the model finds much more
  predictable than a generic compressor does. Negated so that higher = member:

      score = log-likelihood / zlib_entropy(text)

  with the log-likelihood per token (-log-perplexity, as Carlini et al. and OpenUnlearning's
  zlib attack use it) when `num_tokens` is given, else the summed log-likelihood.

  Args:
    logprob_sum: summed answer-token log-probs per example (`steps.score`'s logprob_sum).
    texts: the scored text of each example (the answer whose tokens were scored).
    num_tokens: answer tokens per example (`steps.score`'s num_tokens), or None.

  Returns:
    float64 (N,) scores.

  Raises:
    ValueError: mismatched lengths.
  """
  logprob = np.asarray(logprob_sum, np.float64)
  if len(texts) != len(logprob):
    raise ValueError(f"zlib_score: {len(logprob)} log-likelihoods but {len(texts)} texts")
  if num_tokens is not None:
    logprob = logprob / np.maximum(np.asarray(num_tokens, np.float64), 1.0)
  entropy = np.array([zlib_entropy(text) for text in texts], np.float64)
  return logprob / entropy


def min_k_score(token_logprobs: np.ndarray, mask: np.ndarray, k: float = 0.2) -> np.ndarray:
  """Min-k% Prob: the mean of the lowest k-fraction of a sequence's token log-probs.

  Shi, Ajith, Xia, Huang, Liu, Blevins, Chen & Zettlemoyer, "Detecting Pretraining Data from
  Large Language Models", ICLR 2024: an unseen text tends to hold a few outlier tokens of very
  low probability, a member text fewer. Per row, over the positions where `mask` is 1, the
  ⌊k·n⌋ (at least 1) smallest log-probs are averaged; the authors report the negation as a
  non-membership score, this is the membership one (higher = member).

  Args:
    token_logprobs: (N, T) per-token log-probs (`steps.score`'s token_logprobs, T = L-1).
    mask: (N, T) 1 at the scored positions (loss_mask[:, 1:]); or (N, T+1), the full loss_mask,
      which is shifted here.
    k: the fraction in (0, 1].

  Returns:
    float64 (N,) scores; NaN for a row without scored positions.

  Raises:
    ValueError: k outside (0, 1] or shapes that do not match.
  """
  if not 0 < k <= 1:
    raise ValueError(f"min_k_score: k={k} must lie in (0, 1]")
  logprobs = np.asarray(token_logprobs, np.float64)
  mask = np.asarray(mask)
  if mask.shape[:1] == logprobs.shape[:1] and mask.shape[1:] == (logprobs.shape[1] + 1,):
    mask = mask[:, 1:]
  if mask.shape != logprobs.shape:
    raise ValueError(f"min_k_score: mask {mask.shape} does not match token_logprobs "
                     f"{logprobs.shape}")
  scores = np.full(len(logprobs), np.nan)
  for row, (values, keep) in enumerate(zip(logprobs, mask != 0)):
    values = np.sort(values[keep])
    if len(values):
      scores[row] = values[:max(1, int(k * len(values)))].mean()
  return scores
