#!/usr/bin/env bash
# Install rollouts with its CPU extras (hf: transformers; dev: pytest, ruff, mypy) into the project's
# virtual environment .venv: created when missing, reused when there. Debian/Ubuntu's system Python
# refuses pip installs (PEP 668, "externally-managed-environment"); a venv is the way round it.
# Afterwards: `source .venv/bin/activate` puts rollouts, score and filter-difficulty on PATH.
#
# torch is installed first when absent, pinned (TORCH, default torch==2.13.0): a plain `torch`
# requirement pulls several GB of CUDA wheels. On a CPU-only machine get PyTorch's CPU-only build:
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
# A torch already in the venv (say, the one vLLM brought on a GPU node) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  # Debian ships venv without ensurepip unless python3-venv is installed.
  if ! "$PYTHON" -c "import venv, ensurepip" 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing python3-venv (needed by '$PYTHON -m venv')" >&2
      DEBIAN_FRONTEND=noninteractive apt-get update -q
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
    else
      echo "'$PYTHON -m venv' is not available; install it with: sudo apt-get install python3-venv" >&2
      exit 1
    fi
  fi
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH"
fi
"$PY" -m pip install -q -e '.[hf,dev]'
echo "rollouts is installed in $VENV; use it with: source $VENV/bin/activate" >&2
