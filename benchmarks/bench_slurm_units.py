"""Benchmark the SLURM run's shared files: concurrent claims of work units, and the merge.

    python3 benchmarks/bench_slurm_units.py                      # 64 claimers x 10,000 units;
                                                                 # merge of 10,000 units, 2,000,000 rows
    python3 benchmarks/bench_slurm_units.py --units 2000 --rows-per-unit 50   # quicker

Claims: `--claimers` processes share one run directory on a local disk, each claiming units
(lease file with O_EXCL, done-marker checks) and finishing them (atomic done marker, lease removed)
with no work in between, so the time is the claim overhead alone. Checked: every unit done exactly
once. Printed: the overhead per unit (claim + finish, as each process measures it) against the
reference of one process writing the same number of done markers with no claiming.

Merge: a run directory of `--units` unit files (rows like real rollouts: a chat prompt, a response,
every generation column) merged by `rollouts slurm merge` in a child process; printed: its time
and peak RSS, against the reference of reading every unit file once in the same way.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rollouts.io import write_json_atomic
from slurm.units import DatasetEntry, Leases, Unit, WorkTable, done_ids, unit_output

ROOT = Path(__file__).resolve().parents[1]


# -- claims ------------------------------------------------------------------------------------


def claimer(run_dir: str, count: int, out: str, start: multiprocessing.synchronize.Event) -> None:
    units = [Unit(f"u{i:06d}", 0, i, i + 1) for i in range(count)]
    leases = Leases(Path(run_dir), timeout=300)
    leases.offer(units)
    start.wait()
    claimed, costs, cpu_claim, cpu_finish = [], [], [], []
    while True:
        began, cpu = time.perf_counter(), time.process_time()
        unit = leases.claim()
        claimed_cpu = time.process_time()
        cpu_claim.append(claimed_cpu - cpu)  # the final, empty pass counts too
        if unit is None:
            costs.append(time.perf_counter() - began)
            break
        leases.finish(unit.id, {"rows": 1})
        cpu_finish.append(time.process_time() - claimed_cpu)
        costs.append(time.perf_counter() - began)
        claimed.append(unit.id)
    Path(out).write_text(json.dumps({"claimed": claimed, "costs": costs, "cpu_claim": cpu_claim,
                                     "cpu_finish": cpu_finish}))


def bench_claims(units: int, claimers: int, base: Path) -> None:
    run_dir = base / "claims"
    reference = base / "reference"
    (reference / "done").mkdir(parents=True)
    began = time.perf_counter()
    for i in range(units):
        write_json_atomic({"unit": f"u{i:06d}", "rows": 1}, reference / "done" / f"u{i:06d}.json")
    marker_s = (time.perf_counter() - began) / units

    context = multiprocessing.get_context("fork")
    start = context.Event()
    outs = [base / f"claimer-{i}.json" for i in range(claimers)]
    processes = [context.Process(target=claimer, args=(str(run_dir), units, str(o), start))
                 for o in outs]
    for process in processes:
        process.start()
    time.sleep(1.0)  # every process has offered its units
    began = time.perf_counter()
    start.set()
    for process in processes:
        process.join()
    wall = time.perf_counter() - began
    results = [json.loads(o.read_text()) for o in outs]
    claimed = [uid for r in results for uid in r["claimed"]]
    costs = [c for r in results for c in r["costs"]]
    assert len(claimed) == len(set(claimed)), "a unit was claimed twice"
    assert set(claimed) == {f"u{i:06d}" for i in range(units)}, "a unit was never claimed"
    assert len(done_ids(run_dir)) == units and not os.listdir(run_dir / "leases")
    per_unit = sum(costs) / units
    claim_cpu = sum(c for r in results for c in r["cpu_claim"]) / units
    finish_cpu = sum(c for r in results for c in r["cpu_finish"]) / units
    cores = os.cpu_count() or 1
    print(f"claims: {claimers} processes on {cores} cores, {units} units, "
          "every unit done exactly once")
    print(f"  wall {wall:.2f} s: {wall / units * 1e3:.2f} ms of wall per unit for the whole "
          f"group ({units / wall:.0f} units/s)")
    print(f"  CPU per unit: claim {claim_cpu * 1e3:.2f} ms + finish {finish_cpu * 1e3:.2f} ms "
          f"= {(claim_cpu + finish_cpu) * 1e3:.2f} ms (target < 20 ms)")
    print(f"  latency per unit as each process sees it (claim + finish, including waiting for a "
          f"core, {claimers / cores:.0f} processes per core): mean {per_unit * 1e3:.2f} ms, "
          f"median {statistics.median(costs) * 1e3:.2f} ms, p99 {np.percentile(costs, 99) * 1e3:.2f} ms")
    print(f"  reference, one process alone writing a done marker (fsync + rename): "
          f"{marker_s * 1e3:.3f} ms -> wall per unit of the group = "
          f"{wall / units / marker_s:.2f}x one marker write")


# -- merge -------------------------------------------------------------------------------------


def unit_table(first_prompt: int, prompts: int, n: int) -> pa.Table:
    ids = np.repeat(np.arange(first_prompt, first_prompt + prompts), n)
    rows = len(ids)
    text = np.char.add("Solve problem #", ids.astype(str))
    messages = pa.array([[{"role": "user", "content": t}] for t in text])
    response = np.char.add("Let us think step by step about the problem. The answer is \\boxed{",
                           np.char.add(ids.astype(str), "}."))
    return pa.table({
        "prompt": messages,
        "data_source": pa.array(["math__gsm8k"] * rows),
        "dataset": pa.array(["bench"] * rows),
        "data_idx": pa.array(ids, pa.int64()),
        "prompt_id": pa.array([f"{i:016x}" for i in ids]),
        "sample_idx": pa.array(np.tile(np.arange(n), prompts), pa.int64()),
        "response": pa.array(response),
        "finish_reason": pa.array(["stop"] * rows),
        "temperature": pa.array([1.0] * rows),
        "top_p": pa.array([1.0] * rows),
        "max_tokens": pa.array([2048] * rows, pa.int64()),
        "seed": pa.array([None] * rows, pa.int64()),
        "prompt_tokens": pa.array([40] * rows, pa.int64()),
        "completion_tokens": pa.array([25] * rows, pa.int64()),
        "latency_s": pa.array([1.5] * rows),
        "endpoint": pa.array(["http://node1:8000/v1"] * rows),
        "model": pa.array(["m"] * rows),
        "attempts": pa.array([1] * rows, pa.int64()),
        "error": pa.array([None] * rows, pa.string()),
        "error_kind": pa.array([None] * rows, pa.string()),
        "config_hash": pa.array(["c0ffee"] * rows),
    })


def build_merge_run(run_dir: Path, units: int, rows_per_unit: int, n: int) -> Path:
    prompts_per_unit = rows_per_unit // n
    output = run_dir.parent / "merged.parquet"
    entry = DatasetEntry(job=0, path="/data/bench.parquet", name="bench", output=str(output),
                         config_hash="c0ffee", prompts=units * prompts_per_unit, n=n)
    table_units = []
    (run_dir / "done").mkdir(parents=True)
    (run_dir / "units").mkdir()
    template = unit_table(0, prompts_per_unit, n)
    for index in range(units):
        uid = f"u{index:06d}"
        start = index * prompts_per_unit
        table_units.append(Unit(uid, 0, start, start + prompts_per_unit))
        data = template.set_column(3, "data_idx", pa.array(
            np.repeat(np.arange(start, start + prompts_per_unit), n), pa.int64()))
        pq.write_table(data, unit_output(run_dir, uid))
        write_json_atomic({"unit": uid, "rows": data.num_rows, "error_rows": 0},
                          run_dir / "done" / f"{uid}.json")
    WorkTable((entry,), tuple(table_units)).save(run_dir)
    write_json_atomic({"summary": str(run_dir.parent / "run_summary.json")}, run_dir / "run.json")
    return output


def child(code: str) -> tuple[float, float]:
    """Run code in a fresh interpreter; its wall time and peak RSS (MiB)."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    wall = time.perf_counter() - began
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def bench_merge(units: int, rows_per_unit: int, base: Path) -> None:
    run_dir = base / "merge" / "run"
    began = time.perf_counter()
    output = build_merge_run(run_dir, units, rows_per_unit, n=8)
    print(f"merge: built {units} unit files ({units * rows_per_unit:,} rows) in "
          f"{time.perf_counter() - began:.1f} s")
    read_all = ("import pyarrow.parquet as pq, pathlib\n"
                f"for p in sorted(pathlib.Path({str(run_dir / 'units')!r}).glob('*.parquet')):\n"
                "    pq.read_table(p)\n")
    ref_wall, ref_rss = child(read_all)
    merge = ("from pathlib import Path\nfrom slurm.merge import merge_run\n"
             f"[m] = merge_run(Path({str(run_dir)!r}))\nassert m.rows == {units * rows_per_unit}\n")
    wall, rss = child(merge)
    rows = pq.ParquetFile(output).metadata.num_rows
    assert rows == units * rows_per_unit
    print(f"  merge: {wall:.1f} s, peak RSS {rss:.0f} MiB (target < 1024 MiB), {rows:,} rows "
          f"({rows / wall:,.0f} rows/s)")
    print(f"  reference, reading every unit file once: {ref_wall:.1f} s "
          f"-> merge = {wall / ref_wall:.2f}x the read (peak RSS of the children so far "
          f"{ref_rss:.0f} MiB before the merge)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--claimers", type=int, default=64)
    parser.add_argument("--rows-per-unit", type=int, default=200)
    parser.add_argument("--skip", choices=["claims", "merge"], default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as tmp:
        base = Path(tmp)
        if args.skip != "claims":
            bench_claims(args.units, args.claimers, base)
        if args.skip != "merge":
            bench_merge(args.units, args.rows_per_unit, base)


if __name__ == "__main__":
    main()
