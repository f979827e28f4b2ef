"""Residue aggregates beyond the image evaluator (the reconstruction track), and the populations
of the across-seed attacks for models with their own residue references (SISA's ensembles)."""

import ml_collections
import numpy as np
import pytest

from unlearn_jax import recon_track
from unlearn_jax.evaluate import across_seeds, mia, residue

AGGREGATE_KEYS = ("residue", "residue_median", "residue_ratio_of_sums", "residue_defined",
                  "residue_undefined")


def _recon_inputs():
  """Four targets: one with original ≈ clean (undefined at min_gap 0.05), one whose gap (0.06)
  is just above the floor and whose ratio (≈ 6.7) would carry a mean on its own."""
  original = np.array([0.90, 0.80, 0.50, 0.46])
  clean = np.array([0.30, 0.40, 0.49, 0.40])
  model = np.array([0.60, 0.40, 0.70, 0.80])
  results = {name: {"target_ssim": ssim, "heldout_ssim": np.full(4, 0.3),
                    "matches": np.zeros((4, 8, 8, 1)), "time_s": np.float64(1.0)}
             for name, ssim in (("original", original), ("clean", clean), ("m", model))}
  track = recon_track.Track(train={}, target_ids=np.array([10, 11, 12, 13]),
                            heldout=np.zeros((4, 8, 8, 1), np.uint8), num_classes=2)
  config = ml_collections.ConfigDict({"eval": {"min_gap": {"recon_ssim": 0.05}},
                                      "recon": {"threshold": 0.5}})
  return results, track, config, (model, original, clean)


def test_recon_track_records_the_residue_aggregates_of_recon_ssim():
  results, track, config, (model, original, clean) = _recon_inputs()
  records, per_target = recon_track._records(results, track, config)  # pylint: disable=protected-access
  record = records["m"]
  for key in AGGREGATE_KEYS:
    assert set(record[key]) == {"recon_ssim"}, key
  # Target 12 is undefined (gap 0.01); over 10, 11, 13: ratios 0.5, 0, (0.8-0.4)/0.06.
  ratios = np.array([0.5, 0.0, 0.4 / 0.06])
  assert record["residue_undefined"]["recon_ssim"] == 1
  assert record["residue_defined"]["recon_ssim"] == 3
  assert record["residue"]["recon_ssim"] == pytest.approx(ratios.mean())
  assert record["residue_median"]["recon_ssim"] == pytest.approx(0.5)
  assert record["residue_ratio_of_sums"]["recon_ssim"] == pytest.approx((0.3 + 0.0 + 0.4)
                                                                        / (0.6 + 0.4 + 0.06))
  assert record["residue_abs"]["recon_ssim"] == pytest.approx(np.mean(model - clean))
  expected = residue.summaries(model, original, clean, 0.05)
  assert record["residue_ratio_of_sums"]["recon_ssim"] == expected["ratio_of_sums"]
  # The references: original 1 and clean 0 by every aggregate.
  for key in ("residue", "residue_median", "residue_ratio_of_sums"):
    assert records["original"][key]["recon_ssim"] == pytest.approx(1.0)
    assert records["clean"][key]["recon_ssim"] == 0.0
  assert per_target[("m", 12)][0] == 0.70 and np.isnan(per_target[("m", 12)][1])

  # Merged into a seed's records, the aggregates join the main study's, keys unrenamed.
  main = {"m": {key: {"margin": 0.25} for key in AGGREGATE_KEYS}}
  recon_track.merge(main, [], records, per_target)
  for key in AGGREGATE_KEYS:
    assert main["m"][key]["margin"] == 0.25
    assert main["m"][key]["recon_ssim"] == record[key]["recon_ssim"]


SEEDS = list(range(8))
TARGETS = (3, 5, 7, 9, 11)


def _across_seed_inputs():
  """φ over 8 seeds: single CNNs `retrain`, `clean` and a method `m` around 0; the ensembles
  `sisa`, `sisa_original`, `sisa_clean` around 6 (another scale, as a mean softmax has)."""
  rng = np.random.default_rng(0)
  centres = {"retrain": 0.0, "clean": 0.0, "m": 0.3, "original": 3.0,
             "sisa": 6.0, "sisa+nbr": 6.0, "sisa_original": 8.0, "sisa_clean": 6.0}
  phi = {name: centre + rng.normal(size=(len(SEEDS), len(TARGETS)))
         for name, centre in centres.items()}
  per_target = [{"model": name, "seed": seed, "target_id": target, "phi": float(values[s, t])}
                for name, values in phi.items() for s, seed in enumerate(SEEDS)
                for t, target in enumerate(TARGETS)]
  pair = {"original": "sisa_original", "clean": "sisa_clean"}
  summary = {"seeds": SEEDS, "methods": {name: {} for name in centres},
             "residue_references": {name: dict(pair) for name in
                                    ("sisa", "sisa+nbr", "sisa_original", "sisa_clean")}}
  return summary, per_target, phi


def test_ensembles_are_attacked_against_their_own_clean_reference():
  summary, per_target, phi = _across_seed_inputs()
  across_seeds.add(summary, per_target, epsilon_min_seeds=8)
  found = summary["methods"]
  for name in ("sisa", "sisa+nbr", "sisa_original"):
    # vs_clean: the ensemble's seeds against sisa_clean's; no ensemble has a vs_retrain.
    for key in ("epsilon", "epsilon_capped", "forgetting_quality", "ulira_acc"):
      assert set(found[name][key]) == {"vs_clean"}, (name, key)
    expected = mia.epsilon_estimate(phi[name], phi["sisa_clean"])
    assert found[name]["epsilon"]["vs_clean"] == pytest.approx(np.nanmean(expected.epsilons))
    assert found[name]["epsilon_capped"]["vs_clean"] == expected.capped
    assert found[name]["ulira_acc"]["vs_clean"] == pytest.approx(
        mia.u_lira(phi[name], phi["sisa_clean"]).accuracy)
  # An ensemble drawn like sisa_clean is not told apart from it; against the single CNNs'
  # `clean` (another scale) it would be, at every target.
  assert found["sisa"]["ulira_acc"]["vs_clean"] < 0.8
  assert mia.u_lira(phi["sisa"], phi["clean"]).accuracy == 1.0
  assert not found["sisa_clean"]  # its own reference: nothing to compare
  assert summary["across_seeds"]["clean_reference"] == {
      name: "sisa_clean" for name in ("sisa", "sisa+nbr", "sisa_original", "sisa_clean")}
  # Single CNNs keep both populations.
  for name in ("m", "original"):
    assert set(found[name]["ulira_acc"]) == {"vs_retrain", "vs_clean"}
    assert found[name]["ulira_acc"]["vs_clean"] == pytest.approx(
        mia.u_lira(phi[name], phi["clean"]).accuracy)
  assert set(found["retrain"]["ulira_acc"]) == {"vs_clean"}


def test_without_residue_references_every_model_is_attacked_against_retrain_and_clean():
  summary, per_target, phi = _across_seed_inputs()
  del summary["residue_references"]
  across_seeds.add(summary, per_target, epsilon_min_seeds=8)
  assert set(summary["methods"]["sisa"]["ulira_acc"]) == {"vs_retrain", "vs_clean"}
  assert summary["methods"]["sisa"]["ulira_acc"]["vs_clean"] == pytest.approx(
      mia.u_lira(phi["sisa"], phi["clean"]).accuracy)
  assert "clean_reference" not in summary["across_seeds"]
