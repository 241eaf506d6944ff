"""Sandbox cost: per-execution overhead against a bare subprocess, and scoring throughput.

    python3 benchmarks/bench_sandbox.py [--runs 40] [--responses 40] [--workers 2]

1. The same small stdin/stdout program run `--runs` times as a bare subprocess (same interpreter,
   same -I flag) and in the sandbox, alternately; prints both medians and their ratio.
2. `--responses` responses to one stdin/stdout problem with 10 tests scored by score_code in
   `--workers` processes; prints executions (one program run per test) and responses per second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scoring import sandbox  # noqa: E402
from scoring.code_reward import check_sandbox, score_code  # noqa: E402

PROGRAM = "a, b = map(int, input().split())\nprint(a + b)\n"
TESTS = [{"input": f"{i} {i * 7}\n", "output": f"{i * 8}\n"} for i in range(10)]
LIMITS = sandbox.SandboxLimits(wall_s=5.0, cpu_s=5, memory_mb=512)


def bare_run(path: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([sandbox.sandbox_python(), "-I", str(path)], input=b"2 3\n",
                          capture_output=True, check=True)
    assert done.stdout == b"5\n"
    return time.perf_counter() - start


def sandbox_run(backend: sandbox.Backend) -> float:
    start = time.perf_counter()
    result = sandbox.execute(backend, {"main.py": PROGRAM}, "main.py", stdin=b"2 3\n",
                             limits=LIMITS)
    assert result.stdout == b"5\n", result
    return time.perf_counter() - start


def overhead(backend: sandbox.Backend, runs: int) -> tuple[list[float], list[float]]:
    """Alternate the two so that both see the same load on a shared machine."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "main.py"
        path.write_text(PROGRAM)
        bare, boxed = [], []
        for _ in range(runs):
            bare.append(bare_run(path))
            boxed.append(sandbox_run(backend))
    return bare, boxed


def _score(_: int) -> float:
    return score_code(f"```python\n{PROGRAM}```", TESTS).score


def throughput(responses: int, workers: int) -> float:
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_score, range(workers)))  # start the workers and run their probes
        start = time.perf_counter()
        scores = list(pool.map(_score, range(responses)))
        elapsed = time.perf_counter() - start
    assert scores == [1.0] * responses
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--responses", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    check_sandbox()
    backend = sandbox.probe()
    print(f"sandbox: {backend.describe()}")
    # Shared machines: the load says how much the figures below are worth.
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    bare_times, boxed_times = overhead(backend, args.runs)
    bare, boxed = statistics.median(bare_times), statistics.median(boxed_times)
    print(f"per execution, median of {args.runs}: bare subprocess {bare * 1000:.1f} ms, "
          f"sandbox {boxed * 1000:.1f} ms, ratio {boxed / bare:.2f}x "
          f"(+{(boxed - bare) * 1000:.1f} ms)")
    elapsed = throughput(args.responses, args.workers)
    executions = args.responses * len(TESTS)
    print(f"stdin/stdout problem with {len(TESTS)} tests, {args.responses} responses on "
          f"{args.workers} workers: {executions / elapsed:.1f} executions/s, "
          f"{args.responses / elapsed:.2f} responses/s")


if __name__ == "__main__":
    main()
