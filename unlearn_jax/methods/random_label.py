"""Random labelling (RL): train on the forget set with random labels, together with retained data.

The forget examples get random labels and are trained on with the retained data (Golatkar et al.,
CVPR 2020; run with the retained data as in Fan et al., ICLR 2024).

Sampling, as in the authors' code (github.com/OPTML-Group/Unlearn-Saliency, Classification/
unlearn/RL.py: the relabelled forget set and the retain set are concatenated into one shuffled
loader, `torch.utils.data.ConcatDataset`): an epoch is one pass over R ∪ T in random order, so
each forget example appears once per epoch, in its natural proportion among the retained rows
(`sampling='mixed'`, the default). A budget of a fraction of a pass (`epochs` < 1, or the last,
partial pass of a longer run) keeps every forget example and that fraction of the retained rows,
so that each target is still seen exactly once per pass. `sampling='every_batch'` is this
project's earlier variant: every step joins a retain batch of `batch_size` with
`forget_batch_size` forget rows, so a small forget set is seen in every step (tens of times per
pass).

Labels: the authors draw each random label uniformly over *all* classes (`np.random.randint(0,
num_classes)` or `torch.randint`), so a label may equal the true one (1 time in num_classes);
`label_draw='any'` (default) does the same, 'other' draws among the other classes only. A fresh
label is drawn at every visit (the authors' code draws per epoch, i.e. per visit, too).

Config: `config.unlearn.random_label.{epochs, lr, batch_size, sampling, label_draw,
forget_batch_size}`; `epochs` counts passes over R ∪ T ('mixed') or over the retained data
('every_batch'). The optimiser is `common.run_sgd`'s: SGD, momentum 0.9, the study's weight
decay (the authors' 5e-4).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import ml_collections
import numpy as np

from unlearn_jax import config as config_lib
from unlearn_jax import methods
from unlearn_jax.data import pipeline
from unlearn_jax.methods import common


# `epochs` may be a fraction of a pass (over R ∪ T, or over R with sampling='every_batch').
SPEC = methods.Spec(
    fractional_epochs=True,
    search_space={
        # Passes over R ∪ T, at most the default's (kept ≤10% of retrain's cost; Fan et al.'s
        # 10 epochs are past that budget).
        "epochs": methods.Float(0.25, 0.9),
        # Two decades around Fan et al.'s 0.01 (ICLR 2024; Unlearn-Saliency README: 0.013).
        "lr": methods.Float(1e-3, 1e-1, log=True),
    })

SAMPLINGS = ("mixed", "every_batch")
LABEL_DRAWS = ("any", "other")


def default_config() -> ml_collections.ConfigDict:
  """RL hyper-parameters (Fan et al., ICLR 2024 run RL for 10 epochs at lr 0.01 on CIFAR-10)."""
  config = ml_collections.ConfigDict()
  config.epochs = 0.9  # passes over R ∪ T (kept to ≤10% of retrain's cost).
  config.lr = 0.01  # constant SGD learning rate (momentum 0.9).
  config.batch_size = 128  # examples per step ('every_batch': retain examples per step).
  config.sampling = "mixed"  # 'mixed': one shuffled pass over R ∪ T (authors); 'every_batch'.
  config.label_draw = "any"  # 'any' class (authors' code) or only 'other' classes.
  config.forget_batch_size = 16  # 'every_batch' only: relabelled forget examples per step.
  return config


def check_config(cfg: ml_collections.ConfigDict, name: str = "random_label") -> None:
  """sampling and label_draw must name one of their choices."""
  config_lib.require_choice(f"unlearn.{name}.sampling", cfg.sampling, SAMPLINGS)
  config_lib.require_choice(f"unlearn.{name}.label_draw", cfg.label_draw, LABEL_DRAWS)


def relabel(labels: np.ndarray, num_classes: int, rng: np.random.Generator,
            other: bool = True) -> np.ndarray:
  """Random labels: uniform over the other classes (`other`) or over all classes."""
  if not other:
    return rng.integers(0, num_classes, size=labels.shape).astype(labels.dtype)
  shift = rng.integers(1, num_classes, size=labels.shape)
  return ((labels + shift) % num_classes).astype(labels.dtype)


@dataclasses.dataclass
class MixedSampler:
  """Shuffled batches over R ∪ T, each forget row once per pass, addressable by global step.

  Rows are indexed 0..|R|-1 (retain) then |R|..|R|+|T|-1 (forget). A pass is
  `steps_per_epoch` = ceil((|R| + |T|) / batch_size) steps; a run of `num_steps` steps is whole
  passes and then a partial one of r < steps_per_epoch steps, which holds every forget row and
  min(|R|, r·batch_size - |T|) retain rows drawn at random (only forget rows, at random, if even
  they do not fit). Rows missing from a last batch are filled with weight-0 copies.
  """
  retain: dict[str, np.ndarray]
  forget: dict[str, np.ndarray]
  batch_size: int
  seed: int
  num_steps: int

  def __post_init__(self):
    self.num_retain = len(self.retain["label"])
    self.num_forget = len(self.forget["label"])
    self.data = {key: np.concatenate([self.retain[key], self.forget[key]])
                 for key in pipeline.BATCH_KEYS}
    weights = [part.get("sample_weight", np.ones(len(part["label"]))).astype(np.float32)
               for part in (self.retain, self.forget)]
    self.weight = np.concatenate(weights)
    self.steps_per_epoch = -(-(self.num_retain + self.num_forget) // self.batch_size)
    self._orders: dict[int, np.ndarray] = {}

  @staticmethod
  def steps_for(num_examples: int, batch_size: int, epochs: float) -> int:
    """Steps in `epochs` passes over `num_examples` rows (fractions allowed), at least one."""
    return max(1, int(round(float(epochs) * -(-num_examples // batch_size))))

  def order(self, epoch: int) -> np.ndarray:
    """The rows of pass `epoch`, in the order they are visited."""
    if epoch not in self._orders:
      rng = np.random.default_rng([self.seed, epoch])
      full_epochs, last = divmod(self.num_steps, self.steps_per_epoch)
      forget_rows = self.num_retain + np.arange(self.num_forget)
      if epoch < full_epochs or last == 0:
        rows = np.arange(self.num_retain + self.num_forget)
      else:  # the partial last pass: all forget rows, and retain rows in the space left
        capacity = last * self.batch_size
        if capacity < self.num_forget:
          rows = rng.permutation(forget_rows)[:capacity]
        else:
          keep = min(self.num_retain, capacity - self.num_forget)
          rows = np.concatenate([rng.permutation(self.num_retain)[:keep], forget_rows])
      self._orders = {epoch: rng.permutation(rows)}  # one pass cached at a time
    return self._orders[epoch]

  def rows(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(row indices of step `step`'s batch, real-row mask; filler rows are False)."""
    epoch, index = divmod(step, self.steps_per_epoch)
    order = self.order(epoch)
    rows = order[index * self.batch_size:(index + 1) * self.batch_size]
    real = np.ones(self.batch_size, bool)
    if len(rows) < self.batch_size:
      real[len(rows):] = False
      rows = np.concatenate([rows, np.resize(order, self.batch_size - len(rows))])
    return rows, real

  def batch(self, step: int, num_classes: int, other: bool) -> dict[str, np.ndarray]:
    """Step `step`'s batch (image, label, weight); its forget rows carry random labels."""
    rows, real = self.rows(step)
    batch = {key: self.data[key][rows] for key in pipeline.BATCH_KEYS}
    is_forget = rows >= self.num_retain
    labels_rng = np.random.default_rng([self.seed, step, 7])
    batch["label"][is_forget] = relabel(batch["label"][is_forget], num_classes, labels_rng,
                                        other)
    batch["weight"] = np.where(real, self.weight[rows], 0.0).astype(np.float32)
    return batch


def relabelled_batches(run, cfg) -> tuple[Callable[[int], dict[str, np.ndarray]], int]:
  """(batch_fn, num_steps) of random-label training with `cfg.sampling` (see the module doc).

  `cfg` holds epochs, batch_size, sampling, label_draw and forget_batch_size.
  """
  other = cfg.label_draw == "other"
  if cfg.sampling == "mixed":
    num_steps = MixedSampler.steps_for(len(run.retain["label"]) + len(run.forget["label"]),
                                       int(cfg.batch_size), cfg.epochs)
    sampler = MixedSampler(run.retain, run.forget, int(cfg.batch_size), run.seed, num_steps)
    return (lambda step: sampler.batch(step, run.num_classes, other)), num_steps
  retain = pipeline.EpochSampler(run.retain, int(cfg.batch_size), run.seed)
  forget_size = min(int(cfg.forget_batch_size), len(run.forget["label"]))
  forget = pipeline.EpochSampler(run.forget, forget_size, run.seed + 1)

  def batch_fn(step: int) -> dict[str, np.ndarray]:
    forget_batch = forget.batch(step)
    labels_rng = np.random.default_rng([run.seed, step, 7])
    forget_batch["label"] = relabel(forget_batch["label"], run.num_classes, labels_rng, other)
    return pipeline.concat(retain.batch(step), forget_batch)

  return batch_fn, retain.steps_for(cfg.epochs)


def unlearn(state, run, cfg, rng):
  """Trains on retained data together with randomly relabelled forget examples."""
  del rng
  batch_fn, num_steps = relabelled_batches(run, cfg)
  return common.run_sgd(state, batch_fn, num_steps, cfg.lr, run, "random_label", run.recipe)
