"""Prints the SED generators, one a line: `python -m unlearn_jax.data.generators`."""

from unlearn_jax.data import generators

if __name__ == "__main__":
  for name, summary in generators.summaries().items():
    print(f"{name}: {summary}" if summary else name)
