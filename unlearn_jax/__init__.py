"""unlearn_jax: does unlearning remove a sample's influence when similar samples remain?

The package builds similarity-entailed datasets (SEDs), trains reference models, runs unlearning
methods from one trained checkpoint and measures how much of each target's influence is left.
Entry point for a whole study: `python -m unlearn_jax.main --config=configs/sed_mnist.py`.
"""

__version__ = "0.1.0"
