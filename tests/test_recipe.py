"""One recipe per reference model: the rows it trains on, its seed, its initialisation key and its
checkpoint folder; the study, the script API and the ensembles all train from it."""

import ast
import os

import jax
import numpy as np
import pytest

from unlearn_jax import defaults, recipe
from unlearn_jax.data import sed as sed_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sed_and_config():
  config = defaults.base_config()
  config.sed.num_targets, config.sed.similar_per_target, config.sed.block = 4, 2, 2
  config.eval.lira.num_models, config.eval.lira.num_heldout = 4, 6
  rng = np.random.default_rng(0)

  def split(n, first_id):
    return {"image": rng.integers(0, 256, (n, 8, 8, 1)).astype(np.uint8),
            "label": (np.arange(n) % 3).astype(np.int32), "id": np.arange(first_id, first_id + n)}

  return sed_lib.build({"train": split(60, 0), "test": split(30, 60)}, config.sed), config


def _keys_equal(a, b):
  return np.array_equal(jax.random.key_data(a), jax.random.key_data(b))


def test_each_reference_trains_on_its_rows_with_its_seed_in_its_folder():
  sed, config = _sed_and_config()
  config.floor_seed_offset = 1000
  expected = {"original": (sed.train, 3), "retrain": (sed.retain, 3), "clean": (sed.rest, 3),
              "clean_alt": (sed.rest, 1003)}
  for name, (data, seed) in expected.items():
    reference = recipe.reference(sed.train, config, name, 3)
    for key in ("image", "label", "id", "kind"):
      np.testing.assert_array_equal(reference.data[key], data[key], err_msg=f"{name} {key}")
    assert reference.seed == seed and reference.name == f"{name}/seed_3"
    # Existing workdirs resume from these folders: they must never move.
    assert reference.checkpoint_dir("/w") == f"/w/checkpoints/{name}/seed_3"
    assert reference.checkpoint_dir(None) is None
    assert _keys_equal(reference.init_key, jax.random.fold_in(jax.random.key(seed), 1))
  assert len(recipe.reference(sed.train, config, "clean", 0).data["id"]) < len(sed.retain["id"])
  with pytest.raises(ValueError, match="unknown reference 'orignal'"):
    recipe.reference(sed.train, config, "orignal", 0)


def test_the_other_models_keep_their_folders_and_seeds():
  sed, config = _sed_and_config()
  remedy = recipe.retrained("retrain+nbr", sed.rest, 2)
  assert (remedy.seed, remedy.folder) == (2, "retrain+nbr/seed_2")
  config.sed.seed = 5
  probe, candidates = recipe.selection_probe(config, sed.train)
  assert (probe.seed, probe.folder) == (5, "selection/seed_5")
  assert len(probe.data["label"]) + len(candidates) == len(sed.train["label"])
  lira = recipe.lira(sed, config)
  assert lira.folder == "lira/models4_heldout6_seed10000"
  assert [m.seed for m in lira.members] == [10000, 10001, 10002, 10003]
  assert all(m.folder is None for m in lira.members)  # the ensemble places their checkpoints
  assert _keys_equal(recipe.method_rng(4), jax.random.fold_in(jax.random.key(4), 2))


def test_lira_members_are_complementary_pairs_on_r():
  sed, config = _sed_and_config()
  lira = recipe.lira(sed, config)
  # Every target, and every held-out candidate, is IN for exactly one model of each pair.
  np.testing.assert_array_equal(lira.target_in[0::2], ~lira.target_in[1::2])
  np.testing.assert_array_equal(lira.heldout_in[0::2], ~lira.heldout_in[1::2])
  groups = [np.sum(sed.train["group"] == t) for t in sed.target_ids]
  for k, member in enumerate(lira.members):
    size = (len(sed.rest["label"]) + sum(np.asarray(groups)[lira.target_in[k]])
            + int(lira.heldout_in[k].sum()))
    assert len(member.data["label"]) == len(member.data["image"]) == size
    np.testing.assert_array_equal(member.data["image"][:len(sed.rest["label"])],
                                  sed.rest["image"])


def test_the_script_api_does_not_import_the_study():
  # references.py trains the study's models from the shared recipe, not through study.py.
  tree = ast.parse(open(os.path.join(ROOT, "unlearn_jax", "references.py")).read())
  imported = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom):
      imported |= {f"{node.module}.{alias.name}" for alias in node.names}
    elif isinstance(node, ast.Import):
      imported |= {alias.name for alias in node.names}
  assert "unlearn_jax.recipe" in imported
  assert not any(name.endswith("study") for name in imported), imported
