"""launch/ scripts: with --dry_run each prints the command it would run, and runs nothing."""

import os
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dry_run(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", script), "--dry_run",
                         *args], capture_output=True, text=True, timeout=60,
                        env={**os.environ, **(env or {})}, cwd="/")


def sweep_flags(argv: list[str]) -> dict[str, str]:
  """{'--config': ..., '--workdir': ...} of a printed `python -m unlearn_jax.sweep` argv."""
  start = argv.index("unlearn_jax.sweep") + 1
  return dict(arg.partition("=")[::2] for arg in argv[start:])


def test_local(tmp_path):
  result = dry_run("local.py", f"--workdir={tmp_path}/sweep", "--parallel=2",
                   "--python=python3", "--", "--config.study.data_dir=/data/tfds",
                   env={"GLIBC_TUNABLES": ""})
  assert result.returncode == 0, result.stderr
  argv = shlex.split(result.stdout)
  assert argv[0] == "GLIBC_TUNABLES=glibc.malloc.hugetlb=1"
  argv = argv[1:]
  assert argv[:3] == ["python3", "-m", "unlearn_jax.sweep"]
  assert sweep_flags(argv) == {
      "--config": "configs/sweep_similarity.py:runlocal", "--workdir": f"{tmp_path}/sweep",
      "--config.parallel": "2", "--config.study.data_dir": "/data/tfds"}
  assert not os.path.exists(tmp_path / "sweep")  # nothing ran
  # The printed config and variant load (the command would start).
  from unlearn_jax import sweep  # pylint: disable=g-import-not-at-top
  path, _, variant = sweep_flags(argv)["--config"].partition(":")
  assert sweep.load_config_file(path, variant).parallel == 1


def test_local_keeps_the_glibc_tunables_already_set():
  result = dry_run("local.py", "--workdir=/tmp/sweep", env={"GLIBC_TUNABLES": "glibc.a=1"})
  assert shlex.split(result.stdout)[0] == "GLIBC_TUNABLES=glibc.a=1:glibc.malloc.hugetlb=1"
  result = dry_run("local.py", "--workdir=/tmp/sweep", "--nohugepages",
                   env={"GLIBC_TUNABLES": ""})
  assert result.returncode == 0, result.stderr
  assert "GLIBC_TUNABLES" not in result.stdout


def test_gpu_box_gives_each_worker_its_gpus():
  result = dry_run("gpu_box.py", "--workdir=/data/sweep", "--gpus=8", "--gpus_per_point=2",
                   "--config=configs/sweep_similarity.py:dataset=cifar10", "--python=python")
  assert result.returncode == 0, result.stderr
  argv = shlex.split(result.stdout)
  assert argv[0] == "CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7"
  assert argv[1:4] == ["python", "-m", "unlearn_jax.sweep"]
  flags = sweep_flags(argv)
  assert flags["--config.parallel"] == "4" and flags["--config.devices_per_point"] == "2"
  assert flags["--config"] == "configs/sweep_similarity.py:dataset=cifar10"


@pytest.mark.parametrize("args, message", [
    (("--gpus=6", "--gpus_per_point=4"), "not a multiple"),
    (("--gpus=2", "--", "oops"), "must be flags"),
])
def test_gpu_box_rejects_bad_layouts(args, message):
  result = dry_run("gpu_box.py", "--workdir=/w", *args)
  assert result.returncode != 0 and message in result.stderr and not result.stdout


def test_gpu_box_without_gpus_says_so():
  result = dry_run("gpu_box.py", "--workdir=/w", env={"PATH": "/nonexistent"})
  assert result.returncode != 0 and "pass --gpus=N" in result.stderr


def test_tpu_pod_runs_the_same_distributed_command_on_every_host():
  result = dry_run("tpu_pod.py", "--tpu=my-v4-32", "--zone=us-central2-b", "--project=lab",
                   "--workdir=/mnt/shared/sweep", "--repo=code/unlearn_jax", "--setup", "--",
                   "--config.study.data_dir=/mnt/shared/tfds")
  assert result.returncode == 0, result.stderr
  argv = shlex.split(result.stdout)
  assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-v4-32"]
  assert "--zone=us-central2-b" in argv and "--project=lab" in argv and "--worker=all" in argv
  remote = next(a for a in argv if a.startswith("--command=")).partition("=")[2]
  steps = [shlex.split(step) for step in remote.split(" && ")]
  assert steps[0] == ["cd", "code/unlearn_jax"]
  assert steps[1] == ["python3", "-m", "pip", "install", "-e", ".", "jax[tpu]"]
  assert steps[2][:3] == ["python3", "-m", "unlearn_jax.sweep"]
  assert sweep_flags(steps[2]) == {
      "--config": "configs/sweep_similarity.py", "--workdir": "/mnt/shared/sweep",
      "--distributed": "", "--config.study.data_dir": "/mnt/shared/tfds"}


def test_a_dry_run_flag_after_the_separator_still_only_prints():
  result = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "tpu_pod.py"), "--tpu=t",
                           "--zone=z", "--workdir=/w", "--", "--dry_run"],
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("gcloud ") and "dry_run" not in result.stdout
