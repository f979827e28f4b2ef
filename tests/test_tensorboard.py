"""TensorBoard event files (WORKDIR/tensorboard/<run>/): the same numbers as metrics.jsonl, one
run per trained model, written by process 0 only, read back by TensorBoard itself."""

import collections
import json
import math
import os

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from unlearn_jax import study, utils

RUNS = ("original", "retrain", "clean", "clean_alt", "finetune", "grad_ascent", "random_label")
TRAINING_TAGS = {"loss", "lr", "examples_per_s"}


def numbers(record, prefix=""):
  """{tag: value} of the finite numbers of a JSON record (nested keys joined with '/')."""
  out = {}
  items = record.items() if isinstance(record, dict) else enumerate(record)
  for key, value in items:
    if not prefix and key in ("time", "run", "step"):
      continue
    if isinstance(value, (dict, list)):
      out.update(numbers(value, f"{prefix}{key}/"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
      out[f"{prefix}{key}"] = float(value)
  return out


def expected_series(path, prefix=""):
  """{run: {tag: [(step, value), ...]}} of a metrics.jsonl."""
  runs = collections.defaultdict(lambda: collections.defaultdict(list))
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      for tag, value in numbers(record).items():
        runs[prefix + record["run"]][tag].append((record["step"], value))
  return runs


def event_runs(root):
  """{run: {tag: [(step, value), ...]}} of every run directory under `root`, as TensorBoard
  reads it."""
  runs = {}
  for directory, _, files in os.walk(root):
    if not any(name.startswith("events.out.tfevents.") for name in files):
      continue
    accumulator = event_accumulator.EventAccumulator(
        directory, size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    runs[os.path.relpath(directory, root)] = {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]}
  return runs


@pytest.fixture(scope="module")
def tuned_run(tfds_data_dir, tmp_path_factory):
  """The tiny study (tests/tiny_study.py: references, LiRA, three methods), finetune tuned with
  two trials."""
  import tiny_study  # pylint: disable=g-import-not-at-top
  config = tiny_study.get_config(f"data_dir={tfds_data_dir}")
  config.recon.enabled = False
  config.tune.enabled, config.tune.methods = True, ("finetune",)
  config.tune.trials, config.tune.startup_trials = 2, 2
  workdir = str(tmp_path_factory.mktemp("tensorboard_study"))
  summary = study.run(config, workdir)
  return workdir, summary


def test_event_files_hold_the_numbers_of_metrics_jsonl(tuned_run):
  workdir, _ = tuned_run
  expected = expected_series(os.path.join(workdir, "metrics.jsonl"))
  expected.update(expected_series(os.path.join(workdir, "tuning", "metrics.jsonl"), "tuning/"))
  events = event_runs(os.path.join(workdir, "tensorboard"))
  assert set(events) == set(expected)
  for run, tags in expected.items():
    assert set(events[run]) == set(tags), run
    for tag, series in tags.items():
      got = events[run][tag]
      assert [step for step, _ in got] == [step for step, _ in series], (run, tag)
      assert [value for _, value in got] == pytest.approx(
          [value for _, value in series], rel=1e-6, abs=1e-30), (run, tag)


def test_one_run_per_trained_model_and_the_evaluation(tuned_run):
  workdir, summary = tuned_run
  events = event_runs(os.path.join(workdir, "tensorboard"))
  trained = {f"{name}/seed_0" for name in RUNS}
  trained |= {"tuning/original/seed_0", "tuning/clean/seed_0",
              "tuning/finetune/trial_0/seed_0", "tuning/finetune/trial_1/seed_0"}
  trials = events.pop("tuning/finetune/trials")  # each trial's scores, at step = its number
  assert [step for step, _ in trials["acc_test"]] == [0, 1]
  assert {"residue_margin", "time_s", "params/lr"} <= set(trials)
  groups = [run for run in events if run.startswith("lira/steps_")]
  assert len(groups) == 1  # the 4 members trained at once: the group's loss and throughput
  assert TRAINING_TAGS <= set(events[groups[0]])
  members = {f"lira/model_{k}" for k in range(4)}  # and each member's own curve
  for run in members:
    assert {"loss", "lr"} == set(events[run]), run
    assert [s for s, _ in events[run]["loss"]] == [s for s, _ in events[groups[0]]["loss"]]
  group_loss = np.mean([[v for _, v in events[run]["loss"]] for run in sorted(members)], axis=0)
  np.testing.assert_allclose(group_loss, [v for _, v in events[groups[0]]["loss"]], rtol=1e-5)
  evaluated = {f"eval/{name}" for name in summary["methods"]}
  assert set(events) == trained | set(groups) | members | evaluated
  for run in trained | set(groups):
    assert TRAINING_TAGS <= set(events[run]), run
  # The cosine schedule of the references (config.train.lr 0.05) decays to ~0.
  lr = [value for _, value in events["original/seed_0"]["lr"]]
  assert lr[0] == pytest.approx(0.05, rel=0.02) and lr[-1] < 1e-3
  for name, record in summary["methods"].items():  # one seed: the means are the seed's values
    run = events[f"eval/{name}"]
    assert run["acc/test"] == [(0, pytest.approx(record["acc"]["test"], rel=1e-6))]
    if isinstance(record["residue"]["loss"], float):  # null when undefined
      assert run["residue/loss"] == [(0, pytest.approx(record["residue"]["loss"], rel=1e-6))]


def test_run_names_become_directories():
  assert utils.tensorboard_run_dir("original/seed_0") == os.path.join("original", "seed_0")
  assert utils.tensorboard_run_dir("lira (4 models)") == "lira_4_models"
  assert utils.tensorboard_run_dir("../a//b c") == os.path.join("a", "b_c")


def test_a_rerun_adds_a_file_and_tensorboard_reads_both(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  for steps in ((1, 2), (3, 4)):  # the second writer: a resumed process
    writer = utils.MetricWriter(path)
    for step in steps:
      writer.write(run="original/seed_0", step=step, loss=1.0 / step, ok=True, note="x",
                   undefined=float("nan"))
    # No close: every record is on disk when `write` returns (a killed process loses nothing).
  files = os.listdir(tmp_path / "tensorboard" / "original" / "seed_0")
  assert len(files) == 2 and all(f.startswith("events.out.tfevents.") for f in files)
  events = event_runs(str(tmp_path / "tensorboard"))
  assert events == {os.path.join("original", "seed_0"): {
      "loss": [(s, pytest.approx(1.0 / s)) for s in (1, 2, 3, 4)]}}


def test_other_processes_write_nothing(tmp_path, monkeypatch):
  monkeypatch.setattr(utils, "is_main_process", lambda: False)
  writer = utils.MetricWriter(str(tmp_path / "metrics.jsonl"))
  writer.write(run="original/seed_0", step=1, loss=1.0)
  assert not writer.active and os.listdir(tmp_path) == []
