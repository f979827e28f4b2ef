"""Evaluation: per-example behavioural scores, membership inference, influence residue."""
