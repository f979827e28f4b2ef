"""The image study's metrics, one module per metric or family (see evaluate/registry.py)."""
