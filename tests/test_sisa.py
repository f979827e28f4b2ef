"""SISA's ensemble is scored against SISA references with the same shards (an ensemble on D and
one on R), and ensembles get no parameter distance to single models."""

import csv
import math
import os

import jax
import numpy as np
import pytest

from unlearn_jax import models, study, train, utils
from unlearn_jax.evaluate import metrics
from unlearn_jax.methods import sisa

PAIR = {"original": "sisa_original", "clean": "sisa_clean"}
ENSEMBLES = ("sisa", "sisa+nbr", "sisa_original", "sisa_clean")


def _config(data_dir):
  import tiny_study  # pylint: disable=g-import-not-at-top
  config = tiny_study.get_config(f"data_dir={data_dir}")
  # sisa unlearns T; sisa+nbr with ground-truth neighbours unlearns T ∪ S, which leaves exactly
  # the shards of sisa_clean.
  config.methods = ("sisa", "sisa+nbr")
  config.remedy.ground_truth = True
  config.unlearn.sisa.num_shards = 2  # 300 images: keep every shard's slices non-trivial
  config.eval.lira.num_models = 0
  config.recon.enabled = False
  config.eval.min_gap.margin = 1e-3  # a ratio wherever the two references' margins differ
  return config


@pytest.fixture(scope="module")
def sisa_study(tfds_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sisa_study"))
  return workdir, study.run(_config(tfds_data_dir), workdir)


def _per_target(workdir):
  with open(os.path.join(workdir, "report", "per_target.csv")) as f:
    rows = list(csv.DictReader(f))
  by_model = {}
  for row in rows:
    by_model.setdefault(row["model"], {})[int(row["target_id"])] = row
  return by_model


def test_sisa_residue_is_measured_against_sisa_references(sisa_study):
  workdir, summary = sisa_study
  found = summary["methods"]
  assert all(found[name]["status"] == "ok" for name in ENSEMBLES), found.keys()
  assert summary["residue_references"] == {name: PAIR for name in ENSEMBLES}
  # The untouched ensemble on D has residue 1; the one that never saw T nor S has residue 0,
  # and so has the unlearned ensemble equal to it (SISA removal of T ∪ S is exact).
  for score in ("loss", "confidence", "margin"):
    assert found["sisa_original"]["residue_defined"][score] > 0
    assert found["sisa_original"]["residue"][score] == pytest.approx(1.0, abs=1e-12)
    assert found["sisa_clean"]["residue"][score] == 0.0
    assert found["sisa+nbr"]["residue"][score] == 0.0
    assert found["sisa+nbr"]["residue_abs"][score] == 0.0
  assert found["sisa+nbr"]["kl_to_clean"]["target"] == 0.0  # KL to sisa_clean, not to clean
  assert found["sisa+nbr"]["margin"] == found["sisa_clean"]["margin"]
  # Per target: (f(sisa) − f(sisa_clean)) / (f(sisa_original) − f(sisa_clean)).
  rows, checked = _per_target(workdir), 0
  for target, row in rows["sisa"].items():
    f = {name: float(rows[name][target]["margin"]) for name in ("sisa_original", "sisa_clean")}
    if abs(f["sisa_original"] - f["sisa_clean"]) >= 1e-3:
      expected = (float(row["margin"]) - f["sisa_clean"]) / (f["sisa_original"] - f["sisa_clean"])
      assert float(row["residue_margin"]) == pytest.approx(expected, rel=1e-5, abs=1e-6)
      checked += 1
  assert checked > 0
  # The single CNNs are still scored against original and clean.
  assert found["original"]["residue"]["margin"] == pytest.approx(1.0)
  assert "original" not in summary["residue_references"]
  report = open(os.path.join(workdir, "report", "report.md")).read()
  assert "| sisa_clean |" in report and "`sisa_original`" in report


def test_sisa_references_reuse_the_method_and_record_their_cost(sisa_study):
  workdir, summary = sisa_study
  found = summary["methods"]
  checkpoints = os.path.join(workdir, "checkpoints")
  method_info = utils.read_json(os.path.join(checkpoints, "sisa", "seed_0", "info.json"))
  # sisa_original is the ensemble SISA trained before unlearning: its time is that training's.
  assert found["sisa_original"]["time_s"] == pytest.approx(method_info["train_s"])
  clean_info = utils.read_json(os.path.join(checkpoints, "sisa_clean", "seed_0",
                                                  "info.json"))
  assert clean_info["steps_run"] > 0 and found["sisa_clean"]["time_s"] > 0
  assert not os.path.exists(os.path.join(checkpoints, "sisa_original"))  # nothing trained twice


def test_ensemble_parameter_distances_and_relearn_steps_are_not_available(sisa_study):
  workdir, summary = sisa_study
  for name in ENSEMBLES:
    distances = summary["methods"][name]["param_l2"]
    assert set(distances) == {"to_original", "to_retrain", "to_clean"}
    assert all(not math.isfinite(value) for value in distances.values()), (name, distances)
    # No one model to fine-tune on T: relearn steps are n/a (null in summary.json).
    relearn = summary["methods"][name]["relearn_steps"]
    assert relearn is None or not math.isfinite(relearn), (name, relearn)
  assert 0.0 < summary["methods"]["clean_alt"]["param_l2"]["to_clean"] < math.inf
  assert summary["methods"]["clean"]["relearn_steps"] >= 0
  table = [line for line in open(os.path.join(workdir, "report", "report.md"))
           if line.startswith("| sisa |")]
  # Behaviour, membership (its parameter distance and relearn steps n/a) and statistics rows.
  assert len(table) == 3 and "n/a" in table[1]


def test_param_distance_refuses_trees_of_other_shapes():
  mlp = models.get("mlp", 3, hidden=(4,))
  states = [train.create_state(mlp, jax.random.key(k), (6, 6, 1)) for k in range(2)]
  single = states[0].params
  stacked = sisa.ensemble_state(states).params
  with pytest.raises(ValueError, match="differ in structure"):
    metrics.param_distance(stacked, single)
  # Same structure, stacked leaves: no broadcasting of one tree against the other.
  members = stacked["members"]
  stacked_leaf = r"\['Dense_0'\]\['bias'\] has shape \(2, 4\) in one tree and \(4,\)"
  with pytest.raises(ValueError, match=stacked_leaf):
    metrics.param_distance(members, single)
  wider = train.create_state(models.get("mlp", 3, hidden=(5,)), jax.random.key(0),
                             (6, 6, 1)).params
  with pytest.raises(ValueError, match="shape"):
    metrics.param_distance(single, wider)
  expected = math.sqrt(sum(float(np.sum((np.asarray(a, np.float64) - np.asarray(b)) ** 2))
                           for a, b in zip(jax.tree.leaves(single),
                                           jax.tree.leaves(states[1].params))))
  assert metrics.param_distance(single, states[1].params) == pytest.approx(expected)


def test_references_module_restores_the_study_sisa_references(sisa_study, tfds_data_dir):
  workdir, summary = sisa_study
  from unlearn_jax import api, parallel, references  # pylint: disable=g-import-not-at-top
  config = _config(tfds_data_dir)
  store = os.path.join(workdir, "checkpoints", "sisa", "seed_0")
  slices_before = sorted(os.listdir(os.path.join(store, "shard_0")))
  sed = api.build_sed(config)
  built = references.train_sisa(sed, config, 0, workdir=workdir)
  assert sorted(os.listdir(os.path.join(store, "shard_0"))) == slices_before  # restored only
  mesh = parallel.make_mesh()
  for name, state in built.items():
    logits = train.predict(state, sed.test, 100, mesh)
    accuracy = float(np.mean(np.argmax(logits, -1) == sed.test["label"]))
    assert accuracy == summary["methods"][name]["acc"]["test"], name
