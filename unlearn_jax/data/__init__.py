"""Datasets: tfds builders shipped with unlearn_jax and loading splits as numpy arrays.

`unlearn_jax.data.sources.load(name, data_dir)` is the entry point; `mnist_subset` holds the
embedded, offline MNIST builder. Submodules are imported where needed, so importing this package
stays cheap.
"""
