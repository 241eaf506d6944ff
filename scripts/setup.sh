#!/usr/bin/env bash
# Install rollouts with its CPU extras. torch is pinned first: the CPU build of 2.13.0 is on disk
# here, while a plain `torch` requirement pulls several GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e '.[hf,dev]'
