"""The image study's metrics, each declared once (docs/design.md §3.5, §3.6), as big_vision's
evaluators are: one module per metric (or per family) under `unlearn_jax/evaluate/scores/`,
holding a `METRICS` tuple of `Metric`s.

A declaration says what the metric needs, which record fields it writes, whether it has an
influence residue (and the default of its `eval.min_gap`, in its unit), and its report label and
table columns. From the declarations come the per-example scores of every split
(`example_scores`), the residue scores of the evaluator, the defaults of `eval.min_gap`, the
columns of report.md (`report/tables.py`) and the sweep report's labels. Adding a metric is one
module here plus its test: a per-example score of the logits (needs 'logits') is computed,
averaged per split, given its residue and shown without further wiring.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from typing import Any, Callable

import numpy as np

# What a metric is computed from, and where:
#   logits     per example, `score(logits, labels)` on every split (evaluator.model_scores);
#   reference  per target, from the model's logits and its clean reference's (evaluator);
#   lira       per target, from the LiRA reference models (evaluator.LiraReferences);
#   attack     set level, membership attacks on a model's logits (evaluator, evaluate/mia.py);
#   model      from the trained models, `compute(name, ModelInputs)` (tasks/image.py);
#   recon      from the reconstruction track (recon_track.py);
#   seeds      across a model's training seeds (evaluate/across_seeds.py).
NEEDS = ("logits", "reference", "lira", "attack", "model", "recon", "seeds")
TABLES = ("behaviour", "attack")  # report.md: "Behaviour and residue", "Membership and influence"


@dataclasses.dataclass(frozen=True)
class Column:
  """A column of report.md: its header, the record key (dotted), its digits and its place.

  Columns of a table are sorted by `rank` (ties keep the registry's order): the place in the
  table does not have to follow the place of the metric in the registry.
  """
  label: str
  key: str
  digits: int
  table: str = "behaviour"
  rank: float = 0.0


@dataclasses.dataclass(frozen=True)
class Metric:
  """One metric of the image study.

  Attributes:
    name: the score's name: its per-target column and its key under `residue*` and
      `eval.min_gap`.
    needs: what it is computed from (one of NEEDS).
    fields: the record fields it writes (`acc` for `correct`'s per-split means).
    order: its place among the metrics: the order of record fields, residues and per-target
      columns.
    score: needs 'logits': (logits (N, C), labels (N,)) -> (N,) float64 per-example values.
    compute: needs 'model': (model name, ModelInputs) -> {field: value} for its fields.
    min_gap: the default `eval.min_gap.<name>` in `unit`; None: no residue.
    unit: the unit of the score and of its min_gap.
    label: the sweep report's name of the score.
    columns: its report.md columns.
  """
  name: str
  needs: str
  fields: tuple[str, ...]
  order: float
  score: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
  compute: Callable[[str, Any], Any] | None = None
  min_gap: float | None = None
  unit: str = ""
  label: str = ""
  columns: tuple[Column, ...] = ()

  def __post_init__(self):
    if self.needs not in NEEDS:
      raise ValueError(f"metric {self.name}: needs {self.needs!r}, not one of {NEEDS}")
    if (self.needs == "logits") != (self.score is not None):
      raise ValueError(f"metric {self.name}: a 'logits' metric, and only one, has a `score`")
    if (self.needs == "model") != (self.compute is not None):
      raise ValueError(f"metric {self.name}: a 'model' metric, and only one, has a `compute`")
    if self.min_gap is not None and not self.unit:
      raise ValueError(f"metric {self.name}: a residue's min_gap needs the score's unit")
    if any(column.table not in TABLES for column in self.columns):
      raise ValueError(f"metric {self.name}: a column's table is not one of {TABLES}")

  @property
  def has_residue(self) -> bool:
    return self.min_gap is not None


@dataclasses.dataclass(frozen=True)
class ModelInputs:
  """What a 'model' metric reads: every trained model of a seed and the evaluation settings.

  Attributes:
    states: {model name: train.TrainState}.
    forget: the forget set T (image uint8, label).
    eval_config: the study's `eval` section.
    mesh: the device mesh.
    ensembles: {model: (its original, its clean)} for SISA's shard ensembles (parameter
      distances are n/a for them).
    relearn_optimizer: the optimiser relearning trains with (SGD at `eval.relearn.lr`).
    train_step: (state, batch, key) -> (state, {'loss': the loss before the update, ...}); the
      training step of the study's models, given by the caller so that evaluation does not
      import training.
  """
  states: dict[str, Any]
  forget: dict[str, np.ndarray]
  eval_config: Any
  mesh: Any
  ensembles: dict[str, tuple[str, str]]
  relearn_optimizer: Any
  train_step: Callable


@functools.cache
def metrics() -> tuple[Metric, ...]:
  """Every declared metric, in `order` (the modules of `unlearn_jax.evaluate.scores`)."""
  package = importlib.import_module("unlearn_jax.evaluate.scores")
  found: dict[str, Metric] = {}
  for module_info in pkgutil.iter_modules(package.__path__):
    module = importlib.import_module(f"{package.__name__}.{module_info.name}")
    for metric in module.METRICS:
      if metric.name in found:
        raise ValueError(f"metric {metric.name} is declared twice")
      found[metric.name] = metric
  return tuple(sorted(found.values(), key=lambda m: m.order))


def get(name: str) -> Metric:
  """The metric called `name`."""
  for metric in metrics():
    if metric.name == name:
      return metric
  raise KeyError(f"no metric {name!r}; declared: {[m.name for m in metrics()]}")


def needing(*needs: str) -> tuple[Metric, ...]:
  """The metrics computed from one of `needs`, in order."""
  return tuple(m for m in metrics() if m.needs in needs)


def residue_scores(*needs: str) -> tuple[str, ...]:
  """Names of the metrics with a residue (of those computed from `needs`, default: all)."""
  return tuple(m.name for m in metrics() if m.has_residue and (not needs or m.needs in needs))


def min_gaps() -> dict[str, float]:
  """{score: the default eval.min_gap} for every metric with a residue."""
  return {m.name: m.min_gap for m in metrics() if m.has_residue}


def labels() -> dict[str, str]:
  """{score: its name in the sweep report}."""
  return {m.name: m.label or m.name for m in metrics()}


def columns(table: str) -> tuple[tuple[str, str, int], ...]:
  """report.md's (header, record key, digits) of `table`, in rank order."""
  found = [column for m in metrics() for column in m.columns if column.table == table]
  return tuple((c.label, c.key, c.digits) for c in sorted(found, key=lambda c: c.rank))
