"""Tokenizers for the LM track and the layout of question–answer pairs as token arrays.

Nothing is downloaded: `Tokenizer` is a sentencepiece BPE model trained in-process on the study's
own corpus at prepare time and saved as `WORKDIR/.../tokenizer.model`; `ByteTokenizer` needs no
training at all (UTF-8 bytes) and suits tiny tests. Both lay a pair out as

    [bos] question [sep] answer [eos] [pad ...]

and mark with `loss_mask` exactly the positions whose token the model must predict from the
positions before it: the answer tokens and the eos (the usual next-token convention, the logits
at position j-1 scoring the token at j). A pair too long for `max_len` loses the start of its
question, never any of its answer.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import sentencepiece as spm
from absl import logging

# With the offline corpus, 1024 pieces keep most words whole: an original question–answer pair
# is ~20-30 tokens and a paraphrased one (polite prefix and suffix) ~30-55, so max_len 64
# holds nearly all of them (see tests/test_lm_data.py and the study config).
DEFAULT_VOCAB_SIZE = 1024
MODEL_FILENAME = "tokenizer.model"
SEP_PIECE = "<sep>"
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class _PairEncoding:
  """`encode_pairs` / `encode_prompts` for any tokenizer with encode and the special ids."""

  pad_id: int
  bos_id: int
  eos_id: int
  sep_id: int

  def encode(self, text: str) -> list[int]:
    raise NotImplementedError

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """`encode` of every text."""
    return [self.encode(text) for text in texts]

  def encode_pairs(self, questions: Sequence[str], answers: Sequence[str],
                   max_len: int) -> dict[str, Any]:
    """Lays out question–answer pairs for teacher-forced training and scoring.

    Args:
      questions: N question strings.
      answers: N answer strings.
      max_len: sequence length L of the arrays.

    Returns:
      `tokens` int32 (N, L), `[bos] q [sep] a [eos]` then `pad_id`; `loss_mask` float32 (N, L),
      1 exactly at the answer tokens and the eos (the predicted positions); and `truncated`, an
      int: how many questions lost their start to fit (so the caller can warn).

    Raises:
      ValueError: different lengths, or an answer that does not fit in `max_len` even with the
        question dropped (it needs len(answer) + 3 positions).
    """
    if len(questions) != len(answers):
      raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    tokens = np.full((len(questions), max_len), self.pad_id, np.int32)
    loss_mask = np.zeros((len(questions), max_len), np.float32)
    truncated = 0
    for row, (question, answer) in enumerate(zip(self.encode_batch(questions),
                                                 self.encode_batch(answers))):
      budget = max_len - len(answer) - 3  # positions left for the question
      if budget < 0:
        raise ValueError(f"answer {row} has {len(answer)} tokens and needs {len(answer) + 3} "
                         f"positions with bos, sep and eos; max_len={max_len} is too short")
      if len(question) > budget:
        question, truncated = question[len(question) - budget:], truncated + 1
      sequence = [self.bos_id, *question, self.sep_id, *answer, self.eos_id]
      tokens[row, :len(sequence)] = sequence
      start = len(question) + 2  # first answer token
      loss_mask[row, start:len(sequence)] = 1.0
    return {"tokens": tokens, "loss_mask": loss_mask, "truncated": truncated}

  def encode_prompts(self, questions: Sequence[str], max_len: int,
                     reserve: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lays out questions as generation prompts `[bos] q [sep]`, left-aligned, then padding.

    Args:
      questions: N question strings.
      max_len: sequence length L.
      reserve: positions to keep free after every prompt for the generated answer; a longer
        question loses its start.

    Returns:
      tokens int32 (N, L) and lengths int32 (N,), the number of prompt tokens (generation writes
      its first token at position `lengths[i]`).

    Raises:
      ValueError: `max_len - reserve < 2` (no room for bos and sep).
    """
    budget = max_len - reserve - 2
    if budget < 0:
      raise ValueError(f"max_len={max_len} with reserve={reserve} leaves no room for a prompt "
                       "(bos and sep need 2 positions)")
    tokens = np.full((len(questions), max_len), self.pad_id, np.int32)
    lengths = np.zeros(len(questions), np.int32)
    for row, question in enumerate(self.encode_batch(questions)):
      question = question[max(len(question) - budget, 0):]
      sequence = [self.bos_id, *question, self.sep_id]
      tokens[row, :len(sequence)] = sequence
      lengths[row] = len(sequence)
    return tokens, lengths


class Tokenizer(_PairEncoding):
  """A sentencepiece BPE model with byte fallback, trained on the study's own corpus.

  Ids: pad 0, unk 1, bos 2, eos 3, sep 4 (the user-defined piece `<sep>`), then 256 byte pieces
  and the learnt merges. Text is not normalised (identity rule, whitespace kept), so
  `decode(encode(text)) == text` for any text without the `<sep>` string.
  """

  def __init__(self, processor: spm.SentencePieceProcessor):
    self._processor = processor
    self.pad_id, self.bos_id, self.eos_id = PAD_ID, BOS_ID, EOS_ID
    self.sep_id = processor.piece_to_id(SEP_PIECE)

  @classmethod
  def train(cls, texts: Sequence[str], directory: str,
            vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
    """Trains on `texts` and saves `directory/tokenizer.model`, or loads that file if present.

    An existing model file with the same vocabulary size is loaded as is (the corpus of a
    workdir is fixed by its config); one with another size is replaced. Training runs in this
    process on one thread (deterministic) and writes nothing but the model file.

    Raises:
      ValueError: `vocab_size` too small for the special and byte pieces, or larger than the
        corpus supports (sentencepiece's limit is quoted).
    """
    path = os.path.join(directory, MODEL_FILENAME)
    if os.path.exists(path):
      tokenizer = cls.load(path)
      if tokenizer.vocab_size == vocab_size:
        return tokenizer
      logging.warning("%s has vocab_size=%d, not %d; retraining it", path,
                      tokenizer.vocab_size, vocab_size)
    texts = [str(text) for text in texts]
    num_chars = len(set("".join(texts)))
    minimum = 5 + 256 + num_chars
    if vocab_size < minimum:
      raise ValueError(f"vocab_size={vocab_size}: must be >= {minimum} for these texts (5 special "
                       f"pieces, 256 byte pieces and one piece per distinct character: "
                       f"{num_chars})")
    model = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
          model_type="bpe", byte_fallback=True, character_coverage=1.0,
          normalization_rule_name="identity", remove_extra_whitespaces=False,
          pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
          user_defined_symbols=[SEP_PIECE], num_threads=1, minloglevel=2,
          max_sentence_length=1 << 16, input_sentence_size=0, shuffle_input_sentence=False)
    except RuntimeError as error:
      raise ValueError(f"training a tokenizer with vocab_size={vocab_size} on {len(texts)} "
                       f"texts failed: {error}") from None
    os.makedirs(directory, exist_ok=True)
    partial = path + ".partial"
    with open(partial, "wb") as file:
      file.write(model.getvalue())
    os.replace(partial, path)  # a reader never sees half a model
    return cls.load(path)

  @classmethod
  def load(cls, path: str) -> Tokenizer:
    """Loads a model file written by `train`."""
    processor = spm.SentencePieceProcessor()
    processor.load(path)
    if processor.piece_to_id(SEP_PIECE) == processor.unk_id():
      raise ValueError(f"{path} is not an unlearn_jax tokenizer: it has no {SEP_PIECE} piece")
    return cls(processor)

  @property
  def vocab_size(self) -> int:
    """Number of ids (the embedding table's size)."""
    return self._processor.get_piece_size()

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without bos or eos."""
    return self._processor.encode(text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self._processor.encode(list(texts))

  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`, up to the first eos or pad; bos is skipped, sep shows as `<sep>`."""
    return self._processor.decode(_until_end(ids, self.eos_id, self.pad_id, self.bos_id))


class ByteTokenizer(_PairEncoding):
  """UTF-8 bytes as tokens (ids 4..259) after pad 0, bos 1, eos 2 and sep 3; nothing to train."""

  vocab_size = 260
  pad_id, bos_id, eos_id, sep_id = 0, 1, 2, 3
  _OFFSET = 4

  def encode(self, text: str) -> list[int]:
    """Token ids of `text` (one per UTF-8 byte), without bos or eos."""
    return [byte + self._OFFSET for byte in text.encode("utf-8")]

  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`, up to the first eos or pad; bos and sep are skipped, bad UTF-8 replaced."""
    kept = _until_end(ids, self.eos_id, self.pad_id, self.bos_id)
    return bytes(i - self._OFFSET for i in kept if i >= self._OFFSET).decode("utf-8", "replace")


def _until_end(ids: Sequence[int], eos_id: int, pad_id: int, bos_id: int) -> list[int]:
  """`ids` as ints, cut at the first eos or pad, with bos removed."""
  kept = []
  for token in np.asarray(ids, np.int64).reshape(-1).tolist():
    if token in (eos_id, pad_id):
      break
    if token != bos_id:
      kept.append(token)
  return kept
