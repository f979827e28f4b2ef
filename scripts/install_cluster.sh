#!/usr/bin/env bash
# Installs the engines that the cluster tests start themselves (tests/test_slurm.py,
# tests/test_tune_postgres.py), from Debian packages:
#   SLURM:      slurm-wlm and munge (a one-node cluster on localhost, in a temporary directory)
#   PostgreSQL: postgresql (a throw-away server on 127.0.0.1, run as user postgres)
# Nothing is configured or started here. A package that cannot be installed (no apt-get, neither
# root nor passwordless sudo) is skipped with a note; its tests then say so and are skipped. The
# script itself never fails.
set -u
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
missing=()
if have slurmctld && have slurmd && have munged; then
  echo "SLURM: already installed ($(slurmctld -V 2>/dev/null || echo slurm-wlm))"
else
  missing+=(slurm-wlm munge)
fi
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || have initdb; then
  echo "PostgreSQL: already installed"
else
  missing+=(postgresql)
fi
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "cluster engines: not installed (${missing[*]}): no apt-get on this machine"
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    sudo="sudo -n"
  else
    echo "cluster engines: not installed (${missing[*]}): needs root or passwordless sudo"
    exit 0
  fi
fi
if $sudo apt-get update -qq >/dev/null 2>&1 \
    && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
       "${missing[@]}" >/dev/null 2>&1; then
  echo "cluster engines: installed ${missing[*]}"
else
  echo "cluster engines: not installed (apt-get install ${missing[*]} failed)"
fi
exit 0
