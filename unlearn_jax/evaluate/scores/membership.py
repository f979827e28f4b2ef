"""Membership of the targets: LiRA, the loss-threshold attack and the SVC attack.

Computed by the evaluator with evaluate/mia.py (docs/design.md §3.5). `lira` is per target (the
online likelihood-ratio statistic, higher = member); `mia` is set level: one AUC per model, whose
residue is one ratio of AUCs (defined count 0 or 1).
"""

from unlearn_jax.evaluate import registry

METRICS = (
    registry.Metric(
        name="lira", needs="lira", fields=("lira", "lira_auc", "lira_tpr"), order=70,
        min_gap=0.5, unit="LiRA log-likelihood ratio", label="LiRA",
        columns=(registry.Column("LiRA AUC T", "lira_auc.target", 2, "attack", 20),
                 registry.Column("LiRA TPR", "lira_tpr.target", 2, "attack", 20),
                 registry.Column("LiRA refs", "lira_num_models", 0, "attack", 20),
                 registry.Column("res LiRA", "residue.lira", 2, "attack", 20))),
    registry.Metric(
        name="mia", needs="attack", fields=("mia_auc", "mia_auc_by_score"), order=80,
        min_gap=0.05, unit="AUC of the loss attack", label="MIA (loss attack AUC)",
        columns=(registry.Column("MIA AUC T", "mia_auc.target", 2, "attack", 10),
                 registry.Column("res MIA", "residue.mia", 2, "attack", 10))),
    registry.Metric(
        name="mia_efficacy", needs="attack", fields=("mia_efficacy",), order=90,
        label="MIA-efficacy (SVC)",
        columns=(registry.Column("MIA-eff", "mia_efficacy.target", 2, "attack", 40),)),
)
