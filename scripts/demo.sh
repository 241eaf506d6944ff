#!/usr/bin/env bash
# Set up rollouts and run the main job end to end on the bundled dataset (24 addition prompts, one
# to four digits, in verl's schema):
#   generate (N samples per prompt) -> score (math rewards, pass@k) -> filter-difficulty (buckets)
# CPU (default): a tiny model built here and trained for about a minute to add numbers (no
#      download), generated in-process (--backend hf). It solves small sums most of the time and
#      long ones rarely, so the pass rates spread over the buckets.
# GPU: with a GPU, BACKEND=vllm serves the same trained model with a managed vLLM server
#      (installing the [vllm] extra when missing); MODEL=Qwen/Qwen2.5-0.5B-Instruct or a path picks
#      another model.
# Knobs: OUT (default demo-out), N (samples per prompt, 8), TRAIN_STEPS (1200; fewer is faster and
# worse). Rerunning resumes: nothing finished is redone. Everything runs in .venv (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-demo-out}
BACKEND=${BACKEND:-hf}
N=${N:-8}
TRAIN_STEPS=${TRAIN_STEPS:-1200}

bash scripts/setup.sh
source "${VENV:-.venv}/bin/activate"
if [ "$BACKEND" = "vllm" ]; then
  python -c "import vllm" 2>/dev/null || python -m pip install -q -e '.[vllm]'
fi
mkdir -p "$OUT"
MODEL=${MODEL:-$OUT/tiny-model}
if [ ! -e "$MODEL/config.json" ] && [ "$MODEL" = "$OUT/tiny-model" ]; then
  rollouts make-tiny-model "$MODEL" --train-steps "$TRAIN_STEPS"
fi

DATA=rollouts/data/math_demo.jsonl
# Samples go N per request (one prefill per prompt): unseeded, so no --seed here.
SAMPLING=(--n "$N" --max-tokens 16 --temperature 1.0)
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
echo "== two samples (rollouts show $OUT/scored.parquet for more)"
rollouts show "$OUT/scored.parquet" --passed --n 1 --samples 1
rollouts show "$OUT/scored.parquet" --failed --n 1 --samples 1
echo
echo "== pass@k per data source"
python - "$OUT/score_summary.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
for item in summary["inputs"]:
    for source, stats in sorted(item["data_sources"].items()):
        ks = [k for k in ("1", "2", "4", "8", "16") if k in stats["pass@k"]]
        if source == sorted(item["data_sources"])[0]:
            print(f"{'data source':<18} {'prompts':>7}  " + "  ".join(f"pass@{k:<3}" for k in ks))
        print(f"{source:<18} {stats['n_prompts']:>7}  "
              + "  ".join(f"{stats['pass@k'][k]:>7.2f}" for k in ks))
PY
echo
echo "rollouts:      $OUT/rollouts.parquet (+ .summary.json)"
echo "scores:        $OUT/scored.parquet, pass@k in $OUT/score_summary.json"
echo "buckets:       $OUT/buckets/ (summary.json, pass_rates.png)"
echo "browse:        rollouts show $OUT/scored.parquet --html $OUT/samples.html"
echo "environment:   source ${VENV:-.venv}/bin/activate"
