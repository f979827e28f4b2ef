"""Metrics of the trained models themselves: parameter distance and relearn time (§3.5)."""

from unlearn_jax.evaluate import metrics, registry


def param_l2(name: str, inputs: registry.ModelInputs) -> dict[str, dict[str, float]]:
  """L2 distance to original, retrain and clean; n/a (NaN) for an ensemble's stacked params."""
  states = inputs.states
  return {"param_l2": {f"to_{ref}": float("nan") if name in inputs.ensembles else
                       metrics.param_distance(states[name].params, states[ref].params)
                       for ref in ("original", "retrain", "clean") if ref in states}}


def relearn_steps(name: str, inputs: registry.ModelInputs) -> dict[str, float]:
  """SGD steps on T until its loss reaches `eval.relearn.target_loss` (metrics.relearn_steps).

  n/a (NaN) for an ensemble (SISA's shards): there is no one model to fine-tune on T, and SISA
  would relearn by retraining the shards that hold it.
  """
  if name in inputs.ensembles:
    return {"relearn_steps": float("nan")}
  counts = metrics.relearn_counts({name: inputs.states[name]}, inputs.forget,
                                  inputs.eval_config.relearn, inputs.mesh,
                                  optimizer=inputs.relearn_optimizer,
                                  train_step=inputs.train_step)
  return {"relearn_steps": counts[name]}


METRICS = (
    registry.Metric(
        name="param_l2", needs="model", fields=("param_l2",), order=100, compute=param_l2,
        label="parameter distance",
        columns=(registry.Column("‖θ−θ_clean‖", "param_l2.to_clean", 1, "attack", 60),)),
    registry.Metric(
        name="relearn_steps", needs="model", fields=("relearn_steps",), order=110,
        compute=relearn_steps, unit="steps", label="relearn steps",
        columns=(registry.Column("relearn steps", "relearn_steps", 0, "attack", 50),)),
)
