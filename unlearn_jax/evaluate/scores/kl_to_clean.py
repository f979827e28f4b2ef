"""KL(M ‖ clean) between predictive distributions, per target (nats), and KL(M ‖ retrain).

Computed by the evaluator (it needs the model's clean reference: `clean`, or SISA's
`sisa_clean`); f(clean) = 0, so its residue is KL(M‖clean) / KL(original‖clean).
"""

from unlearn_jax.evaluate import registry

METRICS = (registry.Metric(
    name="kl_to_clean", needs="reference", fields=("kl_to_clean", "kl_to_retrain"), order=60,
    min_gap=0.01, unit="nats", label="KL to clean",
    columns=(registry.Column("KL→clean T", "kl_to_clean.target", 3, "behaviour", 50),
             registry.Column("res KL", "residue.kl_to_clean", 2, "attack", 30))),)
