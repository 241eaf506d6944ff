#!/usr/bin/env bash
# Install rollouts with its CPU extras (hf: transformers; dev: pytest, ruff, mypy) into the project's
# virtual environment .venv: created when missing, reused when there. Debian/Ubuntu's system Python
# refuses pip installs (PEP 668, "externally-managed-environment"); a venv is the way round it.
# Afterwards: `source .venv/bin/activate` puts rollouts, score and filter-difficulty on PATH.
#
# torch is installed first when absent, pinned (TORCH, default torch==2.13.0). With no GPU (no
# working nvidia-smi) PyTorch's CPU-only build is tried first (CPU_TORCH_INDEX_URL, download.pytorch
# .org/whl/cpu): a plain `torch` requirement pulls several GB of CUDA wheels. Where that index
# cannot be reached (a machine that sees only PyPI or a local mirror) the pinned torch comes from
# the usual index, as before. TORCH_INDEX_URL=URL forces one index.
# A torch already in the venv (say, the one vLLM brought on a GPU node) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
CPU_TORCH_INDEX_URL=${CPU_TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}

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
has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
if ! "$PY" -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$PY" -m pip install -q --index-url "$TORCH_INDEX_URL" "$TORCH"
  elif has_gpu; then
    "$PY" -m pip install -q "$TORCH"
  else
    echo "no GPU here: installing PyTorch's CPU-only build ($CPU_TORCH_INDEX_URL)" >&2
    if ! "$PY" -m pip install -q --timeout 10 --retries 0 --index-url "$CPU_TORCH_INDEX_URL" "$TORCH" 2>/dev/null; then
      echo "$CPU_TORCH_INDEX_URL cannot be reached: installing $TORCH from the usual index" >&2
      "$PY" -m pip install -q "$TORCH"
    fi
  fi
fi
"$PY" -m pip install -q -e '.[hf,dev]'
echo "rollouts is installed in $VENV; use it with: source $VENV/bin/activate" >&2
