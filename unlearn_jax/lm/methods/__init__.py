"""Unlearning methods of the language-model track, one module each, with the image contract:

    unlearn(state, run: unlearn_jax.methods.RunContext, cfg, rng) -> (state, info)

`run.forget` / `run.retain` hold token dicts (`tokens`, `loss_mask`, ...), `run.recipe` is the
study's training recipe (`config.train`), `cfg` is the method's own section of the study config
(`config.unlearn.<name>`), and `info` holds at least `steps` and `wall_s`. The returned state has
the input's parameter tree.

The registry is `unlearn_jax.methods`, with `track='lm'`: `methods.builtin_names('lm')` lists the
modules of this package, `methods.call(name, state, run, cfg, rng, track='lm')` runs one and
checks its result, `methods.check_config(name, cfg, track='lm')` validates its section.

Methods: `retrain` (exact: a fresh model on the retained data; in a study, the `retrain`
reference), `finetune` (retained data only), `grad_ascent`, `grad_diff` (ascent on forget +
descent on retain), `kl_min` (ascent on forget + KL to the original on retain), `npo` (Zhang et
al., COLM 2024) and `simnpo` (Fan et al., 2024), both with a retain NLL term. Their shared
objective step lives in `common`.
"""
