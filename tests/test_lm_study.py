"""End-to-end language-model study: the workdir contract, the LM scores, resume, the binary."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from unlearn_jax import config as config_lib
from unlearn_jax import study
from unlearn_jax.evaluate import residue
from unlearn_jax.lm import defaults as lm_defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config():
  import tiny_qa  # pylint: disable=g-import-not-at-top
  return tiny_qa.get_config()


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("qa"))
  return workdir, study.run(tiny_config(), workdir)


def test_workdir_contract_and_scores(first_run):
  workdir, summary = first_run
  for path in ("config.json", "data/provenance.npz", "data/qa.jsonl", "data/tokenizer.model",
               "metrics.jsonl", "report/summary.json", "report/results.csv",
               "report/per_target.csv", "report/report.md", "report/generations.jsonl"):
    assert os.path.exists(os.path.join(workdir, path)), path
  assert summary["track"] == "lm" and summary["sed"]["num_targets"] == 3
  assert set(summary["status"].values()) == {"ok"}, summary["status"]
  models = summary["methods"]
  assert set(models) == {"original", "retrain", "clean", "clean_alt", "grad_ascent", "npo"}
  for record in models.values():
    assert set(record["nll"]) == {"target", "similar", "rest", "test"}
    assert set(record["rouge_l"]) == {"target", "probe", "rest"}
    assert set(record["mia_auc"]) == {"loss", "zlib", "min_k"}
    assert set(record["residue"]) >= set(lm_defaults.RESIDUE_SCORES)
  # The original memorised its training answers; held-out answers are unknown facts.
  original = models["original"]
  assert original["nll"]["target"] < 0.5 * original["nll"]["test"]
  assert original["rouge_l"]["target"] > models["clean"]["rouge_l"]["target"]
  # Residue is 1 for the original and 0 for clean by definition (where defined).
  for score in ("nll", "rouge_l"):
    if original["residue_defined"][score]:
      assert original["residue"][score] == pytest.approx(1.0)
      assert models["clean"]["residue"][score] == pytest.approx(0.0)
  # Gradient ascent on the targets raises their loss above the original's.
  assert models["grad_ascent"]["nll"]["target"] > original["nll"]["target"]
  with open(os.path.join(workdir, "report", "generations.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert {row["split"] for row in rows} == {"target", "probe"}
  assert len([r for r in rows if r["model"] == "original" and r["split"] == "probe"]) == 3 * 2


def test_residue_aggregates_are_recomputed_from_the_per_target_scores(first_run):
  """summary.json holds the residue's mean, median, ratio of sums and (un)defined counts of
  every LM score, as `residue.summaries` gives them from per_target.csv; report.md shows the
  fact-probe residue's median, ratio of sums and undefined count."""
  workdir, summary = first_run
  min_gap = tiny_config().eval.min_gap
  with open(os.path.join(workdir, "report", "per_target.csv")) as f:
    rows = list(csv.DictReader(f))
  assert {row["seed"] for row in rows} == {"0"}  # one seed: the summary is that seed's record
  score_of = lambda model, score: np.asarray(
      [float(r[score]) if r[score] else np.nan for r in rows if r["model"] == model])
  keys = {"residue": "mean", "residue_median": "median",
          "residue_ratio_of_sums": "ratio_of_sums", "residue_defined": "defined",
          "residue_undefined": "undefined"}
  for name, record in summary["methods"].items():
    for score in lm_defaults.RESIDUE_SCORES:
      expected = residue.summaries(score_of(name, score), score_of("original", score),
                                   score_of("clean", score), float(min_gap[score]))
      assert expected["defined"] + expected["undefined"] == 3
      for key, field in keys.items():
        assert record[key][score] == pytest.approx(expected[field], rel=1e-4, abs=1e-6,
                                                   nan_ok=True), (name, score, key)
    for key in keys:
      assert "mia" in record[key], (name, key)
  report = open(os.path.join(workdir, "report", "report.md")).read()
  header = next(line for line in report.splitlines() if "res fact probe |" in line)
  assert "res fact probe median" in header and "res fact probe Σ/Σ" in header
  assert "fact probe undef T" in header


def _training_records(workdir):
  """What training leaves behind: its metrics.jsonl records, every model's info.json and
  checkpoint files (path -> modification time); a model trained again rewrites all three."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:  # evaluation records aside
    lines = [line for line in f.read().splitlines()
             if not json.loads(line)["run"].startswith("eval/")]
  infos, files = {}, {}
  for root, _, names in os.walk(os.path.join(workdir, "checkpoints")):
    for file_name in names:
      path = os.path.join(root, file_name)
      files[os.path.relpath(path, workdir)] = os.stat(path).st_mtime_ns
      if file_name == "info.json":
        with open(path) as f:
          infos[os.path.relpath(root, workdir)] = json.load(f)
  return lines, infos, files


def test_rerun_restores_every_model_without_training_and_gives_the_same_summary(first_run):
  workdir, summary = first_run
  lines, infos, files = _training_records(workdir)
  # Every reference and method left a record of the steps it ran.
  assert set(infos) == {os.path.join("checkpoints", name, "seed_0")
                        for name in summary["methods"]}
  assert all(info["steps_run"] > 0 for info in infos.values()), infos
  assert lines
  again = study.run(tiny_config(), workdir)
  # Nothing trained again: no new metric line, no checkpoint or info.json rewritten, and every
  # model's time is the recorded one (a deterministic retraining would reproduce the scores
  # below, not these).
  assert _training_records(workdir) == (lines, infos, files)
  strip = lambda tree: json.loads(json.dumps(tree, sort_keys=True), parse_constant=str)
  for name in summary["methods"]:
    assert again["methods"][name]["time_s"] == summary["methods"][name]["time_s"], name
    for key in ("nll", "rouge_l", "mia_auc", "residue"):
      assert strip(again["methods"][name][key]) == strip(summary["methods"][name][key]), (name,
                                                                                        key)


def test_bad_lm_config_names_the_field():
  config = tiny_config()
  config.methods = ("grad_ascent", "salun")
  with pytest.raises(config_lib.ConfigError, match="methods"):
    lm_defaults.validate(config)
  config = tiny_config()
  config.qa.num_targets = 0
  with pytest.raises(config_lib.ConfigError, match="qa.num_targets"):
    lm_defaults.validate(config)


def test_binary_dispatches_lm_configs_and_explains_unknown_fields(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "unlearn_jax.main", "--config=configs/sed_qa.py:runlocal",
       f"--workdir={tmp_path}", "--config.qa.num_targts=3"], cwd=ROOT, capture_output=True,
      text=True, timeout=120)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert "config.qa.num_targts: unknown field" in last and "num_targets" in last
  result = subprocess.run(
      [sys.executable, "-m", "unlearn_jax.main", "--config=configs/sed_qa.py:runlocal",
       f"--workdir={tmp_path}", "--config.qa.num_targets=0"], cwd=ROOT, capture_output=True,
      text=True, timeout=120)
  assert result.returncode == 1 and "qa.num_targets" in result.stderr.strip().splitlines()[-1]
