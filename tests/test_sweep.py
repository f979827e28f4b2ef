"""Sweeps: grid expansion and naming, files, no work done twice, failures, resume, parallel.

The end-to-end tests use a tiny sweep of two points (|S(t)| ∈ {0, 3}) over the tiny study of
tests/tiny_study.py with one method and no LiRA models, so each point trains five small MLPs.
"""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest
from scipy import stats

from unlearn_jax import config as config_lib
from unlearn_jax import defaults, study, sweep, utils
from unlearn_jax.data import sources
from unlearn_jax.report import sweep_report, tables
from unlearn_jax.tasks import image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_VARIANT = "study=tests/tiny_study.py,similar=0+3,ratio=0.25,methods=finetune"
POINT_NAMES = ("ratio=0.25,similar_per_target=0", "ratio=0.25,similar_per_target=3")
MODELS = ("original", "retrain", "clean", "clean_alt", "finetune")


def tiny_sweep(data_dir: str) -> ml_collections.ConfigDict:
  from configs import sweep_similarity  # pylint: disable=g-import-not-at-top
  config = sweep_similarity.get_config(TINY_VARIANT)
  config.study.data_dir = data_dir
  config.study.eval.lira.num_models = 0
  if "recon" in config.study:  # the reconstruction track has its own tests
    config.study.recon.enabled = False
  return config


def read_csv(path) -> list[dict]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def without_wall_times(rows: list[dict]) -> list[dict]:
  return [{k: v for k, v in row.items() if k not in sweep_report.WALL_TIME_COLUMNS}
          for row in rows]


@pytest.fixture(scope="module")
def uninterrupted(tfds_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sweep_a"))
  return workdir, sweep.run(tiny_sweep(tfds_data_dir), workdir)


# ----------------------------------------------------------------------------------------------
# Grid expansion, validation and completeness (no training).


def test_points_are_named_by_their_values_and_shared_when_identical():
  from configs import sweep_similarity  # pylint: disable=g-import-not-at-top
  config = sweep_similarity.get_config("similar=0+5,ratio=0.25+0.5")
  points = sweep.expand(config, "/sweep")
  assert [p.name for p in points] == [
      "ratio=0.25,similar_per_target=0", "ratio=0.25,similar_per_target=5",
      "ratio=0.25,similar_per_target=0", "ratio=0.5,similar_per_target=5"]
  assert points[2].values == {"sed.ratio": 0.5, "sed.similar_per_target": 0}
  # No similar samples: the mask ratio changes nothing, so both r share one study.
  assert points[0].workdir == points[2].workdir == "/sweep/points/" + points[0].name
  assert json.loads(points[0].config.to_json()) == json.loads(points[2].config.to_json())
  assert points[3].config.sed.ratio == 0.5 and points[3].config.sed.similar_per_target == 5
  assert points[1].config.sed.ratio == 0.25
  # Every field other than the grid's comes from the base study.
  assert points[3].config.train.epochs == config.study.train.epochs
  if "recon" in config.study:  # D_r of the reconstruction track cannot hold more than S(t)
    assert points[0].config.recon.similar_per_target == 0
    assert points[3].config.recon.similar_per_target == min(
        config.study.recon.similar_per_target, 5)


def test_generator_parameters_that_a_generator_ignores_do_not_split_points():
  from configs import sweep_similarity  # pylint: disable=g-import-not-at-top
  config = sweep_similarity.get_config("generator=gaussian_noise,sigma=0.1+0.2,similar=0+5")
  config.study.sed.ratio = 0.75  # unused by gaussian_noise: reset to the default
  points = sweep.expand(config, "/sweep")
  assert [p.name for p in points] == ["sigma=0.1,similar_per_target=0",
                                      "sigma=0.1,similar_per_target=5",
                                      "sigma=0.1,similar_per_target=0",
                                      "sigma=0.2,similar_per_target=5"]
  assert {p.config.sed.ratio for p in points} == {0.25}
  assert points[3].config.sed.generator == "gaussian_noise"
  assert points[0].config.sed.generator == "block_mask"  # |S| = 0: no generator runs


def test_grid_values_take_the_study_fields_type_and_clashing_leaves_use_paths():
  config = sweep.base_config()
  config.grid.sed = ml_collections.ConfigDict({"ratio": (0, 0.5)})  # int 0 becomes 0.0
  config.grid.train = ml_collections.ConfigDict({"epochs": (1, 2)})
  config.grid.unlearn = ml_collections.ConfigDict(
      {"finetune": ml_collections.ConfigDict({"epochs": (0.5,)})})
  points = sweep.expand(config, "/w")
  assert points[0].name == "ratio=0.0,train.epochs=1,unlearn.finetune.epochs=0.5"
  assert isinstance(points[0].config.sed.ratio, float)
  assert len(points) == 4 and len({p.workdir for p in points}) == 4


@pytest.mark.parametrize("change, message", [
    (lambda c: c.grid.sed.__setattr__("simlar_per_target", (1,)),
     "config.grid.sed.simlar_per_target: config.study has no field"),
    (lambda c: c.grid.sed.__setattr__("similar_per_target", ()), "non-empty tuple"),
    (lambda c: c.grid.sed.__setattr__("similar_per_target", (1, 1)), "distinct"),
    (lambda c: c.grid.__setattr__("train", (1, 2)), "config.grid.train=(1, 2): must name a "
     "single study field"),
    (lambda c: c.grid.sed.__setattr__("ratio", ("high",)), "config.grid.sed.ratio"),
    (lambda c: c.__setattr__("parallel", 0), "config.parallel=0"),
    (lambda c: c.__setattr__("executor", "pbs"), "config.executor='pbs'"),
    (lambda c: c.slurm.__setattr__("nodes", 0), "config.slurm.nodes=0"),
    (lambda c: c.slurm.__setattr__("sbatch_options", "qos"),
     "config.slurm.sbatch_options='qos': 'qos' is not KEY=VALUE"),
    (lambda c: c.grid.sed.__setattr__("block", (4, 99)),
     "point block=99,ratio=0.25,similar_per_target=5: config.sed.block=99"),
])
def test_bad_sweep_configs_fail_before_anything_is_written(change, message, tmp_path):
  from configs import sweep_similarity  # pylint: disable=g-import-not-at-top
  config = sweep_similarity.get_config("runlocal")
  with config.unlocked():
    change(config)
  with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
    sweep.run(config, str(tmp_path / "never"))
  assert not os.path.exists(tmp_path / "never")


def test_parallel_workers_cannot_use_a_dataset_registered_in_this_process():
  from configs import sweep_similarity  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  arrays = lambda n: {"image": rng.integers(0, 255, (n, 8, 8, 1), np.uint8),
                      "label": np.arange(n) % 2}
  sources.register("sweep_arrays", arrays(30), arrays(10), num_classes=2)
  try:
    config = sweep_similarity.get_config("runlocal")
    config.study.dataset = "sweep_arrays"
    assert len(sweep.validate(config)) == 3  # fine in this process
    config.parallel = 2
    with pytest.raises(config_lib.ConfigError, match="registered in this process "
                       r"\(sweep_arrays\)"):
      sweep.validate(config)
  finally:
    sources.unregister("sweep_arrays")


def test_an_unprepared_dataset_fails_before_anything_is_written(tmp_path, monkeypatch):
  from configs import sweep_similarity  # pylint: disable=g-import-not-at-top
  # Neither a tfds copy nor the files scripts/install_datasets.sh installs.
  monkeypatch.setitem(sources.IDX_FOLDERS, "mnist", str(tmp_path / "not_installed"))
  config = sweep_similarity.get_config("dataset=mnist,runlocal")
  config.study.data_dir = str(tmp_path / "empty")
  with pytest.raises(sources.DatasetNotPreparedError, match="tfds build mnist"):
    sweep.run(config, str(tmp_path / "never"))
  assert not os.path.exists(tmp_path / "never")


def test_command_line_errors_are_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "unlearn_jax.sweep", "--config=configs/sweep_similarity.py:runlocal",
       f"--workdir={tmp_path / 'never'}", "--config.grid.sed.block=2,4"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[0].startswith(
      "error: config.grid.sed.block: not an axis of this sweep's grid")
  assert not os.path.exists(tmp_path / "never")


def test_completeness_needs_the_same_config_and_a_report_newer_than_it(tmp_path):
  config = sweep.base_config()
  config.grid.sed = ml_collections.ConfigDict({"similar_per_target": (2,)})
  point = sweep.expand(config, str(tmp_path))[0]
  assert not sweep.is_complete(point)
  utils.write_json(os.path.join(point.workdir, "config.json"),
                   json.loads(point.config.to_json()))
  summary_path = os.path.join(point.workdir, "report", "summary.json")
  utils.write_json(summary_path, {"status": {"finetune/seed_0": "failed: boom"}})
  assert sweep.is_complete(point)
  assert not sweep.is_complete(point, retry_failed_methods=True)
  # A later start of the study rewrote config.json: that run has not finished.
  old = os.stat(summary_path).st_mtime_ns - 10**9
  os.utime(summary_path, ns=(old, old))
  assert not sweep.is_complete(point)
  utils.write_json(summary_path, {"status": {}})
  assert sweep.is_complete(point)
  other = sweep.expand(config, str(tmp_path))[0]
  other.config.data_dir = "/elsewhere"  # changes no result
  assert sweep.is_complete(other)
  other.config.sed.seed = 7
  assert not sweep.is_complete(other)


def test_slurm_options_and_the_dry_run_of_a_slurm_sweep(tmp_path):
  from configs import sweep_similarity  # pylint: disable=g-import-not-at-top
  from unlearn_jax import executors  # pylint: disable=g-import-not-at-top
  assert executors.sbatch_options(" qos=high, --account=lab,mail-type=END") == {
      "qos": "high", "account": "lab", "mail_type": "END"}
  config = sweep_similarity.get_config("runlocal")
  config.executor, config.slurm.partition, config.slurm.gpus_per_node = "slurm", "gpu", 2
  config.slurm.sbatch_options = "qos=high"
  record = sweep.run(config, str(tmp_path / "never"), dry_run=True)
  assert record["to_run"] == [p.name for p in sweep.expand(config, "")] and not record["complete"]
  for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --qos=high",
               "#SBATCH --time=240"):
    assert line in record["sbatch"], record["sbatch"]
  assert "partition gpu" in record["where"] and not os.path.exists(tmp_path / "never")


def test_worker_slots_get_their_own_gpus(monkeypatch):
  monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
  assert sweep.slot_env(0, 0, 1) == {}
  assert sweep.slot_env(1, 0, 2) == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  assert sweep.slot_env(1, 2, 2) == {"CUDA_VISIBLE_DEVICES": "2,3"}
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
  assert sweep.slot_env(2, 1, 3) == {"CUDA_VISIBLE_DEVICES": "6"}
  with pytest.raises(config_lib.ConfigError, match="needs 4 GPUs"):
    sweep.slot_env(1, 2, 2)


# ----------------------------------------------------------------------------------------------
# End to end.


def test_files_rows_and_report(uninterrupted):
  workdir, record = uninterrupted
  report = os.path.join(workdir, "report")
  for name in ("sweep.csv", "sweep.json", "report.md", "plots/residue_vs_similar.png",
               "plots/utility_vs_residue.png"):
    assert os.path.getsize(os.path.join(report, name)) > 0, name
  assert not os.path.exists(os.path.join(report, "plots", "residue_vs_ratio.png"))  # r fixed
  assert not [n for n in os.listdir(report) if n.endswith(".png")]  # all under plots/
  assert [p["name"] for p in record["points"]] == list(POINT_NAMES)
  assert [p["status"] for p in record["points"]] == ["ok", "ok"]
  assert sweep.exit_message(record) is None
  record_with_failure = json.loads(json.dumps(record))
  record_with_failure["points"][1]["method_errors"] = {"finetune/seed_0": "diverged at step 3"}
  assert sweep.exit_message(record_with_failure) == (
      f"error: 1 method run(s) did not finish ({POINT_NAMES[1]}: finetune/seed_0; rerun with "
      "--config.retry_failed_methods=True to retry them); see report/sweep.json")
  assert utils.read_json(os.path.join(report, "sweep.json"))["complete"] == 2
  rows = read_csv(os.path.join(report, "sweep.csv"))
  assert len(rows) == len(POINT_NAMES) * len(MODELS)
  for name, similar in zip(POINT_NAMES, ("0", "3")):
    mine = [r for r in rows if r["point"] == name]
    assert {r["sed.similar_per_target"] for r in mine} == {similar}
    assert {r["sed.ratio"] for r in mine} == {"0.25"}
    # The point's own results.csv, row for row.
    own = read_csv(os.path.join(workdir, "points", name, "report", "results.csv"))
    assert [{k: r[k] for k in own[0]} for r in mine] == own
    summary = utils.read_json(os.path.join(workdir, "points", name, "report", "summary.json"))
    assert summary["sed"]["similar_per_target"] == int(similar)
  # |S(t)| = 0: retrain and clean train on the same data with the same seed.
  zero = {r["method"]: r for r in rows if r["point"] == POINT_NAMES[0]}
  assert float(zero["retrain"]["residue_abs.margin"]) == 0.0
  assert zero["retrain"]["acc.test"] == zero["clean"]["acc.test"]
  text = open(os.path.join(report, "report.md")).read()
  assert "## margin residue" in text and "\\|S(t)\\|=3" in text
  assert "| finetune |" in text and "![" in text
  from matplotlib import image  # pylint: disable=g-import-not-at-top
  assert image.imread(os.path.join(report, "plots", "residue_vs_similar.png")).shape[0] > 100


def test_rerun_does_no_work_twice(uninterrupted, tfds_data_dir, monkeypatch):
  workdir, _ = uninterrupted
  before = open(os.path.join(workdir, "report", "sweep.csv")).read()
  calls = []
  monkeypatch.setattr(study, "run", lambda *args, **kwargs: calls.append(args))
  record = sweep.run(tiny_sweep(tfds_data_dir), workdir)
  assert calls == []
  assert [(p["status"], p["ran"]) for p in record["points"]] == [("ok", False)] * 2
  assert open(os.path.join(workdir, "report", "sweep.csv")).read() == before


def test_a_point_that_fails_is_recorded_and_resumes_to_the_same_results(
    uninterrupted, tfds_data_dir, tmp_path, monkeypatch):
  # The uninterrupted sweep without its |S(t)|=3 point and its report.
  workdir = str(tmp_path / "sweep_b")
  shutil.copytree(uninterrupted[0], workdir)
  shutil.rmtree(os.path.join(workdir, "points", POINT_NAMES[1]))
  shutil.rmtree(os.path.join(workdir, "report"))
  real_fit = image.ImageTask.fit

  def fit(task, reference):
    if reference.name.startswith("clean/"):  # after original and retrain are checkpointed
      raise RuntimeError("disk full")
    return real_fit(task, reference)

  monkeypatch.setattr(image.ImageTask, "fit", fit)
  record = sweep.run(tiny_sweep(tfds_data_dir), workdir)
  first, second = record["points"]
  assert (first["status"], first["ran"]) == ("ok", False)
  assert second["status"] == "failed" and second["error"] == "RuntimeError: disk full"
  assert record["failed"] == 1 and "1 point(s) did not finish" in sweep.exit_message(record)
  assert utils.read_json(os.path.join(workdir, "report", "sweep.json"))["failed"] == 1
  assert "RuntimeError: disk full" in open(os.path.join(workdir, "report", "report.md")).read()
  assert {r["point"] for r in read_csv(os.path.join(workdir, "report", "sweep.csv"))} == {
      POINT_NAMES[0]}
  checkpoints = os.path.join(workdir, "points", POINT_NAMES[1], "checkpoints")
  assert sorted(os.listdir(checkpoints)) == ["original", "retrain"]

  monkeypatch.setattr(image.ImageTask, "fit", real_fit)
  calls = []
  real_run = study.run
  monkeypatch.setattr(study, "run", lambda c, w: calls.append(w) or real_run(c, w))
  record = sweep.run(tiny_sweep(tfds_data_dir), workdir)
  assert [os.path.basename(w) for w in calls] == [POINT_NAMES[1]]  # only the failed point
  assert [p["status"] for p in record["points"]] == ["ok", "ok"]
  expected = read_csv(os.path.join(uninterrupted[0], "report", "sweep.csv"))
  assert without_wall_times(read_csv(os.path.join(workdir, "report", "sweep.csv"))) == (
      without_wall_times(expected))


def _sweep_command(workdir, data_dir, parallel):
  return [sys.executable, "-m", "unlearn_jax.sweep",
          f"--config=configs/sweep_similarity.py:{TINY_VARIANT}",
          f"--config.study.data_dir={data_dir}", "--config.study.eval.lira.num_models=0",
          *(["--config.study.recon.enabled=False"] if "recon" in defaults.base_config() else []),
          f"--config.parallel={parallel}", f"--workdir={workdir}"]


def test_killed_parallel_sweep_resumes_to_the_results_of_a_sequential_one(
    uninterrupted, tfds_data_dir, tmp_path):
  workdir = tmp_path / "sweep_c"
  log = workdir / "logs" / f"{POINT_NAMES[1]}.log"
  # A compilation cache shared by the killed run and the rerun: only saves test time.
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  process = subprocess.Popen(_sweep_command(workdir, tfds_data_dir, 2), cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  # SIGKILL the sweep while a worker trains point |S(t)|=3 (its worker gets SIGTERM from the
  # kernel, checkpoints and exits).
  seen = False
  while not seen and time.time() < deadline:
    assert process.poll() is None, "the sweep ended before it could be killed"
    seen = "stage: reference retrain" in (log.read_text() if log.exists() else "")
    if not seen:
      time.sleep(0.2)
  process.send_signal(signal.SIGKILL)
  assert seen, "the worker never logged 'stage: reference retrain': killed at the deadline"
  assert process.wait(timeout=60) == -signal.SIGKILL
  assert not (workdir / "points" / POINT_NAMES[1] / "report" / "summary.json").exists()

  final = subprocess.run(_sweep_command(workdir, tfds_data_dir, 2), cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
  assert final.returncode == 0, final.stderr[-3000:]
  assert "2/2 points done" in final.stderr
  expected = read_csv(os.path.join(uninterrupted[0], "report", "sweep.csv"))
  assert without_wall_times(read_csv(workdir / "report" / "sweep.csv")) == (
      without_wall_times(expected))
  assert "stage: reference" in log.read_text()  # the worker's study logged to its own file


# ----------------------------------------------------------------------------------------------
# Aggregation on made-up results (no training).


def _fake_sweep(root, seeds=(0, 1)) -> dict:
  """Writes results.csv / per_target.csv of a 2 × 2 grid (|S(t)|, r) and returns its record."""
  rng = np.random.default_rng(0)
  entries = []
  for similar in (0, 5):
    for ratio in (0.25, 0.5):
      name = f"ratio={ratio},similar_per_target={similar}"
      rows, per_target = [], []
      for seed in seeds:
        for model in MODELS:
          rows.append({"method": model, "seed": seed, "acc.test": 0.9 + 0.01 * seed,
                       "acc.rest": 0.95, "residue.margin": similar * ratio + rng.normal(),
                       "residue_abs.margin": rng.normal(), "residue.mia": 0.5,
                       "time_s": rng.uniform()})
          for target in range(3):
            per_target.append({"seed": seed, "model": model, "target_id": target,
                               "margin": rng.normal(), "residue_margin": rng.normal()})
      report = os.path.join(root, "points", name, "report")
      utils.write_text(os.path.join(report, "results.csv"), tables.to_csv(rows))
      utils.write_text(os.path.join(report, "per_target.csv"), tables.to_csv(per_target))
      entries.append({"name": name, "workdir": f"points/{name}", "status": "ok",
                      "values": {"sed.ratio": ratio, "sed.similar_per_target": similar}})
  entries.append({"name": "lost", "workdir": "points/lost", "status": "failed",
                  "error": "OSError: gone", "values": {"sed.ratio": 0.75,
                                                       "sed.similar_per_target": 5}})
  return {"grid": {"sed.ratio": [0.25, 0.5, 0.75], "sed.similar_per_target": [0, 5]},
          "dataset": "mnist_subset", "model": "cnn", "methods": ["finetune"],
          "seeds": list(seeds), "num_points": 5, "num_studies": 5, "complete": 4, "failed": 1,
          "points": entries}


def test_intervals_are_student_t_over_seeds_or_over_targets(tmp_path):
  record = _fake_sweep(str(tmp_path))
  point = sweep_report.collect(str(tmp_path), record)[3]
  values = [float(r["residue.margin"]) for r in point.results if r["method"] == "finetune"]
  mean, half, source = sweep_report.estimate(point, "finetune", "residue.margin")
  assert source == "seeds" and mean == pytest.approx(np.mean(values))
  assert half == pytest.approx(stats.t.interval(0.95, 1, loc=0, scale=stats.sem(values))[1])

  one_seed = _fake_sweep(str(tmp_path / "one"), seeds=(0,))
  point = sweep_report.collect(str(tmp_path / "one"), one_seed)[3]
  targets = [float(r["residue_margin"]) for r in point.per_target if r["model"] == "finetune"]
  mean, half, source = sweep_report.estimate(point, "finetune", "residue.margin")
  assert source == "targets"
  assert half == pytest.approx(stats.t.ppf(0.975, 2) * stats.sem(targets))
  # Absolute residue per target: the model's margin minus clean's on the same target.
  margins = {(r["model"], r["target_id"]): float(r["margin"]) for r in point.per_target}
  absolute = [margins["finetune", t] - margins["clean", t] for t in ("0", "1", "2")]
  half = sweep_report.estimate(point, "finetune", "residue_abs.margin")[1]
  assert half == pytest.approx(stats.t.ppf(0.975, 2) * stats.sem(absolute))
  assert np.isnan(sweep_report.estimate(point, "finetune", "residue.mia")[1])  # set-level


def test_report_of_a_two_axis_grid_with_a_failed_point_and_a_plot_hook(tmp_path, monkeypatch):
  record = _fake_sweep(str(tmp_path))
  hooked = []

  def reconstructions(plot_dir, points):
    hooked.append(len(points))
    utils.write_text(os.path.join(plot_dir, "reconstructions.png"), "png")
    return ["reconstructions.png"]

  monkeypatch.setattr(sweep_report, "_PLOT_HOOKS", [])
  sweep_report.register_plot(reconstructions)
  sweep_report.register_plot(lambda *_: 1 / 0)  # a broken hook costs nothing else
  text = sweep_report.write(str(tmp_path), record, ("margin", "mia", "lira"))
  assert hooked == [4]
  for name in ("residue_vs_similar.png", "residue_vs_ratio.png", "utility_vs_residue.png"):
    assert os.path.getsize(tmp_path / "report" / "plots" / name) > 1000, name
    assert f"](plots/{name})" in text
  assert os.path.exists(tmp_path / "report" / "plots" / "reconstructions.png")
  assert "![reconstructions](plots/reconstructions.png)" in text
  assert "### sed.ratio = 0.25" in text and "### sed.ratio = 0.5" in text
  assert "lira" not in text.lower().split("## points")[0]  # absent from the results
  assert "sed.ratio = 0.75" not in text and "OSError: gone" in text  # failed: listed only
  rows = read_csv(tmp_path / "report" / "sweep.csv")
  assert len(rows) == 4 * 2 * len(MODELS)
  assert list(rows[0])[:4] == ["point", "sed.ratio", "sed.similar_per_target", "method"]
  # A cell of the headline table: mean ± half-width over the two seeds.
  point = sweep_report.collect(str(tmp_path), record)[1]
  mean, half, _ = sweep_report.estimate(point, "retrain", "residue.margin")
  assert f"{mean:.2f} ± {half:.2f}" in text
