"""Kill the vLLM engine core mid-run and check the run still completes with every row exactly once.

    python3 benchmarks/gpu/kill_restart.py --model DIR --prompts P.jsonl --workdir W --results R.jsonl

Runs `rollouts generate --model DIR` (a managed server, restarted when it dies), waits until
--kill-after-rows samples are on disk (its write-ahead log), SIGKILLs the EngineCore process of the
server (found by pid among the generate process's descendants), then waits for the run to end and
checks: exit 0, exactly prompts x N rows, unique (prompt_id, sample_idx), no error rows.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import append_result, check_output, count_prompts, engine_core_pids, tree


def rows_on_disk(output: Path) -> int:
    state = output.with_name(output.name + ".rollouts")
    total = 0
    for shard in state.glob("wal-*.jsonl"):
        with open(shard, "rb") as handle:
            total += sum(1 for _ in handle)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--max-concurrent", type=int, default=64)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--kill-after-rows", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=540.0)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    output = workdir / "out-kill.parquet"
    command = [
        sys.executable, "-m", "rollouts.cli", "generate", args.prompts, "-o", str(output),
        "--model", args.model, "--n", str(args.n), "--max-tokens", str(args.max_tokens),
        "--temperature", "1.0", "--extra-body", '{"ignore_eos": true}',
        "--max-concurrent", str(args.max_concurrent), "--gpu-memory-utilization", "0.85",
        "--max-model-len", "4096", f"--vllm-arg=--max-num-seqs {args.max_num_seqs}",
        "--server-log", str(workdir / "vllm-kill.log"), "--max-restarts", "3",
        "--overwrite", "--no-progress",
    ]
    print("+", " ".join(command), flush=True)
    started = time.monotonic()
    log = open(workdir / "generate-kill.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    killed: dict[str, object] = {}
    try:
        while proc.poll() is None and time.monotonic() - started < args.timeout:
            if not killed and rows_on_disk(output) >= args.kill_after_rows:
                pids = engine_core_pids(proc.pid)
                if pids:
                    rows = rows_on_disk(output)
                    processes = [(p.pid, " ".join(p.cmdline())[:50]) for p in tree(proc.pid)]
                    print(f"process tree: {processes}", flush=True)
                    for pid in pids:
                        os.kill(pid, signal.SIGKILL)
                    killed = {"pids": pids, "rows_on_disk": rows,
                              "at_s": round(time.monotonic() - started, 1)}
                    print(f"SIGKILL EngineCore {pids} with {rows} rows on disk", flush=True)
            time.sleep(0.5)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
    finally:
        log.close()
    wall = time.monotonic() - started
    log_text = (workdir / "generate-kill.log").read_text(errors="replace")
    summary_path = output.with_name(output.name + ".summary.json")
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    expected = count_prompts(Path(args.prompts)) * args.n
    check = check_output(output, expected, args.max_tokens) if output.exists() else {"ok": False}
    this_run = summary.get("this_run", {})
    result = {
        "kind": "kill_restart",
        "model": args.model,
        "returncode": proc.returncode,
        "killed": killed,
        "restarts_logged": log_text.count("managed server died"),
        "check": check,
        "ok": bool(killed) and proc.returncode == 0 and check.get("ok", False),
        "retries": this_run.get("retries"),
        "errors_by_kind": this_run.get("errors_by_kind"),
        "completion_tokens": this_run.get("completion_tokens"),
        "wall_s": round(wall, 1),
        "command": " ".join(command),
    }
    append_result(Path(args.results), result)


if __name__ == "__main__":
    main()
