"""The base config of a language-model study (every field, its unit and default) and its checks.

A config with `track = 'lm'` runs `unlearn_jax.lm.study` (configs/sed_qa.py); the image track's
config lives in unlearn_jax/defaults.py. Both share the workdir contract (DESIGN.md §5).
"""

from __future__ import annotations

import ml_collections

from unlearn_jax import config as config_lib

TRACK = "lm"
# Per-target scores whose influence residue the study reports (DESIGN.md §2):
#   nll: mean answer-token NLL of the target's own question (lower = better remembered);
#   rouge_l: ROUGE-L recall of the target's answer in the greedy answer to its question;
#   rouge_l_probe: the same, mean over held-out paraphrases of the question (leakage through
#     the similar samples: the model answers the target when asked in other words);
#   fact / fact_probe: share of the answer's fact words (lm.metrics.fact_words) in the greedy
#     answer to the question / to its held-out paraphrases;
#   min_k: Min-k% membership score of the target (Shi et al., ICLR 2024).
RESIDUE_SCORES = ("nll", "rouge_l", "rouge_l_probe", "fact", "fact_probe", "min_k")


def base_config() -> ml_collections.ConfigDict:
  """Returns the base config of one language-model study; every field is documented here."""
  from unlearn_jax.lm import methods as lm_methods  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict()
  config.track = TRACK
  # 'offline' (the embedded generator of fictitious facts, unlearn_jax/lm/corpus.py),
  # 'jsonl:PATH' (your own QA pairs with provenance, unlearn_jax/lm/data.py's format), or a tfds
  # QA dataset prepared in data_dir (e.g. 'squad').
  config.dataset = "offline"
  config.data_dir = ""  # tfds data dir; '' = tfds's default.
  # The QA SED (DESIGN.md §2): targets, their paraphrases (similar samples), unrelated rest.
  config.qa = ml_collections.ConfigDict()
  config.qa.num_targets = 10  # |T|
  config.qa.similar_per_target = 10  # |S(t)|: paraphrases of each target in D.
  config.qa.num_rest = 600  # unrelated QA pairs in D (offline and tfds).
  config.qa.num_test = 150  # held-out QA pairs (never trained on; membership non-members).
  config.qa.probes_per_target = 4  # held-out paraphrased questions per target (leakage probes).
  config.qa.seed = 0  # seed of the corpus, target choice and paraphrases.
  # Tokenizer: a sentencepiece model trained on the study's text at prepare time (no
  # downloads), saved as WORKDIR/data/tokenizer.model.
  config.tokenizer = ml_collections.ConfigDict()
  config.tokenizer.vocab_size = 1024
  config.tokenizer.max_len = 48  # tokens per [bos] question [sep] answer [eos].
  # Model: the decoder-only transformer (unlearn_jax/models/transformer.py).
  config.model = "transformer"
  config.model_kwargs = ml_collections.ConfigDict(
      {"num_layers": 2, "width": 128, "heads": 4, "mlp_ratio": 4, "dropout": 0.0})
  # Training recipe, shared by original/retrain/clean/clean_alt and the `retrain` method.
  config.train = ml_collections.ConfigDict()
  config.train.epochs = 40  # passes over D (facts are memorised, as in fictitious-QA studies).
  config.train.batch_size = 32
  config.train.optimizer = "adamw"  # one of config_lib.OPTIMIZERS.
  config.train.lr = 2e-3
  config.train.momentum = 0.9  # sgd only.
  config.train.weight_decay = 0.01
  config.train.schedule = "cosine"
  config.train.checkpoint_every = 500
  config.train.log_every = 50
  # LM unlearning methods (unlearn_jax/lm/methods/); `retrain` is the retrain reference.
  config.methods = ("finetune", "grad_ascent", "grad_diff", "kl_min", "npo", "simnpo")
  config.unlearn = lm_methods.default_configs()
  config.seeds = (0,)
  config.floor_seed_offset = 1000  # clean_alt (the noise floor) trains with seed + this.
  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 256  # sequences per scoring/generation batch.
  config.eval.max_new_tokens = 24  # greedy generation length cap (tokens).
  config.eval.min_k = 0.2  # Min-k%: fraction of the lowest token log-probs averaged.
  # Minimum |f(original) - f(clean)| for a target's residue ratio to be defined, per score
  # (nll: nats per token; rouge_l, fact: recall in [0, 1]; min_k: nats).
  config.eval.min_gap = ml_collections.ConfigDict(
      {"nll": 0.2, "rouge_l": 0.1, "rouge_l_probe": 0.1, "fact": 0.25, "fact_probe": 0.25,
       "min_k": 0.2})
  config.overwrite = False
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every field; raises config_lib.ConfigError on the first problem."""
  from unlearn_jax.lm import methods as lm_methods  # pylint: disable=g-import-not-at-top
  c = config_lib
  base = base_config()
  c.check_keys(config, base, free=("config.model_kwargs",))
  for name in config.unlearn.keys():
    c.check_keys(config.unlearn[name], base.unlearn[name], f"config.unlearn.{name}")
  c.require(isinstance(config.dataset, str) and config.dataset, "dataset", config.dataset,
            "must be 'offline', 'jsonl:PATH' or a tfds QA dataset name")
  if config.dataset.startswith("jsonl:"):
    c.require(len(config.dataset) > len("jsonl:"), "dataset", config.dataset,
              "jsonl: needs a path (jsonl:/path/to/qa.jsonl)")
  q = config.qa
  c.require_number("qa.num_targets", q.num_targets, low=1, integer=True)
  c.require_number("qa.similar_per_target", q.similar_per_target, low=0, integer=True)
  c.require_number("qa.num_rest", q.num_rest, low=1, integer=True)
  c.require_number("qa.num_test", q.num_test, low=1, integer=True)
  c.require_number("qa.probes_per_target", q.probes_per_target, low=1, integer=True)
  c.require_number("qa.seed", q.seed, low=0, integer=True)
  c.require_number("tokenizer.vocab_size", config.tokenizer.vocab_size, low=320, integer=True)
  c.require_number("tokenizer.max_len", config.tokenizer.max_len, low=8, integer=True)
  c.require_choice("model", config.model, ("transformer",))
  c.check_train_recipe(config.train)
  names = c.as_tuple(config.methods)
  for name in names:
    c.require_choice("methods", name, lm_methods.NAMES)
  c.require(len(set(names)) == len(names), "methods", config.methods, "names must be unique")
  seeds = c.as_tuple(config.seeds)
  c.require(len(seeds) >= 1, "seeds", config.seeds, "must hold at least one seed")
  for seed in seeds:
    c.require_number("seeds", seed, low=0, integer=True)
  c.require(len(set(seeds)) == len(seeds), "seeds", config.seeds, "seeds must be unique")
  c.require_number("floor_seed_offset", config.floor_seed_offset, low=1, integer=True)
  c.require_number("eval.batch_size", config.eval.batch_size, low=1, integer=True)
  c.require_number("eval.max_new_tokens", config.eval.max_new_tokens, low=1, integer=True)
  c.require_number("eval.min_k", config.eval.min_k, low=0, high=1, low_open=True)
  for key, value in config.eval.min_gap.items():
    c.require_number(f"eval.min_gap.{key}", value, low=0)
  c.require(isinstance(config.overwrite, bool), "overwrite", config.overwrite,
            "must be True or False")
