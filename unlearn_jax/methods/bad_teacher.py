"""Bad Teacher: distil a competent teacher on retained data and an incompetent one on T.

Chundawat, Tarun, Mandal and Kankanhalli, "Can Bad Teaching Induce Forgetting? Unlearning in
Deep Networks Using an Incompetent Teacher" (AAAI 2023; code
github.com/vikram2000b/bad-teaching-unlearning). The student starts as a copy of the original
model. Two frozen teachers: the competent one is the original model, the incompetent one a
randomly initialised model of the same architecture (`run.init_state(rng)`). The student is
trained on T together with a random subset of the retained data, shuffled into the same
batches, to minimise

  KL(teacher_x ‖ student)   with teacher_x = incompetent for x ∈ T, competent otherwise,

between temperature-T softmaxes (`UnlearnerLoss` in their `unlearn.py`).

Details from the authors' code (`CIFARSuper20_Rocket_Unlearn.ipynb`, and the same settings in
the SSD authors' re-run, github.com/if-loops/selective-synaptic-dampening `blindspot`):
30% of the retained data, one epoch, batch 256, Adam at lr 1e-4 without weight decay (their
`torch.optim.Adam(model.parameters(), lr=...)`; the paper's code says otherwise than the 5e-4 of
the other image methods' recipe, so this module passes its own optimiser (Adam, no decay) rather
than taking `common.run_sgd`'s), T = 1, student in training mode and teachers in evaluation mode.
Their `F.kl_div` default reduction divides the summed KL by batch × classes; we average over the
batch only (KL summed over classes). The two differ by the constant factor `num_classes`,
which Adam's update does not see (up to its epsilon).

Cost with defaults on the default study: 5 steps over ~1,270 examples with one student
forward/backward and two teacher forwards each, about half a training epoch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from unlearn_jax import config as config_lib
from unlearn_jax import methods, train
from unlearn_jax.data import pipeline
from unlearn_jax.methods import common

SPEC = methods.Spec(search_space={
    # Two decades around the authors' Adam lr 1e-4 (CIFARSuper20_Rocket_Unlearn.ipynb).
    "lr": methods.Float(1e-5, 1e-3, log=True),
    # Around the authors' KL_temperature = 1.
    "temperature": methods.Float(0.5, 4.0, log=True),
    # The authors' 0.3 of R; 0.6 is about one training epoch of work (≤10% of retraining).
    "retain_fraction": methods.Float(0.1, 0.6),
})


def default_config() -> ml_collections.ConfigDict:
  """Bad Teacher hyper-parameters (the authors' notebook)."""
  config = ml_collections.ConfigDict()
  config.epochs = 1  # passes over T ∪ the retain subset (authors: 1).
  config.lr = 1e-4  # Adam learning rate (authors: 1e-4).
  config.batch_size = 256  # examples per step, T and retained mixed (authors: 256).
  config.retain_fraction = 0.3  # share of the retained data drawn for the run (authors: 0.3).
  config.temperature = 1.0  # softmax temperature of the KL (authors: KL_temperature = 1).
  return config


def check_config(cfg: ml_collections.ConfigDict) -> None:
  """`retain_fraction` must be in (0, 1] (shared fields are checked by methods.check_config)."""
  config_lib.require_number("unlearn.bad_teacher.retain_fraction", cfg.retain_fraction,
                            low=0, high=1, low_open=True)


def bad_teacher_step(state: train.TrainState, batch: dict[str, jax.Array], base_key: jax.Array,
                     *, competent: dict, incompetent: dict, temperature: float
                     ) -> tuple[train.TrainState, dict]:
  """One step on KL(teacher_x ‖ student); `batch['label']` is 1 for T rows, 0 for retained."""
  rng = jax.random.fold_in(base_key, state.step)
  images = train.to_float(batch["image"])
  is_forget = batch["label"].astype(jnp.float32)[:, None]
  good = jax.nn.softmax(state.apply_fn(competent, images, train=False) / temperature)
  bad = jax.nn.softmax(state.apply_fn(incompetent, images, train=False) / temperature)
  target = jax.lax.stop_gradient(is_forget * bad + (1.0 - is_forget) * good)

  def loss_fn(params):
    logits, updates = train.forward(state, params, images, rng)
    log_probs = jax.nn.log_softmax(logits / temperature)
    kl = jnp.sum(target * (jnp.log(jnp.maximum(target, 1e-30)) - log_probs), axis=-1)
    weights = batch["weight"]
    return jnp.sum(weights * kl) / jnp.maximum(jnp.sum(weights), 1e-12), updates

  (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads, updates), {"loss": loss}


jit_bad_teacher_step = jax.jit(bad_teacher_step, donate_argnums=0,
                               static_argnames=("temperature",))


def unlearning_data(run, fraction: float) -> dict[str, np.ndarray]:
  """T plus a seeded random `fraction` of the retained data; label = 1 on T, 0 elsewhere."""
  num_retain = len(run.retain["label"])
  size = max(1, int(fraction * num_retain))
  rows = np.random.default_rng([run.seed, 11]).choice(num_retain, size, replace=False)
  images = np.concatenate([run.forget["image"], run.retain["image"][np.sort(rows)]])
  flags = np.r_[np.ones(len(run.forget["label"])), np.zeros(size)].astype(np.int32)
  return {"image": images, "label": flags}


def unlearn(state, run, cfg, rng):
  """Distils the competent teacher on retained rows and a random-init teacher on T."""
  mixed = unlearning_data(run, float(cfg.retain_fraction))
  sampler = pipeline.EpochSampler(mixed, int(cfg.batch_size), run.seed)
  num_steps = int(cfg.epochs) * sampler.steps_per_epoch
  incompetent = run.init_state(rng)
  step_fn = functools.partial(jit_bad_teacher_step, competent=state.variables(),
                              incompetent=incompetent.variables(),
                              temperature=float(cfg.temperature))
  tx = train.make_optimizer("adam", float(cfg.lr))  # Adam, no weight decay (see above)
  state, info = common.run_sgd(state, sampler.batch, num_steps, cfg.lr, run, "bad_teacher",
                               run.recipe, step_fn=step_fn, tx=tx)
  info.update(forget_examples=int(mixed["label"].sum()),
              retain_examples=int(len(mixed["label"]) - mixed["label"].sum()))
  return state, info
