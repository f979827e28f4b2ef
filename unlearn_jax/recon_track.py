"""The reconstruction track: can a target's image still be recovered from a model's parameters?

KKT-based reconstruction (`evaluate/reconstruct.py`) needs a model trained to a near-stationary
point on a small training set, with about twice as many candidates as training images, so it
cannot run on the study's main model on a CPU. The track repeats the study in miniature: its
training set D_r holds the first `recon.num_targets` targets of the study's SED with their first
`recon.similar_per_target` similar samples, and `recon.num_rest` unrelated samples (stratified
from the study's R); by default the labels become the digit's parity (two classes, the setting
in which Haim et al., NeurIPS 2022, recover the most). It trains `original` (D_r), `retrain`
(D_r without the targets), `clean` (the rest only) and `clean_alt` (the rest, another seed) as
MLPs by full-batch gradient descent with weight decay, runs the study's methods from the track's
`original`, reconstructs candidates from every model's parameters and scores each target by its
best SSIM among them (`recon_ssim`), next to the same score of as many held-out test images.
Its residue is recorded under the main study's keys (`residue`, the mean over targets, with
`residue_median`, `residue_ratio_of_sums`, `residue_defined`, `residue_undefined` and
`residue_abs`; see evaluate/residue.py).

Results per model and seed are cached under WORKDIR/recon/seed_<s>/<model>.npz, so a rerun does
no reconstruction twice.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import optax
from absl import logging

from unlearn_jax import config as config_lib
from unlearn_jax import methods, remedy_track, train, utils
from unlearn_jax.data import sed as sed_lib
from unlearn_jax.evaluate import evaluator, reconstruct, residue, similarity
from unlearn_jax.report import plots
from unlearn_jax.tasks import base

REFERENCES = ("original", "retrain", "clean", "clean_alt")


@dataclasses.dataclass(frozen=True)
class Track:
  """The track's data: D_r with provenance, its targets, and held-out comparison images."""
  train: dict[str, np.ndarray]  # image uint8, label (track labels), id, kind
  target_ids: np.ndarray
  heldout: np.ndarray  # uint8 test images, as many as targets, of the targets' classes
  num_classes: int

  def select(self, *kinds: int) -> dict[str, np.ndarray]:
    keep = np.isin(self.train["kind"], kinds)
    return {key: value[keep] for key, value in self.train.items()}


def build_track(sed: sed_lib.SED, recon: ml_collections.ConfigDict) -> Track:
  """The track's training set from the study's SED (deterministic in the SED)."""
  kind, group = sed.train["kind"], sed.train["group"]
  targets = sed.target_ids[:recon.num_targets]  # fewer when the study has fewer
  rows = []
  for target in targets:
    rows.append(np.flatnonzero((sed.train["id"] == target) & (kind == sed_lib.TARGET)))
    rows.append(np.flatnonzero((group == target) & (kind == sed_lib.SIMILAR))[
        :recon.similar_per_target])
  rest_rows = np.flatnonzero(kind == sed_lib.REST)
  rest = sed_lib.stratified_subset({key: sed.train[key][rest_rows] for key in
                                    ("image", "label", "id")}, recon.num_rest, 0)
  picked = np.concatenate(rows)
  data = {"image": np.concatenate([sed.train["image"][picked], rest["image"]]),
          "label": np.concatenate([sed.train["label"][picked], rest["label"]]),
          "id": np.concatenate([sed.train["id"][picked], rest["id"]]),
          "kind": np.concatenate([kind[picked], np.full(len(rest["id"]), sed_lib.REST,
                                                        np.int8)])}
  num_classes = int(max(sed.train["label"].max(), sed.test["label"].max())) + 1
  if recon.binary:
    data["label"] = data["label"] % 2
    num_classes = 2
  data["label"] = data["label"].astype(np.int32)
  target_labels = sed.train["label"][np.isin(sed.train["id"], targets)]
  pool = np.flatnonzero(np.isin(sed.test["label"], target_labels))
  heldout = sed.test["image"][np.random.default_rng(5).permutation(pool)[:len(targets)]]
  return Track(train=data, target_ids=targets, heldout=heldout, num_classes=num_classes)


def _float(images: np.ndarray) -> np.ndarray:
  return np.asarray(images, np.float32) / 255.0


def _state(fit: reconstruct.MLPFit) -> train.TrainState:
  tx = optax.identity()
  return train.TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=fit.params,
                          batch_stats={}, opt_state=tx.init(fit.params),
                          apply_fn=fit.model.apply, tx=tx)


def run_track(config: ml_collections.ConfigDict, workdir: str, sed: sed_lib.SED, seed: int,
                    method_names: tuple[str, ...], mesh: jax.sharding.Mesh, failures: dict[str, str]
              ) -> tuple[dict[str, dict], dict[tuple[str, int], tuple[float, float]]]:
  """Runs the track for one seed.

  Returns:
    ({model: record with recon_ssim / recon_recovered / residue entries}, {(model, target_id):
    (best SSIM, its residue)}); a model whose reconstruction (or whose method, on the track)
    failed is missing, with the error in `failures[model]`.
  """
  side = min(sed.train["image"].shape[1:3])
  if side < similarity.WINDOW:
    logging.warning("reconstruction track skipped: %dx%d images are smaller than the %dx%d SSIM "
                    "window (set recon.enabled=False to silence this)", side, side,
                    similarity.WINDOW, similarity.WINDOW)
    return {}, {}
  track = build_track(sed, config.recon)
  directory = os.path.join(workdir, "recon", f"seed_{seed}")
  logging.info("stage: reconstruction track seed_%d (|D_r|=%d: %d targets, %d similar, %d rest)",
               seed, len(track.train["id"]), len(track.target_ids),
               int(np.sum(track.train["kind"] == sed_lib.SIMILAR)),
               int(np.sum(track.train["kind"] == sed_lib.REST)))
  fit = _fitter(track, config, seed, mesh)
  targets = _float(track.select(sed_lib.TARGET)["image"])
  heldout = _float(track.heldout)
  results: dict[str, dict[str, np.ndarray]] = {}
  # A method whose model is a study reference (retrain) or its own ensemble (SISA) is not run.
  specs = {name: methods.spec(name) for name in method_names}
  names = list(REFERENCES) + [n for n in method_names
                              if not (specs[n].reference or specs[n].returns_ensemble)]
  for name in names:
    path = os.path.join(directory, f"{name}.npz")
    if os.path.exists(path):
      with np.load(path) as cached:
        results[name] = dict(cached)
      continue
    start = time.perf_counter()
    try:
      candidates = _reconstruct(name, fit, track, config, seed, mesh)
    except Exception as error:  # pylint: disable=broad-except
      # The main study's result of this model stands; its recon_ssim is reported as missing.
      failures[name] = f"{type(error).__name__}: {error}"
      logging.error("reconstruction track %s/seed_%d failed:\n%s", name, seed,
                    traceback.format_exc())
      continue
    target_ssim, index = similarity.best_match(targets, candidates.images)
    heldout_ssim, _ = similarity.best_match(heldout, candidates.images)
    results[name] = {"target_ssim": np.asarray(target_ssim, np.float64),
                     "heldout_ssim": np.asarray(heldout_ssim, np.float64),
                     "matches": candidates.images[np.asarray(index)],
                     "time_s": np.float64(time.perf_counter() - start)}
    if utils.is_main_process():
      os.makedirs(directory, exist_ok=True)
      np.savez(path + ".tmp.npz", **results[name])
      os.replace(path + ".tmp.npz", path)
    logging.info("[recon %s/seed_%d] mean best SSIM: targets %.3f, held-out %.3f (%.0f s)",
                 name, seed, results[name]["target_ssim"].mean(),
                 results[name]["heldout_ssim"].mean(), results[name]["time_s"])
  records, per_target = _records(results, track, config)
  if seed == int(config_lib.as_tuple(config.seeds)[0]):
    _plot(workdir, targets, results)
  return records, per_target


def _fitter(track: Track, config: ml_collections.ConfigDict, seed: int,
            mesh: jax.sharding.Mesh) -> Callable[[str], reconstruct.MLPFit]:
  """`fit(name)`: the track's reference `name` (REFERENCES), trained on first use only."""
  recon = config.recon
  fits: dict[str, reconstruct.MLPFit] = {}

  def fit(name: str) -> reconstruct.MLPFit:
    if name not in fits:
      data = {"original": track.select(sed_lib.TARGET, sed_lib.SIMILAR, sed_lib.REST),
              "retrain": track.select(sed_lib.SIMILAR, sed_lib.REST),
              "clean": track.select(sed_lib.REST),
              "clean_alt": track.select(sed_lib.REST)}[name]
      model_seed = seed + (config.floor_seed_offset if name == "clean_alt" else 0)
      fits[name] = reconstruct.train_mlp(
          _float(data["image"]), data["label"], track.num_classes, hidden=tuple(recon.hidden),
          weight_decay=recon.weight_decay, lr=recon.train_lr, steps=recon.train_steps,
          seed=model_seed, log_every=max(recon.train_steps // 4, 1), mesh=mesh)
    return fits[name]

  return fit


def _reconstruct(name: str, fit: Callable[[str], reconstruct.MLPFit], track: Track,
                 config: ml_collections.ConfigDict, seed: int,
                 mesh: jax.sharding.Mesh) -> reconstruct.Reconstruction:
  """The candidates reconstructed from model `name`'s parameters: a reference's (`fit`), or a
  method's run from the track's original."""
  if name in REFERENCES:
    params = fit(name).params
  else:
    params = _method_params(name, _state(fit("original")), track, config, seed, mesh)
  recon = config.recon
  return reconstruct.kkt_reconstruct(
      reconstruct.mlp_apply_fn(), params, num_classes=track.num_classes,
      image_shape=track.train["image"].shape[1:],
      num_candidates=int(recon.candidates_per_image * len(track.train["id"])),
      steps=recon.steps, lr=None, trial_steps=recon.trial_steps, seed=seed,
      log_every=max(recon.steps // 4, 1), mesh=mesh)


def _method_params(name: str, state: train.TrainState, track: Track,
                   config: ml_collections.ConfigDict, seed: int, mesh) -> Any:
  """Runs method `name` from the track's original model; returns its parameters."""
  model = state.apply_fn.__self__
  run = methods.RunContext(
      forget=track.select(sed_lib.TARGET), retain=track.select(sed_lib.SIMILAR, sed_lib.REST),
      mesh=mesh, seed=seed, num_classes=track.num_classes,
      init_state=lambda key: train.create_state(model, key, track.train["image"].shape[1:]),
      recipe=config.train)
  new_state, _ = methods.call(name, state, run, methods.method_config(config, name),
                              jax.random.fold_in(jax.random.key(seed), 3))
  return new_state.params


def _records(results, track, config) -> tuple[dict[str, dict], dict[tuple[str, int], float]]:
  records, per_target = {}, {}
  if "original" not in results or "clean" not in results:
    return records, per_target
  gap = config.eval.min_gap.get("recon_ssim", 0.0)
  for name, result in results.items():
    f_original, f_clean = results["original"]["target_ssim"], results["clean"]["target_ssim"]
    ratio = residue.ratio(result["target_ssim"], f_original, f_clean, gap)
    aggregates = residue.summaries(result["target_ssim"], f_original, f_clean, gap)
    records[name] = {
        "recon_ssim": {"target": float(result["target_ssim"].mean()),
                       "heldout": float(result["heldout_ssim"].mean())},
        "recon_recovered": {"target": int(np.sum(result["target_ssim"] >=
                                                 config.recon.threshold))},
        # The main study's residue keys (evaluator.RESIDUE_AGGREGATES: mean, median, ratio of
        # sums, defined / undefined counts), under the score `recon_ssim`.
        **{key: {"recon_ssim": aggregates[field]}
           for key, field in evaluator.RESIDUE_AGGREGATES.items()},
        "residue_abs": {"recon_ssim": float(np.mean(result["target_ssim"] - f_clean))},
    }
    for target, value, r in zip(track.target_ids, result["target_ssim"], ratio):
      per_target[(name, int(target))] = (float(value), float(r))
  return records, per_target


def _plot(workdir: str, targets: np.ndarray, results: dict[str, dict]) -> None:
  """report/plots/reconstructions_<method>.png: each target beside its best reconstructions."""
  if not utils.is_main_process():
    return
  plot_dir = os.path.join(workdir, "report", "plots")
  os.makedirs(plot_dir, exist_ok=True)
  shown = [name for name in ("original", "retrain", "clean") if name in results]
  for name in results:
    if name in ("retrain", "clean", "clean_alt"):
      continue
    columns = shown + ([name] if name not in shown else [])
    matches = {column: results[column]["matches"] for column in columns}
    plots.save_reconstruction_grid(os.path.join(plot_dir, f"reconstructions_{name}.png"),
                                   targets, matches, title=f"best reconstructions: {name}")


class ReconPlugin(base.Plugin):
  """Adds the reconstruction track's scores to every seed of a study with `recon.enabled`."""

  def __init__(self):
    self.failures: dict[str, str] = {}  # {model/seed_s: error} of the track's failed models

  def extend(self, task: base.Task, run: base.SeedRun) -> None:
    if not task.config.recon.enabled:
      return
    failures: dict[str, str] = {}
    names = tuple(name for name in run.names if not remedy_track.parse(name)[1])
    track_records, track_rows = run_track(task.config, task.workdir, task.sed, run.seed, names,
                                          task.mesh, failures)
    merge(run.records, run.rows, track_records, track_rows)
    for name, error in failures.items():
      self.failures[f"{name}/seed_{run.seed}"] = error

  def finish(self, task: base.Task, summary: dict[str, Any], runs: dict[int, base.SeedRun],
             status: dict[str, str]) -> None:
    if self.failures:
      summary["recon_failures"] = self.failures


def merge(records: dict[str, dict], rows: list[dict], track_records: dict[str, dict],
          track_rows: dict[tuple[str, int], tuple[float, float]]) -> None:
  """Adds the track's results to a seed's records and per-target rows (in place)."""
  for name, extra in track_records.items():
    if name not in records:
      continue
    for key, value in extra.items():
      if isinstance(value, dict) and isinstance(records[name].get(key), dict):
        records[name][key].update(value)
      else:
        records[name][key] = value
  for row in rows:
    found = track_rows.get((row["model"], row["target_id"]))
    if found is not None:
      row["recon_ssim"], row["residue_recon_ssim"] = found

