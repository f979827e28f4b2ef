"""Runnable examples of the public API (docs/api.md); each also runs in tests/test_examples.py.

A package, so that a study can load a method from here by import path:
`--config.methods=examples.my_method:unlearn` (run from the repository root).
"""
