"""Timing on a shared machine: interleaved repetitions, medians, and what the machine is.

Other processes come and go on a shared CPU, so a benchmark that times side A five times and
then side B five times compares two different machines. Here every repetition runs each side
once, in turn, and the medians are compared; the spread (min, max) is kept to show the noise.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from typing import Callable


def interleaved(sides: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
                ) -> dict[str, dict[str, float]]:
  """Times each side `repeats` times, alternating sides; returns seconds per call.

  Args:
    sides: name -> a callable doing one timed unit of work and blocking until it is done.
    repeats: timed calls per side.
    warmup: untimed calls per side first (compilation, allocator warm-up).

  Returns:
    name -> {median, min, max, cpu_median}: wall seconds of one call, and the process CPU
    seconds (all threads) of one call.
  """
  for _ in range(warmup):
    for run in sides.values():
      run()
  wall: dict[str, list[float]] = {name: [] for name in sides}
  cpu: dict[str, list[float]] = {name: [] for name in sides}
  for _ in range(repeats):
    for name, run in sides.items():
      usage = resource.getrusage(resource.RUSAGE_SELF)
      start = time.perf_counter()
      run()
      wall[name].append(time.perf_counter() - start)
      after = resource.getrusage(resource.RUSAGE_SELF)
      cpu[name].append(after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime)
  return {name: {"median": statistics.median(wall[name]), "min": min(wall[name]),
                 "max": max(wall[name]), "cpu_median": statistics.median(cpu[name])}
          for name in sides}


def load_average() -> list[float] | None:
  """The 1, 5 and 15 minute load averages (None where the system does not say)."""
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def machine() -> dict[str, object]:
  """CPU model, core count, load, memory and library versions: the context of the numbers."""
  info: dict[str, object] = {"platform": platform.platform(), "python": platform.python_version(),
                             "cpus": os.cpu_count()}
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          info["cpu"] = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  load = load_average()
  if load is not None:
    info["load_average"] = load
  info["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES", "")
  info["transparent_hugepages"] = _read("/sys/kernel/mm/transparent_hugepage/enabled")
  import jax  # pylint: disable=g-import-not-at-top
  info["jax"] = jax.__version__
  info["jax_devices"] = f"{jax.device_count()} x {jax.devices()[0].platform}"
  try:
    import torch  # pylint: disable=g-import-not-at-top
    info["torch"] = f"{torch.__version__} ({torch.get_num_threads()} threads)"
  except ImportError:
    info["torch"] = "not installed"
  return info


def _read(path: str) -> str:
  try:
    with open(path) as f:
      return f.read().strip()
  except OSError:
    return ""
