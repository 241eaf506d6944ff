"""One workload of the concurrency table (issue 15) in one command: offline, rollouts defaults, fixed.

    python3 benchmarks/gpu/workload.py n16 --model $W/m04 --results $W/concurrency.jsonl \
        [--parts offline,defaults,fixed] [--fixed 16,24,32]

Workloads (prompts of 150-350 random tokens, `ignore_eos`, temperature 1.0):
    n1   2,048 prompts x n=1  x 256 tokens     fixed settings 256, 512, 1024 requests
    n8     512 prompts x n=8  x 512 tokens     fixed settings 32, 48, 64
    n16    256 prompts x n=16 x 512 tokens     fixed settings 16, 24, 32
Every engine argument is left to its own side's default except memory 0.85, context 4096 and
seed 0, as in the issue:
    offline   vLLM's `LLM.generate` (benchmarks/gpu/offline.py, no seed);
    defaults  `rollouts serve` + `rollouts generate` with no --max-concurrent (auto);
    fixed     the same server, --max-concurrent at each fixed setting.
The server is started once for `defaults` and `fixed` (benchmarks/gpu/served.py); every rollouts
run is checked for exactly P x N rows, unique keys and no error row. A command on the GPU machine
may run 10 minutes: split a long workload with --parts (n16 offline ~3 min, each served run ~2).
Then: python3 benchmarks/gpu/report.py $W/concurrency.jsonl
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = {
    "n1": {"prompts": 2048, "n": 1, "max_tokens": 256, "fixed": "256,512,1024"},
    "n8": {"prompts": 512, "n": 8, "max_tokens": 512, "fixed": "32,48,64"},
    "n16": {"prompts": 256, "n": 16, "max_tokens": 512, "fixed": "16,24,32"},
}
COMMON = ["--gpu-memory-utilization", "0.85", "--max-model-len", "4096", "--seed", "0",
          "--max-num-seqs", "0", "--max-num-batched-tokens", "0"]


def run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--model", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--workdir", default=os.environ.get("W", "/tmp/gb"))
    parser.add_argument("--parts", default="offline,defaults,fixed")
    parser.add_argument("--fixed", default=None, help="fixed settings, comma-separated")
    args = parser.parse_args()
    spec = WORKLOADS[args.workload]
    parts = set(args.parts.split(","))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    prompts = workdir / f"prompts-{spec['prompts']}.jsonl"
    if not prompts.exists():
        run([sys.executable, str(HERE / "make_prompts.py"), args.model, str(prompts),
             "--prompts", str(spec["prompts"])])
    sizes = ["--n", str(spec["n"]), "--max-tokens", str(spec["max_tokens"])]
    label = ["--label", args.workload]
    if "offline" in parts:
        run([sys.executable, str(HERE / "offline.py"), "--model", args.model, "--prompts",
             str(prompts), "--results", args.results, "--seeds", "none", *sizes, *COMMON, *label])
    runs = (["default"] if "defaults" in parts else []) + (
        [f for f in (args.fixed or str(spec["fixed"])).split(",")] if "fixed" in parts else []
    )
    if runs:
        run([sys.executable, str(HERE / "served.py"), "--model", args.model, "--prompts",
             str(prompts), "--workdir", str(workdir / f"served-{args.workload}"), "--results",
             args.results, *sizes, *COMMON, *label, *(f"--run={r}" for r in runs)])


if __name__ == "__main__":
    main()
