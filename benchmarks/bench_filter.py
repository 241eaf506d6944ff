"""Benchmark `filter-difficulty` on a synthetic scored parquet (default 625,000 prompts x 16 samples).

    python3 benchmarks/bench_filter.py                      # 10,000,000 rows
    python3 benchmarks/bench_filter.py --prompts 50000      # quicker
    python3 benchmarks/bench_filter.py --data /tmp/scored.parquet --keep   # reuse the file

The file has every column of the scored-rollout contract (chat prompts, verl columns, generation
and scoring columns). The filter runs as the real CLI in a child process, so the time and peak RSS
printed are the command's own, not the data generator's.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SOURCES = np.array(["math__gsm8k", "math__aime", "math__dapo", "codegen__livecode", "logic__zebra"])


def _messages(n_prompts: int) -> pa.Array:
    """One system and one user message per prompt, as list<struct<role, content>>."""
    ids = np.arange(n_prompts)
    role = pa.array(np.tile(["system", "user"], n_prompts))
    user = np.char.add("Solve the following problem and put the answer in \\boxed{}. Problem #",
                       ids.astype(str))
    content = np.empty(2 * n_prompts, dtype=object)
    content[0::2] = "You are a careful mathematician."
    content[1::2] = user
    messages = pa.StructArray.from_arrays([role, pa.array(content)], ["role", "content"])
    return pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n_prompts + 1, 2, dtype=np.int32)),
                                    messages)


def _prompt_table(n_prompts: int, rng: np.random.Generator) -> pa.Table:
    ids = np.arange(n_prompts)
    answers = pa.array(ids.astype(str))
    return pa.table(
        {
            "prompt": _messages(n_prompts),
            "data_idx": pa.array(ids),
            "prompt_id": pa.array(np.char.add("p", ids.astype(str))),
            "data_source": pa.array(SOURCES[ids % len(SOURCES)]),
            "ability": pa.array(np.full(n_prompts, "math")),
            "reward_model": pa.StructArray.from_arrays(
                [answers, pa.array(np.full(n_prompts, "rule"))], ["ground_truth", "style"]
            ),
            "extra_info": pa.StructArray.from_arrays(
                [pa.array(ids), pa.array(np.full(n_prompts, "train"))], ["index", "split"]
            ),
            # Per-prompt difficulty drives the pass probability of every sample.
            "_difficulty": pa.array(rng.beta(0.6, 0.6, n_prompts)),
        }
    )


def generate(path: Path, n_prompts: int, n_samples: int, seed: int = 0) -> int:
    """Write the synthetic scored file in chunks of prompts; returns the number of rows."""
    rng = np.random.default_rng(seed)
    prompts = _prompt_table(n_prompts, rng)
    responses = pa.array([f"Let me think step by step ... the answer is \\boxed{{{i}}}." * 3
                          for i in range(1000)])
    chunk = 50_000
    writer: pq.ParquetWriter | None = None
    for start in range(0, n_prompts, chunk):
        part = prompts.slice(start, chunk)
        rows = np.repeat(np.arange(part.num_rows), n_samples)
        n = len(rows)
        difficulty = part.column("_difficulty").to_numpy()[rows]
        acc = rng.random(n) < difficulty
        status = np.where(rng.random(n) < 0.0005, "timeout", np.where(acc, "ok", "no_answer"))
        table = part.drop_columns(["_difficulty"]).take(pa.array(rows))
        columns = {
            "response": responses.take(pa.array(rng.integers(0, 1000, n))),
            "sample_idx": pa.array(np.tile(np.arange(n_samples), part.num_rows)),
            "temperature": pa.array(np.full(n, 1.0)),
            "top_p": pa.array(np.full(n, 1.0)),
            "max_tokens": pa.array(np.full(n, 8192)),
            "seed": pa.array(rng.integers(0, 2**31, n)),
            "finish_reason": pa.array(np.where(rng.random(n) < 0.05, "length", "stop")),
            "prompt_tokens": pa.array(rng.integers(50, 400, n)),
            "completion_tokens": pa.array(rng.integers(100, 8192, n)),
            "latency_s": pa.array(rng.random(n) * 60),
            "endpoint": pa.array(np.full(n, "http://node1:8000/v1")),
            "model": pa.array(np.full(n, "Qwen/Qwen3-8B")),
            "attempts": pa.array(np.ones(n, dtype=np.int64)),
            "error": pa.nulls(n, pa.string()),
            "config_hash": pa.array(np.full(n, "c0ffee")),
            "dataset": pa.array(np.full(n, "synthetic")),
            "score": pa.array(acc.astype(np.float64)),
            "acc": pa.array(acc),
            "pred": pa.array(np.where(acc, "42", "41")),
            "score_status": pa.array(status),
            "reward_fn": pa.array(np.full(n, "math_verify")),
            "reward_fn_version": pa.array(np.full(n, "1")),
        }
        for name, values in columns.items():
            table = table.append_column(name, values)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()
    return n_prompts * n_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=625_000)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--data", type=Path, help="scored parquet to use (made if missing)")
    parser.add_argument("--keep", action="store_true", help="keep the generated file and outputs")
    parser.add_argument("--strategy", default="percentile")
    parser.add_argument("extra", nargs="*", help="extra filter-difficulty options, after --")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_filter_"))
    data = args.data or workdir / "scored.parquet"
    if not data.exists():
        started = time.perf_counter()
        rows = generate(data, args.prompts, args.samples)
        print(f"generated {rows:,} rows ({data.stat().st_size / 2**20:.0f} MiB) in "
              f"{time.perf_counter() - started:.1f} s: {data}")
    rows = pq.ParquetFile(data).metadata.num_rows
    command = [sys.executable, "-m", "scoring.filter_cli", str(data), "-o", str(workdir / "out"),
               "--strategy", args.strategy, "--overwrite", *args.extra]
    print("running:", " ".join(command), flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        sys.exit(done.returncode)
    print(f"filter-difficulty: {rows:,} rows in {elapsed:.1f} s "
          f"({rows / elapsed / 1e6:.2f} M rows/s), peak RSS {peak_mib:,.0f} MiB")
    if not args.keep:
        for path in sorted(workdir.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        workdir.rmdir()


if __name__ == "__main__":
    main()
