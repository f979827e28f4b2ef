"""End-to-end tests of a (tiny) study: files, provenance, determinism, resume and failures."""

import json
import math
import os

import jax
import numpy as np
import pytest

from conftest import mocked_tfds_data, without_times
from unlearn_jax import config as config_lib
from unlearn_jax import methods, recipe, study, train
from unlearn_jax import workdir as workdir_lib
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.data import sources
from unlearn_jax.tasks import image

def tiny_config(data_dir: str):
  """A study small enough for a test (tests/tiny_study.py)."""
  import tiny_study  # pylint: disable=g-import-not-at-top
  return tiny_study.get_config(f"data_dir={data_dir}")


def same(a, b) -> bool:
  """Exact equality of two summaries, NaN equal to NaN (undefined residues)."""
  return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.fixture(scope="module")
def first_run(tfds_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("study_a"))
  return workdir, study.run(tiny_config(tfds_data_dir), workdir)


def test_workdir_contract(first_run):
  workdir, summary = first_run
  for path in ("config.json", "data/provenance.npz", "metrics.jsonl", "report/summary.json",
               "report/results.csv", "report/per_target.csv", "report/report.md"):
    assert os.path.exists(os.path.join(workdir, path)), path
  for name in ("original", "retrain", "clean", "clean_alt", "finetune", "grad_ascent",
               "random_label"):
    assert os.path.isdir(os.path.join(workdir, "checkpoints", name, "seed_0")), name
    record = summary["methods"][name]
    assert set(record["acc"]) == {"target", "similar", "rest", "test"}
    assert set(record["residue"]) >= {"loss", "confidence", "margin", "mia"}
  assert set(summary["status"].values()) == {"ok"}
  assert summary["sed"]["similar_per_target"] == 3
  with open(os.path.join(workdir, "report/summary.json")) as f:
    assert json.load(f)["methods"].keys() == summary["methods"].keys()
  original = summary["methods"]["original"]["residue"]
  for score in ("loss", "confidence", "margin"):  # residue of the original is 1 by definition
    if summary["methods"]["original"]["residue_defined"][score]:
      assert original[score] == pytest.approx(1.0)
  with open(os.path.join(workdir, "report/results.csv")) as f:
    assert len(f.readlines()) == 1 + 7
  assert "| finetune |" in open(os.path.join(workdir, "report/report.md")).read()


def test_provenance_is_exact(first_run, tfds_data_dir):
  workdir, _ = first_run
  saved = sed_lib.load_provenance(os.path.join(workdir, "data/provenance.npz"))
  train = saved["split"] == 0
  kinds, ids, groups = saved["kind"][train], saved["id"][train], saved["group"][train]
  targets = ids[kinds == sed_lib.TARGET]
  assert len(targets) == 4 and np.sum(kinds == sed_lib.SIMILAR) == 12
  assert set(groups[kinds == sed_lib.SIMILAR]) == set(targets)
  # What each reference trained on, rebuilt from the config, matches provenance by id.
  config = tiny_config(tfds_data_dir)
  context = image.ImageTask.build(config, workdir)
  assert set(context.sed.retain["id"]) == set(ids) - set(targets)
  assert set(context.sed.rest["id"]) == set(ids[kinds == sed_lib.REST])
  assert set(context.sed.forget["id"]) == set(targets)


def test_same_seed_gives_identical_summary(first_run, tfds_data_dir, tmp_path):
  _, summary = first_run
  again = study.run(tiny_config(tfds_data_dir), str(tmp_path / "study_b"))
  assert same(without_times(again), without_times(summary))


def test_rerun_resumes_without_training(first_run, tfds_data_dir):
  workdir, summary = first_run
  again = study.run(tiny_config(tfds_data_dir), workdir)
  assert same(again, summary)  # times come back from info.json, nothing is retrained
  for name in ("original", "finetune"):
    with open(os.path.join(workdir, "checkpoints", name, "seed_0", "info.json")) as f:
      assert json.load(f)["steps_run"] > 0  # the first run's record was kept


def test_other_config_in_same_workdir_is_refused(first_run, tfds_data_dir):
  workdir, _ = first_run
  config = tiny_config(tfds_data_dir)
  config.sed.ratio = 0.5
  with pytest.raises(config_lib.ConfigError, match="sed.ratio"):
    study.run(config, workdir)


def test_steps_per_call_trains_the_same_reference(tfds_data_dir, tmp_path, monkeypatch):
  # config.train.steps_per_call reaches train.fit from the study's reference training, and a
  # lax.scan over 4 steps per call gives the parameters of one step per call, bit for bit.
  real_fit, asked = train.fit, []

  def recording_fit(*args, **kwargs):
    asked.append(kwargs.get("steps_per_call", 1))
    return real_fit(*args, **kwargs)

  monkeypatch.setattr(train, "fit", recording_fit)
  params = {}
  for steps_per_call in (1, 4):
    config = tiny_config(tfds_data_dir)
    # A call never spans a logging or checkpoint step: with both far apart, calls run 4 steps.
    config.train.log_every = config.train.checkpoint_every = 1000
    config.train.steps_per_call = steps_per_call
    task = image.ImageTask.build(config, str(tmp_path / f"steps_per_call_{steps_per_call}"))
    state, _ = task.fit(recipe.reference(task.train, config, "clean", 0))
    assert int(state.step) > 4  # several calls of 4 steps (and a remainder)
    params[steps_per_call] = jax.device_get(state.params)
  assert asked == [1, 4]
  jax.tree.map(np.testing.assert_array_equal, params[4], params[1])


def test_steps_per_call_may_change_in_an_existing_workdir(tfds_data_dir, tmp_path):
  # It changes how steps are dispatched, not what they compute; workdirs written before the
  # field existed lack it.
  saved = json.loads(tiny_config(tfds_data_dir).to_json())
  del saved["train"]["steps_per_call"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  config = tiny_config(tfds_data_dir)
  config.train.steps_per_call = 4
  workdir_lib.prepare(config, str(tmp_path))
  assert json.loads((tmp_path / "config.json").read_text())["train"]["steps_per_call"] == 4
  config.train.epochs += 1  # a field that changes the models is still refused
  with pytest.raises(config_lib.ConfigError, match="train.epochs"):
    workdir_lib.prepare(config, str(tmp_path))


def test_a_field_added_since_joins_an_existing_workdir_only_at_its_default(tfds_data_dir,
                                                                         tmp_path):
  # A workdir written before `sed.similarity` existed: the default changes no SED, another
  # value would (if it were used) and is refused.
  saved = json.loads(tiny_config(tfds_data_dir).to_json())
  del saved["sed"]["similarity"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  workdir_lib.prepare(tiny_config(tfds_data_dir), str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps(saved))
  config = tiny_config(tfds_data_dir)
  config.sed.similarity = "embedding"
  with pytest.raises(config_lib.ConfigError, match="sed.similarity"):
    workdir_lib.prepare(config, str(tmp_path))


def test_failed_method_keeps_the_others(tfds_data_dir, tmp_path, monkeypatch):
  real_get = methods.get

  def broken(state, run, cfg, rng):
    raise RuntimeError("broken on purpose")

  monkeypatch.setattr(methods, "get", lambda name, track="image": (
      broken if name == "grad_ascent" else real_get(name, track)))
  config = tiny_config(tfds_data_dir)
  config.methods = ("grad_ascent", "finetune")
  summary = study.run(config, str(tmp_path / "study_c"))
  assert summary["status"]["grad_ascent/seed_0"].startswith("failed: RuntimeError")
  assert summary["status"]["finetune/seed_0"] == "ok"
  assert summary["methods"]["finetune"]["status"] == "ok"
  failed = summary["methods"]["grad_ascent"]
  assert failed["status"] == "failed" and "acc" not in failed
  assert "broken on purpose" in failed["errors"]["seed_0"]
  report = (tmp_path / "study_c" / "report" / "report.md").read_text()
  assert "broken on purpose" in report


def test_diverged_method_is_reported_with_its_step(tfds_data_dir, tmp_path, monkeypatch):
  real_get = methods.get

  def diverging(state, run, cfg, rng):
    raise train.DivergedError("loss became non-finite at step 7", 7)

  monkeypatch.setattr(methods, "get", lambda name, track="image": (
      diverging if name == "random_label" else real_get(name, track)))
  config = tiny_config(tfds_data_dir)
  config.methods = ("random_label",)
  summary = study.run(config, str(tmp_path / "study_div"))
  entry = summary["methods"]["random_label"]
  assert entry["status"] == "diverged"
  assert entry["errors"]["seed_0"].startswith("diverged at step 7")
  assert summary["methods"]["original"]["status"] == "ok"


def test_all_methods_run_in_one_study(tfds_data_dir, tmp_path):
  config = tiny_config(tfds_data_dir)
  config.methods = ("all",)
  config.unlearn.sisa.num_shards = 2  # 300 images: keep every shard's slices non-trivial
  summary = study.run(config, str(tmp_path / "study_all"))
  for name in methods.builtin_names():
    assert summary["methods"][name]["status"] == "ok", (name, summary["methods"][name])
    assert summary["status"][f"{name}/seed_0"] == "ok"
    if name != "retrain":
      assert summary["methods"][name]["time_vs_retrain"] > 0
  report = (tmp_path / "study_all" / "report" / "report.md").read_text()
  assert all(f"| {name} |" in report for name in methods.builtin_names())


def test_mocked_tfds_dataset_goes_through_the_same_pipeline(tmp_path):
  config = tiny_config(str(tmp_path / "unprepared"))
  config.dataset = "fashion_mnist"
  config.train_size = config.test_size = 0
  with mocked_tfds_data(64):
    summary = study.run(config, str(tmp_path / "study_d"))
  assert summary["dataset"] == "fashion_mnist"
  assert set(summary["status"].values()) == {"ok"}, summary["status"]
  # 64 mocked examples a split: D = 4 targets + 4 × 3 similar samples + the 60 other training
  # examples; every accuracy is finite and a whole number of its group's examples.
  provenance = sed_lib.load_provenance(str(tmp_path / "study_d" / "data" / "provenance.npz"))
  train = provenance["split"] == 0
  counts = {"target": int(np.sum(train & (provenance["kind"] == sed_lib.TARGET))),
            "similar": int(np.sum(train & (provenance["kind"] == sed_lib.SIMILAR))),
            "rest": int(np.sum(train & (provenance["kind"] == sed_lib.REST))),
            "test": int(np.sum(~train))}
  assert counts == {"target": 4, "similar": 12, "rest": 60, "test": 64}
  for name, record in summary["methods"].items():
    for group, n in counts.items():
      acc = record["acc"][group]
      assert np.isfinite(acc) and acc * n == pytest.approx(round(acc * n)), (name, group, acc)


def test_unprepared_dataset_fails_before_any_work(tmp_path, monkeypatch):
  # Neither a tfds copy nor the files scripts/install_datasets.sh installs.
  monkeypatch.setitem(sources.IDX_FOLDERS, "mnist", str(tmp_path / "not_installed"))
  config = tiny_config(str(tmp_path / "empty"))
  config.dataset = "mnist"
  with pytest.raises(sources.DatasetNotPreparedError, match="tfds build mnist"):
    study.run(config, str(tmp_path / "study_e"))
  assert not os.path.exists(tmp_path / "study_e" / "checkpoints")


def test_seeds_give_cis_and_every_attack(tfds_data_dir, tmp_path):
  config = tiny_config(tfds_data_dir)
  config.seeds, config.methods = (0, 1), ("finetune",)
  config.eval.epsilon_min_seeds = 2
  workdir = str(tmp_path / "seeds")
  with pytest.warns(UserWarning, match="fewer than 8"):
    summary = study.run(config, workdir)
  record = summary["methods"]["finetune"]
  assert record["num_seeds"] == 2
  for key in ("acc", "loss", "residue", "mia_auc", "lira_auc", "relearn_steps"):
    assert f"{key}_ci" in record, key
  assert np.isfinite(record["acc_ci"]["test"])
  assert record["acc_ci"] == record["ci95"]["acc"]  # `_ci` mirrors the `ci95` tree
  assert set(record["mia_auc_by_score"]) == {"loss", "confidence", "entropy",
                                             "modified_entropy"}
  for key in ("lira", "lira_auc", "lira_tpr", "mia_efficacy"):
    assert np.isfinite(record[key]["target"]), key
  assert set(record["epsilon"]) == {"vs_retrain", "vs_clean"}
  # U-LiRA fits a sigma per example: two seeds a population give n/a, not a number.
  assert math.isnan(record["ulira_acc"]["vs_clean"])
  assert summary["across_seeds"]["ulira_min_models"] == 8
  original = summary["methods"]["original"]
  # One level (tiny_study: 1.1 nats) for every model: the original (mean over the two seeds)
  # gets there in fewer steps than clean, which never saw T.
  assert original["relearn_steps"] < summary["methods"]["clean"]["relearn_steps"]
  assert original["param_l2"]["to_original"] == 0.0
  assert summary["methods"]["clean"]["residue"]["lira"] == pytest.approx(0.0, abs=1e-12)
  assert summary["across_seeds"]["num_models"] == 2
  with open(os.path.join(workdir, "report", "results.csv")) as f:
    rows = f.read().splitlines()
  assert len(rows) == 1 + 2 * 5  # (original, retrain, clean, clean_alt, finetune) × 2 seeds
  with open(os.path.join(workdir, "report", "per_target.csv")) as f:
    header = f.readline().strip().split(",")
  for column in ("lira", "residue_lira", "kl_to_clean", "residue_kl_to_clean", "phi"):
    assert column in header, column
  report = open(os.path.join(workdir, "report", "report.md")).read()
  assert "## Membership and influence" in report and "LiRA AUC T" in report
  # The reconstruction track: a best SSIM per target for every model, cached, and the figures.
  for name in ("original", "retrain", "clean", "clean_alt", "finetune"):
    assert 0.0 < summary["methods"][name]["recon_ssim"]["target"] <= 1.0, name
    assert np.isfinite(summary["methods"][name]["recon_ssim"]["heldout"]), name
    assert os.path.exists(os.path.join(workdir, "recon", "seed_1", f"{name}.npz")), name
  assert summary["methods"]["clean"]["residue"]["recon_ssim"] == pytest.approx(0.0, abs=1e-12)
  assert "recon_ssim" in header and "residue_recon_ssim" in header
  assert os.path.exists(os.path.join(workdir, "report", "plots", "reconstructions_finetune.png"))
  # The LiRA reference models are checkpointed once per study, not per seed.
  assert os.listdir(os.path.join(workdir, "checkpoints", "lira")) == [
      "models4_heldout20_seed10000"]


def test_atypical_targets_are_hard_for_a_model_that_never_saw_them(tfds_data_dir, tmp_path):
  config = tiny_config(tfds_data_dir)
  config.methods, config.eval.lira.num_models = (), 0
  config.sed.selection = "atypical"
  summary = study.run(config, str(tmp_path / "atypical"))
  random_config = tiny_config(tfds_data_dir)
  random_config.methods, random_config.eval.lira.num_models = (), 0
  baseline = study.run(random_config, str(tmp_path / "random"))
  # The clean model never saw the targets: atypical ones get a lower margin than random ones.
  assert (summary["methods"]["clean"]["margin"]["target"]
          < baseline["methods"]["clean"]["margin"]["target"])
  assert os.path.isdir(os.path.join(str(tmp_path / "atypical"), "checkpoints", "selection"))


def test_a_method_added_later_joins_an_existing_workdir(first_run, tfds_data_dir):
  workdir, _ = first_run

  def keep(state, run, cfg, rng):
    del run, cfg, rng
    return state, {"steps": 0, "wall_s": 0.0}

  methods.register("keep_as_is", keep, default_config={"lr": 0.1})
  try:
    config = tiny_config(tfds_data_dir)
    config.methods = tuple(config.methods) + ("keep_as_is",)
    summary = study.run(config, workdir)  # its new config section is not a conflict
  finally:
    methods.unregister("keep_as_is")
  record = summary["methods"]["keep_as_is"]
  assert record["status"] == "ok"
  assert record["acc"] == summary["methods"]["original"]["acc"]
