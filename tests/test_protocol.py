"""The control (the same targets without similar samples) and specificity (matched non-targets)."""

from __future__ import annotations

import os
import types

import numpy as np
import pytest

from unlearn_jax import config as config_lib
from unlearn_jax import defaults, study
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.report import protocol
from unlearn_jax.tasks import control, specificity

import tiny_study


def small_sed() -> sed_lib.SED:
  """Two targets (ids 0, 1; classes 0, 1), two similar samples each, six rest, four test."""
  train = {"image": np.zeros((12, 4, 4, 1), np.uint8),
           "label": np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 1, 1], np.int32),
           "id": np.arange(12, dtype=np.int64),
           "kind": np.array([0, 0, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1], np.int8),
           "group": np.array([0, 1, -1, -1, -1, -1, -1, -1, 0, 0, 1, 1], np.int64)}
  test = {"image": np.zeros((4, 4, 4, 1), np.uint8), "label": np.array([0, 1, 0, 1], np.int32),
          "id": np.arange(100, 104, dtype=np.int64)}
  return sed_lib.SED(train=train, test=test, target_ids=np.array([0, 1], np.int64))


def test_the_control_sed_holds_no_similar_sample():
  sed = small_sed()
  kept = control.control_sed(sed)
  assert not np.any(kept.train["kind"] == sed_lib.SIMILAR)
  np.testing.assert_array_equal(kept.train["id"], np.arange(8))  # T and R, in D's order
  np.testing.assert_array_equal(kept.target_ids, sed.target_ids)
  assert kept.test is sed.test


def test_matching_takes_the_closest_free_example_once():
  rng = np.random.default_rng(0)
  pool = np.array([10, 11, 12])
  chosen = specificity.match(np.array([0.9, 1.0]), pool, np.array([0.0, 1.0, 5.0]), rng)
  assert sorted(chosen) == [10, 11] and len(set(chosen)) == 2  # 11 once, then the next closest
  assert list(specificity.match(np.array([1.0, 1.0]), pool[:1], np.array([3.0]), rng)).count(
      -1) == 1


def one_hot_logits(margins: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Two-class logits whose margin on `labels` is `margins`."""
  logits = np.zeros((len(labels), 2))
  logits[np.arange(len(labels)), labels] = margins
  return logits


def test_drop_is_measured_in_units_of_the_targets_gap():
  sed = small_sed()
  rows = {"target": np.array([0, 1]), "retained": np.array([2, 3]), "test": np.array([0, 1])}
  train_margin = {"original": np.full(12, 4.0), "clean": np.full(12, 4.0),
                  "forgot": np.full(12, 4.0), "damaged": np.full(12, 1.0)}
  for name in train_margin:
    train_margin[name][[0, 1]] = {"original": 4.0, "clean": 0.0, "forgot": 0.0,
                                  "damaged": 1.0}[name]
  logits = {name: {"train": one_hot_logits(m, sed.train["label"]),
                   "test": one_hot_logits(np.full(4, 4.0 if name != "damaged" else 1.0),
                                          sed.test["label"])}
            for name, m in train_margin.items()}
  forgot = specificity.drops(logits, sed, rows, "forgot", "margin", 0.5)
  assert forgot == pytest.approx({"target": 1.0, "retained": 0.0, "test": 0.0, "ratio": 0.0})
  damaged = specificity.drops(logits, sed, rows, "damaged", "margin", 0.5)
  assert damaged == pytest.approx({"target": 0.75, "retained": 0.75, "test": 0.75, "ratio": 1.0})
  assert protocol.damaged({"specificity": {"margin": damaged}}) == ["margin"]
  assert protocol.damaged({"specificity": {"margin": forgot}}) == []


@pytest.fixture(scope="module")
def controlled(tfds_data_dir, tmp_path_factory):
  config = tiny_study.get_config(f"data_dir={tfds_data_dir}")
  config.methods = ("finetune", "retrain")
  config.eval.lira.num_models = 0
  config.recon.enabled = False
  config.eval.control, config.eval.specificity = True, True
  workdir = str(tmp_path_factory.mktemp("controlled"))
  return workdir, study.run(config, workdir)


def test_every_method_has_its_residue_without_similar_samples(controlled):
  workdir, summary = controlled
  finetune = summary["methods"]["finetune"]
  assert set(finetune["control"]["residue"]) >= {"margin", "loss", "mia"}
  assert summary["status"]["control/finetune/seed_0"] == "ok"
  assert "control/finetune" not in summary["methods"]
  # Without S, retraining without T is training on R: the clean model, residue 0.
  assert summary["methods"]["retrain"]["control"]["residue"]["margin"] == pytest.approx(0.0)
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "control", "original", "seed_0"))
  report = open(os.path.join(workdir, "report", "report.md")).read()
  assert "## With and without similar samples (control)" in report
  assert "## Specificity: forgetting or damage?" in report


def test_every_method_has_its_drop_on_matched_non_targets(controlled):
  _, summary = controlled
  finetune = summary["methods"]["finetune"]
  assert set(finetune["specificity"]) == set(specificity.SCORES)
  assert set(finetune["specificity"]["margin"]) == {"target", "retained", "test", "ratio"}
  assert isinstance(finetune["damaged"], list)
  assert "specificity" not in summary["methods"]["original"]


@pytest.fixture(scope="module")
def replicated(tfds_data_dir, tmp_path_factory):
  config = tiny_study.get_config(f"data_dir={tfds_data_dir}")
  config.methods = ("finetune",)
  config.eval.lira.num_models = 0
  config.recon.enabled = False
  config.sed_seeds, config.eval.floor_seeds = (0, 3), 2
  workdir = str(tmp_path_factory.mktemp("replicated"))
  return workdir, study.run(config, workdir)


def test_sed_seeds_run_one_study_each_and_pool_their_units(replicated):
  workdir, summary = replicated
  assert summary["sed_seeds"] == [0, 3] and summary["units"] == ["sed_0/seed_0", "sed_3/seed_0"]
  for k in (0, 3):
    sub = os.path.join(workdir, f"sed_{k}")
    assert os.path.exists(os.path.join(sub, "report", "summary.json"))
    saved = sed_lib.load_provenance(os.path.join(sub, "data", "provenance.npz"))
    targets = saved["id"][(saved["kind"] == sed_lib.TARGET) & (saved["split"] == 0)]
    if k == 0:
      first = set(targets)
    else:
      assert set(targets) != first  # other targets
  rows = open(os.path.join(workdir, "report", "per_target.csv")).read().splitlines()
  assert rows[0].startswith("sed_seed,seed,model,target_id")
  assert {line.split(",")[0] for line in rows[1:]} == {"0", "3"}
  assert summary["methods"]["finetune"]["num_seeds"] == 2  # two units
  assert summary["status"]["sed_3/finetune/seed_0"] == "ok"


def test_more_floor_models_give_the_floor_its_spread(replicated):
  _, summary = replicated
  assert {"clean_alt", "clean_alt_2"} <= set(summary["methods"])
  spread = summary["floor_spread"]
  assert spread["models"] == ["clean_alt", "clean_alt_2"]
  for found in spread["residue"].values():
    assert found["min"] <= found["mean"] <= found["max"]
  assert "vs_floor" not in summary["methods"]["clean_alt_2"]  # a floor model, not a method


def test_tuning_targets_must_differ_from_every_evaluated_sed(tfds_data_dir):
  config = tiny_study.get_config(f"data_dir={tfds_data_dir}")
  config.sed_seeds, config.tune.sed_seed = (0, 5), 5
  with pytest.raises(config_lib.ConfigError, match="tune.sed_seed"):
    defaults.validate(config)


def test_a_control_run_that_diverges_is_reported_as_a_result():
  assert control.diverged_result("control/grad_ascent/seed_0", "diverged at step 11: nan")
  assert not control.diverged_result("grad_ascent/seed_0", "diverged at step 11: nan")
  assert not control.diverged_result("control/grad_ascent/seed_0", "failed: OSError: disk")
  # A study of several SEDs prefixes its SED's folder (replicates.py).
  assert control.diverged_result("sed_2/control/grad_ascent/seed_0", "diverged at step 13: nan")
  assert not control.diverged_result("sed_2/grad_ascent/seed_0", "diverged at step 13: nan")
  summary = {"methods": {"grad_ascent": {"residue": {"margin": 0.4},
                                         "control": {"diverged": 1.0}}}}
  assert "| grad_ascent | 0.40 | diverged |" in protocol.control_markdown(summary)


def test_the_control_runs_single_model_methods_only():
  task = types.SimpleNamespace(track="image")
  names = ("finetune", "retrain", "sisa", "finetune+nbr", "salun")
  found = control.Control()._names(task, names)  # pylint: disable=protected-access
  assert found == ["finetune", "salun"]


def test_the_tuning_section_lists_each_sed_seeds_choice():
  one = {"params": {"lr": 0.01}, "objective": 0.5, "feasible": True, "trials": 4,
         "mode": "tuning SED"}
  summary = {"tuning": {"trials": 4}, "methods": {
      "finetune": {"tuning": {"per_sed_seed": {"0": one, "1": {**one, "params": {"lr": 0.1}}}}}}}
  text = protocol.tuning_markdown(summary)
  assert "| finetune (SED seed 0) | lr=0.01 |" in text
  assert "| finetune (SED seed 1) | lr=0.1 |" in text
