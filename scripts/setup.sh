#!/usr/bin/env bash
# Install rollouts with its CPU extras (hf: transformers; dev: pytest, ruff, mypy).
# torch is pinned first when absent: the CPU build of 2.13.0 is on disk on our CPU machines, while
# a plain `torch` requirement pulls several GB of CUDA wheels. A torch already installed (say, the
# one vLLM brought on a GPU node) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e '.[hf,dev]'
