"""The workloads of the throughput table in one command: offline, rollouts defaults, fixed.

    python3 benchmarks/gpu/workload.py n16[,n8,n1] --model $W/m04 --results $W/concurrency.jsonl \
        [--parts offline,defaults,fixed] [--offline-seqs 512,default] [--fixed 16,24,32] \
        [--replicas N|auto] [--keep-server]

Workloads (prompts of 150-350 random tokens, `ignore_eos`, temperature 1.0):
    n1   2,048 prompts x n=1  x 256 tokens     fixed settings 256, 512, 1024 requests
    n8     512 prompts x n=8  x 512 tokens     fixed settings 32, 48, 64
    n16    256 prompts x n=16 x 512 tokens     fixed settings 16, 24, 32
Every engine argument is left to its own side's default except memory 0.85, context 4096 and
seed 0, as in the issue:
    offline   vLLM's `LLM.generate` (benchmarks/gpu/offline.py, no seed), once per
              --offline-seqs: max_num_seqs 512 (its best: the largest batch it runs as a CUDA
              graph) and `default` (vLLM's own, 1,024 on H100/H200);
    defaults  `rollouts serve` + `rollouts generate` with no --max-concurrent (auto); `rollouts
              serve` with its defaults too, unless --replicas N is given;
    fixed     the same server, --max-concurrent at each fixed setting.
The offline engine is loaded once per --offline-seqs for all the workloads named; the server is started once
(benchmarks/gpu/served.py) and, with --keep-server, left running for the next call (folder
--server under --workdir); every rollouts run is checked for exactly P x N rows, unique keys and
no error row. A command on the GPU machine may run 10 minutes: split with --parts and --fixed
(offline: ~70 s load, then ~2 min for n16 or n8 and ~40 s for n1; each served run about the same).
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


def prompts_file(workdir: Path, model: str, spec: dict) -> Path:
    prompts = workdir / f"prompts-{spec['prompts']}.jsonl"
    if not prompts.exists():
        run([sys.executable, str(HERE / "make_prompts.py"), model, str(prompts),
             "--prompts", str(spec["prompts"])])
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", help="one or more of n1, n8, n16, comma-separated")
    parser.add_argument("--model", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--workdir", default=os.environ.get("W", "/tmp/gb"))
    parser.add_argument("--parts", default="offline,defaults,fixed")
    parser.add_argument("--fixed", default=None, help="fixed settings, comma-separated")
    parser.add_argument("--server", default="served", help="the server's folder under --workdir")
    parser.add_argument("--keep-server", action="store_true",
                        help="leave the server running for a later call (same --server)")
    parser.add_argument("--vllm-flag", action="append", default=[], help="extra vllm serve flag")
    parser.add_argument("--offline-seqs", default="512,default",
                        help="offline engine max_num_seqs, comma-separated; default: vLLM's own")
    parser.add_argument("--replicas", default=None,
                        help="rollouts serve --replicas (default: not given, its own default)")
    args = parser.parse_args()
    names = args.workload.split(",")
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; choose from {sorted(WORKLOADS)}")
    parts = set(args.parts.split(","))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    files = {name: prompts_file(workdir, args.model, WORKLOADS[name]) for name in names}
    if "offline" in parts:  # one engine load per batch size for every workload asked for
        jobs = [f"--job={name}:{files[name]}:{WORKLOADS[name]['n']}:{WORKLOADS[name]['max_tokens']}"
                for name in names]
        for seqs in args.offline_seqs.split(","):
            engine = [*COMMON]
            engine[engine.index("--max-num-seqs") + 1] = "0" if seqs == "default" else seqs
            run([sys.executable, str(HERE / "offline.py"), "--model", args.model, "--prompts",
                 str(files[names[0]]), "--results", args.results, "--seeds", "none", *engine,
                 *jobs])
    for index, name in enumerate(names):
        spec = WORKLOADS[name]
        runs = (["default"] if "defaults" in parts else []) + (
            (args.fixed or str(spec["fixed"])).split(",") if "fixed" in parts else []
        )
        if not runs:
            continue
        keep = args.keep_server or index < len(names) - 1
        run([sys.executable, str(HERE / "served.py"), "--model", args.model, "--prompts",
             str(files[name]), "--workdir", str(workdir / args.server), "--results",
             args.results, "--n", str(spec["n"]), "--max-tokens", str(spec["max_tokens"]),
             *COMMON, "--label", name, *(f"--run={r}" for r in runs),
             *(f"--vllm-flag={flag}" for flag in args.vllm_flag),
             *([f"--replicas={args.replicas}"] if args.replicas else []),
             *(["--keep-server"] if keep else [])])


if __name__ == "__main__":
    main()
