"""`rollouts serve` + `rollouts generate` on a prompts jsonl: throughput of the product end to end.

    python3 benchmarks/gpu/served.py --model DIR --prompts P.jsonl --workdir W --results R.jsonl \
        [--max-num-seqs 256 --max-num-batched-tokens 16384] --run 64 --run 32 --run 64:noseed \
        [--vllm-flag=--api-server-count --vllm-flag=2]

Starts one `rollouts serve` (in its own session, waits for its info file), then for each --run
C[:noseed] runs `rollouts generate` with N samples per prompt in one request (--samples-per-request
n), C requests in flight (`auto`: adaptive; `default`: --max-concurrent not given), ignore_eos,
and checks the output: exactly prompts x N rows, unique
(prompt_id, sample_idx), no error rows. `noseed` sends "seed": null whatever rollouts would send
(before commit a855749 it sent a seed with every request; since, none in this mode); the result
records whether the rows carry a seed. While it runs, the server's /metrics (running/waiting sequences, generated
tokens) are sampled every second, and CPU seconds are read for the client (rusage of the generate
process), the API server and the engine core. One result line per run is appended to --results;
the server is stopped at the end, unless --keep-server: then a later call with the same --workdir
uses it again (GPU machine commands are limited in time; starting vLLM costs a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from common import Monitor, append_result, check_output, count_prompts, cpu_seconds, tree


def running_server(workdir: Path) -> dict | None:
    """The info of a server an earlier call kept in this workdir, if it still answers."""
    info_file = workdir / "server.json"
    if not info_file.exists():
        return None
    info = json.loads(info_file.read_text())
    try:
        with urllib.request.urlopen(info["base_url"].removesuffix("/v1") + "/health", timeout=5):
            return info
    except OSError:
        return None


def start_server(args: argparse.Namespace, workdir: Path) -> tuple[subprocess.Popen[bytes], dict]:
    info_file = workdir / "server.json"
    info_file.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "rollouts.cli", "serve", "--model", args.model,
        "--info-file", str(info_file), "--log-file", str(workdir / "vllm.log"),
        "--gpu-memory-utilization", str(args.gpu_memory_utilization),
        "--max-model-len", str(args.max_model_len), "--seed", str(args.seed),
        *(["--replicas", args.replicas] if args.replicas else []), "--",
        *engine_flags(args), *args.vllm_flag,
    ]
    print("+", " ".join(command), flush=True)
    with open(workdir / "serve.out", "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    started = time.monotonic()
    while not info_file.exists():
        if proc.poll() is not None:
            raise SystemExit(f"rollouts serve exited with {proc.returncode}; see {workdir}/serve.out")
        if time.monotonic() - started > args.ready_timeout:
            stop_server(proc)
            raise SystemExit("rollouts serve not ready in time")
        time.sleep(1)
    info = json.loads(info_file.read_text())
    print(f"server ready after {time.monotonic() - started:.0f}s: {info['base_url']}", flush=True)
    return proc, info


def engine_flags(args: argparse.Namespace) -> list[str]:
    """--max-num-seqs / --max-num-batched-tokens when set; 0 leaves them to the server."""
    flags = []
    if args.max_num_seqs:
        flags += ["--max-num-seqs", str(args.max_num_seqs)]
    if args.max_num_batched_tokens:
        flags += ["--max-num-batched-tokens", str(args.max_num_batched_tokens)]
    return flags


def stop_server(proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    """SIGTERM to `rollouts serve` (it stops its vLLM tree), SIGKILL to its group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    print(f"rollouts serve exited with {proc.returncode}", flush=True)


def run_generate(
    args: argparse.Namespace, info: dict, workdir: Path, spec: str
) -> dict[str, Any]:
    concurrency, _, mode = spec.partition(":")
    extra: dict[str, Any] = {"ignore_eos": True}
    if mode == "noseed":
        extra["seed"] = None
    elif mode:
        raise SystemExit(f"unknown run mode {mode!r} in --run {spec}")
    tag = f"c{concurrency}{'-' + mode if mode else ''}"
    output = workdir / f"out-{tag}.parquet"
    command = [
        sys.executable, "-m", "rollouts.cli", "generate", args.prompts, "-o", str(output),
        "--server-info", str(workdir / "server.json"), "--n", str(args.n),
        "--max-tokens", str(args.max_tokens), "--temperature", "1.0",
        "--extra-body", json.dumps(extra), "--samples-per-request", "n", "--overwrite",
        "--no-progress",
    ]
    if concurrency != "default":  # default: rollouts' own (auto), the option not given at all
        command += ["--max-concurrent", concurrency]
    print("+", " ".join(command), flush=True)
    urls = info.get("base_urls") or [info["base_url"]]
    pids = info.get("pids") or [info["pid"]]
    monitor = Monitor([url.removesuffix("/v1") for url in urls])
    server_cpu_before = cpu_seconds(pids)
    monitor.start()
    started = time.monotonic()
    with open(workdir / f"generate-{tag}.log", "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    monitor.stop()
    server_cpu_after = cpu_seconds(pids)
    returncode = os.waitstatus_to_exitcode(status)
    summary_path = output.with_name(output.name + ".summary.json")
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    this_run = summary.get("this_run", {})
    expected = count_prompts(Path(args.prompts)) * args.n
    check = check_output(output, expected, args.max_tokens) if output.exists() else {"ok": False}
    tokens = this_run.get("completion_tokens", 0)
    check["ok"] = check["ok"] and returncode == 0 and tokens == expected * args.max_tokens
    elapsed = this_run.get("elapsed_s", wall)
    cpu = {
        label: round(server_cpu_after.get(label, 0.0) - server_cpu_before.get(label, 0.0), 1)
        for label in server_cpu_after
    }
    cpu["client"] = round(usage.ru_utime + usage.ru_stime, 1)
    return {
        "kind": "rollouts",
        "label": args.label,
        "model": args.model,
        "engine_args": {
            "max_num_seqs": args.max_num_seqs or None,
            "max_num_batched_tokens": args.max_num_batched_tokens or None,
            "gpu_memory_utilization": args.gpu_memory_utilization,
            "max_model_len": args.max_model_len,
            "seed": args.seed,
        },
        "vllm_flags": args.vllm_flag,
        "replicas": len(urls),
        # What the requests carried, read back from the output's seed column.
        "seeds": "per-request" if check.get("seeded_rows") else "none",
        "max_concurrent": int(concurrency) if concurrency.isdigit() else concurrency,
        # The limit in force per server over time (auto): [seconds, sequences] at each change.
        "concurrency": summary.get("concurrency"),
        "n": args.n,
        "max_tokens": args.max_tokens,
        "returncode": returncode,
        "check": check,
        "completion_tokens": tokens,
        "elapsed_s": elapsed,
        "tokens_per_s": this_run.get("completion_tokens_per_s"),
        "generate_wall_s": round(wall, 1),
        "retries": this_run.get("retries"),
        "cpu_seconds": cpu,
        "cpu_utilization": {k: round(v / max(elapsed, 1e-9), 2) for k, v in cpu.items()},
        "engine": monitor.summary((args.max_num_seqs or 512) * len(urls)),
        "command": " ".join(command),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--label", default="")
    parser.add_argument("--run", action="append", required=True,
                        help="C, auto or default (no --max-concurrent), optionally :noseed")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--max-num-seqs", type=int, default=256, help="0: the server's default")
    parser.add_argument("--max-num-batched-tokens", type=int, default=16384,
                        help="0: the server's default")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vllm-flag", action="append", default=[], help="extra vllm serve flag")
    parser.add_argument("--replicas", default=None, help="rollouts serve --replicas")
    parser.add_argument("--ready-timeout", type=float, default=400.0)
    parser.add_argument("--keep-server", action="store_true",
                        help="leave the server running for a later call with this --workdir")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    info = running_server(workdir)
    proc = None
    if info is not None:
        print(f"using the server kept in {workdir}: {info['base_url']}", flush=True)
    else:
        proc, info = start_server(args, workdir)
    try:
        pids = info.get("pids") or [info["pid"]]
        print("server processes:",
              [(p.pid, " ".join(p.cmdline())[:60]) for pid in pids for p in tree(pid)], flush=True)
        for spec in args.run:
            append_result(Path(args.results), run_generate(args, info, workdir, spec))
    finally:
        if not args.keep_server:
            if proc is not None:
                stop_server(proc)
            else:
                os.kill(info["pid"], signal.SIGTERM)


if __name__ == "__main__":
    main()
