"""The LM learning-rate selection: its rule on constructed cases, and a run on held-out targets."""

import json
import math
import os

import pytest

from unlearn_jax import config as config_lib
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.lm import data as qa_data
from unlearn_jax.lm import defaults as lm_defaults
from unlearn_jax.lm import select_lr


def tiny_config():
  import tiny_qa  # pylint: disable=g-import-not-at-top
  return tiny_qa.get_config()


def test_choose_takes_the_closest_lr_within_the_budget():
  candidates = {1e-4: {"distance": 0.9, "utility": 1.0},
                1e-3: {"distance": 0.4, "utility": 0.95},
                3e-3: {"distance": 0.1, "utility": 0.5},  # closest, but breaks the budget
                1e-2: {"distance": math.inf, "utility": -math.inf}}  # diverged
  assert select_lr.choose(candidates, utility_floor=0.9) == (1e-3, True)
  # A tie goes to the smaller lr.
  candidates[1e-4]["distance"] = 0.4
  assert select_lr.choose(candidates, utility_floor=0.9) == (1e-4, True)
  # Nothing within the budget: the highest utility, flagged.
  assert select_lr.choose(candidates, utility_floor=1.5) == (1e-4, False)
  with pytest.raises(ValueError, match="no candidate"):
    select_lr.choose({}, 0.0)


def _rows(values):
  """Per-target rows as lm.evaluate.evaluate writes them; `values`: {model: [(nll, min_k), ...]}."""
  rows = []
  for model, per_target in values.items():
    for target, (nll, min_k) in enumerate(per_target):
      row = {score: float("nan") for score in lm_defaults.RESIDUE_SCORES}
      rows.append({**row, "model": model, "target_id": target, "nll": nll, "min_k": min_k})
  return rows


def test_distance_to_clean_hand_values():
  rows = _rows({"original": [(0.0, -0.1), (0.0, -0.1)],
                "clean": [(3.0, -0.15), (1.0, -0.12)],  # min_k gap 0.035 < min_gap: left out
                "m": [(4.0, -3.0), (1.0, -0.2)]})
  min_gap = {score: 0.2 for score in lm_defaults.RESIDUE_SCORES}
  got = select_lr.distance_to_clean(rows, "m", min_gap)
  # nll: (|4-3| + |1-1|) / (|0-3| + |0-1|) = 1/4; overshooting past clean counts as distance.
  assert got["nll"] == pytest.approx(0.25)
  assert math.isnan(got["min_k"]) and math.isnan(got["rouge_l"])  # no gap / no values
  assert got["mean"] == pytest.approx(0.25)
  assert select_lr.distance_to_clean(rows, "original", min_gap)["nll"] == pytest.approx(1.0)
  assert select_lr.distance_to_clean(rows, "clean", min_gap)["mean"] == 0.0


def test_held_out_config_refuses_the_evaluated_seed():
  config = tiny_config()
  with pytest.raises(config_lib.ConfigError, match="sed_seed"):
    select_lr.held_out_config(config, int(config.qa.seed))
  held_out = select_lr.held_out_config(config, 5)
  assert held_out.qa.seed == 5 and config.qa.seed == 0


def test_selection_runs_on_held_out_targets(tmp_path):
  config = tiny_config()
  config.train.epochs = 40
  results = select_lr.run(config, str(tmp_path), sed_seed=1, grid=(1e-4, 3e-3),
                          methods=("grad_ascent",))
  # Trained and scored on the held-out SED: none of the evaluated study's targets is in it.
  evaluated = qa_data.build_offline(num_targets=3, similar_per_target=3, num_rest=40,
                                    num_test=20, probes_per_target=2, seed=0)
  held_out = json.loads((tmp_path / "config.json").read_text())
  assert held_out["qa"]["seed"] == 1 and results["sed_seed"] == 1
  with open(tmp_path / "data" / "qa.jsonl") as f:
    questions = {json.loads(line)["question"] for line in f}
  evaluated_targets = evaluated.train["question"][evaluated.train["kind"] == sed_lib.TARGET]
  assert len(evaluated_targets) == 3 and not questions & set(evaluated_targets)
  result = results["methods"]["grad_ascent"]
  candidates = {float(lr): c for lr, c in result["candidates"].items()}
  assert set(candidates) == {1e-4, 3e-3}
  floor = results["references"]["original"]["utility"] - select_lr.UTILITY_BUDGET
  assert (result["chosen"], result["within_budget"]) == select_lr.choose(candidates, floor)
  # A larger ascent step moves the targets further from the original (toward clean and past).
  assert candidates[3e-3]["distances"]["nll"] != candidates[1e-4]["distances"]["nll"]
  for lr in (1e-4, 3e-3):
    assert os.path.isdir(tmp_path / "checkpoints" / "grad_ascent" / f"lr_{lr:g}" / "seed_0")
  table = (tmp_path / "report" / "select_lr.md").read_text().splitlines()
  assert [line.count("*") for line in table if line.startswith("| grad_ascent |")] == [1]


def test_method_defaults_are_the_selected_rates():
  from unlearn_jax import methods  # pylint: disable=g-import-not-at-top
  configs = methods.default_configs(track="lm")
  with_lr = {name for name in methods.builtin_names("lm") if "lr" in configs[name]}
  assert with_lr == set(lm_defaults.METHOD_LR)  # retrain uses config.train
  for name in with_lr:
    assert configs[name].lr == lm_defaults.METHOD_LR[name] and configs[name].lr in select_lr.GRID
