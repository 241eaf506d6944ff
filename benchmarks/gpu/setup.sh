#!/bin/bash
# On the GPU machine, from the repo root: the two random-weight models and the 512 prompts.
#   bash benchmarks/gpu/setup.sh        -> $W/m04 (~0.39B), $W/m14 (~1.36B), $W/prompts.jsonl
set -euo pipefail
source benchmarks/gpu/env.sh
[ -f "$W/m04/config.json" ] || python3 benchmarks/gpu/mkmodel.py "$W/m04"
[ -f "$W/m14/config.json" ] || python3 benchmarks/gpu/mkmodel.py "$W/m14" 28 1536 8960 12 2
# Same tokenizer (trained the same way on the same files), so one prompt file serves both.
cmp "$W/m04/tokenizer.json" "$W/m14/tokenizer.json"
python3 benchmarks/gpu/make_prompts.py "$W/m04" "$W/prompts.jsonl" --prompts 512
python3 -c "import vllm, rollouts, tenacity, asyncio_throttle; print('vllm', vllm.__version__)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
