#!/bin/bash
# The table "the engine at its best, and replicas" of RESULTS.md in device calls of 3 to 6
# minutes each, back to back on one machine, from the repo root after ../shared/gpu's install:
#   bash benchmarks/gpu/table.sh offline512 OUT_DIR       # the model, prompts, offline @512
#   bash benchmarks/gpu/table.sh offline-default OUT_DIR  # offline at vLLM's default batch
#   bash benchmarks/gpu/table.sh defaults OUT_DIR  # rollouts with every default (auto replicas)
#   bash benchmarks/gpu/table.sh one OUT_DIR       # one server, all else default
#   bash benchmarks/gpu/table.sh noqueue OUT_DIR   # n8, one server, 512 sequences and no queue
#   bash benchmarks/gpu/table.sh before OUT_DIR    # n8 with the server's batch of before
# Results are appended to OUT_DIR/table.jsonl as each run ends; then report.py prints the table.
set -euo pipefail
source benchmarks/gpu/env.sh
OUT=${2:?usage: table.sh offline512|offline-default|defaults|one|noqueue|before OUT_DIR}
R=$OUT/table.jsonl
mkdir -p "$OUT"
# The end of every server log, whatever happens (a start that fails says why there).
trap 'for f in "$W"/*/vllm*.log; do echo "== $f"; tail -n 40 "$f"; done > "$OUT/logs-$1.txt" 2>&1' EXIT
[ -f "$W/m04/config.json" ] || python3 benchmarks/gpu/mkmodel.py "$W/m04"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$OUT/gpu.txt"
M=(--model "$W/m04" --results "$R")
case $1 in
  offline512)  # the offline engine at its best: max_num_seqs 512
    python3 benchmarks/gpu/workload.py n1,n8,n16 "${M[@]}" --parts offline --offline-seqs 512
    ;;
  offline-default)  # and at its own default (1,024 sequences on an H100/H200)
    python3 benchmarks/gpu/workload.py n1,n8,n16 "${M[@]}" --parts offline --offline-seqs default
    ;;
  defaults)
    # Every default: `rollouts serve` chooses its replicas (auto), `generate` its concurrency.
    python3 benchmarks/gpu/workload.py n16,n8,n1 "${M[@]}" --parts defaults --server auto
    ;;
  one)
    # One server (--replicas 1), all else default.
    python3 benchmarks/gpu/workload.py n16,n8,n1 "${M[@]}" --parts defaults --server one \
      --replicas 1
    ;;
  noqueue)
    # n8 on one server at 64 requests of n=8: 512 sequences, none queued (how `auto` held a
    # server before its batch was known).
    python3 benchmarks/gpu/workload.py n8 "${M[@]}" --parts fixed --fixed 64 --server one \
      --replicas 1
    ;;
  before)
    # n8 as rollouts ran before the server's batch was capped: vLLM's default (1,024
    # sequences), `auto` holding 512 sequences with no queue.
    python3 benchmarks/gpu/workload.py n8 "${M[@]}" --parts defaults --server before \
      --replicas 1 --vllm-flag=--max-num-seqs --vllm-flag=1024
    ;;
  *) echo "usage: table.sh offline512|offline-default|defaults|one|noqueue|before OUT_DIR" >&2; exit 2 ;;
esac
python3 benchmarks/gpu/report.py "$R" | tee "$OUT/report-$1.md"
