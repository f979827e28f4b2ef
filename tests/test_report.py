"""Tests for unlearn_jax.report.tables: seed aggregation, CSV/markdown rendering, report files."""

import csv
import io
import json
import math
import os

import numpy as np
import pytest
from scipy import stats

from unlearn_jax import defaults
from unlearn_jax.report import tables

NAN = float("nan")


def scipy_half_width(values) -> float:
  values = np.asarray(values, np.float64)
  low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
  return (high - low) / 2


# ----------------------------------------------------------------------------------------------
# mean_ci95.


@pytest.mark.parametrize("values", [[1.0, 2.0, 3.0, 4.0], [0.2, 0.9], [5.0, 5.5, 7.0, 1.0, 3.0]])
def test_mean_ci95_matches_scipy_t_interval(values):
  mean, half = tables.mean_ci95(values)
  assert mean == pytest.approx(np.mean(values), rel=1e-12)
  assert half == pytest.approx(scipy_half_width(values), rel=1e-9)


def test_mean_ci95_hand_value():
  # n=4, sd=sqrt(5/3), t_{0.975,3}=3.182446305...
  mean, half = tables.mean_ci95([1.0, 2.0, 3.0, 4.0])
  assert mean == 2.5
  assert half == pytest.approx(3.182446305284263 * math.sqrt(5 / 3) / 2, rel=1e-9)


def test_mean_ci95_one_value_has_nan_half_width():
  mean, half = tables.mean_ci95([5.0])
  assert mean == 5.0 and math.isnan(half)


def test_mean_ci95_ignores_nan_inf_and_none():
  mean, half = tables.mean_ci95([1.0, NAN, 3.0, None, float("inf")])
  assert mean == 2.0
  assert half == pytest.approx(scipy_half_width([1.0, 3.0]), rel=1e-9)
  mean, half = tables.mean_ci95([NAN, NAN])
  assert math.isnan(mean) and math.isnan(half)
  mean, half = tables.mean_ci95([])
  assert math.isnan(mean) and math.isnan(half)


# ----------------------------------------------------------------------------------------------
# aggregate.


RECORDS = {
    0: {"original": {"acc": {"target": 1.0, "test": 0.80}, "residue": {"margin": 1.0},
                     "time_s": 2.0},
        "finetune": {"acc": {"target": 0.5, "test": 0.75}, "residue": {"margin": NAN},
                     "time_s": 1.0}},
    1: {"original": {"acc": {"target": 0.5, "test": 0.90}, "residue": {"margin": 1.0},
                     "time_s": 4.0},
        "finetune": {"acc": {"target": 0.0, "test": 0.85}, "residue": {"margin": 0.25},
                     "time_s": 3.0}},
}


def test_aggregate_means_and_ci95_over_seeds():
  out = tables.aggregate(RECORDS)
  assert set(out) == {"original", "finetune"}
  original = out["original"]
  assert original["num_seeds"] == 2
  assert original["acc"]["target"] == pytest.approx(0.75)
  assert original["acc"]["test"] == pytest.approx(0.85)
  assert original["time_s"] == pytest.approx(3.0)
  assert original["ci95"]["acc"]["target"] == pytest.approx(scipy_half_width([1.0, 0.5]))
  assert original["ci95"]["time_s"] == pytest.approx(scipy_half_width([2.0, 4.0]))
  # Identical values: zero width.
  assert original["ci95"]["residue"]["margin"] == 0.0
  # A NaN in one seed is ignored: mean of the defined one, no interval.
  finetune = out["finetune"]
  assert finetune["residue"]["margin"] == 0.25
  assert math.isnan(finetune["ci95"]["residue"]["margin"])
  assert finetune["acc"]["test"] == pytest.approx(0.8)


def test_aggregate_model_missing_in_a_seed():
  records = {0: {"original": {"acc": {"target": 1.0}}},
             1: {"original": {"acc": {"target": 0.0}}, "clean": {"acc": {"target": 0.25}}}}
  out = tables.aggregate(records)
  assert list(out) == ["original", "clean"]
  assert out["clean"]["num_seeds"] == 1
  assert out["clean"]["acc"]["target"] == 0.25
  assert math.isnan(out["clean"]["ci95"]["acc"]["target"])
  assert out["original"]["acc"]["target"] == 0.5


# ----------------------------------------------------------------------------------------------
# to_csv and markdown.


def test_to_csv_writes_empty_cells_for_nan_and_missing():
  rows = [{"method": "a", "seed": 0, "x": NAN, "y": 1.5},
          {"method": "b", "seed": 1, "x": np.float64(0.25), "z": None, "w": np.float64("nan")}]
  parsed = list(csv.DictReader(io.StringIO(tables.to_csv(rows))))
  assert list(parsed[0]) == ["method", "seed", "x", "y", "z", "w"]
  assert parsed[0] == {"method": "a", "seed": "0", "x": "", "y": "1.5", "z": "", "w": ""}
  assert parsed[1] == {"method": "b", "seed": "1", "x": "0.25", "y": "", "z": "", "w": ""}


def test_results_rows_one_per_model_and_seed():
  rows = tables.results_rows(RECORDS)
  assert [(row["method"], row["seed"]) for row in rows] == [
      ("original", 0), ("finetune", 0), ("original", 1), ("finetune", 1)]
  assert rows[3]["acc.test"] == 0.85 and rows[3]["residue.margin"] == 0.25


def test_markdown_table_has_every_model_and_na_for_nan():
  summary = {"methods": tables.aggregate(RECORDS)}
  summary["methods"]["grad_ascent"] = {"acc": {"target": NAN}}
  table = tables.markdown_table(summary)
  lines = table.splitlines()
  assert len(lines) == 2 + 3
  assert lines[0].startswith("| model |")
  rows = {line.split("|")[1].strip(): line for line in lines[2:]}
  assert set(rows) == {"original", "finetune", "grad_ascent"}
  cells = [cell.strip() for cell in rows["grad_ascent"].split("|")[2:-1]]
  assert len(cells) == len(tables.TABLE_COLUMNS)
  assert set(cells) == {"n/a"}
  # Mean ± half-width where two seeds are defined: acc T of original is 0.75 ± ...
  header = [cell.strip() for cell in lines[0].split("|")[2:-1]]
  original = [cell.strip() for cell in rows["original"].split("|")[2:-1]]
  half = scipy_half_width([1.0, 0.5])
  assert original[header.index("acc T")] == f"0.75 ± {half:.2f}"
  # finetune's margin residue has one defined seed: mean only, no interval.
  finetune = [cell.strip() for cell in rows["finetune"].split("|")[2:-1]]
  assert finetune[header.index("res margin")] == "0.25"


# ----------------------------------------------------------------------------------------------
# write.


def test_write_creates_the_report_files(tmp_path):
  config = defaults.base_config()
  records = {
      0: {name: {"acc": {"target": 1.0, "test": 0.9}, "residue": {"margin": value, "loss": NAN},
                 "residue_abs": {"margin": 0.5}, "residue_defined": {"margin": 2},
                 "time_s": time_s}
          for name, value, time_s in (("original", 1.0, 10.0), ("retrain", 0.8, 10.0),
                                      ("clean", 0.0, 8.0), ("clean_alt", 0.1, 8.0),
                                      ("finetune", 0.9, 1.0))},
  }
  per_target = [{"model": "original", "target_id": 3, "residue_margin": NAN, "margin": 2.0}]
  status = {"finetune/seed_0": "ok", "grad_ascent/seed_0": "failed: ValueError: boom"}
  summary = tables.build_summary(config, records, status)
  workdir = str(tmp_path / "work")
  text = tables.write(workdir, summary, records, per_target)

  report_dir = os.path.join(workdir, "report")
  assert sorted(os.listdir(report_dir)) == ["per_target.csv", "report.md", "results.csv",
                                            "summary.json"]

  def reject_constant(name):
    raise AssertionError(f"summary.json contains {name}")

  with open(os.path.join(report_dir, "summary.json")) as f:
    raw = f.read()
  loaded = json.loads(raw, parse_constant=reject_constant)
  assert "NaN" not in raw
  assert loaded["dataset"] == config.dataset and loaded["model"] == config.model
  assert loaded["seeds"] == [0]
  assert loaded["sed"]["num_targets"] == config.sed.num_targets
  assert loaded["methods"]["original"]["residue"]["loss"] is None  # NaN became null
  assert loaded["methods"]["original"]["ci95"]["acc"]["target"] is None
  assert loaded["methods"]["finetune"]["time_vs_retrain"] == pytest.approx(0.1)
  assert loaded["floor"]["residue"]["margin"] == pytest.approx(0.1)

  with open(os.path.join(report_dir, "results.csv")) as f:
    results = list(csv.DictReader(f))
  assert [row["method"] for row in results] == ["original", "retrain", "clean", "clean_alt",
                                                "finetune"]
  assert results[0]["residue.loss"] == ""
  with open(os.path.join(report_dir, "per_target.csv")) as f:
    assert list(csv.DictReader(f)) == [
        {"model": "original", "target_id": "3", "residue_margin": "", "margin": "2"}]
  with open(os.path.join(report_dir, "report.md")) as f:
    report = f.read()
  assert report == text
  for model in ("original", "retrain", "clean", "clean_alt", "finetune"):
    assert f"| {model} |" in report
  assert "grad_ascent/seed_0: failed" in report
  assert "finetune/seed_0" not in report  # only failures are listed


def _row_cells(table: str, model: str) -> dict[str, str]:
  lines = table.splitlines()
  header = [cell.strip() for cell in lines[0].split("|")[2:-1]]
  for line in lines[2:]:
    if line.split("|")[1].strip() == model:
      return dict(zip(header, (cell.strip() for cell in line.split("|")[2:-1])))
  raise KeyError(model)


def test_report_shows_residue_median_ratio_of_sums_undefined_and_floor():
  record = {"residue": {"margin": 3.75}, "residue_median": {"margin": 0.5},
            "residue_ratio_of_sums": {"margin": 0.56}, "residue_undefined": {"margin": 1},
            "residue_defined": {"margin": 6}, "residue_abs": {"margin": 1.9}}
  records = {0: {"retrain": record, "clean_alt": {**record, "residue_median": {"margin": 0.1}}}}
  summary = tables.build_summary(defaults.base_config(), records, {})
  cells = _row_cells(tables.markdown_table(summary), "retrain")
  assert (cells["res margin"], cells["res margin median"], cells["res margin Σ/Σ"],
          cells["margin undef T"]) == ("3.75", "0.50", "0.56", "1")
  assert summary["floor"]["residue_median"]["margin"] == 0.1
  assert summary["floor"]["residue_undefined"]["margin"] == 1
  assert summary["floor"]["residue_ratio_of_sums"]["margin"] == 0.56


def test_report_shows_lira_reference_count_epsilon_capped_null_and_ulira_na():
  config = defaults.base_config()
  config.eval.lira.num_models = 4
  record = {"lira_tpr": {"target": 0.1}, "epsilon": {"vs_retrain": 20.0},
            "epsilon_capped": {"vs_retrain": 3}, "ulira_acc": {"vs_clean": NAN}}
  summary = tables.build_summary(config, {0: {"finetune": record}}, {})
  assert summary["lira"] == {"num_models": 4, "per_side": 2, "fpr": 0.05,
                             "variance": "fixed per population"}
  cells = _row_cells(tables.markdown_table(summary, tables.ATTACK_COLUMNS), "finetune")
  assert (cells["LiRA TPR"], cells["LiRA refs"]) == ("0.10", "4")
  assert (cells["ε vs retrain"], cells["capped vs retrain"]) == ("20.00", "3")
  assert cells["U-LiRA vs clean"] == "n/a"
  summary["across_seeds"] = {
      "num_models": 8, "delta": 1e-5, "epsilon_cap": 50.0, "epsilon_min_seeds": 8,
      "ulira_min_models": 8, "num_targets": 10,
      "epsilon_null": {"epsilon": 2.5, "capped": 1, "forgetting_quality": 0.2, "num_models": 4}}
  report = tables.markdown_report(summary)
  assert "4 reference models, σ fixed per population" in report
  assert "two halves of 4, reads ε = 2.50 with 1 of 10 targets capped" in report
  summary["across_seeds"].update(num_models=2, epsilon_min_seeds=8)
  del summary["across_seeds"]["epsilon_null"]
  assert "U-LiRA is n/a below 8 seeds" in tables.markdown_report(summary)
  config.eval.lira.num_models = 64
  assert tables.lira_setting(config)["variance"] == "per example"
