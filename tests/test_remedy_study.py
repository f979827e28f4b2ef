"""Remedies inside a study: +nbr/+wnbr/+dist runs, detection report, trade-off sweep."""

import functools
import json
import os

import numpy as np
import pytest
from skimage.metrics import structural_similarity
from sklearn import metrics as sk_metrics

import unlearn_jax as uj
from unlearn_jax import config as config_lib
from unlearn_jax import defaults, methods, remedy_track, study
from unlearn_jax.data import pipeline
from unlearn_jax.data import sed as sed_lib


reference_ssim = functools.partial(structural_similarity, gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False, data_range=1.0, channel_axis=-1)


def reference_detection(workdir: str):
  """The study's detection recomputed without its code: scikit-image SSIM of every target against
  every non-target training sample of the study's SED, and provenance.

  Returns (candidate rows, (T, N) SSIM, (T, N) bool: candidate is a similar sample of target t).
  """
  sed = uj.build_sed(uj.read_config(workdir), workdir)
  ids, images = sed.train["id"], sed.train["image"] / 255.0
  rows = np.array([int(np.flatnonzero(ids == t)[0]) for t in sed.target_ids])
  candidates = np.array([n for n in range(len(ids)) if n not in set(rows)])
  ssim = np.array([[reference_ssim(images[r], images[c]) for c in candidates] for r in rows])
  truth = np.array([[sed.train["group"][c] == ids[r] and sed.train["kind"][c] == sed_lib.SIMILAR
                     for c in candidates] for r in rows])
  return candidates, ssim, truth


def tiny_config(data_dir: str):
  import tiny_study  # pylint: disable=g-import-not-at-top
  config = tiny_study.get_config(f"data_dir={data_dir}")
  config.recon.enabled = False
  config.eval.lira.num_models = 0
  config.eval.relearn.max_steps = 2
  config.eval.svc_max_train = 0
  return config


def test_ground_truth_retrain_nbr_is_the_clean_model(tfds_data_dir, tmp_path):
  config = tiny_config(tfds_data_dir)
  config.methods = ("retrain+nbr",)
  config.remedy.ground_truth = True
  summary = study.run(config, str(tmp_path))
  assert summary["status"] == {"retrain+nbr/seed_0": "ok"}
  nbr, clean = summary["methods"]["retrain+nbr"], summary["methods"]["clean"]
  # Trained on exactly R with the clean reference's initialisation and batch order: the same
  # model, so every behavioural number is identical (not merely close).
  for key in ("acc", "loss", "margin", "confidence", "acc_same_class"):
    assert nbr[key] == clean[key], key
  assert nbr["param_l2"]["to_clean"] == 0.0
  assert nbr["remedy"]["precision"] == 1.0 and nbr["remedy"]["recall"] == 1.0
  assert nbr["remedy"]["removed"] == config.sed.num_targets * config.sed.similar_per_target
  # Conventional retrain keeps the similar samples: it is not the clean model.
  assert summary["methods"]["retrain"]["param_l2"]["to_clean"] > 0.0


def test_remedy_enabled_reports_detection_and_tradeoff(tfds_data_dir, tmp_path):
  config = tiny_config(tfds_data_dir)
  config.methods = ("finetune",)
  config.remedy.enabled = True
  config.remedy.methods = ("finetune",)
  config.remedy.sweep_methods = ("finetune",)
  config.remedy.sweep_top_k = (2, 6)
  summary = study.run(config, str(tmp_path))
  assert set(summary["status"].values()) == {"ok"}, summary["status"]
  assert set(summary["detection"]) == set(config.remedy.measures)
  # SSIM detection, recomputed: neighbours are the candidates with SSIM >= tau (the default
  # rule); precision and recall are per-target means, AUC ranks similar samples above the rest.
  assert (config.remedy.rule, config.remedy.measure) == ("tau", "ssim")
  candidates, ssim, truth = reference_detection(str(tmp_path))
  selected = ssim >= config.remedy.tau
  hits = (selected & truth).sum(1)
  stats = summary["detection"]["ssim"]
  assert stats["precision"] == pytest.approx(np.mean(hits[selected.any(1)]
                                                     / selected.sum(1)[selected.any(1)]))
  assert stats["recall"] == pytest.approx(np.mean(hits / truth.sum(1)))
  assert stats["auc"] == pytest.approx(sk_metrics.roc_auc_score(truth.ravel(), ssim.ravel()),
                                       abs=1e-9)
  # Block-masked copies are easy to find by pixels: SSIM ranks them far above other samples.
  assert stats["auc"] > 0.9
  for name in ("finetune+nbr", "finetune+wnbr", "finetune+dist"):
    assert name in summary["methods"], name
    assert "residue" in summary["methods"][name]
  # The sweep is reported in remedy.tradeoff, not as methods of the main table.
  assert not any("@k=" in name for name in summary["methods"])
  points = {p["model"]: p for p in summary["remedy"]["tradeoff"]}
  assert {"finetune", "finetune+nbr@k=2", "finetune+nbr@k=6"} <= set(points)
  assert points["finetune"]["k"] == 0
  # The sweep at k removes the union of every target's k highest-SSIM candidates.
  for k in (2, 6):
    top = np.argsort(-ssim, axis=1, kind="stable")[:, :k]
    assert points[f"finetune+nbr@k={k}"]["removed"] == len(set(candidates[top].ravel())), k
  # +nbr removes the union of the neighbour sets; precision and recall against provenance.
  methods_ = summary["methods"]
  union = selected.any(0)
  similar = truth.any(0)
  assert methods_["finetune+nbr"]["remedy"] == pytest.approx({
      "removed": union.sum(), "precision": (union & similar).sum() / union.sum(),
      "recall": (union & similar).sum() / truth.sum()})
  # +dist removes as many samples as +nbr.
  assert methods_["finetune+dist"]["remedy"]["removed"] == methods_["finetune+nbr"]["remedy"][
      "removed"]
  report = os.path.join(str(tmp_path), "report")
  assert os.path.getsize(os.path.join(report, "plots", "remedy_tradeoff.png")) > 1000
  with open(os.path.join(report, "report.md")) as f:
    text = f.read()
  assert "## Detection of similar samples" in text and "## Remedy trade-off" in text
  with open(os.path.join(report, "summary.json")) as f:
    assert json.load(f)["remedy"]["tradeoff"]


def _toy_sed() -> sed_lib.SED:
  ids = np.arange(8)
  kind = np.array([0, 1, 1, 2, 2, 0, 1, 2], np.int8)
  group = np.array([0, 0, 0, -1, -1, 5, 5, -1])
  train = {"image": np.zeros((8, 2, 2, 1), np.uint8), "label": np.arange(8) % 2,
           "id": ids, "kind": kind, "group": group}
  test = {key: value[:2] for key, value in train.items()}
  return sed_lib.SED(train=train, test=test, target_ids=np.array([0, 5]))


def test_weighted_sets_split_each_neighbour_between_forget_and_retain():
  sed = _toy_sed()
  forget, retain = remedy_track.unlearn_sets(sed, "wnbr", np.array([1, 3, 6]),
                                             np.array([1.0, 0.25, 0.5], np.float32))
  assert list(forget["id"]) == [0, 1, 3, 5, 6]
  np.testing.assert_allclose(forget["sample_weight"], [1, 1, 0.25, 1, 0.5])
  # A neighbour of weight 1 is gone from the retained data; the others keep 1 - w.
  assert list(retain["id"]) == [2, 3, 4, 6, 7]
  np.testing.assert_allclose(retain["sample_weight"], [1, 0.75, 1, 0.5, 1])
  forget, retain = remedy_track.unlearn_sets(sed, "nbr", np.array([1, 3]), np.ones(2))
  assert list(forget["id"]) == [0, 1, 3, 5] and list(retain["id"]) == [2, 4, 6, 7]
  assert "sample_weight" not in forget


def test_sampler_multiplies_sample_weights():
  data = {"image": np.zeros((3, 1, 1, 1), np.uint8), "label": np.zeros(3, np.int32),
          "sample_weight": np.array([1.0, 0.5, 0.25], np.float32)}
  batch = pipeline.EpochSampler(data, 4, seed=0, weight=-1.0).batch(0)
  assert sorted(batch["weight"].tolist()) == [-1.0, -0.5, -0.25, 0.0]  # last row: filler


def test_remedy_names_in_configs():
  assert methods.split_remedy("salun+nbr") == ("salun", "nbr")
  assert methods.resolve(("finetune+wnbr", "finetune")) == ("finetune+wnbr", "finetune")
  with pytest.raises(config_lib.ConfigError, match=r"\+nbr, \+wnbr, \+dist"):
    methods.resolve(("finetune+xyz",))
  with pytest.raises(config_lib.ConfigError, match="unknown name"):
    methods.resolve(("nomethod+nbr",))
  arg = config_lib.parse_arg("methods=finetune+nbr+grad_ascent+remedy_x,remedy=1",
                             **config_lib.STUDY_VARIANTS)
  config = defaults.base_config()
  config_lib.apply_study_variants(config, arg, runlocal_sizes=(10, 10), runlocal_epochs=1)
  assert config.methods == ("finetune+nbr", "grad_ascent", "remedy_x")
  assert config.remedy.enabled
  assert remedy_track.parse("finetune+nbr@k=10") == ("finetune", "nbr", 10)
  assert remedy_track.study_names(config) == (
      "retrain+nbr", "retrain+wnbr", "retrain+dist", "finetune+nbr", "finetune+wnbr",
      "finetune+dist")
