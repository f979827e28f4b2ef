"""The summary.json of three reference studies, compared with the kept golden copies.

A refactoring of the runner, the tasks, the method registry or the metrics must not change a
number: `configs/sed_mnist.py:runlocal` with every built-in method, the language-model study
`configs/sed_qa.py:runlocal`, and `configs/sed_mnist.py:runlocal,remedy=1` (remedies,
detection and the trade-off sweep) must give the summaries in tests/golden/, times aside. The
image studies run without the comparison protocol (`protocol=0`: 10 targets, no tuning, control
or specificity, which have tests of their own), to keep this test at about two minutes.

A change that is meant to change results regenerates them, and its commit says why:

    UNLEARN_JAX_UPDATE_GOLDEN=1 python -m pytest -q tests/test_golden.py
"""

from __future__ import annotations

import json
import math
import os

import pytest

from unlearn_jax import api, study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden")
UPDATE = os.environ.get("UNLEARN_JAX_UPDATE_GOLDEN") == "1"
# Relative tolerance: the studies are deterministic on one machine; this only absorbs the
# rounding of a number written to JSON and read back.
RTOL = 1e-9

STUDIES = {
    "image_all": ("configs/sed_mnist.py:runlocal,protocol=0", {"methods": ("all",)}),
    "qa": ("configs/sed_qa.py:runlocal", {}),
    "remedy": ("configs/sed_mnist.py:runlocal,remedy=1,protocol=0", {}),
}


def is_time(key: str) -> bool:
  """Keys that hold a measured time (they differ between runs)."""
  return any("time" in part or part.endswith("_s") for part in key.split("."))


def flatten(tree, prefix: str = "") -> dict:
  """{dotted.key: leaf} of a JSON tree; list items are keyed by their index."""
  items = tree.items() if isinstance(tree, dict) else (
      enumerate(tree) if isinstance(tree, list) else None)
  if items is None:
    return {prefix.rstrip("."): tree}
  out = {}
  for key, value in items:
    out.update(flatten(value, f"{prefix}{key}."))
  return out


def differences(expected: dict, got: dict) -> list[str]:
  """Keys whose values differ (times aside), missing or unexpected."""
  expected = {k: v for k, v in flatten(expected).items() if not is_time(k)}
  got = {k: v for k, v in flatten(got).items() if not is_time(k)}
  problems = [f"missing {k}" for k in expected if k not in got]
  problems += [f"unexpected {k}" for k in got if k not in expected]
  for key, value in expected.items():
    if key not in got:
      continue
    other = got[key]
    if isinstance(value, float) or isinstance(other, float):
      same = (value is not None and other is not None and (
          (math.isnan(value) and math.isnan(other)) or math.isclose(value, other, rel_tol=RTOL,
                                                                   abs_tol=1e-12)))
    else:
      same = value == other
    if not same:
      problems.append(f"{key}: expected {value!r}, got {other!r}")
  return problems


def test_flatten_and_differences_see_a_changed_number_and_ignore_times():
  old = {"methods": {"salun": {"residue": {"margin": 0.5}, "time_s": 3.0}}, "seeds": [0]}
  new = {"methods": {"salun": {"residue": {"margin": 0.5000001}, "time_s": 9.0}}, "seeds": [0]}
  assert differences(old, old) == []
  assert differences(old, {**old, "methods": {"salun": {**old["methods"]["salun"],
                                                        "time_s": 9.0}}}) == []
  assert differences(old, new) == [
      "methods.salun.residue.margin: expected 0.5, got 0.5000001"]
  assert differences(old, {"seeds": [0]}) == ["missing methods.salun.residue.margin"]
  assert differences({"x": float("nan")}, {"x": float("nan")}) == []


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_study_summary_equals_its_golden_copy(name, tmp_path):
  spec, overrides = STUDIES[name]
  config = api.load_config(os.path.join(ROOT, spec))
  for key, value in overrides.items():
    config[key] = value
  cwd = os.getcwd()
  os.chdir(ROOT)  # dataset paths in the configs are relative to the repository
  try:
    study.run(config, str(tmp_path / name))
  finally:
    os.chdir(cwd)
  with open(tmp_path / name / "report" / "summary.json") as f:
    summary = json.load(f)
  path = os.path.join(GOLDEN, f"{name}.json")
  if UPDATE:
    with open(path, "w") as f:
      json.dump(summary, f, indent=1, sort_keys=True)
    pytest.skip(f"wrote {path}")
  with open(path) as f:
    expected = json.load(f)
  problems = differences(expected, summary)
  assert not problems, f"{len(problems)} difference(s) from {path}:\n" + "\n".join(problems[:40])
