"""Client overhead and memory of `rollouts generate` against an instant local server.

Overhead: `rollouts generate` end to end (read the input, send, write durable output), pinned to
one core, against a bare aiohttp loop on the same core in the same run, as a ratio of requests/s.
The instant server runs pinned to the other core.

Memory: peak RSS of a run of --memory-samples samples (prompts x n, n per request).

    python benchmarks/bench_generate.py                      # overhead, 30,000 requests
    python benchmarks/bench_generate.py --memory-samples 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLIENT_CORE = 0
SERVER_CORE = 1

BARE_LOOP = r'''
import asyncio, json, sys, time
import aiohttp

async def main(url, total, concurrency):
    connector = aiohttp.TCPConnector(limit=concurrency + 16, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(i)
        async def worker():
            while not queue.empty():
                i = queue.get_nowait()
                body = {"model": "instant", "messages": [{"role": "user", "content": f"q {i}"}],
                        "n": 1, "max_tokens": 16, "seed": i}
                async with session.post(url, json=body) as response:
                    data = json.loads(await response.read())
                    assert data["choices"][0]["message"]["content"]
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start

elapsed = asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
print(json.dumps({"elapsed": elapsed}))
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if os.cpu_count() and os.cpu_count() > 1 else []  # type: ignore[operator]


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [*pinned(SERVER_CORE), sys.executable, str(HERE / "instant_server.py"), str(port)]
    )
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return process, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("instant server did not start")


def write_prompts(path: Path, count: int) -> None:
    with open(path, "w") as handle:
        for i in range(count):
            row = {"prompt": [{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}],
                   "data_source": "bench", "reward_model": {"ground_truth": str(2 * i)}}
            handle.write(json.dumps(row) + "\n")


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a child process."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, peak_kib / 1024


def cpu_seconds_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rollouts_command(source: Path, out: Path, url: str, n: int, mode: str, concurrency: int) -> list[str]:
    return [*pinned(CLIENT_CORE), sys.executable, "-m", "rollouts.cli", "generate", str(source),
            "-o", str(out), "--base-url", url, "--model", "instant", "--n", str(n),
            "--samples-per-request", mode, "--max-concurrent", str(concurrency), "--no-progress",
            "--max-tokens", "16"]


def overhead(url: str, requests: int, concurrency: int, repeat: int, workdir: Path) -> None:
    """Alternate the two clients `repeat` times (the machine is shared: noise hits both)."""
    bare_file = workdir / "bare.py"
    bare_file.write_text(BARE_LOOP)
    source = workdir / "prompts.jsonl"
    write_prompts(source, requests)
    bare, ours, bare_cpu, ours_cpu = [], [], [], []
    for round_no in range(repeat):
        cpu_before = cpu_seconds_of_children()
        bare_s, _ = timed([*pinned(CLIENT_CORE), sys.executable, str(bare_file),
                           f"{url}/chat/completions", str(requests), str(concurrency)])
        cpu_middle = cpu_seconds_of_children()
        out = workdir / f"out-{round_no}.parquet"
        ours_s, _ = timed(rollouts_command(source, out, url, 1, "1", concurrency))
        bare.append(requests / bare_s)
        ours.append(requests / ours_s)
        # CPU seconds of the client process: less sensitive than wall time to a busy machine.
        bare_cpu.append(cpu_middle - cpu_before)
        ours_cpu.append(cpu_seconds_of_children() - cpu_middle)
        print(f"round {round_no}: bare {bare[-1]:.0f} req/s ({bare_cpu[-1]:.2f} CPU s), "
              f"rollouts {ours[-1]:.0f} req/s ({ours_cpu[-1]:.2f} CPU s), "
              f"ratio {ours[-1] / bare[-1]:.2f}")
    print(f"client CPU per request: bare {statistics.median(bare_cpu) / requests * 1e6:.0f} us, "
          f"rollouts {statistics.median(ours_cpu) / requests * 1e6:.0f} us "
          f"(CPU ratio bare/rollouts {statistics.median(bare_cpu) / statistics.median(ours_cpu):.2f})")
    bare_rps, ours_rps = statistics.median(bare), statistics.median(ours)
    print(f"requests: {requests}, in flight: {concurrency}, client pinned to core {CLIENT_CORE}")
    print(f"bare aiohttp loop (requests only, timed in-process): {bare_rps:8.0f} req/s (median)")
    print(f"rollouts generate (whole process, durable output):   {ours_rps:8.0f} req/s (median)")
    print(f"ratio rollouts / bare: {ours_rps / bare_rps:.2f}")


def memory(url: str, samples: int, n: int, concurrency: int, workdir: Path) -> None:
    prompts = samples // n
    source = workdir / "memory.jsonl"
    write_prompts(source, prompts)
    out = workdir / "memory.parquet"
    elapsed, peak = timed(rollouts_command(source, out, url, n, "n", concurrency))
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(out).metadata.num_rows
    print(f"memory run: {prompts} prompts x n={n} = {rows} samples in {elapsed:.1f} s "
          f"({rows / elapsed:.0f} samples/s); peak RSS {peak:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory-samples", type=int, default=0)
    parser.add_argument("--memory-n", type=int, default=8)
    args = parser.parse_args()
    server, url = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.memory_samples:
                memory(url, args.memory_samples, args.memory_n, args.concurrency, Path(tmp))
            else:
                overhead(url, args.requests, args.concurrency, args.repeat, Path(tmp))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
