"""Tests for the LM track's data side: unlearn_jax.lm.corpus, .data and .tokenizer.

Expectations come from the definitions, not from the code under test: provenance is checked
against the facts regenerated with `make_facts` (every similar sample must name its target's
entity and state its value), the JSONL loader against files written here line by line, and token
layouts against hand-built arrays (byte tokenizer) or a layout read back from the tokens.
"""

import json
import math
import os
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

from unlearn_jax.data import sources
from unlearn_jax.data.sed import REST, SIMILAR, TARGET
from unlearn_jax.lm import corpus
from unlearn_jax.lm import data as qa_data
from unlearn_jax.lm import tokenizer as tokenizer_lib

NUM_ATTRIBUTES = len(corpus.ATTRIBUTES)


def _words(text: str) -> int:
  return len(text.split())


# ----------------------------------------------------------------------------------------------
# corpus.make_facts


def test_facts_deterministic_per_seed_and_different_across_seeds():
  first, again, other = (corpus.make_facts(12, 0), corpus.make_facts(12, 0),
                         corpus.make_facts(12, 1))
  assert first == again
  assert len(first) == 12 * NUM_ATTRIBUTES
  assert {f.entity for f in first}.isdisjoint({f.entity for f in other})
  assert [f.value for f in first] != [f.value for f in other]
  # Fewer entities give a prefix of the same facts (tests below regenerate facts this way).
  assert corpus.make_facts(5, 0) == first[:5 * NUM_ATTRIBUTES]


def test_facts_are_well_formed_and_not_uniform():
  facts = corpus.make_facts(40, 3)
  entities = [f.entity for f in facts[::NUM_ATTRIBUTES]]
  assert len(set(entities)) == 40
  for index, fact in enumerate(facts):
    assert fact.entity == entities[index // NUM_ATTRIBUTES]
    assert fact.attribute == corpus.ATTRIBUTE_NAMES[index % NUM_ATTRIBUTES]
    assert fact.entity in fact.question and fact.question.endswith(("?", "."))
    assert fact.value in fact.answer and fact.answer.endswith(".")
    assert fact.value and fact.answer[0].isupper()
  for attribute in corpus.ATTRIBUTE_NAMES:
    chosen = [f for f in facts if f.attribute == attribute]
    question_shapes = {f.question.replace(f.entity, "E") for f in chosen}
    answer_shapes = {f.answer.replace(f.entity, "E").replace(f.value, "V") for f in chosen}
    assert len(question_shapes) >= 3 and len(answer_shapes) >= 2, attribute
  # Made-up proper-noun values never repeat across entities.
  for attribute in ("capital", "leader", "river"):
    values = [f.value for f in facts if f.attribute == attribute]
    assert len(set(values)) == len(values)
  years = [int(f.value) for f in facts if f.attribute == "founded"]
  assert all(1000 <= y < 2000 for y in years)


def test_make_facts_rejects_bad_counts():
  for bad in (0, -1, 2.5, True):
    with pytest.raises(ValueError, match="num_entities"):
      corpus.make_facts(bad, 0)


# ----------------------------------------------------------------------------------------------
# corpus.paraphrase


@pytest.mark.parametrize("index", range(NUM_ATTRIBUTES))
def test_paraphrases_distinct_keep_meaning_and_vary(index):
  fact = corpus.make_facts(2, 7)[NUM_ATTRIBUTES + index]
  pairs = corpus.paraphrase(fact, 40, seed=5)
  assert len(pairs) == 40 and len(set(pairs)) == 40
  questions = [q for q, _ in pairs]
  assert len(set(questions)) == 40  # distinct questions while they last
  assert fact.question not in questions
  for question, answer in pairs:
    assert fact.entity in question
    assert fact.value in answer
  assert len({a for _, a in pairs}) >= 10
  lengths = [_words(q) + _words(a) for q, a in pairs]
  assert max(lengths) - min(lengths) >= 6
  assert len(set(lengths)) >= 5
  assert corpus.paraphrase(fact, 40, seed=5) == pairs
  assert corpus.paraphrase(fact, 40, seed=6) != pairs
  assert corpus.paraphrase(fact, 15, seed=5) == pairs[:15]


def test_paraphrase_uses_synonyms_and_reordering():
  fact = next(f for f in corpus.make_facts(3, 0) if f.attribute == "capital")
  pairs = corpus.paraphrase(fact, 200, seed=0)
  answers = [a for _, a in pairs]
  assert any(a.find(fact.value) < a.find(fact.entity) for a in answers)  # value first
  assert any(a.find(fact.value) > a.find(fact.entity) >= 0 for a in answers)  # value last
  assert any("seat of government" in q for q, _ in pairs)
  assert any("capital city" in q for q, _ in pairs)
  plain = [q for q, _ in pairs if q.startswith(("What", "Which", "Name", "In ", "Do "))]
  decorated = [q for q, _ in pairs if q not in plain]
  assert plain and decorated  # plain forms and ones with a polite or contextual prefix


def test_paraphrase_count_limit():
  fact = corpus.make_facts(1, 2)[4]
  available = len(corpus.question_rewrites(fact)) * len(corpus.answer_rewrites(fact))
  everything = corpus.paraphrase(fact, available, seed=0)
  assert len(set(everything)) == available
  assert all(q != fact.question for q, _ in everything)
  with pytest.raises(ValueError, match=rf"\b{available}\b.*distinct rewrites"):
    corpus.paraphrase(fact, available + 1, seed=0)
  assert corpus.paraphrase(fact, 0, seed=0) == []


def test_paraphrase_question_generic():
  question = "Which NFL team represented the AFC at Super Bowl 50?"
  rewrites = corpus.paraphrase_question(question, 30, seed=1)
  assert len(set(rewrites)) == 30 and question not in rewrites
  content = [w for w in re.findall(r"\w+", question) if w not in ("Which",)]
  for rewrite in rewrites:
    for word in content:
      assert re.search(rf"\b{word}\b", rewrite), (word, rewrite)
  assert len({_words(r) for r in rewrites}) >= 4
  assert corpus.paraphrase_question(question, 10, seed=1) == rewrites[:10]
  available = len(corpus.generic_question_rewrites(question))
  assert available >= 90
  with pytest.raises(ValueError, match=rf"\b{available}\b"):
    corpus.paraphrase_question(question, available + 1, seed=1)
  with pytest.raises(ValueError, match="non-empty"):
    corpus.paraphrase_question("  ", 1, seed=1)
  # After "Out of curiosity, " a question word is lowercased, a name is not.
  lowered = corpus.generic_question_rewrites("What is X?")
  assert "Out of curiosity, what is X?" in lowered
  assert "Out of curiosity, Paris is where?" in corpus.generic_question_rewrites(
      "Paris is where?")


# ----------------------------------------------------------------------------------------------
# data.build_offline: provenance.

OFFLINE = dict(num_targets=6, similar_per_target=5, num_rest=30, num_test=12,
               probes_per_target=3, seed=4)


@pytest.fixture(scope="module")
def offline_sed():
  return qa_data.build_offline(**OFFLINE)


def _fact_of_answer(seed):
  facts = corpus.make_facts(60, seed)  # a superset of the entities a small SED uses
  return {(f.question, f.answer): f for f in facts}


def test_offline_counts_dtypes_and_unique_ids(offline_sed):
  t, s, p = OFFLINE["num_targets"], OFFLINE["similar_per_target"], OFFLINE["probes_per_target"]
  train, test, probes = offline_sed.train, offline_sed.test, offline_sed.probes
  assert np.bincount(train["kind"], minlength=3).tolist() == [t, t * s, OFFLINE["num_rest"]]
  assert len(test["id"]) == OFFLINE["num_test"] and len(probes["id"]) == t * p
  for part in (train, test, probes):
    assert part["question"].dtype == object and part["answer"].dtype == object
    assert part["id"].dtype == np.int64 and part["kind"].dtype == np.int8
    assert part["group"].dtype == np.int64
    assert all(isinstance(x, str) for x in part["question"])
  all_ids = np.concatenate([train["id"], test["id"], probes["id"]])
  assert len(np.unique(all_ids)) == len(all_ids)
  assert (test["kind"] == REST).all() and (test["group"] == -1).all()
  assert (probes["kind"] == SIMILAR).all()
  # Shuffled: the kinds are not in blocks.
  assert np.any(np.diff(train["kind"].astype(int)) < 0)
  assert len(offline_sed.forget["id"]) == t
  assert len(offline_sed.retain["id"]) == t * s + OFFLINE["num_rest"]
  assert (offline_sed.rest["kind"] == REST).all()


def test_offline_provenance_exact(offline_sed):
  facts = _fact_of_answer(OFFLINE["seed"])
  train, probes = offline_sed.train, offline_sed.probes
  is_target = train["kind"] == TARGET
  np.testing.assert_array_equal(train["group"][is_target], train["id"][is_target])
  assert (train["group"][train["kind"] == REST] == -1).all()
  target_fact = {}
  for row in np.flatnonzero(is_target):
    target_fact[int(train["id"][row])] = facts[(train["question"][row], train["answer"][row])]
  assert len({f.entity for f in target_fact.values()}) == len(target_fact)  # one per entity
  for part, kind in ((train, SIMILAR), (probes, SIMILAR)):
    for row in np.flatnonzero(part["kind"] == kind):
      fact = target_fact[int(part["group"][row])]  # KeyError if the group is not a target
      assert fact.entity in part["question"][row]
      assert fact.value in part["answer"][row]
  for group, fact in target_fact.items():
    similar = train["question"][(train["kind"] == SIMILAR) & (train["group"] == group)]
    assert len(similar) == OFFLINE["similar_per_target"] and fact.question not in similar
    probe_rows = probes["group"] == group
    assert probe_rows.sum() == OFFLINE["probes_per_target"]
    assert set(probes["answer"][probe_rows]) == {fact.answer}
  # Rest and test are original facts of entities no target uses; test entities appear
  # nowhere in D, and no probe question is a training question.
  target_entities = {f.entity for f in target_fact.values()}
  rest_entities = {facts[(q, a)].entity for q, a, k in zip(train["question"], train["answer"],
                                                           train["kind"]) if k == REST}
  test_entities = {facts[(q, a)].entity for q, a in zip(offline_sed.test["question"],
                                                        offline_sed.test["answer"])}
  assert not (rest_entities & target_entities) and not (test_entities & target_entities)
  assert not test_entities & rest_entities
  train_text = " ".join(train["question"]) + " " + " ".join(train["answer"])
  assert not any(entity in train_text for entity in test_entities)
  assert not set(probes["question"]) & set(train["question"])
  assert len(set(probes["question"])) == len(probes["question"])


def test_offline_deterministic_and_seeded(offline_sed):
  again = qa_data.build_offline(**OFFLINE)
  for name in ("train", "test", "probes"):
    for key, value in getattr(offline_sed, name).items():
      np.testing.assert_array_equal(value, getattr(again, name)[key])
  other = qa_data.build_offline(**{**OFFLINE, "seed": 5})
  assert set(other.train["question"]) != set(offline_sed.train["question"])


@pytest.mark.parametrize("argument, value, allowed", [
    ("num_targets", 0, r"\[1, inf\]"), ("num_rest", -1, r"\[0, inf\]"),
    ("num_test", 0, r"\[1, inf\]"), ("seed", -2, r"\[0, inf\]"),
    ("similar_per_target", 10**9, r"\[0, \d+\]"), ("probes_per_target", 10**6, r"\[0, \d+\]"),
    ("num_targets", 1.5, r"\[1, inf\]")])
def test_offline_argument_errors_name_the_argument(argument, value, allowed):
  with pytest.raises(ValueError, match=rf"^{argument}={re.escape(repr(value))}: .*{allowed}"):
    qa_data.build_offline(**{**OFFLINE, argument: value})


# ----------------------------------------------------------------------------------------------
# Provenance files and the JSONL loader.


def _rows(sed):
  """(id, question, answer, kind name, group) of every example, read from the arrays."""
  names = {TARGET: "target", SIMILAR: "similar", REST: "rest"}
  out = set()
  for split, part in (("train", sed.train), ("test", sed.test), ("probe", sed.probes)):
    for i, q, a, k, g in zip(part["id"], part["question"], part["answer"], part["kind"],
                             part["group"]):
      kind = names[int(k)] if split == "train" else split
      out.add((int(i), str(q), str(a), kind, int(g)))
  return out


def test_provenance_files_round_trip(offline_sed, tmp_path):
  path = str(tmp_path / "data" / "provenance.npz")
  qa_data.save_provenance(offline_sed, path)
  qa_data.save_provenance(offline_sed, path)  # same SED again: accepted
  saved = qa_data.load_provenance(path)
  num_train, num_test = len(offline_sed.train["id"]), len(offline_sed.test["id"])
  np.testing.assert_array_equal(saved["split"], [0] * num_train + [1] * num_test
                                + [2] * len(offline_sed.probes["id"]))
  np.testing.assert_array_equal(saved["id"][:num_train], offline_sed.train["id"])
  np.testing.assert_array_equal(saved["kind"][:num_train], offline_sed.train["kind"])
  np.testing.assert_array_equal(saved["group"][num_train + num_test:],
                                offline_sed.probes["group"])
  assert list(saved["split_names"]) == ["train", "test", "probe"]
  # qa.jsonl beside it holds every example; loading it loses none.
  qa_path = tmp_path / "data" / "qa.jsonl"
  lines = qa_path.read_text(encoding="utf-8").splitlines()
  assert len(lines) == len(saved["id"])
  records = qa_data.load_jsonl(str(qa_path))
  assert {(r["id"], r["question"], r["answer"], r["kind"], r["group"]) for r in records} == (
      _rows(offline_sed))
  rebuilt = qa_data.build_from_records(records, probes_per_target=0, seed=0)
  assert _rows(rebuilt) == _rows(offline_sed)
  other = qa_data.build_offline(**{**OFFLINE, "seed": 9})
  with pytest.raises(RuntimeError, match="different QA SED"):
    qa_data.save_provenance(other, path)


VALID_LINES = [
    {"id": 10, "question": "Who wrote Q?", "answer": "A wrote it.", "kind": "similar",
     "group": 1},  # its target comes later in the file
    {"id": 1, "question": "Who wrote P?", "answer": "A wrote it.", "kind": "target",
     "group": -1},
    {"id": 2, "question": "What is 2+2?", "answer": "It is 4.", "kind": "rest", "group": -1},
    {"id": 3, "question": "Where is Z?", "answer": "Z is here.", "kind": "test", "group": -1},
    {"id": 4, "question": "Who penned P?", "answer": "A wrote it.", "kind": "probe", "group": 1},
    {"id": 5, "question": "Ünïcode ✓?", "answer": "Yes — it is.", "kind": "rest", "group": -1},
]

MALFORMED = {
    "bad json": '{"id": 20, "question": "x?", ',
    "not an object": '[20, "x?", "y", "rest", -1]',
    "missing field": '{"id": 20, "question": "x?", "answer": "y", "kind": "rest"}',
    "extra field": '{"id": 20, "question": "x?", "answer": "y", "kind": "rest", "group": -1, '
                   '"source": "gpt"}',
    "string id": '{"id": "20", "question": "x?", "answer": "y", "kind": "rest", "group": -1}',
    "float id": '{"id": 20.5, "question": "x?", "answer": "y", "kind": "rest", "group": -1}',
    "bool group": '{"id": 20, "question": "x?", "answer": "y", "kind": "rest", "group": true}',
    "empty question": '{"id": 20, "question": " ", "answer": "y", "kind": "rest", "group": -1}',
    "answer not a string": '{"id": 20, "question": "x?", "answer": 4, "kind": "rest", '
                           '"group": -1}',
    "unknown kind": '{"id": 20, "question": "x?", "answer": "y", "kind": "forget", "group": -1}',
    "duplicate id": '{"id": 2, "question": "x?", "answer": "y", "kind": "rest", "group": -1}',
    "similar of a rest id": '{"id": 20, "question": "x?", "answer": "y", "kind": "similar", '
                            '"group": 2}',
    "similar of no id": '{"id": 20, "question": "x?", "answer": "y", "kind": "similar", '
                        '"group": 99}',
    "similar without group": '{"id": 20, "question": "x?", "answer": "y", "kind": "similar", '
                             '"group": -1}',
    "rest with group": '{"id": 20, "question": "x?", "answer": "y", "kind": "rest", "group": 1}',
    "probe that is trained on": '{"id": 20, "question": "What is 2+2?", "answer": "y", '
                                '"kind": "probe", "group": 1}',
    "target with other group": '{"id": 20, "question": "x?", "answer": "y", "kind": "target", '
                               '"group": 1}',
}


def _write_lines(path, lines):
  path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
  return str(path)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_jsonl_malformed_line_reported_with_its_number(case, tmp_path):
  valid = [json.dumps(record, ensure_ascii=False) for record in VALID_LINES]
  # Lines: 1-3 valid, 4 blank, 5 whitespace only, 6 malformed, 7-9 valid.
  lines = valid[:3] + ["", "   \t"] + [MALFORMED[case]] + valid[3:]
  path = _write_lines(tmp_path / "qa.jsonl", lines)
  with pytest.raises(qa_data.JSONLError) as raised:
    qa_data.load_jsonl(path)
  assert str(raised.value).startswith(f"{path}:6: "), str(raised.value)
  assert isinstance(raised.value, ValueError)


def test_jsonl_valid_file_loses_no_line(tmp_path):
  lines = [json.dumps(record, ensure_ascii=False) for record in VALID_LINES]
  path = _write_lines(tmp_path / "qa.jsonl", lines[:2] + [""] + lines[2:])
  records = qa_data.load_jsonl(path)
  assert records == VALID_LINES
  sed = qa_data.build_from_records(records, probes_per_target=4, seed=0)
  assert sorted(sed.train["id"]) == [1, 2, 5, 10] and list(sed.test["id"]) == [3]
  assert sed.train["group"][list(sed.train["id"]).index(1)] == 1  # a target's own id
  probes = sed.probes
  assert len(probes["id"]) == 5 and (probes["group"] == 1).all()
  assert 4 in probes["id"] and len(set(probes["id"]) & {1, 2, 3, 5, 10}) == 0
  assert set(probes["answer"]) == {"A wrote it."}
  assert not set(probes["question"]) & set(sed.train["question"])
  generated = [q for i, q in zip(probes["id"], probes["question"]) if i != 4]
  assert all("Who wrote P" in q for q in generated)


def test_build_from_records_errors():
  records = [dict(r) for r in VALID_LINES]
  with pytest.raises(ValueError, match="no 'test' record"):
    qa_data.build_from_records([r for r in records if r["kind"] != "test"],
                               probes_per_target=0, seed=0)
  with pytest.raises(qa_data.JSONLError, match=r"^record 2: .*kind"):
    qa_data.build_from_records(records[:2] + [{**records[2], "kind": "x"}],
                               probes_per_target=0, seed=0)
  with pytest.raises(qa_data.JSONLError, match="held out"):
    qa_data.build_from_records(records + [{**records[4], "id": 50, "question": "Who wrote P?"}],
                               probes_per_target=0, seed=0)
  with pytest.raises(ValueError, match="probes_per_target=1000"):
    qa_data.build_from_records(records, probes_per_target=1000, seed=0)


# ----------------------------------------------------------------------------------------------
# data.build_tfds: a real tfds dataset prepared offline in array_record format.


class LmDataToyQa(tfds.core.GeneratorBasedBuilder):
  """A SQuAD-shaped QA dataset: `question` and a sequence of `answers/text`."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "question": tfds.features.Text(),
        "answers": tfds.features.Sequence({"text": tfds.features.Text()})}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(0, 40),
            "validation": self._generate_examples(1000, 15)}

  def _generate_examples(self, start, count):  # pylint: disable=arguments-differ
    for index in range(start, start + count):
      yield index, {"question": f"What is the code of item {index}?",
                    "answers": {"text": [f"Item {index} has code {index * 7}.", "other"]}}


@pytest.fixture(scope="module")
def toy_qa_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds_qa"))
  LmDataToyQa(data_dir=data_dir, file_format="array_record").download_and_prepare(
      file_format="array_record")
  return data_dir


def test_build_tfds_reads_prepared_dataset(toy_qa_dir):
  sed = qa_data.build_tfds("lm_data_toy_qa", toy_qa_dir, num_targets=3, similar_per_target=4,
                           num_rest=10, num_test=5, probes_per_target=2, seed=0)
  train = sed.train
  assert np.bincount(train["kind"], minlength=3).tolist() == [3, 12, 10]
  number = lambda text: int(re.search(r"item (\d+)", text).group(1))
  for question, answer in zip(train["question"], train["answer"]):
    assert number(question) < 40 and answer == f"Item {number(question)} has code " \
        f"{number(question) * 7}."  # first answer, paired with its own question
  assert all(number(q) >= 1000 for q in sed.test["question"])
  targets = {int(i): (q, a) for i, q, a, k in zip(train["id"], train["question"],
                                                  train["answer"], train["kind"]) if k == TARGET}
  for part in (train, sed.probes):
    for question, answer, group, kind in zip(part["question"], part["answer"], part["group"],
                                             part["kind"]):
      if kind == SIMILAR:
        target_question, target_answer = targets[int(group)]
        body = question.lower().replace("what's", "what is")
        assert target_question.lower().rstrip("?") in body and answer == target_answer
  assert len(sed.probes["id"]) == 6
  assert not set(sed.probes["question"]) & set(train["question"])
  again = qa_data.build_tfds("lm_data_toy_qa", toy_qa_dir, num_targets=3, similar_per_target=4,
                             num_rest=10, num_test=5, probes_per_target=2, seed=0)
  np.testing.assert_array_equal(again.train["question"], train["question"])
  with pytest.raises(ValueError, match="no field 'query'"):
    qa_data.build_tfds("lm_data_toy_qa", toy_qa_dir, num_targets=1, similar_per_target=0,
                       num_rest=0, num_test=1, probes_per_target=0, seed=0, question_key="query")


def test_build_tfds_unprepared_and_unknown(tmp_path):
  with pytest.raises(sources.DatasetNotPreparedError,
                     match=r"dataset='squad' is not prepared in data_dir=.*tfds build squad"):
    qa_data.build_tfds("squad", str(tmp_path), num_targets=2, similar_per_target=2, num_rest=2,
                       num_test=2, probes_per_target=1, seed=0)
  with pytest.raises(ValueError, match="Unknown dataset='no_such_qa_set'"):
    qa_data.build_tfds("no_such_qa_set", str(tmp_path), num_targets=2, similar_per_target=2,
                       num_rest=2, num_test=2, probes_per_target=1, seed=0)


# ----------------------------------------------------------------------------------------------
# Tokenizers.


@pytest.fixture(scope="module")
def corpus_texts():
  facts = corpus.make_facts(30, 11)
  texts = [t for f in facts for t in (f.question, f.answer)]
  for fact in facts[:20]:
    texts += [t for pair in corpus.paraphrase(fact, 8, seed=0) for t in pair]
  return texts


@pytest.fixture(scope="module")
def trained(corpus_texts, tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tok"))
  return tokenizer_lib.Tokenizer.train(corpus_texts, directory, 400), directory


def test_tokenizer_ids_roundtrip_and_determinism(trained, corpus_texts, tmp_path):
  tokenizer, directory = trained
  assert tokenizer.vocab_size == 400
  assert tokenizer.pad_id == 0
  assert len({tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.sep_id}) == 4
  extra = ["Ünïcödé ✓ 漢字 — new symbols", "  two  spaces ", "tab\there"]
  for text in corpus_texts + extra:
    ids = tokenizer.encode(text)
    assert tokenizer.sep_id not in ids and tokenizer.eos_id not in ids
    assert tokenizer.decode(ids) == text
  ids = tokenizer.encode("Hello there")
  assert tokenizer.decode([tokenizer.bos_id, *ids, tokenizer.eos_id, *ids, 0]) == "Hello there"
  assert tokenizer.decode(np.asarray([tokenizer.bos_id, *ids, 0, 0], np.int32)) == "Hello there"
  # Same texts, another directory: identical model bytes (training is deterministic).
  other = tmp_path / "again"
  tokenizer_lib.Tokenizer.train(corpus_texts, str(other), 400)
  model_path = os.path.join(directory, tokenizer_lib.MODEL_FILENAME)
  with open(model_path, "rb") as a, open(other / tokenizer_lib.MODEL_FILENAME, "rb") as b:
    assert a.read() == b.read()
  assert sorted(os.listdir(other)) == [tokenizer_lib.MODEL_FILENAME]
  # An existing model of the same size is loaded, not retrained (even for other texts).
  before = os.stat(model_path).st_mtime_ns
  loaded = tokenizer_lib.Tokenizer.train(["something else"], directory, 400)
  assert os.stat(model_path).st_mtime_ns == before
  assert loaded.encode(corpus_texts[0]) == tokenizer.encode(corpus_texts[0])


def test_tokenizer_vocab_size_errors(corpus_texts, tmp_path):
  num_chars = len(set("".join(corpus_texts)))
  with pytest.raises(ValueError, match=rf"vocab_size=300: must be >= {261 + num_chars} .*"
                                       rf"distinct character: {num_chars}\)"):
    tokenizer_lib.Tokenizer.train(corpus_texts, str(tmp_path), 300)
  tokenizer_lib.Tokenizer.train(corpus_texts, str(tmp_path / "least"), 261 + num_chars)
  with pytest.raises(ValueError, match="vocab_size=50000"):
    tokenizer_lib.Tokenizer.train(corpus_texts, str(tmp_path), 50000)


def test_byte_pairs_hand_built():
  tok = tokenizer_lib.ByteTokenizer()
  b = lambda text: [c + 4 for c in text.encode()]
  result = tok.encode_pairs(["ab", "q"], ["c", "xyz"], 9)
  np.testing.assert_array_equal(result["tokens"], [
      [1, *b("ab"), 3, *b("c"), 2, 0, 0, 0],
      [1, *b("q"), 3, *b("xyz"), 2, 0, 0]])
  np.testing.assert_array_equal(result["loss_mask"], [[0, 0, 0, 0, 1, 1, 0, 0, 0],
                                                      [0, 0, 0, 1, 1, 1, 1, 0, 0]])
  assert result["tokens"].dtype == np.int32 and result["loss_mask"].dtype == np.float32
  assert result["truncated"] == 0


def test_byte_truncation_keeps_answer():
  tok = tokenizer_lib.ByteTokenizer()
  b = lambda text: [c + 4 for c in text.encode()]
  result = tok.encode_pairs(["abcdef", "ab"], ["xy", "xy"], 8)
  np.testing.assert_array_equal(result["tokens"], [[1, *b("def"), 3, *b("xy"), 2],
                                                   [1, *b("ab"), 3, *b("xy"), 2, 0]])
  np.testing.assert_array_equal(result["loss_mask"][0], [0, 0, 0, 0, 0, 1, 1, 1])
  assert result["truncated"] == 1
  only_answer = tok.encode_pairs(["abcdef"], ["xy"], 5)  # the whole question goes
  np.testing.assert_array_equal(only_answer["tokens"], [[1, 3, *b("xy"), 2]])
  with pytest.raises(ValueError, match="answer 0 has 2 tokens and needs 5"):
    tok.encode_pairs(["abcdef"], ["xy"], 4)
  with pytest.raises(ValueError, match="2 questions but 1 answers"):
    tok.encode_pairs(["a", "b"], ["c"], 8)


def test_byte_prompts():
  tok = tokenizer_lib.ByteTokenizer()
  b = lambda text: [c + 4 for c in text.encode()]
  tokens, lengths = tok.encode_prompts(["ab", "wxyz"], 6)
  np.testing.assert_array_equal(tokens, [[1, *b("ab"), 3, 0, 0], [1, *b("wxyz"), 3]])
  np.testing.assert_array_equal(lengths, [4, 6])
  assert tokens.dtype == np.int32 and lengths.dtype == np.int32
  tokens, lengths = tok.encode_prompts(["wxyz"], 6, reserve=3)
  np.testing.assert_array_equal(tokens, [[1, *b("z"), 3, 0, 0, 0]])
  np.testing.assert_array_equal(lengths, [3])
  with pytest.raises(ValueError, match="no room"):
    tok.encode_prompts(["a"], 4, reserve=3)
  assert tok.decode([1, *b("héllo"), 3, 2, *b("junk")]) == "héllo"


def test_sentencepiece_loss_mask_marks_exactly_the_answer(trained, corpus_texts):
  tokenizer, _ = trained
  questions, answers = corpus_texts[0:40:2], corpus_texts[1:40:2]
  max_len = 64
  result = tokenizer.encode_pairs(questions, answers, max_len)
  tokens, mask = result["tokens"], result["loss_mask"]
  assert tokens.shape == mask.shape == (20, max_len)
  for row, (question, answer) in enumerate(zip(questions, answers)):
    # Read the layout back from the tokens: the answer span runs from after the one sep token
    # to the eos, inclusive; nothing else is predicted.
    (sep,) = np.flatnonzero(tokens[row] == tokenizer.sep_id)
    (eos,) = np.flatnonzero(tokens[row] == tokenizer.eos_id)
    expected = np.zeros(max_len, np.float32)
    expected[sep + 1:eos + 1] = 1
    np.testing.assert_array_equal(mask[row], expected)
    assert tokens[row, 0] == tokenizer.bos_id and (tokens[row, eos + 1:] == 0).all()
    assert tokenizer.decode(tokens[row, sep + 1:]) == answer
    assert tokenizer.decode(tokens[row, 1:sep]) == question
    assert mask[row].sum() == len(tokenizer.encode(answer)) + 1
  assert result["truncated"] == 0
  # Truncation: a 12-token limit cuts questions from the left and keeps every answer whole.
  short = tokenizer.encode_pairs(questions, answers, 12 + max(
      len(tokenizer.encode(a)) for a in answers))
  assert short["truncated"] == sum(
      len(tokenizer.encode(q)) + len(tokenizer.encode(a)) + 3 > short["tokens"].shape[1]
      for q, a in zip(questions, answers))
  for row, answer in enumerate(answers):
    (sep,) = np.flatnonzero(short["tokens"][row] == tokenizer.sep_id)
    assert tokenizer.decode(short["tokens"][row, sep + 1:]) == answer
    kept = short["tokens"][row, 1:sep].tolist()
    full = tokenizer.encode(questions[row])
    assert kept == full[len(full) - len(kept):]


def test_sentencepiece_prompts(trained, corpus_texts):
  tokenizer, _ = trained
  questions = corpus_texts[0:20:2]
  tokens, lengths = tokenizer.encode_prompts(questions, 48)
  for row, question in enumerate(questions):
    ids = tokenizer.encode(question)
    assert lengths[row] == len(ids) + 2
    assert tokens[row, :lengths[row]].tolist() == [tokenizer.bos_id, *ids, tokenizer.sep_id]
    assert (tokens[row, lengths[row]:] == tokenizer.pad_id).all()


def test_default_vocab_fits_offline_pairs_in_48_tokens(tmp_path):
  # The study's default sizes: a typical pair, paraphrases included, fits in 48 tokens.
  sed = qa_data.build_offline(num_targets=10, similar_per_target=10, num_rest=600, num_test=150,
                              probes_per_target=4, seed=0)
  texts = [str(t) for part in (sed.train, sed.test, sed.probes)
           for key in ("question", "answer") for t in part[key]]
  tokenizer = tokenizer_lib.Tokenizer.train(texts, str(tmp_path),
                                            tokenizer_lib.DEFAULT_VOCAB_SIZE)
  result = tokenizer.encode_pairs(list(sed.train["question"]), list(sed.train["answer"]), 128)
  lengths = (result["tokens"] != tokenizer.pad_id).sum(axis=1)
  assert np.percentile(lengths, 95) <= 48
  similar = lengths[sed.train["kind"] == SIMILAR]
  assert np.median(similar) <= 40 and np.mean(similar > 48) < 0.1
  assert math.isclose(result["loss_mask"].sum(),
                      sum(len(tokenizer.encode(a)) + 1 for a in sed.train["answer"]))
