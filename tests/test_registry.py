"""The metric registry: declarations drive records, residues, eval.min_gap and report tables."""

import subprocess
import sys

import numpy as np
import pytest

from test_evaluate import LOGITS, MIN_GAP, make_sed
from unlearn_jax import defaults
from unlearn_jax.evaluate import evaluator, registry
from unlearn_jax.report import sweep_report, tables


@pytest.fixture(scope="module")
def records():
  return evaluator.evaluate_models(LOGITS, make_sed(), MIN_GAP)[0]


def test_every_record_field_is_declared_by_a_metric(records):
  declared = {field for metric in registry.metrics() for field in metric.fields}
  residue_keys = set(evaluator.RESIDUE_AGGREGATES) | {"residue_abs"}
  for record in records.values():
    assert set(record) - residue_keys <= declared, set(record) - residue_keys - declared


def test_every_residue_score_has_a_declared_min_gap_default(records):
  min_gap = defaults.base_config().eval.min_gap
  for record in records.values():
    assert set(record["residue"]) <= set(min_gap)
  assert dict(min_gap) == registry.min_gaps()
  assert {"loss", "confidence", "margin", "correct", "kl_to_clean", "lira", "mia",
          "recon_ssim"} <= set(min_gap)


def test_per_example_scores_are_averaged_per_split_under_their_fields(records):
  sed, rows = make_sed(), evaluator.split_rows(make_sed())
  for metric in registry.needing("logits"):
    values = metric.score(LOGITS["retrain"]["train"][rows["target"]],
                          sed.train["label"][rows["target"]])
    for field in metric.fields:
      assert records["retrain"][field]["target"] == pytest.approx(np.mean(values)), field
  assert set(records["retrain"]["acc"]) == set(evaluator.SPLITS)  # `correct` writes `acc`


def test_table_columns_read_declared_fields_or_residues():
  fields = {field for metric in registry.metrics() for field in metric.fields}
  with_residue = set(registry.min_gaps())
  time_keys = {key for _, key, _ in tables.TIME_COLUMNS}
  for _, key, _ in tables.TABLE_COLUMNS + tables.ATTACK_COLUMNS:
    head, _, score = key.partition(".")
    if key in time_keys or key == "lira_num_models":  # lira's reference count (summary['lira'])
      continue
    if head in set(evaluator.RESIDUE_AGGREGATES) | {"residue_abs"}:
      assert score in with_residue, key
    else:
      assert head in fields, key
  headers = [label for label, _, _ in tables.TABLE_COLUMNS + tables.ATTACK_COLUMNS]
  assert len(headers) == len(set(headers))


def test_sweep_labels_come_from_the_declarations():
  assert sweep_report.column_label("residue.correct") == "correctness residue"
  assert sweep_report.column_label("residue_abs.margin") == "margin residue, absolute"
  assert sweep_report.column_label("residue.mia") == "MIA (loss attack AUC) residue"


def test_a_declaration_is_checked():
  with pytest.raises(ValueError, match="needs"):
    registry.Metric(name="x", needs="weights", fields=("x",), order=1)
  with pytest.raises(ValueError, match="score"):
    registry.Metric(name="x", needs="logits", fields=("x",), order=1)
  with pytest.raises(ValueError, match="compute"):
    registry.Metric(name="x", needs="model", fields=("x",), order=1)
  with pytest.raises(ValueError, match="unit"):
    registry.Metric(name="x", needs="attack", fields=("x",), order=1, min_gap=0.1)
  with pytest.raises(ValueError, match="table"):
    registry.Metric(name="x", needs="attack", fields=("x",), order=1,
                    columns=(registry.Column("x", "x", 2, "appendix"),))
  with pytest.raises(KeyError, match="no metric"):
    registry.get("no_such_metric")


def test_evaluation_does_not_import_training():
  code = ("import sys; from unlearn_jax.evaluate import evaluator, metrics, registry; "
          "registry.metrics(); print(sorted(m for m in sys.modules if m.startswith("
          "('unlearn_jax.train', 'unlearn_jax.methods', 'unlearn_jax.study'))))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]", out.stdout
