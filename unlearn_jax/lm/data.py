"""Question–answer SEDs with exact provenance: offline, from a user's JSONL, or from tfds.

A `QASED` is the LM track's counterpart of `sed.SED`: the training set D of question–answer pairs
where every example carries `id`, `kind` (TARGET / SIMILAR / REST, as in `sed`) and `group` (the
id of the target it paraphrases, or -1); a held-out test split of unrelated pairs; and *probes*,
held-out rewrites of each target's question (never trained on) paired with the target's answer,
which ask the model for the target's fact in words it has not seen (Xu et al., arXiv 2601.06938,
2026, measure LM influence residue on paraphrased targets).

Three sources share one assembly (`build_from_records`):
* `build_offline`: the fictitious facts of `corpus`, with `corpus.paraphrase` rewrites as similar
  samples; target, rest and test facts come from disjoint entities, so nothing about a target's
  entity is in R and no test answer can be inferred from D.
* `load_jsonl` + `build_from_records`: a user's file, e.g. with LLM-written paraphrases as the
  paper used; every malformed line is reported as `path:line: problem`.
* `build_tfds`: a real QA dataset (e.g. `squad`) prepared in array_record format in `data_dir`,
  read through `tfds.data_source` (no TensorFlow); nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import file_adapters

from unlearn_jax.data import sources
from unlearn_jax.data.sed import KIND_NAMES, REST, SIMILAR, TARGET, ProvenanceSplits
from unlearn_jax.lm import corpus

Arrays = dict[str, np.ndarray]
FIELDS = ("id", "question", "answer", "kind", "group")
RECORD_KINDS = ("target", "similar", "rest", "test", "probe")
SPLIT_NAMES = ("train", "test", "probe")
QA_JSONL = "qa.jsonl"


class JSONLError(ValueError):
  """A malformed line of a question–answer JSONL file; the message starts with `path:line: `."""


@dataclasses.dataclass(frozen=True)
class QASED(ProvenanceSplits):
  """A question–answer SED.

  Attributes:
    train: D, shuffled: `question`, `answer` (object arrays of str), `id` int64, `kind` int8
      (TARGET, SIMILAR or REST) and `group` int64 (the target's id for targets and similar
      samples, else -1).
    test: held-out pairs (kind REST, group -1), none of them in D.
    probes: held-out rewrites of each target's question with the target's answer (kind SIMILAR,
      group = target id), none of them in D.
  """
  train: Arrays
  test: Arrays
  probes: Arrays

  @property
  def target_ids(self) -> np.ndarray:
    """Ids of T, ascending."""
    return np.sort(self.train["id"][self.train["kind"] == TARGET])


def _arrays(records: Sequence[Mapping[str, Any]], kind: int | None = None) -> Arrays:
  """Record dicts as QASED arrays; `kind` overrides the records' kind names."""
  def column(key, dtype):
    return np.asarray([record[key] for record in records], dtype).reshape(len(records))
  kinds = [KIND_NAMES.index(r["kind"]) if kind is None else kind for r in records]
  return {"question": column("question", object), "answer": column("answer", object),
          "id": column("id", np.int64), "kind": np.asarray(kinds, np.int8).reshape(len(records)),
          "group": column("group", np.int64)}


def _require_count(name: str, value: Any, low: int, high: float = math.inf) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not (
      low <= value <= high):
    raise ValueError(f"{name}={value!r}: must be an integer in [{low}, {high}]")


# ----------------------------------------------------------------------------------------------
# Records: the common form of every source.


def check_record(record: Any, where: str) -> dict[str, Any]:
  """Returns `record` as a clean dict, or raises JSONLError with `where: ` and the problem."""
  def fail(problem: str):
    raise JSONLError(f"{where}: {problem}")
  if not isinstance(record, Mapping):
    fail(f"expected a JSON object with keys {', '.join(FIELDS)}, got {type(record).__name__}")
  missing = [key for key in FIELDS if key not in record]
  if missing:
    fail(f"missing field(s) {', '.join(missing)}; every line needs {', '.join(FIELDS)}")
  unknown = sorted(set(record) - set(FIELDS))
  if unknown:
    fail(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(FIELDS)}")
  for key in ("id", "group"):
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      fail(f"field {key!r} must be an integer, got {value!r}")
  for key in ("question", "answer"):
    if not isinstance(record[key], str) or not record[key].strip():
      fail(f"field {key!r} must be a non-empty string, got {record[key]!r}")
  kind, group, example_id = record["kind"], int(record["group"]), int(record["id"])
  if kind not in RECORD_KINDS:
    fail(f"field 'kind' is {kind!r}; allowed: {', '.join(RECORD_KINDS)}")
  if kind in ("rest", "test") and group != -1:
    fail(f"a {kind!r} example has group {group}; it must be -1")
  if kind == "target" and group not in (-1, example_id):
    fail(f"a target's group must be -1 or its own id {example_id}, got {group}")
  if kind in ("similar", "probe") and group < 0:
    fail(f"a {kind!r} example needs the id of its target as group, got {group}")
  return {"id": example_id, "question": record["question"], "answer": record["answer"],
          "kind": kind, "group": group}


def _check_groups(records: Sequence[Mapping[str, Any]], wheres: Sequence[str]) -> None:
  """Every similar or probe record names a target's id as its group; probes are held out."""
  targets = {record["id"] for record in records if record["kind"] == "target"}
  train_questions = {record["question"] for record in records
                     if record["kind"] in ("target", "similar", "rest")}
  for record, where in zip(records, wheres):
    if record["kind"] in ("similar", "probe") and record["group"] not in targets:
      raise JSONLError(f"{where}: group {record['group']} of this {record['kind']!r} example "
                       "is not the id of any target")
    if record["kind"] == "probe" and record["question"] in train_questions:
      raise JSONLError(f"{where}: this probe's question is also a training question; probes "
                       "must be held out")


def load_jsonl(path: str) -> list[dict[str, Any]]:
  """Reads `{"id","question","answer","kind","group"}` lines (blank lines skipped).

  `kind` is one of target, similar, rest, test, probe (a held-out rewrite of a target's question,
  never trained on); `group` is the target's id for similar and probe lines, -1 (or, for a
  target, its own id) otherwise.

  Returns:
    One dict per non-blank line, in file order.

  Raises:
    JSONLError: the first malformed line (bad JSON, a missing, unknown or mistyped field, an
      unknown kind, a duplicate id, a similar/probe line whose group is not a target's id, or a
      probe whose question is a training question); the message starts with `f"{path}:{line_number}: "` (lines count from 1).
  """
  records, wheres, seen = [], [], {}
  with open(path, encoding="utf-8") as file:
    for number, line in enumerate(file, start=1):
      if not line.strip():
        continue
      where = f"{path}:{number}"
      try:
        parsed = json.loads(line)
      except json.JSONDecodeError as error:
        raise JSONLError(f"{where}: invalid JSON ({error.msg} at column {error.colno})") from None
      record = check_record(parsed, where)
      if record["id"] in seen:
        raise JSONLError(f"{where}: duplicate id {record['id']} (first on line "
                         f"{seen[record['id']]})")
      seen[record["id"]] = number
      records.append(record)
      wheres.append(where)
  _check_groups(records, wheres)
  return records


def build_from_records(records: Sequence[Mapping[str, Any]], *, probes_per_target: int,
                       seed: int) -> QASED:
  """Assembles a QASED from records of kinds target, similar, rest, test and probe.

  Given probe records are kept; `probes_per_target` more per target are generated with
  `corpus.paraphrase_question` from the target's question, excluding every training question.

  Raises:
    ValueError: a malformed record (JSONLError, `record i: ...`), no target or no test record,
      or too few fresh rewrites for `probes_per_target`.
  """
  _require_count("probes_per_target", probes_per_target, 0)
  _require_count("seed", seed, 0)
  wheres = [f"record {index}" for index in range(len(records))]
  records = [check_record(record, where) for record, where in zip(records, wheres)]
  ids = [record["id"] for record in records]
  if len(set(ids)) != len(ids):
    duplicate = next(i for i in ids if ids.count(i) > 1)
    raise JSONLError(f"record {ids.index(duplicate)}: duplicate id {duplicate}")
  _check_groups(records, wheres)
  by_kind = {kind: [r for r in records if r["kind"] == kind] for kind in RECORD_KINDS}
  for kind in ("target", "test"):
    if not by_kind[kind]:
      raise ValueError(f"no {kind!r} record among {len(records)}; a QA SED needs at least one")
  for record in by_kind["target"]:
    record["group"] = record["id"]
  train_records = by_kind["target"] + by_kind["similar"] + by_kind["rest"]
  train_questions = {record["question"] for record in train_records}

  probes, next_id = list(by_kind["probe"]), max(ids) + 1
  with_probes = sorted(by_kind["target"], key=lambda record: record["id"]) if (
      probes_per_target) else []
  for target in with_probes:
    question = target["question"]
    drawn = corpus.paraphrase_question(question, len(corpus.generic_question_rewrites(question)),
                                       seed=(seed * 100003 + target["id"]) % (1 << 63))
    fresh = [rewrite for rewrite in drawn if rewrite not in train_questions]
    if len(fresh) < probes_per_target:
      raise ValueError(f"probes_per_target={probes_per_target}: target {target['id']} has only "
                       f"{len(fresh)} generic rewrites that are not training questions")
    for rewrite in fresh[:probes_per_target]:
      probes.append({"id": next_id, "question": rewrite, "answer": target["answer"],
                     "kind": "probe", "group": target["id"]})
      next_id += 1
  train = _arrays(train_records)
  order = np.random.default_rng([seed, 0x9A0BE]).permutation(len(train_records))
  return QASED(train={key: value[order] for key, value in train.items()},
               test=_arrays(by_kind["test"], kind=REST), probes=_arrays(probes, kind=SIMILAR))


# ----------------------------------------------------------------------------------------------
# The offline corpus.


def build_offline(*, num_targets: int, similar_per_target: int, num_rest: int, num_test: int,
                  probes_per_target: int, seed: int) -> QASED:
  """Builds a QASED from the fictitious facts of `corpus.make_facts`.

  Each target is one fact of its own entity (attribute drawn at random); its similar samples are
  `corpus.paraphrase` rewrites; its probes are further rewrites of its question, unused in D.
  Rest and test facts come from other entities (rest and test from disjoint ones).

  Raises:
    ValueError: an argument out of range; the message names it and the allowed range.
  """
  _require_count("num_targets", num_targets, 1)
  _require_count("num_rest", num_rest, 0)
  _require_count("num_test", num_test, 1)
  _require_count("seed", seed, 0)
  num_attributes = len(corpus.ATTRIBUTES)
  rest_entities, test_entities = -(-num_rest // num_attributes), -(-num_test // num_attributes)
  num_entities = num_targets + rest_entities + test_entities
  facts = corpus.make_facts(num_entities, seed)
  by_entity = [facts[i * num_attributes:(i + 1) * num_attributes] for i in range(num_entities)]
  rng = np.random.default_rng([seed, 0x0FF1])
  order = rng.permutation(num_entities)
  targets = [by_entity[i][rng.integers(num_attributes)] for i in order[:num_targets]]
  rest_pool = [f for i in order[num_targets:num_targets + rest_entities] for f in by_entity[i]]
  test_pool = [f for i in order[num_targets + rest_entities:] for f in by_entity[i]]
  rest = [rest_pool[i] for i in np.sort(rng.choice(len(rest_pool), num_rest, replace=False))]
  test = [test_pool[i] for i in np.sort(rng.choice(len(test_pool), num_test, replace=False))]

  questions = [corpus.question_rewrites(fact) for fact in targets]
  most = min(len(q) * len(corpus.answer_rewrites(f)) for q, f in zip(questions, targets))
  _require_count("similar_per_target", similar_per_target, 0, most)
  # paraphrase() draws distinct questions first, so this many more stay unused by S(t).
  fewest_left = min(len(q) for q in questions) - similar_per_target
  _require_count("probes_per_target", probes_per_target, 0, max(fewest_left, 0))

  records: list[dict[str, Any]] = []
  def add(question, answer, kind, group):
    records.append({"id": len(records), "question": question, "answer": answer, "kind": kind,
                    "group": group})
  for index, fact in enumerate(targets):
    add(fact.question, fact.answer, "target", index)
  # One draw per target: the first rewrites are its similar samples, the questions of the next
  # ones (distinct from theirs, see corpus.paraphrase) its probes, from the same distribution.
  rewrites = [corpus.paraphrase(fact, similar_per_target + probes_per_target,
                                seed=seed * 100003 + index) for index, fact in enumerate(targets)]
  for index, pairs in enumerate(rewrites):
    for question, answer in pairs[:similar_per_target]:
      add(question, answer, "similar", index)
  for fact in rest:
    add(fact.question, fact.answer, "rest", -1)
  for fact in test:
    add(fact.question, fact.answer, "test", -1)
  for index, (fact, pairs) in enumerate(zip(targets, rewrites)):
    for question, _ in pairs[similar_per_target:]:
      add(question, fact.answer, "probe", index)
  return build_from_records(records, probes_per_target=0, seed=seed)


# ----------------------------------------------------------------------------------------------
# A real QA dataset through tfds.


def _field(example: Mapping[str, Any], key: str) -> str:
  """The string at `key` ('a/b' descends into nested features; a sequence gives its first)."""
  value: Any = example
  for part in ([key] if key in example else key.split("/")):
    value = value[part]
  if isinstance(value, (list, tuple, np.ndarray)) and not isinstance(value, (str, bytes)):
    value = value[0] if len(value) else ""
  if isinstance(value, (bytes, np.bytes_)):
    value = bytes(value).decode("utf-8")
  return str(value).strip()


def _read_pairs(source, count: int, rng: np.random.Generator, question_key: str,
                answer_key: str, exclude: set[str], where: str) -> list[tuple[str, str]]:
  """`count` random (question, answer) pairs with distinct questions not in `exclude`."""
  pairs, seen = [], set(exclude)
  order = rng.permutation(len(source))
  for start in range(0, len(order), 1024):
    indices = [int(i) for i in order[start:start + 1024]]
    for example in source.__getitems__(indices):
      try:
        question, answer = _field(example, question_key), _field(example, answer_key)
      except (KeyError, IndexError, TypeError):
        raise ValueError(f"{where}: no field {question_key!r} / {answer_key!r} in its examples "
                         f"(keys: {sorted(example)}); set question_key and answer_key") from None
      if question and answer and question not in seen:
        seen.add(question)
        pairs.append((question, answer))
        if len(pairs) == count:
          return pairs
  raise ValueError(f"{where} has {len(pairs)} usable question-answer pairs; {count} are needed")


def build_tfds(name: str, data_dir: str | None, *, num_targets: int, similar_per_target: int,
               num_rest: int, num_test: int, probes_per_target: int, seed: int,
               question_key: str = "question", answer_key: str = "answers/text") -> QASED:
  """Builds a QASED from a tfds QA dataset prepared (array_record) in `data_dir`.

  Targets and rest come from the `train` split; test from `validation` or `test` (else from
  other `train` rows). Similar samples of a target are `corpus.paraphrase_question` rewrites of
  its question with its answer (the first answer when there are several).

  Raises:
    ValueError: an argument out of range, an unknown dataset or missing fields.
    sources.DatasetNotPreparedError: `name` is not prepared in `data_dir` in array_record format.
  """
  for arg, value, low in (("num_targets", num_targets, 1), ("num_rest", num_rest, 0),
                          ("num_test", num_test, 1), ("seed", seed, 0)):
    _require_count(arg, value, low)
  data_dir = os.path.expanduser(os.fspath(data_dir)) if data_dir else sources.default_data_dir()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f"Unknown dataset={name!r}: tfds has no dataset of that name (QA datasets "
                     "such as 'squad' work; build_offline needs no dataset)") from None
  how = (f"To prepare it (once, needs network access and TensorFlow): `pip install tensorflow && "
         f"tfds build {name} --data_dir={data_dir} --file_format=array_record`. Or use the "
         f"offline corpus (unlearn_jax.lm.data.build_offline), which needs no data.")
  if not builder.is_prepared():
    raise sources.DatasetNotPreparedError(
        f"dataset={name!r} is not prepared in data_dir={data_dir!r} (no {builder.data_dir}); "
        f"unlearn_jax never downloads data itself. {how}")
  if builder.info.file_format not in file_adapters.FileFormat.with_random_access():
    raise sources.DatasetNotPreparedError(
        f"dataset={name!r} in data_dir={data_dir!r} is prepared as "
        f"{getattr(builder.info.file_format, 'value', builder.info.file_format)}, which has no "
        f"random access; unlearn_jax reads array_record. Rebuild it: {how}")
  splits = tfds.data_source(name, data_dir=data_dir, download=False)
  if "train" not in splits:
    raise ValueError(f"dataset={name!r} has splits {sorted(splits)}; a 'train' split is needed")
  held_out = next((s for s in ("validation", "test") if s in splits), "train")
  rng = np.random.default_rng([seed, 0x7FD5])
  train_pairs = _read_pairs(splits["train"], num_targets + num_rest, rng, question_key,
                            answer_key, set(), f"dataset={name!r} split 'train'")
  test_pairs = _read_pairs(splits[held_out], num_test, rng, question_key, answer_key,
                           {q for q, _ in train_pairs}, f"dataset={name!r} split {held_out!r}")
  fewest = min(len(corpus.generic_question_rewrites(q)) for q, _ in train_pairs[:num_targets])
  _require_count("similar_per_target", similar_per_target, 0, fewest)
  _require_count("probes_per_target", probes_per_target, 0, fewest - similar_per_target)

  records: list[dict[str, Any]] = []
  def add(question, answer, kind, group):
    records.append({"id": len(records), "question": question, "answer": answer, "kind": kind,
                    "group": group})
  for question, answer in train_pairs[:num_targets]:
    add(question, answer, "target", -1)
  for index, (question, answer) in enumerate(train_pairs[:num_targets]):
    for rewrite in corpus.paraphrase_question(question, similar_per_target,
                                              seed=seed * 100003 + index):
      add(rewrite, answer, "similar", index)
  for question, answer in train_pairs[num_targets:]:
    add(question, answer, "rest", -1)
  for question, answer in test_pairs:
    add(question, answer, "test", -1)
  return build_from_records(records, probes_per_target=probes_per_target, seed=seed)


# ----------------------------------------------------------------------------------------------
# Provenance on disk.


def provenance(sed: QASED) -> dict[str, np.ndarray]:
  """The provenance arrays: id, kind, group and split (0 train, 1 test, 2 probe) of every row."""
  parts = (sed.train, sed.test, sed.probes)
  return {
      "id": np.concatenate([part["id"] for part in parts]),
      "kind": np.concatenate([part["kind"] for part in parts]),
      "group": np.concatenate([part["group"] for part in parts]),
      "split": np.concatenate([np.full(len(part["id"]), split, np.int8)
                               for split, part in enumerate(parts)]),
      "kind_names": np.asarray(KIND_NAMES),
      "split_names": np.asarray(SPLIT_NAMES),
  }


def qa_records(sed: QASED) -> list[dict[str, Any]]:
  """Every example as a JSONL record (train kinds by name, then kind 'test', then 'probe')."""
  def rows(part, kind_of):
    return [{"id": int(i), "question": str(q), "answer": str(a), "kind": kind_of(int(k)),
             "group": int(g)} for i, q, a, k, g in zip(part["id"], part["question"],
                                                         part["answer"], part["kind"],
                                                         part["group"])]
  return (rows(sed.train, lambda k: KIND_NAMES[k]) + rows(sed.test, lambda k: "test")
          + rows(sed.probes, lambda k: "probe"))


def _write_atomic(path: str, write) -> None:
  partial = path + ".partial"
  write(partial)
  os.replace(partial, path)


def save_provenance(sed: QASED, path: str) -> None:
  """Writes provenance to `path` (npz) and every example to `qa.jsonl` beside it.

  Both are written atomically. An existing npz must describe the same SED (the workdir's data are
  fixed by its config).

  Raises:
    RuntimeError: `path` exists and describes a different SED.
  """
  arrays = provenance(sed)
  if os.path.exists(path):
    saved = load_provenance(path)
    if saved.keys() != arrays.keys() or any(not np.array_equal(saved[k], arrays[k])
                                            for k in arrays):
      raise RuntimeError(
          f"{path} describes a different QA SED than this config builds; use a new workdir")
  directory = os.path.dirname(path) or "."
  os.makedirs(directory, exist_ok=True)
  if not os.path.exists(path):
    def write_npz(partial):
      with open(partial, "wb") as file:
        np.savez_compressed(file, **arrays)
    _write_atomic(path, write_npz)
  qa_path = os.path.join(directory, QA_JSONL)
  if not os.path.exists(qa_path):
    def write_lines(partial):
      with open(partial, "w", encoding="utf-8") as file:
        for record in qa_records(sed):
          file.write(json.dumps(record, ensure_ascii=False) + "\n")
    _write_atomic(qa_path, write_lines)


def load_provenance(path: str) -> dict[str, np.ndarray]:
  """Reads a provenance file written by `save_provenance`."""
  with np.load(path) as data:
    return {key: data[key] for key in data.files}
