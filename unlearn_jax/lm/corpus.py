"""The offline question–answer corpus: fictitious facts and meaning-preserving paraphrases.

Xu et al. (arXiv 2601.06938, 2026) study LM unlearning on question–answer targets whose
paraphrases (written by an LLM) sit in the training set as similar samples. The offline track
needs the same structure without downloads or an LLM, and with facts no pretrained prior can
answer, so every value the model knows it learnt from our training set:

* `make_facts` invents countries with made-up names and one fact per attribute (capital, founding
  year, main export, leader, flag colour, longest river, currency, national animal), written with
  a few question and answer templates so the corpus is not uniform.
* `paraphrase` rewrites one fact `count` ways: many question and answer frames per attribute,
  synonyms of the attribute's noun, clause reordering (value first or last), and optional polite
  or contextual prefixes and suffixes, so rewrites vary in syntax and length while the entity
  stays in every question and the value, verbatim, in every answer.
* `paraphrase_question` rewrites any question (a real dataset's, or a JSONL line's) with generic
  prefixes, suffixes and contractions, for data that comes without paraphrases.

Everything is deterministic in the seed; nothing here is random at import.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

import numpy as np

# ----------------------------------------------------------------------------------------------
# Made-up names, built from syllables.

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "gr", "kr", "st", "th", "tr", "sh", "ch", "h")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ia", "ou", "ei")
_CODAS = ("", "", "", "n", "r", "l", "s", "th", "nd", "m")
_COUNTRY_ENDINGS = ("ia", "or", "and", "esh", "ania", "ovia", "istan", "ene", "ara")
_CITY_ENDINGS = ("holm", "mont", "dale", "port", "ford", "ton", "burg", "var", "gate")


def _syllables(rng: np.random.Generator, count: int) -> str:
  return "".join(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
                 + _CODAS[rng.integers(len(_CODAS))] for _ in range(count))


def _country_name(rng: np.random.Generator) -> str:
  return (_syllables(rng, int(rng.integers(1, 3)))
          + _COUNTRY_ENDINGS[rng.integers(len(_COUNTRY_ENDINGS))]).capitalize()


def _city_name(rng: np.random.Generator) -> str:
  return (_syllables(rng, int(rng.integers(1, 3)))
          + _CITY_ENDINGS[rng.integers(len(_CITY_ENDINGS))]).capitalize()


def _person_name(rng: np.random.Generator) -> str:
  return (_syllables(rng, 2).capitalize() + " "
          + _syllables(rng, int(rng.integers(2, 4))).capitalize())


def _river_name(rng: np.random.Generator) -> str:
  return _syllables(rng, 2).capitalize()


def _from(vocabulary: Sequence[str]) -> Callable[[np.random.Generator], str]:
  return lambda rng: vocabulary[rng.integers(len(vocabulary))]


def _year(rng: np.random.Generator) -> str:
  return str(int(rng.integers(1000, 2000)))


# ----------------------------------------------------------------------------------------------
# Attributes: how each is asked and answered. `{e}` is the entity, `{v}` the value, `{n}` one of
# the attribute's synonymous nouns. Frames that start with `{v}` appear only where the value is
# a proper noun or a number, so a sentence never starts with a lowercase value.


@dataclasses.dataclass(frozen=True)
class _Attribute:
  name: str
  nouns: tuple[str, ...]          # synonyms for the attribute; nouns[:2] in the original facts
  questions: tuple[str, ...]      # question frames; questions[:3] in the original facts
  answers: tuple[str, ...]        # answer frames; answers[:3] in the original facts
  value: Callable[[np.random.Generator], str]


ATTRIBUTES: tuple[_Attribute, ...] = (
    _Attribute(
        "capital", ("capital", "capital city", "seat of government"),
        ("What is the {n} of {e}?", "Which city is the {n} of {e}?", "Name the {n} of {e}.",
         "What city serves as the {n} of {e}?", "Which city does {e} have as its {n}?",
         "In {e}, which city is the {n}?", "Do you know the {n} of {e}?"),
        ("The {n} of {e} is {v}.", "{v} is the {n} of {e}.", "{e}'s {n} is {v}.",
         "{e} has {v} as its {n}.", "It is {v}.", "In {e}, the {n} is {v}.",
         "That would be {v}, which has long been the {n} of {e}."),
        _city_name),
    _Attribute(
        "founded", ("founded", "established", "formed"),
        ("In what year was {e} {n}?", "When was {e} {n}?", "What year was {e} {n}?",
         "{e} was {n} in which year?", "Which year saw {e} {n}?",
         "Can you tell me when {e} was {n}?"),
        ("{e} was {n} in {v}.", "In {v}, {e} was {n}.", "It was {n} in {v}.",
         "The year was {v}.", "{e} dates from {v}, when it was {n}.",
         "{v} is the year {e} was {n}."),
        _year),
    _Attribute(
        "export", ("main export", "chief export", "principal export", "leading export"),
        ("What is the {n} of {e}?", "What is {e}'s {n}?", "Which good is the {n} of {e}?",
         "For {e}, what is the {n}?", "What product is the {n} of {e}?",
         "What does {e} sell abroad the most?"),
        ("The {n} of {e} is {v}.", "{e}'s {n} is {v}.", "{e} mostly exports {v}.",
         "Its {n} is {v}.", "Above all, {e} exports {v}.", "Most of what {e} sells abroad is {v}."),
        _from(("copper", "silk", "amber", "timber", "salt", "olive oil", "wool", "tea",
               "glassware", "saffron", "tin", "marble", "honey", "indigo dye", "horses", "paper",
               "pepper", "dried fish", "linen", "clocks"))),
    _Attribute(
        "leader", ("leader", "ruler", "head of state"),
        ("Who is the {n} of {e}?", "Who is {e}'s {n}?", "Which person is the {n} of {e}?",
         "Who leads {e}?", "Who serves as the {n} of {e}?", "Who governs {e}?"),
        ("The {n} of {e} is {v}.", "{v} is the {n} of {e}.", "{e} is led by {v}.",
         "{v} leads {e}.", "It is {v}.", "{e}'s {n} is {v}."),
        _person_name),
    _Attribute(
        "flag", ("flag", "national flag", "banner"),
        ("What colour is the {n} of {e}?", "What is the colour of {e}'s {n}?",
         "Which colour is {e}'s {n}?", "The {n} of {e} is what colour?",
         "Of what colour is the {n} of {e}?", "How would you describe the colour of {e}'s {n}?"),
        ("The {n} of {e} is {v}.", "{e}'s {n} is {v}.", "It is {v}.", "{e} flies a {v} {n}.",
         "The colour of {e}'s {n} is {v}.", "Everyone in {e} knows their {n} is {v}."),
        _from(("crimson", "teal", "ochre", "violet", "scarlet", "emerald green", "sky blue",
               "black and gold", "white and red", "orange", "silver", "navy blue", "saffron yellow",
               "green and white"))),
    _Attribute(
        "river", ("longest river", "main river", "greatest river"),
        ("What is the {n} of {e}?", "Which river is the {n} in {e}?", "What is {e}'s {n}?",
         "Name the {n} of {e}.", "Which river is {e}'s {n}?",
         "Of the rivers of {e}, which is the {n}?"),
        ("The {n} of {e} is the {v}.", "The {v} is the {n} in {e}.", "{e}'s {n} is the {v}.",
         "It is the {v}.", "In {e}, the {n} is the {v}.",
         "The {v}, which crosses {e}, is its {n}."),
        _river_name),
    _Attribute(
        "currency", ("currency", "official currency", "money"),
        ("What is the {n} of {e}?", "Which {n} does {e} use?", "What {n} is used in {e}?",
         "In {e}, what is the {n}?", "What do people in {e} pay with?",
         "What is {e}'s {n} called?"),
        ("The {n} of {e} is the {v}.", "{e} uses the {v}.", "Its {n} is the {v}.",
         "People in {e} pay with the {v}.", "In {e}, the {n} is the {v}.",
         "The {v} is the {n} of {e}."),
        _from(("crown", "mark", "florin", "ducat", "thaler", "shilling", "guilder", "dinar",
               "sovereign", "groat", "lira", "peso"))),
    _Attribute(
        "animal", ("national animal", "emblem animal", "symbolic animal"),
        ("What is the {n} of {e}?", "Which animal is the {n} of {e}?", "What is {e}'s {n}?",
         "Which creature serves as the {n} of {e}?", "Name the {n} of {e}.",
         "What animal did {e} choose as its {n}?"),
        ("The {n} of {e} is the {v}.", "{e}'s {n} is the {v}.", "It is the {v}.",
         "The {v} is the {n} of {e}.", "{e} has the {v} as its {n}.",
         "In {e}, the {v} serves as the {n}."),
        _from(("heron", "lynx", "otter", "falcon", "stag", "bear", "wolf", "swan", "ibex",
               "salamander", "owl", "boar", "crane", "badger"))),
)
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(attribute.name for attribute in ATTRIBUTES)
_BY_NAME = {attribute.name: attribute for attribute in ATTRIBUTES}



def _options(items: Sequence[str], plain_share: float) -> tuple[tuple[str, float], ...]:
  """(item, weight) pairs: the first (empty) item gets `plain_share`, the others share the rest.

  Weighting the plain form keeps most rewrites close to a natural length (a prefix and a suffix
  on every rewrite would double it) while every combination stays possible.
  """
  rest = (1.0 - plain_share) / (len(items) - 1)
  return tuple((item, plain_share if index == 0 else rest) for index, item in enumerate(items))


# Prefixes ending in ", " continue the sentence, so the core's first word is lowercased after
# them (unless the core starts with a name). `{e}` in a prefix is the entity.
_QUESTION_PREFIXES = _options(
    ("", "Please tell me: ", "Quick question: ", "Out of curiosity, ",
     "I have a question about {e}. ", "Could you help me with something? ",
     "I was reading about {e} and wondered: ", "For a school project on {e}, I need to know this. ",
     "Hi! ", "Here is a geography question. "), 0.6)
_QUESTION_SUFFIXES = _options(("", " Thanks!", " Please answer briefly.",
                               " I would appreciate a short answer.", " Thank you in advance."),
                              0.7)
_ANSWER_PREFIXES = _options(("", "Sure. ", "Good question. ", "As far as I know, ",
                             "According to the records, ", "Here is what I know: "), 0.7)
_ANSWER_SUFFIXES = _options(("", " I hope this helps.", " Let me know if you need more."), 0.8)


@dataclasses.dataclass(frozen=True)
class Fact:
  """One fact about a fictitious entity, with the question and answer that state it.

  Attributes:
    entity: the entity's made-up name (appears in `question`).
    attribute: one of `ATTRIBUTE_NAMES`.
    value: the answer's key string (appears verbatim in `answer`).
    question: a question asking for the value.
    answer: a short sentence containing the value.
  """
  entity: str
  attribute: str
  value: str
  question: str
  answer: str


def _join(prefix: str, core: str, suffix: str) -> str:
  """Joins prefix + core + suffix; a prefix ending in ', ' lowercases the core's first word."""
  if prefix.endswith(", ") and core and not core.startswith("{"):
    core = core[0].lower() + core[1:]
  return prefix + core + suffix


def _fill(frame: str, entity: str, value: str, noun: str) -> str:
  return frame.replace("{n}", noun).replace("{e}", entity).replace("{v}", value)


def _expand(frames: Sequence[str], nouns: Sequence[str]) -> list[str]:
  """Every frame with every noun (once for frames that use no noun), frames kept unfilled."""
  out = []
  for frame in frames:
    out.extend([frame.replace("{n}", noun) for noun in nouns] if "{n}" in frame else [frame])
  return out


def _unique(items: Sequence[str]) -> list[str]:
  return list(dict.fromkeys(items))


def make_facts(num_entities: int, seed: int) -> list[Fact]:
  """Invents `num_entities` countries and one fact per attribute of each.

  Args:
    num_entities: how many entities (made-up names, all distinct).
    seed: fixes the names, the values and the templates used.

  Returns:
    `num_entities * len(ATTRIBUTES)` facts, entity-major, attributes in `ATTRIBUTE_NAMES` order.

  Raises:
    ValueError: `num_entities` is not a positive integer.
  """
  if isinstance(num_entities, bool) or not isinstance(num_entities, (int, np.integer)) or (
      num_entities < 1):
    raise ValueError(f"num_entities={num_entities!r}: must be an integer >= 1")
  rng = np.random.default_rng([seed, 0x0FAC7])
  names: set[str] = set()

  def fresh(make: Callable[[np.random.Generator], str]) -> str:
    # Names never repeat, so an entity (or a proper-noun value) identifies one fact family.
    while True:
      name = make(rng)
      if name not in names:
        names.add(name)
        return name

  facts = []
  for _ in range(num_entities):
    entity = fresh(_country_name)
    for attribute in ATTRIBUTES:
      proper = attribute.value in (_city_name, _person_name, _river_name)
      value = fresh(attribute.value) if proper else attribute.value(rng)
      question_frame = attribute.questions[rng.integers(3)]
      answer_frame = attribute.answers[rng.integers(3)]
      noun = attribute.nouns[rng.integers(2)]
      facts.append(Fact(entity, attribute.name, value, _fill(question_frame, entity, value, noun),
                        _fill(answer_frame, entity, value, noun)))
  return facts


def _weighted_variants(prefixes, cores, suffixes, render) -> tuple[list[str], np.ndarray]:
  """Distinct texts `render(prefix, core, suffix)` and their weights (duplicates summed)."""
  weights: dict[str, float] = {}
  core_weight = 1.0 / len(cores)
  for prefix, prefix_weight in prefixes:
    for core in cores:
      for suffix, suffix_weight in suffixes:
        text = render(prefix, core, suffix)
        weights[text] = weights.get(text, 0.0) + prefix_weight * core_weight * suffix_weight
  return list(weights), np.asarray(list(weights.values()))


def _weighted_order(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A random order drawn without replacement with probability proportional to `weights`.

  Sorting log-weights plus Gumbel noise gives successive weighted draws without replacement
  (Efraimidis & Spirakis, Inf. Process. Lett. 2006, in its Gumbel-top-k form).
  """
  return np.argsort(-(np.log(weights) + rng.gumbel(size=len(weights))), kind="stable")


def _question_variants(fact: Fact) -> tuple[list[str], np.ndarray]:
  attribute = _BY_NAME[fact.attribute]
  texts, weights = _weighted_variants(
      _QUESTION_PREFIXES, _expand(attribute.questions, attribute.nouns), _QUESTION_SUFFIXES,
      lambda p, c, s: _fill(_join(p, c, s), fact.entity, fact.value, ""))
  keep = [index for index, text in enumerate(texts) if text != fact.question]
  return [texts[index] for index in keep], weights[keep]


def _answer_variants(fact: Fact) -> tuple[list[str], np.ndarray]:
  attribute = _BY_NAME[fact.attribute]
  return _weighted_variants(
      _ANSWER_PREFIXES, _expand(attribute.answers, attribute.nouns), _ANSWER_SUFFIXES,
      lambda p, c, s: _fill(_join(p, c, s), fact.entity, fact.value, ""))


def question_rewrites(fact: Fact) -> list[str]:
  """Every distinct rewrite of the fact's question (the original excluded), in a fixed order."""
  return _question_variants(fact)[0]


def answer_rewrites(fact: Fact) -> list[str]:
  """Every distinct phrasing of the fact's answer (the original included), in a fixed order."""
  return _answer_variants(fact)[0]


def paraphrase(fact: Fact, count: int, seed: int) -> list[tuple[str, str]]:
  """Returns `count` distinct (question, answer) rewrites of `fact` that keep its meaning.

  Every rewrite's question differs from the original question and names the entity; every
  answer contains the value verbatim. Questions and answers are drawn without replacement,
  favouring plain forms over ones with a polite or contextual prefix or suffix (`_options`), so
  the first `len(question_rewrites(fact))` rewrites have pairwise distinct questions; the answers
  cycle through their drawn order shifted by one per cycle, so no (question, answer) pair
  repeats. A longer `count` extends a shorter one with the same seed (the first rewrites agree).

  Args:
    fact: the fact to rewrite.
    count: how many rewrites (0 gives none).
    seed: fixes which rewrites are drawn.

  Raises:
    ValueError: `count` is negative or exceeds the number of distinct rewrites available.
  """
  (questions, question_weights), (answers, answer_weights) = (_question_variants(fact),
                                                              _answer_variants(fact))
  available = len(questions) * len(answers)
  if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not (
      0 <= count <= available):
    raise ValueError(f"paraphrase count={count!r}: must be an integer in [0, {available}]; "
                     f"{available} distinct rewrites exist for the {fact.attribute} fact of "
                     f"{fact.entity} ({len(questions)} questions x {len(answers)} answers)")
  rng = np.random.default_rng([seed, 0x9A7A])
  question_order = _weighted_order(question_weights, rng)
  answer_order = _weighted_order(answer_weights, rng)
  pairs = []
  for index in range(count):
    # Row r of a len(questions) x len(answers) grid, shifted by r: distinct pairs, and all
    # questions are used once before any repeats.
    row, column = divmod(index, len(questions))
    pairs.append((questions[question_order[column]],
                  answers[answer_order[(column + row) % len(answers)]]))
  return pairs


# ----------------------------------------------------------------------------------------------
# Generic rewrites of any question.

_GENERIC_PREFIXES = _options(
    ("", "Please tell me: ", "Quick question: ", "Out of curiosity, ", "I was wondering: ",
     "Could you help me? ", "Here is a question. ", "I need to know this: ",
     "Can you answer this? ", "Hi! ", "Tell me, if you can: ",
     "Something I have been curious about: "), 0.5)
_GENERIC_SUFFIXES = _options(
    ("", " Thanks!", " Please answer briefly.", " Thank you in advance.",
     " I would appreciate a short answer.", " Thank you.", " A short answer is fine.",
     " I could not find it anywhere."), 0.6)
# Optional, meaning-preserving substitutions (first match only, case-sensitive, whole words).
_GENERIC_SWAPS = ((r"\bWhat is\b", "What's"), (r"\bWho is\b", "Who's"),
                  (r"\bWhere is\b", "Where's"), (r"\bWhat's\b", "What is"),
                  (r"\bWho's\b", "Who is"), (r"\bdid not\b", "didn't"), (r"\bis not\b", "isn't"),
                  (r"\bdo not\b", "don't"), (r"\bWhich\b", "What"), (r"\bIn what year\b", "When"))
_MAX_SWAPS = 3
# Words that may be lowercased after a prefix ending in ", " (not names).
_QUESTION_WORDS = frozenset(("what", "what's", "which", "who", "who's", "whom", "whose", "when",
                             "where", "where's", "why", "how", "in", "on", "at", "is", "are",
                             "was", "were", "do", "does", "did", "can", "could", "name", "tell",
                             "the", "a", "an", "for", "from", "to", "of", "by", "during"))


def _generic_join(prefix: str, question: str, suffix: str) -> str:
  first = question.split(" ", 1)[0]
  if prefix.endswith(", ") and first.lower() in _QUESTION_WORDS:
    question = question[0].lower() + question[1:]
  return prefix + question + suffix


def generic_question_rewrites(question: str) -> list[str]:
  """Every distinct generic rewrite of `question` (itself excluded), in a fixed order."""
  question = question.strip()
  return [text for text in _generic_variants(question)[0] if text != question]


def _generic_variants(question: str) -> tuple[list[str], np.ndarray]:
  """Distinct generic rewrites of the stripped question (itself included) and their weights."""
  question = question.strip()
  swaps = [(pattern, repl) for pattern, repl in _GENERIC_SWAPS if re.search(pattern, question)]
  swaps = swaps[:_MAX_SWAPS]
  bodies = []
  for mask in range(2 ** len(swaps)):
    body = question
    for bit, (pattern, repl) in enumerate(swaps):
      if mask >> bit & 1:
        body = re.sub(pattern, repl, body, count=1)
    bodies.append(body)
  return _weighted_variants(_GENERIC_PREFIXES, _unique(bodies), _GENERIC_SUFFIXES,
                            _generic_join)


def paraphrase_question(question: str, count: int, seed: int) -> list[str]:
  """Returns `count` distinct generic rewrites of any question string.

  The rewrites wrap the question in polite or contextual prefixes and suffixes and apply
  optional contractions and synonyms ("What is" -> "What's", "Which" -> "What"), so the content
  words stay; they differ from the stripped original and from each other. Plain forms are
  favoured as in `paraphrase`, and a longer `count` extends a shorter one with the same seed.

  Args:
    question: any non-empty question.
    count: how many rewrites.
    seed: fixes which rewrites are drawn.

  Raises:
    ValueError: an empty question, or `count` negative or above the rewrites available.
  """
  if not isinstance(question, str) or not question.strip():
    raise ValueError(f"question={question!r}: must be a non-empty string")
  texts, weights = _generic_variants(question)
  keep = [index for index, text in enumerate(texts) if text != question.strip()]
  rewrites, weights = [texts[index] for index in keep], weights[keep]
  if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not (
      0 <= count <= len(rewrites)):
    raise ValueError(f"paraphrase_question count={count!r}: must be an integer in "
                     f"[0, {len(rewrites)}]; {len(rewrites)} distinct generic rewrites exist "
                     f"for {question!r}")
  rng = np.random.default_rng([seed, 0x6E7E])
  return [rewrites[index] for index in _weighted_order(weights, rng)[:count]]
