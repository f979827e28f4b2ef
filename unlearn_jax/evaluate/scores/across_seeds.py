"""Attacks across a model's training seeds against retrain's and clean's seeds: the ε estimate
and U-LiRA (evaluate/across_seeds.py with evaluate/mia.py; docs/design.md §3.5)."""

from unlearn_jax.evaluate import registry

METRICS = (
    registry.Metric(
        name="epsilon", needs="seeds",
        fields=("epsilon", "epsilon_capped", "forgetting_quality"), order=130, label="ε",
        columns=(registry.Column("ε vs retrain", "epsilon.vs_retrain", 2, "attack", 80),
                 registry.Column("capped vs retrain", "epsilon_capped.vs_retrain", 0, "attack",
                                 80),
                 registry.Column("ε vs clean", "epsilon.vs_clean", 2, "attack", 80),
                 registry.Column("capped vs clean", "epsilon_capped.vs_clean", 0, "attack",
                                 80))),
    registry.Metric(
        name="ulira", needs="seeds", fields=("ulira_acc",), order=140, label="U-LiRA",
        columns=(registry.Column("U-LiRA vs clean", "ulira_acc.vs_clean", 2, "attack", 90),)),
)
