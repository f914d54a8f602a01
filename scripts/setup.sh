#!/usr/bin/env bash
# Sets up a fresh machine for tips-keras: the offline dataset (Debian package) and a virtual
# environment in .venv with the pinned stack. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: the offline dataset, and a C++ compiler for the test that compiles the
# TFLite Micro C array (tests/test_tflite_export.py).
packages=()
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then packages+=(dataset-fashion-mnist); fi
if ! command -v g++ >/dev/null 2>&1; then packages+=(g++); fi
if [ ${#packages[@]} -gt 0 ]; then
    echo "[setup] installing Debian packages: ${packages[*]}"
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}"
fi

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
stamp=".venv/.tips-keras-setup"
want="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "[setup] creating .venv with $($PYTHON --version)"
"$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,micro]"  # micro: the TFLite Micro interpreter
# Optional QAT stack (tf_keras + tfmot) without pulling a second TensorFlow wheel.
.venv/bin/python -m pip install -q --no-deps tf-keras==2.21.0 tensorflow-model-optimization==0.8.1 dm-tree mock
echo "$want" > "$stamp"
echo "[setup] done"
