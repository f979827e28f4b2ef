"""Side-by-side speed benchmarks (JAX vs a PyTorch reference) and FLOP accounting.

    python -m benchmarks.run [--only=cnn,pergrad,ensemble,study]

Not part of the test suite or CI's time budget; see benchmarks/RESULTS.md for measured numbers.
"""
