"""Benchmark `rollouts report` on synthetic scored files (default 20 checkpoints x 19 tasks x 500
prompts x 16 samples = 3,040,000 rows).

    python3 benchmarks/bench_report.py                    # the full size
    python3 benchmarks/bench_report.py --prompts 100      # quicker
    python3 benchmarks/bench_report.py --data /tmp/bench_report --keep   # reuse the files

One scored parquet per checkpoint (the columns `score` writes, a short response, answer classes).
The report runs as the real CLI in a child process with a baseline (so every comparison is made),
and the time and peak RSS printed are the command's own. The reference, run the same way on the
same files, is what a hand-written script does today: read the scores and print bare means per
task and checkpoint (no intervals, no pass@k, no plots, no tests).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DOMAINS = ["math", "codegen", "logic", "stem", "simulation", "table"]
REFERENCE = """
import sys, glob, pandas as pd
frames = [pd.read_parquet(p, columns=["model", "data_source", "score"]) for p in sorted(glob.glob(sys.argv[1] + "/*.scored.parquet"))]
print(pd.concat(frames).groupby(["data_source", "model"])["score"].mean().unstack().round(3).shape)
"""


def task_names(count: int) -> list[str]:
    return [f"{DOMAINS[i % len(DOMAINS)]}__task{i:02d}" for i in range(count)]


def write_checkpoint(path: Path, step: int, tasks: list[str], prompts: int, samples: int, rng: np.random.Generator) -> int:
    """One checkpoint's scored rows; pass rates rise with the step, differently per task."""
    n_tasks = len(tasks)
    difficulty = rng.beta(1.5, 1.5, (n_tasks, prompts))
    rate = np.clip(difficulty + 0.0004 * step * (np.arange(n_tasks)[:, None] % 3 - 0.5), 0, 1)
    passed = rng.random((n_tasks, prompts, samples)) < rate[..., None]
    rows = n_tasks * prompts * samples
    task_index = np.repeat(np.arange(n_tasks), prompts * samples)
    prompt_index = np.tile(np.repeat(np.arange(prompts), samples), n_tasks)
    wrong = rng.integers(1, 4, rows)
    classes = np.where(passed.ravel(), "0", wrong.astype(str))
    code = np.array([t.startswith("codegen") for t in tasks])[task_index]
    table = pa.table({
        "prompt_id": pa.array(np.char.add(np.array(tasks)[task_index], np.char.add("-", prompt_index.astype(str)))),
        "sample_idx": pa.array(np.tile(np.arange(samples), n_tasks * prompts)),
        "data_source": pa.array(np.array(tasks)[task_index]).dictionary_encode(),
        "model": pa.array(np.full(rows, f"ckpts/global_step_{step}")).dictionary_encode(),
        "response": pa.array(np.char.add("The answer is \\boxed{", np.char.add(classes, "}"))),
        "score": pa.array(passed.ravel().astype(np.float64)),
        "acc": pa.array(passed.ravel()),
        "pred": pa.array(classes),
        "score_status": pa.array(np.full(rows, "ok")).dictionary_encode(),
        "answer_class": pa.array(np.where(code, None, classes)),
    })
    pq.write_table(table, path)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=19)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--data", type=Path, default=None, help="Directory for the files (default: a temp dir).")
    parser.add_argument("--keep", action="store_true", help="Keep the files (and reuse them when present).")
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="bench_report_"))
    data.mkdir(parents=True, exist_ok=True)
    tasks = task_names(args.tasks)
    rows = 0
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    for index in range(args.checkpoints):
        path = data / f"step{index:03d}.scored.parquet"
        step = 50 * (index + 1)
        if path.exists() and args.keep:
            rows += pq.ParquetFile(path).metadata.num_rows
        else:
            rows += write_checkpoint(path, step, tasks, args.prompts, args.samples, rng)
    print(f"data: {rows:,} rows in {args.checkpoints} files ({time.perf_counter() - started:.1f}s to write)")
    out = data / "report"
    report = [sys.executable, "-m", "rollouts.cli", "report", str(data), "-o", str(out), "--overwrite",
              "--baseline", "ckpts/global_step_50", "--metric", "pass@1"]
    report_s, report_gib, _ = measured(report)
    reference_s, reference_gib, _ = measured([sys.executable, "-c", REFERENCE, str(data)])
    print(f"rollouts report: {report_s:.1f} s, peak RSS {report_gib:.2f} GiB "
          f"({rows / report_s / 1e6:.2f}M rows/s)")
    print(f"reference (bare means per task x checkpoint): {reference_s:.1f} s, peak RSS {reference_gib:.2f} GiB")
    print(f"ratio: report / bare means = {report_s / reference_s:.1f}x time, {report_gib / reference_gib:.1f}x memory")
    print(f"targets: under 60 s and under 2 GiB: {'met' if report_s < 60 and report_gib < 2 else 'NOT met'}")
    if not args.keep:
        shutil.rmtree(data)


def measured(command: list[str]) -> tuple[float, float, str]:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    stdout = process.stdout.read() if process.stdout else ""
    if status != 0:
        sys.exit(f"{' '.join(command[:5])} exited with status {status}")
    return elapsed, usage.ru_maxrss / 2**20, stdout


if __name__ == "__main__":
    main()
