"""The base study config (every field, its unit and default) and its checks, section by section.

Each section of the config is built by one small function that adds its fields, each documented
by the comment right above it (or beside it), and is checked by the function right after it;
`SECTIONS` lists the (build, check) pairs. `base_config()` runs every build; `validate` rejects a
config with a field the base lacks, then runs every check: a wrong type or an out-of-range value
fails before any work starts, with one line that names the field.

Study configs in `configs/` start from `base_config()` and change values.
"""

from __future__ import annotations

import math

import ml_collections

from unlearn_jax import config as config_lib
from unlearn_jax import methods, models
from unlearn_jax.evaluate import registry

c = config_lib  # the checks read c.require(...), c.require_number(...)


def build_data(config: ml_collections.ConfigDict) -> None:
  """The dataset and how much of it a study draws."""
  # tfds name: 'mnist_subset' (embedded, offline), or a dataset prepared in data_dir
  # ('mnist', 'fashion_mnist', 'cifar10').
  config.dataset = "mnist_subset"
  # tfds data dir; '' means tfds's default (~/tensorflow_datasets or $TFDS_DATA_DIR).
  config.data_dir = ""
  # Number of training examples drawn (stratified, before the SED is built); 0 = all.
  config.train_size = 0
  # Number of test examples drawn (stratified); 0 = all.
  config.test_size = 0


def check_data(config: ml_collections.ConfigDict) -> None:
  """Checks dataset (known, prepared), data_dir, train_size, test_size."""
  from unlearn_jax.data import sources  # pylint: disable=g-import-not-at-top
  c.require(isinstance(config.dataset, str) and config.dataset, "dataset", config.dataset,
            "must be a non-empty string")
  try:
    sources.check_name(config.dataset, config.data_dir or None)
    sources.image_shape(config.dataset, config.data_dir or None)
  except sources.DatasetNotPreparedError:
    raise  # its own type: the message says how to install or prepare the data
  except ValueError as error:
    raise c.ConfigError(f"config.dataset={config.dataset!r}: {error}") from None
  c.require(isinstance(config.data_dir, str), "data_dir", config.data_dir, "must be a string")
  c.require_number("train_size", config.train_size, low=0, integer=True)
  c.require_number("test_size", config.test_size, low=0, integer=True)


def build_model(config: ml_collections.ConfigDict) -> None:
  """The image model and its keyword arguments."""
  # Model name (a module in unlearn_jax/models): 'mlp', 'cnn', 'resnet18'.
  config.model = "cnn"
  # Keyword arguments of the model (cnn: features, dense; mlp: hidden; resnet18: width); {} = the
  # model's defaults. A config that names its model in the variant (`:model=cnn`) fills this with
  # the model's fields so that `--config.model_kwargs.<field>=...` can override them.
  config.model_kwargs = ml_collections.ConfigDict()


def check_model(config: ml_collections.ConfigDict) -> None:
  """Checks model (a registered image model) and model_kwargs (the model's own fields)."""
  c.validate_names("model", [config.model], models.available)
  c.require(config.model != "transformer", "model", config.model,
            "is the language-model track's model (configs/sed_qa.py); image studies use "
            "mlp, cnn, resnet18 or a registered image model")
  try:  # builds the module only (no parameters): checks model_kwargs against the model's fields
    models.get(config.model, 2, **config.model_kwargs.to_dict())
  except (TypeError, ValueError) as error:
    raise c.ConfigError(f"config.model_kwargs: {error}") from None


def build_sed(config: ml_collections.ConfigDict) -> None:
  """The similarity-entailed dataset: targets, their similar samples and how they are made."""
  # Similarity-entailed dataset (docs/design.md §3.1, §3.3).
  config.sed = ml_collections.ConfigDict()
  config.sed.num_targets = 10  # |T|, targets drawn from the training split.
  config.sed.similar_per_target = 20  # |S(t)|, similar samples of each target.
  # One of config_lib.GENERATORS: block_mask, duplicate and gaussian_noise derive S(t) from t and
  # append it to D; nearest takes the |S(t)| training rows of t's class most similar to t.
  config.sed.generator = "block_mask"
  config.sed.block = 4  # block_mask: block side b in pixels.
  config.sed.ratio = 0.25  # block_mask: fraction r of the blocks zeroed, in [0, 1).
  config.sed.sigma = 0.1  # gaussian_noise: std of the noise, in units of the [0, 1] intensity.
  # nearest: the similarity that ranks the rows, one of config_lib.SIMILARITIES: 'ssim' of the
  # images, or 'embedding', the cosine of the penultimate-layer features of a probe trained with
  # the study's recipe on the training split without the targets (tasks/image.py).
  config.sed.similarity = "ssim"
  # Target choice: 'random', 'class_balanced', or 'atypical': the training samples that a probe
  # model trained (with the study's recipe) on a random half of the training split scores with
  # the lowest margin among the other half (docs/design.md §3.3).
  config.sed.selection = "random"
  config.sed.seed = 0  # seed of target choice and generation; fixed across training seeds.
  # Several SEDs (other targets, other similar samples): one study per SED seed, each with
  # `sed.seed` set to it, in WORKDIR/sed_<k>, pooled over (SED seed, seed) units in
  # WORKDIR/report (replicates.py); () = the one SED of `sed.seed`.
  config.sed_seeds = ()


def check_sed(config: ml_collections.ConfigDict) -> None:
  """Checks sed (data/sed.py's rules, and the generator's own: data/generators/), with the
  impossible combinations: more targets than training examples (with the nearest generator,
  more targets and neighbours), a block larger than the image, SSIM neighbours of images smaller
  than its window."""
  from unlearn_jax.data import sed as sed_lib, sources  # pylint: disable=g-import-not-at-top
  data_dir = config.data_dir or None
  image_side = min(sources.image_shape(config.dataset, data_dir)[:2])
  num_train = sources.num_train_examples(config.dataset, data_dir)
  if config.train_size:
    num_train = min(num_train or config.train_size, config.train_size)
  sed_lib.check_params(config.sed, num_train=num_train or math.inf, image_side=image_side)
  sed_seeds = c.as_tuple(config.sed_seeds)
  for seed in sed_seeds:
    c.require_number("sed_seeds", seed, low=0, integer=True)
  c.require(len(set(sed_seeds)) == len(sed_seeds), "sed_seeds", config.sed_seeds,
            "SED seeds must be unique")


def build_train(config: ml_collections.ConfigDict) -> None:
  """The training recipe of the references."""
  # Training recipe, shared by original/retrain/clean/clean_alt and the `retrain` method.
  config.train = ml_collections.ConfigDict()
  config.train.epochs = 15  # passes over the training set.
  config.train.batch_size = 128  # global batch (split across devices), examples.
  config.train.optimizer = "sgd"  # one of config_lib.OPTIMIZERS.
  config.train.lr = 0.05  # peak learning rate.
  config.train.momentum = 0.9  # sgd momentum (ignored by adam/adamw).
  config.train.weight_decay = 5e-4  # L2 (sgd/adam) or decoupled (adamw) weight decay.
  config.train.schedule = "cosine"  # 'constant' or 'cosine' (decay to 0 over all steps).
  config.train.checkpoint_every = 500  # steps between orbax checkpoints (and one at the end).
  config.train.log_every = 50  # steps between progress lines and metrics.jsonl records.
  # Train steps per jitted call (a lax.scan over that many batches); 8 helps small models, whose
  # steps cost less than a call. Results are identical to 1.
  config.train.steps_per_call = 1


def check_train(config: ml_collections.ConfigDict) -> None:
  """The recipe (shared with the LM track) and steps_per_call."""
  c.check_train_recipe(config.train)
  c.require_number("train.steps_per_call", config.train.steps_per_call, low=1, integer=True)


def build_unlearning(config: ml_collections.ConfigDict) -> None:
  """The unlearning methods to run and their hyper-parameters."""
  # Unlearning methods run from the `original` checkpoint, in this order.
  # Method names, in run order; 'all' runs every method in unlearn_jax/methods.
  config.methods = ("finetune", "grad_ascent", "random_label")
  # Per-method hyper-parameters, one section per method module (config.unlearn.<name>): each
  # method module's `default_config()` defines and documents its fields.
  config.unlearn = methods.default_configs()


def check_unlearning(config: ml_collections.ConfigDict) -> None:
  """Checks methods (known, unique; `all` and `pkg.module:function` resolved) and their
  sections."""
  names = methods.resolve(c.as_tuple(config.methods))  # lists what exists on a miss
  c.require(len(set(names)) == len(names), "methods", config.methods, "names must be unique")
  for name in names:
    base, _ = methods.split_remedy(name)
    methods.check_config(base, methods.method_config(config, base))


def build_recon(config: ml_collections.ConfigDict) -> None:
  """The reconstruction track."""
  # The reconstruction track (unlearn_jax/recon_track.py): the study in miniature on a small
  # training set D_r (the first targets with their first similar samples, and some rest), MLPs
  # trained full batch with weight decay to a near-stationary point, and KKT reconstruction from
  # every model's parameters (Haim et al., NeurIPS 2022; Buzaglo et al., NeurIPS 2023);
  # `recon_ssim` is each target's best SSIM among the candidates.
  config.recon = ml_collections.ConfigDict()
  config.recon.enabled = True  # False skips the track (recon_ssim then absent from the report).
  config.recon.num_targets = 4  # targets of D_r: the study's first ones (at most all of them).
  config.recon.similar_per_target = 5  # similar samples per target in D_r (at most the study's).
  config.recon.num_rest = 60  # unrelated samples in D_r (stratified from R).
  config.recon.binary = True  # labels become the class parity (two classes, as in Haim et al.).
  config.recon.hidden = (200, 200)  # MLP hidden widths.
  config.recon.weight_decay = 1e-2  # full-batch GD: L2 coefficient (stationarity needs it).
  config.recon.train_lr = 0.1  # full-batch GD step size.
  config.recon.train_steps = 3000  # full-batch GD steps.
  config.recon.candidates_per_image = 2.0  # candidates = this × |D_r| (Haim et al.: about 2).
  config.recon.steps = 2000  # Adam steps of the reconstruction.
  config.recon.trial_steps = 200  # steps of each learning-rate trial.
  config.recon.threshold = 0.4  # best SSIM at which a target counts as recovered.


def check_recon(config: ml_collections.ConfigDict) -> None:
  """Checks recon."""
  r = config.recon
  c.require_bool("recon.enabled", r.enabled)
  c.require_bool("recon.binary", r.binary)
  c.require_integers("recon", r, num_targets=1, similar_per_target=0, num_rest=2, train_steps=1,
                     steps=1, trial_steps=1)
  hidden = c.as_tuple(r.hidden)
  c.require(len(hidden) >= 1 and all(isinstance(h, int) and h >= 1 for h in hidden),
            "recon.hidden", r.hidden, "must be positive layer widths, e.g. (200, 200)")
  for key in ("weight_decay", "train_lr", "candidates_per_image"):
    c.require_number(f"recon.{key}", r[key], low=0, low_open=True)
  c.require_number("recon.threshold", r.threshold, low=-1, high=1)


def build_remedy(config: ml_collections.ConfigDict) -> None:
  """The remedies: detecting the neighbourhood of each target and unlearning it."""
  # Remedies (unlearn_jax/remedy_track.py): detect each target's similar samples, unlearn the
  # neighbourhood, and measure the price. A method named `<method>+nbr` (T and its detected
  # neighbours), `+wnbr` (neighbours weighted by similarity) or `+dist` (as many samples chosen
  # by the distributional-unlearning rule) in `methods` runs whether or not `enabled` is set.
  config.remedy = ml_collections.ConfigDict()
  # True: report `detection` (precision/recall of every measure against provenance), run
  # `remedy.methods` as +nbr, +wnbr and +dist, and the trade-off sweep over neighbours per target.
  config.remedy.enabled = False
  # Similarity measures reported under `detection` (any of remedies.detect.MEASURES).
  config.remedy.measures = ("ssim", "pixel_cosine", "embedding", "gradient")
  # The measure that picks the neighbours of the +nbr/+wnbr methods. embedding and gradient use
  # the original model of the seed (penultimate-layer features; last-layer loss gradients).
  config.remedy.measure = "ssim"
  # Neighbour rule: 'tau' (similarity >= tau) or 'top_k' (the k most similar per target).
  config.remedy.rule = "tau"
  config.remedy.tau = 0.6  # threshold of `rule='tau'`, in the measure's unit (cosine/SSIM).
  config.remedy.top_k = 20  # neighbours per target of `rule='top_k'`.
  # True: the neighbours are the provenance's similar samples (the detection upper bound).
  config.remedy.ground_truth = False
  # With `enabled`: methods run as `<m>+nbr`, `<m>+wnbr` and `<m>+dist` besides `methods`.
  config.remedy.methods = ("retrain", "finetune")
  # Trade-off sweep (with `enabled`): these methods with the top-k neighbours of `measure` for
  # each k; results under summary `remedy.tradeoff` and report/plots/remedy_tradeoff.png.
  config.remedy.sweep_methods = ("retrain", "finetune")
  config.remedy.sweep_top_k = (5, 10, 20, 40)  # neighbours per target, one run per value.
  config.remedy.batch_size = 512  # candidates per detection chunk.


def check_remedy(config: ml_collections.ConfigDict) -> None:
  """Checks remedy: measures, rule, and the methods it runs (plain names)."""
  from unlearn_jax.remedies import detect  # pylint: disable=g-import-not-at-top
  m = config.remedy
  c.require_bool("remedy.enabled", m.enabled)
  for measure in c.as_tuple(m.measures):
    c.require_choice("remedy.measures", measure, detect.MEASURES)
  c.require_choice("remedy.measure", m.measure, detect.MEASURES)
  c.require_choice("remedy.rule", m.rule, ("tau", "top_k"))
  c.require_number("remedy.tau", m.tau, low=-1, high=1)
  c.require_integers("remedy", m, top_k=1, batch_size=1)
  c.require_bool("remedy.ground_truth", m.ground_truth)
  for field in ("methods", "sweep_methods"):
    for name in c.as_tuple(m[field]):
      base = methods.resolve((name,))[0]
      c.require(not methods.split_remedy(base)[1], f"remedy.{field}", name,
                "must name plain methods (the remedy adds the suffixes)")
      methods.check_config(base, methods.method_config(config, base))
  for k in c.as_tuple(m.sweep_top_k):
    c.require_number("remedy.sweep_top_k", k, low=1, integer=True)


def build_evaluation(config: ml_collections.ConfigDict) -> None:
  """Evaluation: batches and residue floors (LiRA, relearn and the attacks across seeds apart)."""
  # Evaluation of every model on target / similar / rest / test.
  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 1000  # examples per evaluation batch (padded and masked).
  # Minimum |f(original) - f(clean)| for a target's residue ratio to be defined, per score with
  # a residue, in the score's unit (e.g. margin: logits; mia: AUC of the loss attack, a
  # set-level score). Each score's unit and default are its declaration in evaluate/scores/.
  config.eval.min_gap = ml_collections.ConfigDict(registry.min_gaps())
  # Models of the seed-noise floor per seed: clean_alt (seed + floor_seed_offset) and
  # clean_alt_<j> (seed + j × floor_seed_offset) for j up to this; their spread is reported.
  config.eval.floor_seeds = 1
  # The control (tasks/control.py): every method again on the same targets without their
  # similar samples (one more reference and one more run per method and seed).
  config.eval.control = False
  # Specificity (tasks/specificity.py): each method's drop on non-targets matched to the
  # targets (same class, closest original margin), retained and held out.
  config.eval.specificity = False


def check_evaluation(config: ml_collections.ConfigDict) -> None:
  """Checks eval.batch_size and eval.min_gap."""
  c.require_integers("eval", config.eval, batch_size=1)
  c.require_integers("eval", config.eval, floor_seeds=1)
  c.require_bool("eval.control", config.eval.control)
  c.require_bool("eval.specificity", config.eval.specificity)
  c.check_min_gaps(config.eval.min_gap)


def build_lira(config: ml_collections.ConfigDict) -> None:
  """The LiRA membership attack's reference models (eval.lira)."""
  # LiRA (Carlini et al., S&P 2022): reference models trained with the study's recipe on R plus
  # a random half of the target groups (a target with its similar samples) and of `num_heldout`
  # test samples of the targets' classes (the non-member candidates), in complementary pairs, so
  # every group is IN for half of them. Trained once per study (all at once where `vmap` pays).
  config.eval.lira = ml_collections.ConfigDict()
  config.eval.lira.num_models = 8  # reference models (even; 0 disables LiRA).
  config.eval.lira.num_heldout = 100  # held-out candidates (test samples), at most what exists.
  # One σ per side (IN, OUT) and population (targets, held-out candidates, fitted apart) while
  # an example has fewer than `per_example_min` IN or OUT references, then one per example;
  # False: one per example always. Carlini et al. advise the fixed variance below 64 models.
  config.eval.lira.fix_variance = True
  config.eval.lira.per_example_min = 32  # references a side from which σ is per example.
  config.eval.lira.fpr = 0.05  # FPR at which `lira_tpr` is reported (1/num_heldout resolution).
  config.eval.lira.seed = 10000  # reference model k trains with seed `seed + k`.


def check_lira(config: ml_collections.ConfigDict) -> None:
  """Checks eval.lira."""
  section = config.eval.lira
  c.require_integers("eval.lira", section, num_models=0, num_heldout=1, seed=0,
                     per_example_min=2)
  c.require(section.num_models % 2 == 0, "eval.lira.num_models", section.num_models,
            "must be even (reference models come in complementary pairs)")
  c.require_bool("eval.lira.fix_variance", section.fix_variance)
  c.require_number("eval.lira.fpr", section.fpr, low=0, high=1, low_open=True)


def build_relearn(config: ml_collections.ConfigDict) -> None:
  """Relearn time (eval.relearn)."""
  # Relearn time: full-batch SGD steps on T until T's mean loss is at most `target_loss`.
  config.eval.relearn = ml_collections.ConfigDict()
  config.eval.relearn.lr = 1.0  # SGD learning rate (no momentum, no weight decay).
  # The level (nats, mean train-mode cross-entropy on T), one number for every model so that the
  # counts compare, and below every model's own loss so that every count is a relearning. On the
  # default study (seed 0) T's loss is 4.9e-6 for original, 6.8e-6 for retrain (both memorise
  # T, retrain through S), 6.1e-4 for clean and 2.3e-4 for clean_alt; to 3e-6 at lr 1.0 they
  # count 57, 101, 494 and 489 steps (at 1e-4 and lr 0.1: 0, 0, 73, 42, which cannot tell the
  # original from retrain); the level was set from these targets, and on other targets
  # (sed.seed=1) it gives 328, 303, 944 and 881. Shorter trainings leave far more loss on T
  # (`:runlocal`, 3 epochs: 0.1-0.3 nats), so `:runlocal` relearns to 1e-2 at lr 0.1.
  config.eval.relearn.target_loss = 3e-6
  config.eval.relearn.max_steps = 3000  # cap; a model that never gets there reports cap + 1.


def check_relearn(config: ml_collections.ConfigDict) -> None:
  """Checks eval.relearn."""
  section = config.eval.relearn
  c.require_number("eval.relearn.lr", section.lr, low=0, low_open=True)
  c.require_integers("eval.relearn", section, max_steps=0)
  c.require_number("eval.relearn.target_loss", section.target_loss, low=0)


def build_attacks(config: ml_collections.ConfigDict) -> None:
  """The SVC MIA and the ε estimate of the unlearning challenge (eval)."""
  # SVC MIA-efficacy (Jia et al., NeurIPS 2023; SalUn): examples per side of the SVC's
  # training set (retain vs test); 0 disables it.
  config.eval.svc_max_train = 2000
  # The ε estimate of the unlearning challenge compares a model's seeds with retrain's (and
  # clean's): with few models its threshold rules separate two samples of one distribution by
  # chance (3 a side gives the cap 50 for many targets), so it is reported only from this many
  # seeds on. U-LiRA (per-example σ) is n/a below 8 seeds (`mia.ULIRA_MIN_MODELS`).
  config.eval.epsilon_min_seeds = 8


def check_attacks(config: ml_collections.ConfigDict) -> None:
  """Checks eval.svc_max_train and eval.epsilon_min_seeds."""
  c.require_integers("eval", config.eval, svc_max_train=0, epsilon_min_seeds=2)


def build_tune(config: ml_collections.ConfigDict) -> None:
  """Tuning each method on a tuning SED (tune.py, docs/design.md §4.2)."""
  # Tuning: each method's search space (declared in its module) searched on a tuning SED, other
  # targets than the evaluated ones, before the seeds run (docs/design.md §4.2).
  config.tune = ml_collections.ConfigDict()
  config.tune.enabled = False  # tune every method with a search space before the seeds run.
  config.tune.trials = 20  # trials per method (Optuna).
  config.tune.sampler = "tpe"  # 'tpe' (seeded TPE) or 'grid' (grid_points values per range).
  config.tune.startup_trials = 8  # tpe: random trials before TPE models the results.
  config.tune.grid_points = 3  # grid: values per numeric range (log-spaced where log).
  config.tune.seed = 0  # trial n samples with seed + n.
  # The study's storage: any SQLAlchemy URL ('' = sqlite:///WORKDIR/tuning/optuna.db). Several
  # processes or machines pointed at one storage share each method's trials.
  config.tune.storage = ""
  config.tune.sed_seed = 1000  # SED seed of the tuning targets (not sed.seed).
  # Residue scores whose |mean| over the tuning targets the tuner minimises (their sum).
  config.tune.objective = ("margin", "mia")
  config.tune.max_test_drop = 0.01  # feasible: test accuracy ≥ original's minus this.
  config.tune.cost_cap = 0.1  # feasible: unlearning time ≤ this × retraining's (clean's) time.
  config.tune.methods = ()  # the methods to tune; () = every method run that has a space.
  # 'tuning' (a tuning SED) or 'oracle': tuned on the evaluated targets, a labelled upper bound.
  config.tune.mode = "tuning"


def check_tune(config: ml_collections.ConfigDict) -> None:
  """Checks tune; the search spaces and the storage are checked when a study starts (tune.py)."""
  t = config.tune
  check_tune_fields(t, registry.residue_scores("logits") + ("mia",))
  evaluated = {int(config.sed.seed), *(int(k) for k in c.as_tuple(config.sed_seeds))}
  c.require(t.mode == "oracle" or int(t.sed_seed) not in evaluated, "tune.sed_seed",
            t.sed_seed, "must differ from sed.seed and every sed_seeds entry (the tuning "
            "targets are other targets)")


def check_tune_fields(t: ml_collections.ConfigDict, scores: tuple[str, ...]) -> None:
  """The rules of the `tune` fields that both tracks share; `scores` are the track's residue
  scores an objective may name."""
  c.require_bool("tune.enabled", t.enabled)
  c.require_integers("tune", t, trials=1, startup_trials=0, grid_points=2, seed=0, sed_seed=0)
  c.require_choice("tune.sampler", t.sampler, ("tpe", "grid"))
  c.require_choice("tune.mode", t.mode, ("tuning", "oracle"))
  c.require_number("tune.max_test_drop", t.max_test_drop, low=0, high=1)
  c.require_number("tune.cost_cap", t.cost_cap, low=0, low_open=True)
  objective = c.as_tuple(t.objective)
  c.require(bool(objective), "tune.objective", t.objective, "names at least one residue score")
  for score in objective:
    c.require_choice("tune.objective", score, scores)


def build_stream(config: ml_collections.ConfigDict) -> None:
  """Requests that arrive over time (tasks/stream.py): every method through rounds of requests."""
  # The stream mode: each method unlearns `requests` deletion requests in turn, each from the
  # model the previous request produced, against a retraining reference per round.
  config.stream = ml_collections.ConfigDict()
  # Rounds of deletion requests, each unlearned from the previous round's model; 0 = off.
  config.stream.requests = 0
  # 'targets_then_similar': T split over rounds 1..N-1, round N requests S of round 1's
  # targets; 'targets': T split over the N rounds.
  config.stream.schedule = "targets_then_similar"


def check_stream(config: ml_collections.ConfigDict) -> None:
  """Checks stream.requests (0 or ≥ 2, no more target rounds than targets) and stream.schedule."""
  s = config.stream
  c.require_number("stream.requests", s.requests, low=0, integer=True)
  c.require(s.requests != 1, "stream.requests", s.requests,
            "must be 0 (off) or at least 2 (one request is the study itself)")
  c.require_choice("stream.schedule", s.schedule, c.STREAM_SCHEDULES)
  target_rounds = c.stream_target_rounds(s.requests, s.schedule)
  c.require(s.requests == 0 or target_rounds <= config.sed.num_targets, "stream.requests",
            s.requests, f"needs at most sed.num_targets={config.sed.num_targets} rounds of "
            f"targets (schedule {s.schedule!r})")


# (build, check) of every section, in the order of the fields in config.json (and of the checks);
# `eval` before its parts. Seeds and overwrite are shared with the language-model track.
SECTIONS = ((build_data, check_data), (build_model, check_model), (build_sed, check_sed),
            (build_train, check_train), (build_unlearning, check_unlearning),
            (build_tune, check_tune),
            (c.build_overwrite, c.check_overwrite), (build_recon, check_recon),
            (build_remedy, check_remedy), (c.build_seeds, c.check_seeds),
            (build_evaluation, check_evaluation), (build_lira, check_lira),
            (build_relearn, check_relearn), (build_attacks, check_attacks),
            (build_stream, check_stream))


def base_config() -> ml_collections.ConfigDict:
  """Returns the base config of one study; every field is documented in its section's build."""
  return c.build_sections(SECTIONS)


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every field of a study config; raises config_lib.ConfigError on the first problem."""
  c.check_sections(config, base_config(), SECTIONS)
