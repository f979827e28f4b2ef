"""Runs a test script in a fresh Python process that sees N fake CPU devices.

JAX fixes its device count when it starts, and the test process has already started it with
one device, so checks that need a mesh of several devices run their code in a subprocess with
`--xla_force_host_platform_device_count=N`. Many processes: see tests/test_multihost.py.
"""

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_env(num_devices: int | None = None) -> dict[str, str]:
  """This process's environment for a JAX subprocess on the CPU with `num_devices` fake devices
  (None: XLA_FLAGS removed, for a script that sets the count itself)."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)
  if num_devices is not None:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  return env


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
  result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=cpu_env(num_devices),
                          capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def free_port() -> int:
  """A TCP port on 127.0.0.1 that is free now (for a jax.distributed coordinator)."""
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def run_processes(commands: list[list[str]], env: dict[str, str],
                  timeout: float = 400) -> list[str]:
  """Starts every command at once (e.g. the processes of one jax.distributed run), waits for all.

  Returns:
    Each process's combined stdout and stderr, in order.

  Raises:
    AssertionError: a process exited with a non-zero status (the end of its output is shown).
  """
  processes = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for command in commands]
  outputs = []
  try:
    for process in processes:
      outputs.append(process.communicate(timeout=timeout)[0])
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output[-4000:]
  return outputs
