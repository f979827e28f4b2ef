"""The stream mode (tasks/stream.py) and the streaming-forgetting method: the schedule, each round
from the previous round's model, the summary, figure and report, resumption at the round, config
checks, and the method's online step."""

import json
import os

import jax
import numpy as np
import pytest

import tiny_study
from unlearn_jax import config as config_lib
from unlearn_jax import defaults, methods, models, parallel, preemption, study, train
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.methods import streaming_forgetting
from unlearn_jax.tasks import stream

METHODS = ("finetune", "streaming_forgetting")


def sed_of(num_targets: int, similar: int) -> sed_lib.SED:
  """Targets 0..n-1, `similar` similar samples each (ids 100+), four rest rows."""
  ids = list(range(num_targets))
  kind = [sed_lib.TARGET] * num_targets
  group = list(ids)
  for t in range(num_targets):
    ids += [100 + similar * t + j for j in range(similar)]
    kind += [sed_lib.SIMILAR] * similar
    group += [t] * similar
  ids += [1000, 1001, 1002, 1003]
  kind += [sed_lib.REST] * 4
  group += [-1] * 4
  n = len(ids)
  train_arrays = {"image": np.zeros((n, 4, 4, 1), np.uint8), "label": np.zeros(n, np.int32),
                  "id": np.asarray(ids, np.int64), "kind": np.asarray(kind, np.int8),
                  "group": np.asarray(group, np.int64)}
  test = {"image": np.zeros((2, 4, 4, 1), np.uint8), "label": np.zeros(2, np.int32),
          "id": np.array([5000, 5001], np.int64)}
  return sed_lib.SED(train=train_arrays, test=test,
                     target_ids=np.arange(num_targets, dtype=np.int64))


def test_the_last_round_requests_exactly_the_similar_samples_of_round_one():
  sed = sed_of(5, 2)
  rounds = stream.schedule(sed, 3, "targets_then_similar")
  assert [r["forget"] for r in rounds] == ["targets", "targets", "similar"]
  assert rounds[0]["groups"] == [0, 1, 2] and rounds[1]["groups"] == [3, 4]
  masks = [stream.request_mask(sed.train, r) for r in rounds]
  similar_of_a = (sed.train["kind"] == sed_lib.SIMILAR) & np.isin(sed.train["group"], [0, 1, 2])
  np.testing.assert_array_equal(masks[2], similar_of_a)
  assert sorted(sed.train["id"][masks[0]]) == [0, 1, 2]
  assert not np.any(masks[0] & masks[1]) and not np.any(masks[1] & masks[2])
  # 'targets': T over every round, nothing similar.
  plain = stream.schedule(sed, 2, "targets")
  assert [r["groups"] for r in plain] == [[0, 1, 2], [3, 4]]
  assert {r["forget"] for r in plain} == {"targets"}
  with pytest.raises(ValueError, match="targets"):
    stream.schedule(sed, 7, "targets_then_similar")


@pytest.mark.parametrize("field, value, message", [
    ("requests", 1, "stream.requests"), ("requests", -2, "stream.requests"),
    ("requests", 12, "sed.num_targets"), ("schedule", "random", "stream.schedule")])
def test_bad_stream_values_are_refused_with_the_field(field, value, message):
  config = defaults.base_config()
  config.stream[field] = value
  with pytest.raises(config_lib.ConfigError, match=message):
    defaults.validate(config)


def test_off_by_default():
  config = defaults.base_config()
  assert config.stream.requests == 0 and not stream.active(config)
  defaults.validate(config)


def _context(forget, recipe_config):
  return methods.RunContext(forget=forget, retain={}, mesh=parallel.make_mesh(), seed=0,
                            num_classes=10, init_state=None, recipe=recipe_config)


def test_streaming_forgetting_steps_shrink_as_one_over_sqrt_round_and_never_read_retain():
  model = models.get("mlp", 10, hidden=(8,))
  state = train.create_state(model, jax.random.key(0), (4, 4, 1))
  rng = np.random.default_rng(0)
  forget = {"image": rng.integers(0, 255, (8, 4, 4, 1)).astype(np.uint8),
            "label": rng.integers(0, 10, 8).astype(np.int32), "id": np.arange(8),
            "kind": np.zeros(8, np.int8), "group": np.arange(8)}
  recipe_config = defaults.base_config().train
  moved = {}
  for round_index in (1, 4):
    cfg = streaming_forgetting.default_config()
    cfg.epochs, cfg.batch_size, cfg.proximal, cfg.round = 1, 8, 0.0, round_index
    # retain={}: the method must not read the retained data (it is data-free).
    new, info = methods.call("streaming_forgetting", state, _context(forget, recipe_config), cfg,
                             jax.random.key(1))
    delta = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), new.params, state.params)
    moved[round_index] = np.sqrt(sum(float(np.sum(d ** 2)) for d in jax.tree.leaves(delta)))
    assert info["step_size"] == pytest.approx(cfg.lr / np.sqrt(round_index))
  assert moved[1] > 0
  assert moved[4] / moved[1] == pytest.approx(0.5, rel=1e-3)  # one step: lr/√4 = lr/2
  # The proximal pull keeps a long ascent near the start.
  cfg = streaming_forgetting.default_config()
  cfg.epochs, cfg.batch_size, cfg.lr = 20, 8, 0.05
  distances = {}
  for strength in (0.0, 5.0):
    cfg.proximal = strength
    new, _ = methods.call("streaming_forgetting", state, _context(forget, recipe_config), cfg,
                          jax.random.key(1))
    delta = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), new.params, state.params)
    distances[strength] = np.sqrt(sum(float(np.sum(d ** 2)) for d in jax.tree.leaves(delta)))
  assert distances[5.0] < distances[0.0]


def test_streaming_forgetting_refuses_a_round_below_one():
  cfg = streaming_forgetting.default_config()
  cfg.round = 0
  with pytest.raises(config_lib.ConfigError, match="round"):
    streaming_forgetting.check_config(cfg)


def _config(data_dir):
  config = tiny_study.get_config(f"data_dir={data_dir}")
  config.methods = METHODS
  config.eval.lira.num_models = 0
  config.recon.enabled = False
  config.stream.requests = 3
  return config


def _spy(monkeypatch, calls):
  """Records every stream method call: (method, round label, start params, result params)."""
  real = methods.call

  def call(name, state, run, cfg, rng, **kwargs):
    new, info = real(name, state, run, cfg, rng, **kwargs)
    if run.checkpoint_dir and f"{os.sep}{stream.FOLDER}{os.sep}" in run.checkpoint_dir:
      label = run.checkpoint_dir.split(os.sep)[-3]
      calls.append((name, label, jax.tree.leaves(jax.device_get(state.params)),
                    jax.tree.leaves(jax.device_get(new.params))))
    return new, info
  monkeypatch.setattr(methods, "call", call)


@pytest.fixture(scope="module")
def streamed(tfds_data_dir, tmp_path_factory):
  calls = []
  with pytest.MonkeyPatch.context() as monkeypatch:
    _spy(monkeypatch, calls)
    workdir = str(tmp_path_factory.mktemp("stream"))
    summary = study.run(_config(tfds_data_dir), workdir)
  return workdir, summary, calls


def test_every_round_starts_from_the_previous_rounds_model(streamed):
  workdir, _, calls = streamed
  for name in METHODS:
    runs = {label: (start, end) for method, label, start, end in calls if method == name}
    assert set(runs) == {"round_1", "round_2", "round_3", "one_shot"}
    for k in (2, 3):
      for a, b in zip(runs[f"round_{k}"][0], runs[f"round_{k - 1}"][1]):
        np.testing.assert_array_equal(a, b)
    # Round 1 and the one-shot run start from the same model (original), not a round's.
    for a, b in zip(runs["round_1"][0], runs["one_shot"][0]):
      np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(runs["round_2"][0], runs["round_1"][0]))
    for k in (1, 2, 3):
      assert os.path.isdir(stream.round_dir(workdir, name, f"round_{k}", 0))


def test_summary_report_and_figure(streamed):
  workdir, summary, _ = streamed
  result = summary["stream"]
  assert [r["forget"] for r in result["schedule"]] == ["targets", "targets", "similar"]
  assert result["schedule"][2]["groups"] == result["schedule"][0]["groups"]
  assert len(result["rounds"]) == 3
  for entry in result["rounds"]:
    for name in METHODS:
      record = entry["methods"][name]
      assert np.isfinite(record["residue"]["margin"])
      assert 0 <= record["acc_test"] <= 1
      assert set(record) >= {"residue", "residue_round1", "acc_test", "acc_rest", "cost_s"}
    assert "margin" in entry["reference"]["residue"]
  for name in METHODS:  # costs accumulate over rounds
    costs = [entry["methods"][name]["cost_s"] for entry in result["rounds"]]
    assert costs == sorted(costs) and costs[0] > 0
    assert name in result["one_shot"]
  # After round 1 only round 1's targets are forgotten: both residues are the same mean.
  first = result["rounds"][0]["methods"]["finetune"]
  assert first["residue"]["margin"] == pytest.approx(first["residue_round1"]["margin"])
  assert os.path.getsize(os.path.join(workdir, "report", "plots", "stream_residue.png")) > 0
  with open(os.path.join(workdir, "report", "report.md")) as f:
    assert "## Requests over time (stream)" in f.read()
  with open(os.path.join(workdir, "report", "summary.json")) as f:
    assert json.load(f)["stream"]["rounds"][0]["methods"]["finetune"]["residue"]


def _without_costs(tree):
  if isinstance(tree, dict):
    return {k: _without_costs(v) for k, v in tree.items() if k != "cost_s"}
  if isinstance(tree, list):
    return [_without_costs(v) for v in tree]
  return tree


def test_a_run_killed_in_round_two_resumes_there(streamed, tfds_data_dir, tmp_path, monkeypatch):
  _, reference, _ = streamed
  workdir = str(tmp_path / "killed")
  real = stream.run_request

  def preempted_in_round_two(task, name, start, forget, retain, k, directory, seed):
    if k == 2 and name == "streaming_forgetting":
      raise preemption.Preempted()
    return real(task, name, start, forget, retain, k, directory, seed)

  monkeypatch.setattr(stream, "run_request", preempted_in_round_two)
  with pytest.raises(preemption.Preempted):
    study.run(_config(tfds_data_dir), workdir)
  monkeypatch.setattr(stream, "run_request", real)
  calls = []
  _spy(monkeypatch, calls)
  summary = study.run(_config(tfds_data_dir), workdir)
  labels = [(name, label) for name, label, _, _ in calls]
  assert ("finetune", "round_1") not in labels
  assert ("streaming_forgetting", "round_1") not in labels
  assert ("finetune", "round_2") not in labels  # finished before the kill
  assert ("streaming_forgetting", "round_2") in labels
  as_text = lambda tree: json.dumps(_without_costs(tree), sort_keys=True)  # NaN == NaN here
  assert as_text(summary["stream"]) == as_text(reference["stream"])
