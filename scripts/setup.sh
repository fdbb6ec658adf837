#!/usr/bin/env bash
# Set up a fresh machine for nuwa-pipeline: Debian's Fashion-MNIST, a project venv in .venv/,
# and the package with its pinned dependencies. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  echo "setup: installing Debian's dataset-fashion-mnist" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q dataset-fashion-mnist >&2
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)" >&2
  "$PY" -m venv .venv
fi

# Reinstall only when the dependency files change.
stamp=".venv/.nuwa-installed-$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing pinned dependencies into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install -q -r requirements.txt -e ".[dev]" >&2
  rm -f .venv/.nuwa-installed-*
  touch "$stamp"
fi
echo "setup: ready (.venv/bin/nuwa, .venv/bin/snakemake, .venv/bin/dvc)" >&2
