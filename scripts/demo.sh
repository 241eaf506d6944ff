#!/usr/bin/env bash
# Set up rollouts and run the main job end to end on the bundled dataset (24 math prompts):
#   generate (N samples per prompt) -> score (math rewards, pass@k) -> filter-difficulty (buckets)
# CPU (default): a tiny random-weight model built here, generated in-process (--backend hf).
# GPU: with vLLM installed (pip install 'rollouts[vllm]') and a GPU, BACKEND=vllm serves MODEL
#      (default: the same tiny model; set MODEL=Qwen/Qwen2.5-0.5B-Instruct or a local path).
# Outputs land in $OUT (default demo-out/). Rerunning resumes: nothing finished is redone.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-demo-out}
BACKEND=${BACKEND:-hf}
N=${N:-4}

if [ "$BACKEND" = "vllm" ]; then
  python3 -c "import vllm" 2>/dev/null || python3 -m pip install -q -e '.[vllm]'
fi
bash scripts/setup.sh
mkdir -p "$OUT"
MODEL=${MODEL:-$OUT/tiny-model}
if [ ! -e "$MODEL/config.json" ] && [ "$MODEL" = "$OUT/tiny-model" ]; then
  rollouts make-tiny-model "$MODEL"
fi

DATA=rollouts/data/math_demo.jsonl
SAMPLING=(--n "$N" --max-tokens 64 --temperature 1.0 --seed 0)
if [ "$BACKEND" = "vllm" ]; then
  # A managed vLLM server: started, used, and stopped by generate itself.
  rollouts generate "$DATA" -o "$OUT/rollouts.parquet" --model "$MODEL" "${SAMPLING[@]}" \
    --max-concurrent 64 --gpu-memory-utilization 0.5 --max-model-len 2048
else
  rollouts generate "$DATA" -o "$OUT/rollouts.parquet" --backend hf --model "$MODEL" "${SAMPLING[@]}"
fi

score "$OUT/rollouts.parquet" -o "$OUT/scored.parquet" --reward-fn auto \
  --summary "$OUT/score_summary.json" --overwrite
filter-difficulty "$OUT/scored.parquet" -o "$OUT/buckets" --strategy bins --plot --overwrite

echo
echo "rollouts:      $OUT/rollouts.parquet (+ .summary.json)"
echo "scores:        $OUT/scored.parquet, pass@k in $OUT/score_summary.json"
echo "buckets:       $OUT/buckets/ (summary.json, pass_rates.png)"
