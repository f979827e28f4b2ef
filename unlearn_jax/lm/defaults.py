"""The base config of a language-model study (every field, its unit and default) and its checks.

A config with `track = 'lm'` runs the language-model task (unlearn_jax/tasks/lm.py;
configs/sed_qa.py); the image track's config lives in unlearn_jax/defaults.py. Both share the
workdir contract (docs/design.md §6), and are laid out alike: each section is built by a small
function whose comments document its fields, with its check beside it (`SECTIONS`); the seeds
section and the training recipe's check are the image track's (unlearn_jax/config.py).

Learning rates of the LM methods (METHOD_LR), chosen on held-out targets (docs/design.md §4.2): the
QA SED of seed 1 (another fictitious world: other targets, paraphrases and facts), not the
evaluated seed 0, by

    python -m unlearn_jax.lm.select_lr --config=configs/sed_qa.py:runlocal \
        --workdir=/tmp/select_lr --sed_seed=1

(8 min on the 2-core CPU while other jobs ran). Rule (lm/select_lr.py): per method, the lr of
the grid with the smallest mean distance to clean on the held-out targets (per residue score,
Σ_t |f(M) - f(clean)| / Σ_t |f(original) - f(clean)|: 0 = clean, 1 = original) among those
whose ROUGE-L recall on unrelated training questions (utility) stays within 0.10 of the
original's (1.00 here). Cells: distance / utility; * chosen.

    method       3e-5         1e-4         3e-4         1e-3         3e-3         1e-2
    finetune     0.99 / 1.00  1.00 / 1.00  0.99 / 1.00  *0.91 / 1.00 0.76 / 0.86  0.58 / 0.37
    grad_ascent  0.99 / 1.00  0.95 / 1.00  *0.65 / 0.93 0.59 / 0.36  1.62 / 0.00  2.22 / 0.00
    grad_diff    0.99 / 1.00  0.94 / 1.00  *0.65 / 0.96 0.55 / 0.79  1.18 / 0.59  1.74 / 0.22
    kl_min       0.99 / 1.00  0.93 / 1.00  *0.63 / 0.94 0.55 / 0.79  1.16 / 0.57  1.75 / 0.18
    npo          0.98 / 1.00  *0.80 / 0.98 0.48 / 0.76  0.62 / 0.62  0.75 / 0.61  0.66 / 0.43
    simnpo       0.98 / 1.00  *0.73 / 0.96 0.49 / 0.84  0.55 / 0.86  0.54 / 0.85  0.30 / 0.43

Past the budget the ascent methods overshoot (distance > 1: target NLL far above clean's, e.g.
grad_ascent at 3e-3 leaves the unrelated facts at NLL 11.5 nats). The previous common default,
3e-4, had been measured on the evaluated targets. The sources use 1e-5 on 7B models.
"""

from __future__ import annotations

import ml_collections

from unlearn_jax import config as config_lib
from unlearn_jax import defaults as image_defaults
from unlearn_jax import methods

TRACK = "lm"
# Per-target scores whose influence residue the study reports (docs/design.md §3.6):
#   nll: mean answer-token NLL of the target's own question (lower = better remembered);
#   rouge_l: ROUGE-L recall (rouge-score, stemmed, as TOFU) of the target's answer in the
#     greedy answer to its question;
#   rouge_l_probe: the same, mean over held-out paraphrases of the question (leakage through
#     the similar samples: the model answers the target when asked in other words);
#   fact / fact_probe: share of the answer's fact words (lm.metrics.fact_words) in the greedy
#     answer to the question / to its held-out paraphrases;
#   min_k: Min-k% membership score of the target (Shi et al., ICLR 2024).
RESIDUE_SCORES = ("nll", "rouge_l", "rouge_l_probe", "fact", "fact_probe", "min_k")
# Default AdamW learning rate of each LM method with one (retrain uses config.train), chosen on
# held-out targets by lm/select_lr.py; the command, the grid and the numbers are above.
METHOD_LR = {"finetune": 1e-3, "grad_ascent": 3e-4, "grad_diff": 3e-4, "kl_min": 3e-4,
             "npo": 1e-4, "simnpo": 1e-4}


c = config_lib  # the checks read c.require(...), c.require_number(...)


def build_data(config: ml_collections.ConfigDict) -> None:
  """The track, the QA data and its SED."""
  # Which study runs this config: 'lm' (unlearn_jax/tasks/lm.py), fixed for LM configs.
  config.track = TRACK
  # 'offline' (the embedded generator of fictitious facts, unlearn_jax/lm/corpus.py),
  # 'jsonl:PATH' (your own QA pairs with provenance, unlearn_jax/lm/data.py's format), or a tfds
  # QA dataset prepared in data_dir (e.g. 'squad').
  config.dataset = "offline"
  config.data_dir = ""  # tfds data dir; '' = tfds's default.
  # The QA SED (docs/design.md §3.1): targets, their paraphrases (similar samples), unrelated rest.
  config.qa = ml_collections.ConfigDict()
  config.qa.num_targets = 10  # |T|
  config.qa.similar_per_target = 10  # |S(t)|: paraphrases of each target in D.
  config.qa.num_rest = 600  # unrelated QA pairs in D (offline and tfds).
  config.qa.num_test = 150  # held-out QA pairs (never trained on; membership non-members).
  config.qa.probes_per_target = 4  # held-out paraphrased questions per target (leakage probes).
  config.qa.seed = 0  # seed of the corpus, target choice and paraphrases.


def check_data(config: ml_collections.ConfigDict) -> None:
  """Checks dataset (offline, jsonl:PATH or a tfds name) and qa."""
  c.require(isinstance(config.dataset, str) and config.dataset, "dataset", config.dataset,
            "must be 'offline', 'jsonl:PATH' or a tfds QA dataset name")
  if config.dataset.startswith("jsonl:"):
    c.require(len(config.dataset) > len("jsonl:"), "dataset", config.dataset,
              "jsonl: needs a path (jsonl:/path/to/qa.jsonl)")
  c.require_integers("qa", config.qa, num_targets=1, similar_per_target=0, num_rest=1,
                     num_test=1, probes_per_target=1, seed=0)


def build_model(config: ml_collections.ConfigDict) -> None:
  """The tokenizer and the transformer."""
  # Tokenizer: a sentencepiece model trained on the study's text at prepare time (no
  # downloads), saved as WORKDIR/data/tokenizer.model.
  config.tokenizer = ml_collections.ConfigDict()
  config.tokenizer.vocab_size = 1024  # BPE pieces (byte fallback), trained on the study's text.
  config.tokenizer.max_len = 48  # tokens per [bos] question [sep] answer [eos].
  # Model: the decoder-only transformer (unlearn_jax/models/transformer.py).
  config.model = "transformer"
  # Keyword arguments of the transformer: layers, width, attention heads, MLP width ratio,
  # dropout rate.
  config.model_kwargs = ml_collections.ConfigDict(
      {"num_layers": 2, "width": 128, "heads": 4, "mlp_ratio": 4, "dropout": 0.0})


def check_model(config: ml_collections.ConfigDict) -> None:
  """Checks tokenizer and model."""
  c.require_integers("tokenizer", config.tokenizer, vocab_size=320, max_len=8)
  c.require_choice("model", config.model, ("transformer",))


def build_train(config: ml_collections.ConfigDict) -> None:
  """The training recipe of the references."""
  # Training recipe, shared by original/retrain/clean/clean_alt and the `retrain` method.
  config.train = ml_collections.ConfigDict()
  config.train.epochs = 40  # passes over D (facts are memorised, as in fictitious-QA studies).
  config.train.batch_size = 32  # global batch (split across devices), QA pairs.
  config.train.optimizer = "adamw"  # one of config_lib.OPTIMIZERS.
  config.train.lr = 2e-3  # peak learning rate.
  config.train.momentum = 0.9  # sgd only.
  config.train.weight_decay = 0.01  # decoupled (adamw) or L2 (sgd/adam) weight decay.
  config.train.schedule = "cosine"  # 'constant' or 'cosine' (decay to 0 over all steps).
  config.train.checkpoint_every = 500  # steps between orbax checkpoints (and one at the end).
  config.train.log_every = 50  # steps between progress lines and metrics.jsonl records.


def check_train(config: ml_collections.ConfigDict) -> None:
  """Checks the recipe (the image track's rules)."""
  c.check_train_recipe(config.train)


def build_unlearning(config: ml_collections.ConfigDict) -> None:
  """The LM unlearning methods to run and their hyper-parameters."""
  # LM unlearning methods (unlearn_jax/lm/methods/); `retrain` is the retrain reference.
  config.methods = ("finetune", "grad_ascent", "grad_diff", "kl_min", "npo", "simnpo")
  # Per-method hyper-parameters (config.unlearn.<name>), from each method's default_config().
  config.unlearn = methods.default_configs(track=TRACK)


def check_unlearning(config: ml_collections.ConfigDict) -> None:
  """Checks methods (LM method names or import paths, unique) and their sections."""
  names = c.as_tuple(config.methods)
  c.require(len(set(names)) == len(names), "methods", config.methods, "names must be unique")
  for name in methods.resolve(names, track=TRACK):  # lists the LM methods on a miss
    methods.check_config(name, methods.method_config(config, name), track=TRACK)


def build_tune(config: ml_collections.ConfigDict) -> None:
  """The language-model track's values of the tuning section (tune.py, docs/design.md §4.2);
  its other fields, and their comments, are the image track's (`defaults.build_tune`, the
  section before this one in SECTIONS)."""
  # QA SED seed of the tuning targets (`qa.seed = sed_seed`: another fictitious world for the
  # offline generator, other pairs for a tfds dataset; never `qa.seed`). A `jsonl:` dataset
  # fixes its targets and tunes only with `mode='oracle'`.
  config.tune.sed_seed = 1000
  # LM residue scores (RESIDUE_SCORES, or 'mia': the loss attack's AUC) whose |mean residue|
  # over the tuning targets the tuner minimises (their sum): the answer NLL and the membership
  # AUC, the LM analogues of the image track's margin and mia.
  config.tune.objective = ("nll", "mia")
  # Feasible: utility at least the tuning original's minus this. On the LM track the tuner's
  # "test accuracy" (`acc_test` in tuning.csv) is this utility: ROUGE-L recall of the greedy
  # answers to unrelated training questions (the record's `rouge_l.rest`); 0.10 is
  # lm/select_lr.py's UTILITY_BUDGET, the budget the default learning rates were chosen under.
  config.tune.max_test_drop = 0.10


def check_tune(config: ml_collections.ConfigDict) -> None:
  """Checks tune with the LM's scores and seeds; the search spaces and the storage are checked
  when a study starts (tune.py)."""
  t = config.tune
  image_defaults.check_tune_fields(t, RESIDUE_SCORES + ("mia",))
  c.require(t.mode == "oracle" or int(t.sed_seed) != int(config.qa.seed), "tune.sed_seed",
            t.sed_seed, "must differ from qa.seed (the tuning targets are other targets)")
  c.require(not (t.enabled and t.mode == "tuning" and str(config.dataset).startswith("jsonl:")),
            "tune.enabled", t.enabled,
            f"dataset {config.dataset!r} fixes its targets, so no tuning SED of other targets "
            "can be drawn from it; set tune.mode='oracle' (an upper bound) or tune.enabled=False")


def build_evaluation(config: ml_collections.ConfigDict) -> None:
  """Scoring, generation and the residue floors."""
  # Evaluation: scoring, generation and the residue floors.
  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 256  # sequences per scoring/generation batch.
  config.eval.max_new_tokens = 24  # greedy generation length cap (tokens).
  config.eval.min_k = 0.2  # Min-k%: fraction of the lowest token log-probs averaged.
  # Minimum |f(original) - f(clean)| for a target's residue ratio to be defined, per score
  # (nll: nats per token; rouge_l, fact: recall in [0, 1]; min_k: nats).
  config.eval.min_gap = ml_collections.ConfigDict(
      {"nll": 0.2, "rouge_l": 0.1, "rouge_l_probe": 0.1, "fact": 0.25, "fact_probe": 0.25,
       "min_k": 0.2})


def check_evaluation(config: ml_collections.ConfigDict) -> None:
  """Checks eval."""
  c.require_integers("eval", config.eval, batch_size=1, max_new_tokens=1)
  c.require_number("eval.min_k", config.eval.min_k, low=0, high=1, low_open=True)
  c.check_min_gaps(config.eval.min_gap)


# (build, check) of every section, in the order of the fields in config.json (and of the checks);
# seeds and overwrite are the image track's sections, and so is tune, built by the image track's
# build_tune, then given the LM's values by build_tune (whose check_tune checks it all).
SECTIONS = ((build_data, check_data), (build_model, check_model), (build_train, check_train),
            (build_unlearning, check_unlearning),
            (image_defaults.build_tune, lambda config: None), (build_tune, check_tune),
            (c.build_seeds, c.check_seeds),
            (build_evaluation, check_evaluation), (c.build_overwrite, c.check_overwrite))


def base_config() -> ml_collections.ConfigDict:
  """Returns the base config of one language-model study; every field is documented in its
  section's build."""
  return c.build_sections(SECTIONS)


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every field; raises config_lib.ConfigError on the first problem."""
  c.check_sections(config, base_config(), SECTIONS)
