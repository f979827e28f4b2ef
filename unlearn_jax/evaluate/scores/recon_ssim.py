"""Reconstruction SSIM: each target's best SSIM among the candidates reconstructed from the
reconstruction track's model (recon_track.py; docs/design.md §3.5), and its residue against the
track's own references."""

from unlearn_jax.evaluate import registry

METRICS = (registry.Metric(
    name="recon_ssim", needs="recon", fields=("recon_ssim", "recon_recovered"), order=120,
    min_gap=0.02, unit="SSIM", label="reconstruction SSIM",
    columns=(registry.Column("recon SSIM T", "recon_ssim.target", 3, "attack", 70),
             registry.Column("recon SSIM held-out", "recon_ssim.heldout", 3, "attack", 70),
             registry.Column("res recon", "residue.recon_ssim", 2, "attack", 70),
             registry.Column("res recon median", "residue_median.recon_ssim", 2, "attack", 70),
             registry.Column("res recon Σ/Σ", "residue_ratio_of_sums.recon_ssim", 2, "attack",
                             70),
             registry.Column("recon undef T", "residue_undefined.recon_ssim", 0, "attack",
                             70))),)
