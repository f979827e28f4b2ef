"""Tuning the language-model track (tune.py through tasks/lm.py): on other targets than the
evaluated ones, with LM residues under a utility budget, and refused early on bad input."""

import csv
import json
import os

import numpy as np
import pytest

from unlearn_jax import api
from unlearn_jax import config as config_lib
from unlearn_jax import defaults as image_defaults
from unlearn_jax import methods, study
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.lm import data as qa_data
from unlearn_jax.lm import defaults as lm_defaults
from unlearn_jax.lm import select_lr
from unlearn_jax.tasks import lm as lm_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHOD = "grad_ascent"


def tuned_config():
  """The test's small LM study (tests/tiny_qa.py) with one method, tuned as
  `configs/sed_qa.py:runlocal,tune=1` tunes (3 trials)."""
  import tiny_qa  # pylint: disable=g-import-not-at-top
  config = tiny_qa.get_config()
  config.methods = (METHOD,)
  config.tune = api.load_config(os.path.join(ROOT, "configs", "sed_qa.py:runlocal,tune=1")).tune
  return config


@pytest.fixture(scope="module")
def tuned_study(tmp_path_factory):
  """A tuned small LM study; every `methods.call` it makes is recorded (name, the section it
  ran with, its checkpoint folder: None for a tuning trial)."""
  workdir = str(tmp_path_factory.mktemp("lm_tuned"))
  calls = []
  real = methods.call

  def recording(name, state, run, cfg, rng, *, track="image"):
    calls.append((name, cfg.to_dict(), run.checkpoint_dir))
    return real(name, state, run, cfg, rng, track=track)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(methods, "call", recording)
    summary = study.run(tuned_config(), workdir)
  return workdir, summary, calls


def _read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def _questions(path):
  """{kind: set of questions} of a workdir's data/qa.jsonl."""
  out = {}
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      out.setdefault(record["kind"], set()).add(record["question"])
  return out


def test_a_tuned_lm_study_reports_its_choice_and_runs_the_method_with_it(tuned_study):
  workdir, summary, calls = tuned_study
  assert summary["status"] == {f"{METHOD}/seed_0": "ok"}
  chosen = summary["methods"][METHOD]["tuning"]
  assert set(chosen) == {"params", "objective", "feasible", "trials", "value", "trial", "mode"}
  assert chosen["trials"] == 3 and chosen["mode"] == "tuning SED"
  assert tuple(summary["tuning"]["objective"]) == ("nll", "mia") and summary["tuning"]["enabled"]
  assert "tuning" not in summary["methods"]["original"]
  # The choice lies in the method's declared space.
  space = methods.search_space(METHOD, track="lm")
  assert set(chosen["params"]) == set(space)
  for key, entry in space.items():
    value = chosen["params"][key]
    assert entry.low <= value <= entry.high, (key, value)
    if isinstance(entry, methods.Int):
      assert isinstance(value, int)
  # Every trial in tuning.csv, scored by the LM residues and the utility; the choice is the
  # trial of the smallest value, whose objective is Σ |residue| of the objective's scores.
  rows = _read_csv(os.path.join(workdir, "report", "tuning.csv"))
  assert len(rows) == 3 and {row["method"] for row in rows} == {METHOD}
  for row in rows:
    assert 0.0 <= float(row["acc_test"]) <= 1.0  # ROUGE-L recall, not an accuracy
    parts = abs(float(row["residue_nll"])) + abs(float(row["residue_mia"]))
    assert float(row["objective"]) == pytest.approx(parts, rel=1e-4)  # CSV: 6 digits
  best = min(rows, key=lambda row: (float(row["value"]), int(row["trial"])))
  assert int(best["trial"]) == chosen["trial"]
  assert chosen["objective"] == pytest.approx(float(best["objective"]), rel=1e-5)
  assert os.path.exists(os.path.join(workdir, "report", "plots", f"tuning_{METHOD}.png"))
  report = open(os.path.join(workdir, "report", "report.md")).read()
  section = report[report.index("## Tuned settings"):]
  assert f"| {METHOD} | " in section and "ROUGE-L" in section and "accuracy" not in section
  # The trials ran the sampled parameters from the tuning original (no checkpoint folder);
  # the study's run then ran with the chosen ones.
  trials = [cfg for name, cfg, directory in calls if name == METHOD and directory is None]
  assert len(trials) == 3
  for row in rows:
    cfg = trials[int(row["trial"])]
    assert cfg["epochs"] == int(row["param.epochs"])
    assert cfg["lr"] == pytest.approx(float(row["param.lr"]), rel=1e-5)
  [(_, ran, directory)] = [call for call in calls if call[0] == METHOD and call[2] is not None]
  assert directory.endswith(os.path.join("checkpoints", METHOD, "seed_0"))
  for key, value in chosen["params"].items():
    assert ran[key] == pytest.approx(value), key
  assert (ran["epochs"], ran["lr"]) != (5, lm_defaults.METHOD_LR[METHOD])  # not the default


def test_the_tuning_sed_shares_no_target_with_the_evaluated_sed(tuned_study):
  workdir, _, _ = tuned_study
  evaluated = qa_data.load_provenance(os.path.join(workdir, "data", "provenance.npz"))
  tuning = qa_data.load_provenance(os.path.join(workdir, "tuning", "data", "provenance.npz"))
  targets = lambda p: p["id"][(p["kind"] == sed_lib.TARGET) & (p["split"] == 0)]
  assert len(targets(tuning)) == tuned_config().qa.num_targets
  assert not np.isin(targets(tuning), targets(evaluated)).any()
  assert not np.isin(tuning["id"], evaluated["id"]).any()  # no id at all in common
  asked = _questions(os.path.join(workdir, "data", "qa.jsonl"))
  tuning_asked = _questions(os.path.join(workdir, "tuning", "data", "qa.jsonl"))
  assert len(tuning_asked["target"]) == len(targets(tuning))
  assert not tuning_asked["target"] & asked["target"]
  evaluated_t_s = asked["target"] | asked["similar"] | asked["probe"]
  for kind in ("target", "similar", "rest", "test", "probe"):
    assert not tuning_asked[kind] & evaluated_t_s, kind
  # Its own tokenizer, trained in the tuning workdir.
  assert os.path.exists(os.path.join(workdir, "tuning", "data", "tokenizer.model"))


def test_a_drawn_sed_is_made_disjoint_from_the_evaluated_one():
  drawn = qa_data.build_offline(num_targets=4, similar_per_target=3, num_rest=30, num_test=10,
                                probes_per_target=2, seed=0)
  # An evaluated SED that has the drawn SED's first target (its question, paraphrases, probes).
  records = qa_data.qa_records(drawn)
  first = int(drawn.target_ids[0])
  shared = [r for r in records if r["group"] == first or r["kind"] in ("rest", "test")]
  evaluated = qa_data.build_from_records(shared, probes_per_target=0, seed=0)
  tuning = lm_task.disjoint_from(drawn, evaluated, seed=3, sed_seed=3)
  evaluated_questions = {str(q) for part in (evaluated.train, evaluated.probes)
                         for q, k in zip(part["question"], part["kind"]) if k != sed_lib.REST}
  assert len(tuning.target_ids) == 3
  for part in (tuning.train, tuning.test, tuning.probes):
    assert not {str(q) for q in part["question"]} & evaluated_questions
    assert part["id"].min() > max(int(p["id"].max()) for p in (evaluated.train, evaluated.test,
                                                               evaluated.probes))
  groups = tuning.train["group"][tuning.train["kind"] == sed_lib.SIMILAR]
  assert set(groups.tolist()) == set(tuning.target_ids.tolist())
  assert set(tuning.probes["group"].tolist()) == set(tuning.target_ids.tolist())
  # Nothing left to tune on: refused, naming the seed.
  with pytest.raises(config_lib.ConfigError, match=r"tune\.sed_seed"):
    lm_task.disjoint_from(drawn, drawn, seed=0, sed_seed=0)


def test_the_lm_tune_section_defaults():
  config = lm_defaults.base_config()
  assert not config.tune.enabled  # the golden LM study stays untuned
  assert config.tune.max_test_drop == select_lr.UTILITY_BUDGET
  assert config.tune.sed_seed != config.qa.seed
  assert set(config.tune.objective) <= set(lm_defaults.RESIDUE_SCORES + ("mia",))
  # The image track's section with the LM's values: the same fields for tune.py to read.
  assert set(config.tune.keys()) == set(image_defaults.base_config().tune.keys())
  # configs/sed_qa.py's `tune` variant turns it on: few trials under :runlocal.
  for variant, trials in (("runlocal,tune=1", 3), ("tune=1", 12), ("runlocal", None)):
    config = api.load_config(os.path.join(ROOT, "configs", f"sed_qa.py:{variant}"))
    lm_defaults.validate(config)
    assert config.tune.enabled == (trials is not None), variant
    if trials:
      assert config.tune.trials == trials, variant


@pytest.mark.parametrize("change, field", [
    (lambda c: setattr(c.tune, "objective", ("margin",)), "tune.objective"),
    (lambda c: setattr(c.tune, "objective", ("nll", "rouge")), "tune.objective"),
    (lambda c: setattr(c.tune, "sed_seed", c.qa.seed), "tune.sed_seed"),
    (lambda c: setattr(c.tune, "methods", ("retrain",)), "tune.methods"),
    (lambda c: setattr(c, "dataset", "jsonl:/nonexistent/qa.jsonl"), "tune.enabled"),
])
def test_bad_lm_tuning_input_is_refused_before_any_work(change, field, tmp_path):
  config = tuned_config()
  change(config)
  workdir = tmp_path / "never"
  with pytest.raises(config_lib.ConfigError, match=field.replace(".", r"\.")) as error:
    study.run(config, str(workdir))
  assert "\n" not in str(error.value) and not workdir.exists()


def test_oracle_mode_tunes_on_the_evaluated_sed_and_a_jsonl_dataset_may_use_it(tmp_path):
  import tiny_qa  # pylint: disable=g-import-not-at-top
  config = tiny_qa.get_config()
  config.tune.enabled, config.tune.mode = True, "oracle"
  config.tune.sed_seed = config.qa.seed  # no other targets are drawn in oracle mode
  lm_defaults.validate(config)
  task = lm_task.LMTask.build(config, str(tmp_path))
  tuner = task.tuning_task()
  assert tuner.workdir == os.path.join(str(tmp_path), "tuning")
  evaluated = qa_data.load_provenance(os.path.join(tmp_path, "data", "provenance.npz"))
  tuning = qa_data.load_provenance(os.path.join(tmp_path, "tuning", "data", "provenance.npz"))
  assert all(np.array_equal(evaluated[key], tuning[key]) for key in evaluated)
  assert np.array_equal(tuner.train["tokens"], task.train["tokens"])
  config.dataset = "jsonl:/nonexistent/qa.jsonl"
  lm_defaults.validate(config)  # a jsonl dataset tunes in oracle mode only
