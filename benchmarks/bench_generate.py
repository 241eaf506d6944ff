"""Client overhead and memory of `rollouts generate` against an instant local server.

Overhead: `rollouts generate` end to end (read the input, send, write durable output), pinned to
one core, against a bare aiohttp loop on the same core in the same run, as a ratio of requests/s.
The instant server runs pinned to the other core.

Memory: peak RSS of a run of --memory-samples samples (prompts x n, n per request).

Streaming: client CPU per generated token reading whole answers (before) and server-sent
events (after, the default: one event per choice per token, as vLLM streams), through
rollouts.client on one core, as a ratio.

    python benchmarks/bench_generate.py                      # overhead, 30,000 requests
    python benchmarks/bench_generate.py --memory-samples 1000000
    python benchmarks/bench_generate.py --stream-cpu         # streaming's CPU per token
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

# The same loop reading the answer as server-sent events (what `rollouts generate` does by
# default): the fair reference for a streaming client. It takes the socket's pieces as they come,
# splits events on blank lines and parses each with orjson; no timeouts, retries or checks.
BARE_STREAM_LOOP = r'''
import asyncio, json, sys, time
import aiohttp, orjson

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
                        "n": 1, "max_tokens": 16, "seed": i, "stream": True,
                        "stream_options": {"include_usage": True}}
                async with session.post(url, data=orjson.dumps(body),
                                        headers={"Content-Type": "application/json"}) as response:
                    text, pending = [], b""
                    async for data in response.content.iter_any():
                        pending += data
                        *events, pending = pending.split(b"\n\n")
                        for event in events:
                            if event != b"data: [DONE]":
                                for choice in orjson.loads(event[5:])["choices"]:
                                    text.append(choice["delta"].get("content") or "")
                    assert "".join(text)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start

elapsed = asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
print(json.dumps({"elapsed": elapsed}))
'''


STREAM_LOOP = r'''
import asyncio, json, sys, time
import aiohttp
from rollouts.client import OpenAIEndpoint
from rollouts.types import SamplingParams

async def main(url, stream, requests, n, tokens, concurrency):
    connector = aiohttp.TCPConnector(limit=concurrency + 16, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        endpoint = OpenAIEndpoint(url, "instant", session, stream=stream)
        params = SamplingParams(max_tokens=tokens)
        left = list(range(requests))
        generated = 0
        async def worker():
            nonlocal generated
            while left:
                i = left.pop()
                batch = await endpoint.complete([{"role": "user", "content": f"q {i}"}], n=n,
                                                params=params, seed=None)
                assert len(batch.completions) == n
                generated += batch.completion_tokens_total
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return generated

cpu = time.process_time()
generated = asyncio.run(main(sys.argv[1], sys.argv[2] == "stream", *map(int, sys.argv[3:7])))
print(json.dumps({"tokens": generated, "cpu_s": time.process_time() - cpu}))
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
    """Alternate the clients `repeat` times (the machine is shared: noise hits all of them).

    Two references: the bare loop reading whole JSON answers (as `generate` did before it
    streamed) and the bare loop reading server-sent events (as `generate` does now; the instant
    server then writes 17 events per request, which costs any client more than one body)."""
    source = workdir / "prompts.jsonl"
    write_prompts(source, requests)
    clients = {"bare": workdir / "bare.py", "bare_stream": workdir / "bare_stream.py"}
    clients["bare"].write_text(BARE_LOOP)
    clients["bare_stream"].write_text(BARE_STREAM_LOOP)
    rates: dict[str, list[float]] = {"bare": [], "bare_stream": [], "rollouts": []}
    cpu: dict[str, list[float]] = {name: [] for name in rates}
    for round_no in range(repeat):
        for name, script in clients.items():
            before = cpu_seconds_of_children()
            elapsed, _ = timed([*pinned(CLIENT_CORE), sys.executable, str(script),
                                f"{url}/chat/completions", str(requests), str(concurrency)])
            rates[name].append(requests / elapsed)
            cpu[name].append(cpu_seconds_of_children() - before)
        before = cpu_seconds_of_children()
        out = workdir / f"out-{round_no}.parquet"
        elapsed, _ = timed(rollouts_command(source, out, url, 1, "1", concurrency))
        rates["rollouts"].append(requests / elapsed)
        # CPU seconds of the client process: less sensitive than wall time to a busy machine.
        cpu["rollouts"].append(cpu_seconds_of_children() - before)
        print(f"round {round_no}: " + ", ".join(
            f"{name} {rates[name][-1]:.0f} req/s ({cpu[name][-1]:.2f} CPU s)" for name in rates)
            + f"; ratio {rates['rollouts'][-1] / rates['bare'][-1]:.2f} "
            f"(streaming reference {rates['rollouts'][-1] / rates['bare_stream'][-1]:.2f})")
    per_request = {name: statistics.median(cpu[name]) / requests * 1e6 for name in cpu}
    print("client CPU per request: " + ", ".join(f"{name} {us:.0f} us" for name, us in per_request.items())
          + f" (CPU ratio bare/rollouts {per_request['bare'] / per_request['rollouts']:.2f}, "
          f"bare_stream/rollouts {per_request['bare_stream'] / per_request['rollouts']:.2f})")
    median = {name: statistics.median(values) for name, values in rates.items()}
    print(f"requests: {requests}, in flight: {concurrency}, client pinned to core {CLIENT_CORE}")
    print(f"bare aiohttp loop, whole JSON (timed in-process):  {median['bare']:8.0f} req/s (median)")
    print(f"bare aiohttp loop, SSE stream (timed in-process):  {median['bare_stream']:8.0f} req/s (median)")
    print(f"rollouts generate (whole process, durable output): {median['rollouts']:8.0f} req/s (median)")
    print(f"ratio rollouts / bare: {median['rollouts'] / median['bare']:.2f}; "
          f"rollouts / bare streaming: {median['rollouts'] / median['bare_stream']:.2f}")


def stream_cpu(url: str, requests: int, n: int, tokens: int, concurrency: int, repeat: int,
               workdir: Path) -> None:
    """Client CPU per generated token, whole answers against streamed ones, alternated."""
    loop_file = workdir / "stream_loop.py"
    loop_file.write_text(STREAM_LOOP)
    per_token: dict[str, list[float]] = {"whole": [], "stream": []}
    for round_no in range(repeat):
        for mode in ("whole", "stream"):
            out = subprocess.run(
                [*pinned(CLIENT_CORE), sys.executable, str(loop_file), url, mode, str(requests),
                 str(n), str(tokens), str(concurrency)],
                check=True, capture_output=True, text=True,
            ).stdout
            result = json.loads(out)
            per_token[mode].append(result["cpu_s"] / result["tokens"] * 1e6)
        print(f"round {round_no}: whole answers {per_token['whole'][-1]:.2f} us/token, "
              f"streamed {per_token['stream'][-1]:.2f} us/token")
    whole, streamed = statistics.median(per_token["whole"]), statistics.median(per_token["stream"])
    print(f"{requests} requests x n={n} x {tokens} tokens, {concurrency} in flight, "
          f"client pinned to core {CLIENT_CORE}")
    print(f"client CPU per generated token: whole answers {whole:.2f} us, streamed {streamed:.2f} us "
          f"(ratio streamed / whole {streamed / whole:.1f})")
    for rate in (25_000, 100_000):
        print(f"  at {rate:,} tok/s streaming takes {streamed * rate / 1e4:.1f}% of one core "
              f"(whole answers {whole * rate / 1e4:.1f}%)")


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
    parser.add_argument("--stream-cpu", action="store_true",
                        help="measure client CPU per token, whole answers vs streamed")
    parser.add_argument("--stream-requests", type=int, default=600)
    parser.add_argument("--stream-n", type=int, default=8)
    parser.add_argument("--stream-tokens", type=int, default=256)
    args = parser.parse_args()
    server, url = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.stream_cpu:
                stream_cpu(url, args.stream_requests, args.stream_n, args.stream_tokens,
                           min(args.concurrency, 64), args.repeat, Path(tmp))
            elif args.memory_samples:
                memory(url, args.memory_samples, args.memory_n, args.concurrency, Path(tmp))
            else:
                overhead(url, args.requests, args.concurrency, args.repeat, Path(tmp))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
