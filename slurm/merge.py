"""`rollouts slurm merge RUN_DIR`: the finished units of a run into one output per dataset.

The outputs are written at the paths the config names, with the rows and schema `rollouts run`
gives: exactly one row per (prompt, sample), in input order, plus each output's summary JSON and
the run summary. Units are streamed one at a time (memory stays at one unit), each checked against
its done marker's row count; an output is written to a temp name and renamed, so merging again is
safe and gives the same files. A run with units not done is refused, listing them and how to
finish. Merges of one run take turns (an exclusive lock on the run directory), so the merge job
and a user's merge at the same time both succeed. Either way the outcome is kept in merge.json
(merged or incomplete, and why) for `rollouts slurm status` and the score job; after a merge of a
`rollouts sweep --slurm` group, the sweep's sweep.parquet is brought up to date.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rollouts.engine import summary_path_for
from rollouts.errors import OutputConflictError, UserInputError
from rollouts.io import fsync_dir, table_format, temp_path, write_json_atomic
from rollouts.store import output_schema, write_long, write_wide
from slurm.units import DatasetEntry, Unit, WorkTable, done_ids, read_done, unit_output

MERGED_FILE = "merged.json"  # every output path this run's merges wrote (never replace others)
MERGE_MARKER = "merge.json"  # the last merge's outcome
MERGE_LOCK = ".merge.lock"
MISSING_LISTED = 10
ROWS_PER_WRITE = 65536


@dataclass(frozen=True)
class MergedOutput:
    output: Path
    rows: int
    error_rows: int


def merge_run(run_dir: Path) -> list[MergedOutput]:
    """Merge every dataset job of the run; refuses (UserInputError) while units are missing."""
    from slurm.submit import read_run

    table = WorkTable.load(run_dir)
    recorded = read_run(run_dir)
    with _merge_lock(run_dir):
        try:
            _refuse_missing(table, run_dir, recorded)
            merged = []
            for job_index in sorted({e.job for e in table.datasets}):
                entries = [i for i, e in enumerate(table.datasets) if e.job == job_index]
                merged.append(_merge_job(run_dir, table, entries))
            _write_run_summary(Path(recorded["summary"]), merged, table)
        except UserInputError as exc:
            missing = len(missing_units(table, run_dir))
            _write_marker(run_dir, {"state": "incomplete" if missing else "failed",
                                    "message": str(exc), "missing": missing})
            raise
        _update_sweep(recorded)  # before the marker: who sees "merged" sees the sweep's status
        _write_marker(run_dir, {"state": "merged", "outputs": [
            {"output": str(m.output), "rows": m.rows, "error_rows": m.error_rows} for m in merged
        ]})
    return merged


def read_merge_marker(run_dir: Path) -> dict[str, Any]:
    """The last merge's outcome ({} before any merge)."""
    try:
        marker: dict[str, Any] = json.loads((run_dir / MERGE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return marker


def _write_marker(run_dir: Path, marker: dict[str, Any]) -> None:
    job = os.environ.get("SLURM_JOB_ID")
    write_json_atomic({**marker, "job": job, "at": time.time()}, run_dir / MERGE_MARKER)


@contextlib.contextmanager
def _merge_lock(run_dir: Path) -> Iterator[None]:
    """One merge of a run at a time; the second waits, then merges again (same files)."""
    try:
        handle = open(run_dir / MERGE_LOCK, "a+b")  # noqa: SIM115 (held for the whole merge)
    except OSError as exc:
        raise UserInputError(
            f"cannot write the run directory {run_dir} ({exc.strerror}); merge needs it writable"
        ) from exc
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _update_sweep(recorded: dict[str, Any]) -> None:
    """A group of `rollouts sweep --slurm`: its combinations' status in sweep.parquet."""
    manifest = recorded.get("sweep_manifest")
    if manifest and Path(manifest).is_file():
        from rollouts.sweep import refresh_manifest

        refresh_manifest(Path(manifest))


def missing_units(table: WorkTable, run_dir: Path) -> list[Unit]:
    done = done_ids(run_dir)
    return [u for u in table.units if u.id not in done]


def _refuse_missing(table: WorkTable, run_dir: Path, recorded: dict[str, Any]) -> None:
    missing = missing_units(table, run_dir)
    if not missing:
        return
    listed = ", ".join(
        f"{u.id} ({table.datasets[u.dataset].name} prompts {u.start}-{u.stop - 1})"
        for u in missing[:MISSING_LISTED]
    )
    more = f" and {len(missing) - MISSING_LISTED} more" if len(missing) > MISSING_LISTED else ""
    raise UserInputError(
        f"{run_dir}: {len(missing)} of {len(table.units)} units are not done: {listed}{more}; "
        f"wait for the jobs still running, or finish them with `rollouts slurm submit "
        f"{recorded.get('config', 'CONFIG')}` (it merges again at the end)"
    )


def _merge_job(run_dir: Path, table: WorkTable, entries: list[int]) -> MergedOutput:
    job = table.datasets[entries[0]]
    output = Path(job.output)
    _check_ours(run_dir, output)
    units = [u for u in table.units if u.dataset in entries]
    units.sort(key=lambda u: (entries.index(u.dataset), u.start))
    for unit in units:
        _check_unit_file(run_dir, unit)
    schema = output_schema(pq.read_schema(unit_output(run_dir, u.id)) for u in _firsts(units))
    errors: Counter[str] = Counter()
    tables = _batched(_unit_tables(run_dir, units, table, schema, errors))
    fmt = table_format(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(output)
    try:
        if job.output_format == "wide":
            rows = write_wide(tables, tmp, fmt)
        else:
            rows = write_long(tables, tmp, fmt, schema)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, output)
        fsync_dir(output.parent)
    finally:
        tmp.unlink(missing_ok=True)
    expected = sum(table.samples(u) for u in units)
    if rows != expected:
        raise UserInputError(f"{output}: merged {rows} rows, expected {expected}; rerun merge")
    _record_merged(run_dir, output)
    _write_summary(run_dir, job, units, table, rows, errors)
    return MergedOutput(output, rows, sum(errors.values()))


def _check_unit_file(run_dir: Path, unit: Unit) -> None:
    """A done marker without its rows (deleted, or lost on a filesystem that failed): redo it."""
    path = unit_output(run_dir, unit.id)
    if not path.is_file():
        raise UserInputError(
            f"unit {unit.id} is marked done but its rows {path} are missing; delete "
            f"{run_dir / 'done' / (unit.id + '.json')} and submit again to redo it"
        )


def _firsts(units: list[Unit]) -> list[Unit]:
    """One unit per input file (each file's columns make up the job's schema)."""
    seen: dict[int, Unit] = {}
    for unit in units:
        seen.setdefault(unit.dataset, unit)
    return list(seen.values())


def _unit_tables(
    run_dir: Path, units: list[Unit], table: WorkTable, schema: pa.Schema, errors: Counter[str]
) -> Iterator[pa.Table]:
    for unit in units:
        path = unit_output(run_dir, unit.id)
        data = pq.read_table(path)
        marker = read_done(run_dir, unit.id)
        if data.num_rows != marker["rows"] or data.num_rows != table.samples(unit):
            raise UserInputError(
                f"{path}: {data.num_rows} rows, its done marker says {marker['rows']}; "
                f"delete {run_dir / 'done' / (unit.id + '.json')} and submit again to redo it"
            )
        data = _conform(data, schema).sort_by([("data_idx", "ascending"),
                                               ("sample_idx", "ascending")])
        kinds = data["error_kind"].drop_null()
        if len(kinds):
            for item in pc.value_counts(kinds).to_pylist():
                errors[item["values"]] += item["counts"]
        yield data


def _batched(tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """Units joined into tables of about ROWS_PER_WRITE rows: row groups of a useful size in the
    output, while memory stays at one batch."""
    pending: list[pa.Table] = []
    rows = 0
    for data in tables:
        pending.append(data)
        rows += data.num_rows
        if rows >= ROWS_PER_WRITE:
            yield pa.concat_tables(pending).combine_chunks()
            pending, rows = [], 0
    if pending:
        yield pa.concat_tables(pending).combine_chunks()


def _conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """A unit's table in the job's schema (a glob's files may lack each other's columns)."""
    columns = [
        data[f.name].cast(f.type) if f.name in data.column_names
        else pa.nulls(data.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _check_ours(run_dir: Path, output: Path) -> None:
    """Never replace a file this run did not write."""
    if output.exists() and str(output) not in _merged(run_dir):
        raise OutputConflictError(
            f"{output} already exists and was not written by this run's merge; move it away or "
            "change the dataset's `output`"
        )


def _merged(run_dir: Path) -> list[str]:
    path = run_dir / MERGED_FILE
    if not path.exists():
        return []
    outputs: list[str] = json.loads(path.read_text(encoding="utf-8"))
    return outputs


def _record_merged(run_dir: Path, output: Path) -> None:
    outputs = _merged(run_dir)
    if str(output) not in outputs:
        write_json_atomic([*outputs, str(output)], run_dir / MERGED_FILE)


def _write_summary(
    run_dir: Path, job: DatasetEntry, units: list[Unit], table: WorkTable,
    rows: int, errors: Counter[str],
) -> None:
    output = Path(job.output)
    markers = [read_done(run_dir, u.id) for u in units]
    files = sorted({u.dataset for u in units})
    tokens = sum(int(m.get("completion_tokens", 0)) for m in markers)
    summary = {
        "output": {
            "path": str(output), "format": job.output_format, "rows": rows,
            "error_rows": sum(errors.values()), "errors_by_kind": dict(errors),
        },
        "datasets": [
            {"name": table.datasets[i].name, "path": table.datasets[i].path,
             "prompts": table.datasets[i].prompts}
            for i in files
        ],
        "expected_rows": sum(table.samples(u) for u in units),
        "config": job.config,
        "config_hash": job.config_hash,
        "slurm": {
            "run_dir": str(run_dir), "units": len(units),
            "tasks": sorted({str(m.get("task")) for m in markers}),
            "completion_tokens": tokens,
            "unit_seconds": round(sum(float(m.get("elapsed_s", 0)) for m in markers), 3),
        },
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json_atomic(summary, summary_path_for(output))


def _write_run_summary(path: Path, merged: list[MergedOutput], table: WorkTable) -> None:
    write_json_atomic(
        {
            "datasets": [
                {"output": str(m.output), "rows": m.rows, "error_rows": m.error_rows,
                 "summary": str(summary_path_for(m.output))}
                for m in merged
            ],
            "expected_rows": table.total_samples(),
        },
        path,
    )
