"""The scripts in examples/ run offline on tiny settings, and say what the study says.

One tiny study is run through `python -m unlearn_jax.main` with the example method given by
import path; the registering example then runs the same study in a fresh workdir (training
every model again), and both ways must agree; the checkpoint examples read the first workdir.
Their numbers are checked against the study's summary.json and against scikit-learn / scipy.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import special
from sklearn import metrics as sk_metrics

import unlearn_jax as uj
from unlearn_jax import defaults, methods, utils
from examples import compare_checkpoints, existing_checkpoint, my_method

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/sed_mnist.py:runlocal,model=mlp,protocol=0"  # the examples, not the protocol


def overrides(data_dir: str) -> dict:
  """The runlocal study shrunk for a test: 200 images, 1 epoch, a 32-unit MLP, 4 targets × 3."""
  fields = {
      "data_dir": data_dir, "model_kwargs.hidden": (32,), "train_size": 200, "test_size": 100,
      "sed.num_targets": 4, "sed.similar_per_target": 3, "train.epochs": 1,
      "train.batch_size": 32, "unlearn.finetune.epochs": 0.5,
  }
  base = defaults.base_config().eval
  if "lira" in base:  # evaluation extras, kept cheap
    fields["eval.lira.num_models"] = 0
  if "relearn" in base:
    fields["eval.relearn.max_steps"] = 5
  if "svc_max_train" in base:
    fields["eval.svc_max_train"] = 50
  return fields


def tiny_config(data_dir: str):
  config = uj.load_config(os.path.join(ROOT, CONFIG))
  for path, value in overrides(data_dir).items():
    *parents, leaf = path.split(".")
    node = config
    for key in parents:
      node = node[key]
    node[leaf] = value
  return config


def summary_of(workdir) -> dict:
  with open(os.path.join(workdir, "report", "summary.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def cli_study(tfds_data_dir, tmp_path_factory):
  """A tiny study run by the command line, with the example method loaded by import path."""
  workdir = str(tmp_path_factory.mktemp("cli_study"))
  flags = [f"--config.{path}={value}" for path, value in overrides(tfds_data_dir).items()]
  # Quoted: a bare `a,b:c` is not a Python literal, and the flag parser would refuse it.
  result = subprocess.run(
      [sys.executable, "-m", "unlearn_jax.main", f"--config={CONFIG}", f"--workdir={workdir}",
       "--config.methods='finetune,examples.my_method:unlearn'", *flags],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


@pytest.fixture(autouse=True)
def forget_registrations():
  before = set(methods.available())
  yield
  for name in set(methods.available()) - before:
    methods.unregister(name)


def test_method_by_import_path_is_in_the_summary_like_a_built_in(cli_study):
  summary = summary_of(cli_study)
  assert summary["status"] == {"finetune/seed_0": "ok", "my_method/seed_0": "ok"}
  assert set(summary["methods"]["my_method"]) == set(summary["methods"]["finetune"])
  assert os.listdir(os.path.join(cli_study, "checkpoints", "my_method", "seed_0"))
  with open(os.path.join(cli_study, "config.json")) as f:
    recorded = json.load(f)["unlearn"]["my_method"]
  assert recorded == my_method.default_config().to_dict()


def run_example(*args: str) -> subprocess.CompletedProcess:
  """Runs `python -m examples.<args>` from the repository root, as its docstring says; it must
  succeed and print nothing a user would read as a warning (stdout and stderr)."""
  result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  noisy = [line for line in (result.stdout + result.stderr).splitlines()
           if "WARNING" in line or "Warning" in line]
  assert not noisy, f"{args[0]} printed warnings:\n" + "\n".join(noisy)
  return result


def test_my_method_example_registers_and_agrees_with_the_import_path_run(
    cli_study, tfds_data_dir, tmp_path):
  before = summary_of(cli_study)
  # The tiny study as a config file, for the example's --config.
  config_file = tmp_path / "tiny_config.py"
  config_file.write_text(
      "from tests import test_examples\n\n\n"
      "def get_config():\n"
      f"  return test_examples.tiny_config({tfds_data_dir!r})\n")
  # A fresh workdir: every model, the registered method included, is trained again here, so
  # agreement means the registered run computes what the import-path run computed.
  workdir = str(tmp_path / "study")
  printed = run_example("examples.my_method", f"--workdir={workdir}",
                        f"--config={config_file}").stdout
  summary = summary_of(workdir)
  assert summary["status"] == {"finetune/seed_0": "ok", "my_method/seed_0": "ok"}
  for key in ("acc", "loss", "margin", "residue"):
    assert summary["methods"]["my_method"][key] == before["methods"]["my_method"][key], key
  assert "my_method  margin residue" in printed and "noise floor (clean_alt)" in printed


def test_checkpoint_examples_print_no_warnings(cli_study):
  # orbax warns for every read-only checkpoint manager it opens unless load_checkpoint quiets it.
  checkpoints = os.path.join(cli_study, "checkpoints")
  printed = run_example("examples.compare_checkpoints",
                        os.path.join(checkpoints, "finetune", "seed_0"),
                        os.path.join(checkpoints, "clean", "seed_0")).stdout
  assert "KL(first ‖ second)" in printed
  printed = run_example("examples.existing_checkpoint", f"--workdir={cli_study}",
                        "--method=grad_ascent").stdout
  assert "grad_ascent: " in printed and "loss-attack AUC" in printed


@pytest.mark.parametrize("method,name", [("finetune", "finetune"),
                                         ("examples.my_method:unlearn", "my_method")])
def test_existing_checkpoint_reproduces_the_studys_numbers(cli_study, method, name):
  summary = summary_of(cli_study)
  records = existing_checkpoint.main(cli_study, method)
  for model in ("original", "retrain", "clean", name):
    for key in ("acc", "loss", "margin", "kl_to_clean", "mia_auc", "residue"):
      got = utils.to_jsonable(records[model][key])  # NaN -> None, as in summary.json
      # The study adds entries the main evaluation does not compute (e.g. the reconstruction
      # track's residue): compare what the example computed.
      want = summary["methods"][model][key]
      if not isinstance(got, dict):
        got, want = {key: got}, {key: want}
      for field, value in got.items():
        if value is None:  # undefined in both
          assert want[field] is None, (model, key, field)
        else:
          assert value == pytest.approx(want[field], rel=1e-9), (model, key, field)


def negative_log_likelihood(state, data) -> np.ndarray:
  probs = special.softmax(np.asarray(uj.predict(state, data), np.float64), axis=1)
  return -np.log(probs[np.arange(len(data["label"])), data["label"]])


def test_compare_checkpoints_against_scipy_sklearn_and_the_summary(cli_study):
  checkpoints = os.path.join(cli_study, "checkpoints")
  result = compare_checkpoints.main(os.path.join(checkpoints, "finetune", "seed_0"),
                                    os.path.join(checkpoints, "clean", "seed_0"))
  # Independent: KL from scipy's relative entropy of the softmax, AUC from scikit-learn.
  sed = uj.build_sed(uj.read_config(cli_study))
  states = [uj.load_checkpoint(os.path.join(checkpoints, name, "seed_0"))
            for name in ("finetune", "clean")]
  probs = [special.softmax(np.asarray(uj.predict(s, sed.forget), np.float64), axis=1)
           for s in states]
  np.testing.assert_allclose(result["kl"], special.rel_entr(probs[0], probs[1]).sum(axis=1),
                             rtol=1e-6, atol=1e-9)
  same_classes = np.isin(sed.test["label"], sed.forget["label"])
  heldout = {key: value[same_classes] for key, value in sed.test.items()}
  for state, auc in zip(states, result["auc"]):
    member, nonmember = (negative_log_likelihood(state, sed.forget),
                         negative_log_likelihood(state, heldout))
    expected = sk_metrics.roc_auc_score(np.r_[np.ones(len(member)), np.zeros(len(nonmember))],
                                        -np.r_[member, nonmember])  # lower loss: member
    assert auc == pytest.approx(expected, abs=1e-12)
  # And the study's own numbers for the same models. The study predicts the whole training
  # split in evaluation batches, the example the targets alone: other float32 matrix shapes, so
  # the KL agrees to rounding (measured: relative 2.6e-7), not bit for bit.
  summary = summary_of(cli_study)["methods"]
  assert result["kl"].mean() == pytest.approx(summary["finetune"]["kl_to_clean"]["target"],
                                              rel=1e-5)
  assert result["auc"] == pytest.approx((summary["finetune"]["mia_auc"]["target"],
                                         summary["clean"]["mia_auc"]["target"]), rel=1e-12)


def test_every_example_has_a_docstring_and_a_main_guard():
  for module in (my_method, existing_checkpoint, compare_checkpoints):
    source = open(module.__file__).read()
    assert module.__doc__.strip() and 'if __name__ == "__main__":' in source
    assert "python -m " in module.__doc__  # the command that runs it
