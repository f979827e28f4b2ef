"""Runs a test script in a fresh Python process that sees N fake CPU devices.

JAX fixes its device count when it starts, and the test process has already started it with
one device, so checks that need a mesh of several devices run their code in a subprocess with
`--xla_force_host_platform_device_count=N`. Many processes: see tests/test_multihost.py.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_on_cpu_devices(script: str, num_devices: int = 4, timeout: float = 300) -> str:
  """Runs `python -c script` from the repository root with `num_devices` CPU devices.

  Args:
    script: Python source; it may import `unlearn_jax` (the working directory is the root).
    num_devices: how many CPU devices JAX creates in the subprocess.
    timeout: seconds before the subprocess is killed (subprocess.TimeoutExpired).

  Returns:
    The script's standard output.

  Raises:
    AssertionError: the script exited with a non-zero status (the end of its stderr is shown).
  """
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={num_devices}",
         "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout
