"""Durable, resumable storage of rollout rows.

Beside the output file OUT lives its state folder `OUT.rollouts/`:

    lock             flock'ed by the one writer; a second writer is refused
    run.json         the run's config and its hash, and its inputs (dataset names and content
                     digests); a resume with another config or other inputs is refused
    wal-NNNNNN.jsonl write-ahead shards: each finished sample is appended and flushed before it
                     counts, so a kill -9 at any instant loses only requests in flight. A shard
                     is compacted after ROWS_PER_SHARD rows or BYTES_PER_SHARD bytes, so memory
                     during compaction stays bounded whatever the size of a row
    part-NNNNNN.parquet  compacted shards (written to a temp name, fsynced, renamed)
    manifest.json    the committed parts and the shards they replaced (written atomically)

An unclosed parquet file is unreadable (its footer comes last), so no row ever lives only in an open
parquet writer. A record of a shard that cannot be read (a torn last line, or a corrupt line
anywhere: a bad disk block, an editor) is left out on recovery and its sample is generated again;
a corrupt line is kept in `corrupt-wal-NNNNNN.jsonl` and reported on stderr. OUT itself is rebuilt from the parts at the end of every run, atomically, with
exactly one row per (prompt_id, sample_idx): the newest successful row wins.

Every failure to write (disk full, read-only file system) is a StorageError naming the folder:
what was written before stays, and rerunning the same command resumes.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from rollouts.errors import OutputConflictError, StorageError, UserInputError
from rollouts.io import (
    JSON_COLUMNS_KEY,
    dumps_json,
    fsync_dir,
    json_columns,
    json_line,
    parquet_cannot_hold,
    table_format,
    temp_path,
    to_python,
    write_json_atomic,
    write_table,
)

STATE_SUFFIX = ".rollouts"
# Rows per write-ahead shard before it is compacted into a parquet part.
ROWS_PER_SHARD = int(os.environ.get("ROLLOUTS_ROWS_PER_SHARD", "20000"))
# Bytes per write-ahead shard before it is compacted (rows carrying large columns).
BYTES_PER_SHARD = int(os.environ.get("ROLLOUTS_BYTES_PER_SHARD", str(256 << 20)))
# pyarrow's JSON reader needs every line inside one block; its default block is 1 MiB.
MIN_JSON_BLOCK = 1 << 20
MAX_JSON_BLOCK = (1 << 31) - 1  # pyarrow takes an int32
KEY_COLUMNS = ["prompt_id", "sample_idx"]

GENERATION_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("data_idx", pa.int64()),
        ("prompt_id", pa.string()),
        ("sample_idx", pa.int64()),
        ("response", pa.string()),
        ("finish_reason", pa.string()),
        ("temperature", pa.float64()),
        ("top_p", pa.float64()),
        ("max_tokens", pa.int64()),
        ("seed", pa.int64()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("latency_s", pa.float64()),
        ("endpoint", pa.string()),
        ("model", pa.string()),
        ("attempts", pa.int64()),
        ("error", pa.string()),
        ("error_kind", pa.string()),
        ("config_hash", pa.string()),
    ]
)


def output_schema(input_schemas: Iterable[pa.Schema]) -> pa.Schema:
    """Every input column (unified across datasets), then the generation columns. An input
    column parquet cannot hold (an empty struct inside, from `{}` in JSON) becomes JSON text,
    named in the schema's metadata (rollouts.io.json_columns)."""
    schemas = list(input_schemas)
    try:
        unified = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise UserInputError(
            f"the inputs' columns have incompatible types ({exc}); generate them into separate outputs"
        ) from exc
    fields = [f for f in unified if f.name not in GENERATION_SCHEMA.names]
    as_text = [f.name for f in fields if parquet_cannot_hold(f.type)]
    fields = [pa.field(f.name, pa.string()) if f.name in as_text else f for f in fields]
    schema = pa.schema(fields + list(GENERATION_SCHEMA))
    if as_text:
        schema = schema.with_metadata({JSON_COLUMNS_KEY: json.dumps(as_text).encode()})
    return schema


def state_dir_for(output: Path) -> Path:
    return output.with_name(output.name + STATE_SUFFIX)


@dataclass
class DoneIndex:
    """Which (prompt, sample) pairs are finished: a bitmask of sample indices per prompt."""

    masks: dict[int, int] = field(default_factory=dict)
    rows: int = 0
    error_rows: int = 0

    def add(self, prompt_id: str, sample_idx: int) -> None:
        key = int(prompt_id, 16)
        self.masks[key] = self.masks.get(key, 0) | (1 << sample_idx)

    def missing(self, prompt_id: str, n: int) -> list[int]:
        mask = self.masks.get(int(prompt_id, 16), 0)
        return [i for i in range(n) if not mask >> i & 1]

    def missing_one(self, prompt_id: str, sample_idx: int) -> bool:
        return not self.masks.get(int(prompt_id, 16), 0) >> sample_idx & 1

    def count(self) -> int:
        """Finished samples."""
        return sum(mask.bit_count() for mask in self.masks.values())


def describe_config_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)


def _digests_by_name(inputs: list[dict[str, Any]]) -> dict[str, str]:
    return {str(item["name"]): str(item["digest"]) for item in inputs}


def describe_input_change(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> str:
    before, after = _digests_by_name(old), _digests_by_name(new)
    changes = [f"{name} added" for name in sorted(set(after) - set(before))]
    changes += [f"{name} missing" for name in sorted(set(before) - set(after))]
    changes += [
        f"{name} has other prompts"
        for name in sorted(set(before) & set(after))
        if before[name] != after[name]
    ]
    return ", ".join(changes)


@contextlib.contextmanager
def storage_errors(folder: Path) -> Iterator[None]:
    """Turn a failed write (disk full, read-only file system, ...) into a one-line StorageError."""
    try:
        yield
    except OSError as exc:
        raise StorageError(
            f"cannot write to {folder} ({_reason(exc)}); make room or make it writable, "
            "then rerun the same command to resume (or choose another -o path)"
        ) from exc


def _reason(exc: OSError) -> str:
    """The system's words for the error; pyarrow's errors carry the errno only in their text."""
    number = exc.errno
    if number is None and (found := re.search(r"\[errno (\d+)\]", str(exc))):
        number = int(found.group(1))
    return os.strerror(number) if number else str(exc).splitlines()[0]


class RolloutStore:
    """The write-ahead log, compaction and final output of one run. Use as a context manager."""

    def __init__(
        self,
        output: Path,
        *,
        schema: pa.Schema,
        config: dict[str, Any],
        config_hash: str,
        inputs: list[dict[str, Any]] | None = None,
        overwrite: bool = False,
        rows_per_shard: int = ROWS_PER_SHARD,
        bytes_per_shard: int = BYTES_PER_SHARD,
    ) -> None:
        table_format(output)  # fail early on an unknown extension
        self.output = output
        self.state_dir = state_dir_for(output)
        self.schema = schema
        self._json_columns = json_columns(schema)
        self.config = config
        self.config_hash = config_hash
        self.inputs = inputs
        self.overwrite = overwrite
        self.rows_per_shard = rows_per_shard
        self.bytes_per_shard = bytes_per_shard
        self._lock_handle: IO[str] | None = None
        self._wal: IO[bytes] | None = None
        self._wal_path: Path | None = None
        self._wal_rows = 0
        self._wal_bytes = 0
        self._next_seq = 0

    # -- opening and recovery -------------------------------------------------------------

    def __enter__(self) -> RolloutStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        self._check_foreign_output()
        with storage_errors(self.state_dir):
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._acquire_lock()
        try:
            with storage_errors(self.state_dir):
                if self.overwrite:
                    self._clear_state()
                self._check_config()
                self._recover()
        except BaseException:
            self.close()
            raise

    def _check_foreign_output(self) -> None:
        if self.output.exists() and not self.state_dir.exists() and not self.overwrite:
            raise OutputConflictError(
                f"{self.output} already exists and was not written by this run; "
                "choose another -o path or pass --overwrite to replace it"
            )

    def _acquire_lock(self) -> None:
        handle = open(self.state_dir / "lock", "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise OutputConflictError(
                f"{self.output} is being written by {holder}; wait for it or choose another -o path"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._lock_handle = handle

    def _clear_state(self) -> None:
        for child in self.state_dir.iterdir():
            if child.name == "lock":
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
        self.output.unlink(missing_ok=True)

    def _check_config(self) -> None:
        """Refuse to resume with another config or other inputs; record them on a first run."""
        run_file = self.state_dir / "run.json"
        previous: dict[str, Any] = {}
        if run_file.exists():
            previous = json.loads(run_file.read_text(encoding="utf-8"))
            if previous.get("config_hash") != self.config_hash:
                change = describe_config_change(previous.get("config", {}), self.config)
                raise OutputConflictError(
                    f"{self.output} holds rollouts of another config ({change}); "
                    "use the same options to resume, another -o path, or --overwrite"
                )
            self._check_inputs(previous.get("inputs"))
            if previous.get("inputs") is not None or self.inputs is None:
                return
        # A first run, or a run from before inputs were recorded: record them now.
        record = {"config_hash": self.config_hash, "config": self.config, "inputs": self.inputs}
        write_json_atomic(record, run_file)

    def _check_inputs(self, previous: list[dict[str, Any]] | None) -> None:
        if previous is None or self.inputs is None:
            return
        if _digests_by_name(previous) != _digests_by_name(self.inputs):
            change = describe_input_change(previous, self.inputs)
            raise OutputConflictError(
                f"{self.output} holds rollouts of other inputs ({change}); "
                "give the same inputs to resume, another -o path, or --overwrite"
            )

    def _manifest(self) -> dict[str, Any]:
        path = self.state_dir / "manifest.json"
        if not path.exists():
            return {"parts": [], "compacted_shards": []}
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return manifest

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json_atomic(manifest, self.state_dir / "manifest.json")

    def _recover(self) -> None:
        """Bring the folder to a clean state after any crash, then compact leftover shards."""
        manifest = self._manifest()
        committed = {p["file"] for p in manifest["parts"]}
        for stray in self.state_dir.glob("part-*.parquet"):
            if stray.name not in committed:
                stray.unlink()  # written but never committed: its shard is still there
        for tmp in self.state_dir.glob(".*.tmp-*"):
            tmp.unlink()
        for name in manifest["compacted_shards"]:
            (self.state_dir / name).unlink(missing_ok=True)
        numbers = [int(p.stem.split("-")[1]) for p in self.state_dir.glob("wal-*.jsonl")]
        numbers += [int(Path(p["file"]).stem.split("-")[1]) for p in manifest["parts"]]
        self._next_seq = max(numbers, default=-1) + 1
        for shard in sorted(self.state_dir.glob("wal-*.jsonl")):
            _truncate_torn_tail(shard)
            try:
                self._compact_shard(shard)
            except (pa.ArrowInvalid, ValueError):  # a corrupt record somewhere in the shard
                _set_aside_corrupt_records(shard, self.schema)
                self._compact_shard(shard)

    # -- writing --------------------------------------------------------------------------

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Write finished samples ahead and flush them to the OS before they count."""
        with storage_errors(self.state_dir):
            if self._wal is None:
                self._open_shard()
            assert self._wal is not None
            if self._json_columns:
                rows = [self._as_json_text(row) for row in rows]
            data = b"".join(map(json_line, rows))
            self._wal.write(data)
            self._wal.flush()
            self._wal_rows += len(rows)
            self._wal_bytes += len(data)
            if self._wal_rows >= self.rows_per_shard or self._wal_bytes >= self.bytes_per_shard:
                self.rotate()

    def _as_json_text(self, row: dict[str, Any]) -> dict[str, Any]:
        row = dict(row)
        for column in self._json_columns:
            value = row.get(column)
            if value is not None and not isinstance(value, str):
                row[column] = dumps_json(to_python(value))
        return row

    def _open_shard(self) -> None:
        self._wal_path = self.state_dir / f"wal-{self._next_seq:06d}.jsonl"
        self._next_seq += 1
        self._wal = open(self._wal_path, "ab")
        self._wal_rows = 0
        self._wal_bytes = 0

    def rotate(self) -> None:
        """Close the current shard and compact it into a parquet part."""
        if self._wal is None or self._wal_path is None:
            return
        with storage_errors(self.state_dir):
            os.fsync(self._wal.fileno())
            self._wal.close()
            shard = self._wal_path
            self._wal = None
            self._wal_path = None
            self._compact_shard(shard)

    def _compact_shard(self, shard: Path) -> None:
        if shard.stat().st_size == 0:
            shard.unlink()
            return
        table = read_shard(shard, self.schema)
        part = shard.with_name(shard.name.replace("wal-", "part-").replace(".jsonl", ".parquet"))
        tmp = part.with_name(f".{part.name}.tmp-{os.getpid()}")
        try:
            pq.write_table(table, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, part)
        finally:
            tmp.unlink(missing_ok=True)  # a half-written part (disk full) frees its space
        fsync_dir(self.state_dir)
        manifest = self._manifest()
        manifest["parts"].append({"file": part.name, "rows": table.num_rows})
        manifest["compacted_shards"].append(shard.name)
        self._write_manifest(manifest)
        shard.unlink()
        manifest["compacted_shards"].remove(shard.name)
        self._write_manifest(manifest)

    def holds_no_rows(self) -> bool:
        """No sample was ever written into the state folder (no parquet part, no shard line)."""
        if any(self.state_dir.glob("part-*.parquet")):
            return False
        return all(shard.stat().st_size == 0 for shard in self.state_dir.glob("wal-*.jsonl"))

    def close(self) -> None:
        """Release the shard and the lock; never raises (it runs while another error unwinds).

        Bytes still buffered belong to an append that failed and was reported; a torn line it
        leaves is dropped by the next run's recovery."""
        if self._wal is not None:
            wal, self._wal = self._wal, None
            with contextlib.suppress(OSError):
                wal.close()
        if self._lock_handle is not None:
            handle, self._lock_handle = self._lock_handle, None
            with contextlib.suppress(OSError):
                handle.close()

    # -- reading --------------------------------------------------------------------------

    def part_paths(self) -> list[Path]:
        return [self.state_dir / p["file"] for p in self._manifest()["parts"]]

    def done_index(self, *, retry_errors: bool) -> DoneIndex:
        """Finished samples. With retry_errors, error rows do not count as finished."""
        index = DoneIndex()
        for part in self.part_paths():
            keys = pq.read_table(part, columns=["prompt_id", "sample_idx", "error_kind"])
            for prompt_id, sample_idx, kind in zip(
                keys["prompt_id"].to_pylist(),
                keys["sample_idx"].to_pylist(),
                keys["error_kind"].to_pylist(),
                strict=True,
            ):
                index.rows += 1
                if kind is not None:
                    index.error_rows += 1
                    if retry_errors:
                        continue
                index.add(prompt_id, sample_idx)
        return index

    def finalize(self, *, wide: bool) -> tuple[int, dict[str, int]]:
        """Compact what is left and rebuild OUT atomically.

        Returns the number of samples written and the error rows among them by kind."""
        self.rotate()
        parts = self.part_paths()
        errors: Counter[str] = Counter()
        tables = _counting_errors(
            _kept_tables(parts, _newest_row_per_key(parts), self.schema), errors
        )
        fmt = table_format(self.output)
        tmp = temp_path(self.output)
        try:
            with storage_errors(self.output.parent):
                rows = (
                    write_wide(tables, tmp, fmt)
                    if wide
                    else write_long(tables, tmp, fmt, self.schema)
                )
                with open(tmp, "rb") as handle:
                    os.fsync(handle.fileno())
                os.replace(tmp, self.output)
                fsync_dir(self.output.parent)
        finally:
            tmp.unlink(missing_ok=True)
        return rows, dict(errors)


def _counting_errors(tables: Iterable[pa.Table], errors: Counter[str]) -> Iterator[pa.Table]:
    for table in tables:
        kinds = table["error_kind"].drop_null()
        if len(kinds):
            for item in pc.value_counts(kinds).to_pylist():
                errors[item["values"]] += item["counts"]
        yield table


def _truncate_torn_tail(shard: Path) -> None:
    """A kill during a write can leave half a line at the end: drop it."""
    with open(shard, "rb+") as handle:
        data = handle.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            handle.truncate(end)


def longest_line(path: Path) -> int:
    """Length in bytes of the longest line of a file (one streaming pass)."""
    longest = 0
    with open(path, "rb") as handle:
        for line in handle:
            longest = max(longest, len(line))
    return longest


def read_shard(shard: Path, schema: pa.Schema) -> pa.Table:
    """A write-ahead shard as a table of `schema`, whatever the size of its rows.

    pyarrow's JSON reader fails on a line longer than its block ("straddling object straddles two
    block boundaries"), so the block is sized from the shard's longest line."""
    return _read_json_rows(shard, longest_line(shard), schema)


def _read_json_rows(source: Path | io.BytesIO, longest: int, schema: pa.Schema) -> pa.Table:
    block = min(max(MIN_JSON_BLOCK, longest + 1), MAX_JSON_BLOCK)
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    table = pajson.read_json(
        source, read_options=pajson.ReadOptions(block_size=block), parse_options=options
    )
    return table.select(schema.names).cast(schema)


def _is_row(line: bytes, schema: pa.Schema) -> bool:
    try:
        return _read_json_rows(io.BytesIO(line), len(line), schema).num_rows == 1
    except (pa.ArrowInvalid, ValueError):
        return False


def _set_aside_corrupt_records(shard: Path, schema: pa.Schema) -> None:
    """Move every line of `shard` that is not a row of `schema` to corrupt-<shard> beside it (kept,
    never lost; their samples count as not done) and say so, one line each. Line by line: only
    ever run on a shard that failed to read as a whole."""
    good: list[bytes] = []
    bad: list[tuple[int, bytes]] = []
    with open(shard, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if _is_row(line, schema):
                good.append(line)
            else:
                bad.append((number, line))
    kept = shard.with_name(f"corrupt-{shard.name}")
    with open(kept, "ab") as handle:
        handle.writelines(line for _, line in bad)
        handle.flush()
        os.fsync(handle.fileno())
    tmp = shard.with_name(f".{shard.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.writelines(good)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, shard)
    fsync_dir(shard.parent)
    for number, line in bad:
        print(f"rollouts: {shard} line {number}: corrupt record ({_first_fault(line)}) skipped, "
              f"kept in {kept.name}; its sample is generated again", file=sys.stderr, flush=True)


def _first_fault(line: bytes) -> str:
    """What is wrong with a write-ahead line, in a few words."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"byte 0x{line[exc.start]:02x} at offset {exc.start} is not UTF-8"
    try:
        json.loads(text)
    except ValueError as exc:
        return f"not JSON: {exc}"
    return "not a row of this run's columns"


def saved_rows(output: Path) -> int:
    """Rows on disk for OUT (committed parts and complete write-ahead lines), read from files
    only, so it works while or after the run stops."""
    state_dir = state_dir_for(output)
    manifest_file = state_dir / "manifest.json"
    if not manifest_file.exists():
        manifest: dict[str, Any] = {"parts": [], "compacted_shards": []}
    else:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    rows = sum(int(part["rows"]) for part in manifest["parts"])
    compacted = set(manifest["compacted_shards"])
    for shard in state_dir.glob("wal-*.jsonl"):
        if shard.name not in compacted:
            rows += _count_lines(shard)
    return rows


def _count_lines(path: Path) -> int:
    count = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def _has_duplicate_keys(parts: list[Path]) -> bool:
    """One pass over the key columns with a bitmask per prompt (memory ~ prompts, not rows)."""
    seen = DoneIndex()
    for part in parts:
        keys = pq.read_table(part, columns=KEY_COLUMNS)
        for prompt_id, sample_idx in zip(
            keys["prompt_id"].to_pylist(), keys["sample_idx"].to_pylist(), strict=True
        ):
            if not seen.missing_one(prompt_id, sample_idx):
                return True
            seen.add(prompt_id, sample_idx)
    return False


def _newest_row_per_key(parts: list[Path]) -> list[pa.Array] | None:
    """Per part, a mask of rows to keep; None when every key is already unique.

    Duplicates exist only after --retry-errors (a failed row, then its success), so the common
    case is the cheap check; the full ranking runs only when needed."""
    if not _has_duplicate_keys(parts):
        return None
    pieces = []
    for number, part in enumerate(parts):
        keys = pq.read_table(part, columns=[*KEY_COLUMNS, "error_kind"])
        rows = keys.num_rows
        success = pc.is_null(keys["error_kind"]).cast(pa.int64())
        # Rank: success first, then later parts, then later rows: the max rank per key is kept.
        rank = pc.add(
            pc.multiply(success, 1 << 50),
            pc.add(pa.scalar(number << 32, pa.int64()), pa.array(range(rows), pa.int64())),
        )
        pieces.append(keys.select(KEY_COLUMNS).append_column("rank", rank))
    if not pieces:
        return None
    keys_all = pa.concat_tables(pieces)
    best = keys_all.group_by(KEY_COLUMNS).aggregate([("rank", "max")])
    if best.num_rows == keys_all.num_rows:
        return None
    kept_ranks = best["rank_max"]
    return [pc.is_in(piece["rank"], value_set=kept_ranks) for piece in pieces]


def _kept_tables(
    parts: list[Path], keep: list[pa.Array] | None, schema: pa.Schema
) -> Iterator[pa.Table]:
    for number, part in enumerate(parts):
        table = pq.read_table(part).cast(schema)
        yield table if keep is None else table.filter(keep[number])


def write_long(tables: Iterable[pa.Table], path: Path, fmt: str, schema: pa.Schema) -> int:
    """One row per sample, streamed part by part (memory stays at one part)."""
    rows = 0
    if fmt == "parquet":
        with pq.ParquetWriter(path, schema) as writer:
            for table in tables:
                writer.write_table(table)
                rows += table.num_rows
        return rows
    with open(path, "wb") as handle:
        for table in tables:
            for batch in table.to_batches(max_chunksize=8192):
                handle.write(b"".join(map(json_line, batch.to_pylist())))
            rows += table.num_rows
    return rows


PER_SAMPLE_LISTS = {
    "response": "responses",
    "sample_idx": "sample_idxs",
    "finish_reason": "finish_reasons",
    "seed": "seeds",
    "completion_tokens": "completion_tokens",
    "latency_s": "latencies_s",
    "error": "errors",
}
PER_SAMPLE_DROPPED = ("error_kind", "attempts", "endpoint", "prompt_tokens")


def write_wide(tables: Iterable[pa.Table], path: Path, fmt: str) -> int:
    """verl's wide form: one row per prompt, `responses` holding its N samples in order."""
    table = pa.concat_tables(list(tables))
    table = table.sort_by(
        [("dataset", "ascending"), ("data_idx", "ascending"), ("sample_idx", "ascending")]
    )
    frame = table.to_pandas()
    group_keys = ["dataset", "prompt_id"]
    lists = (
        frame.groupby(group_keys, sort=False)
        .agg({col: list for col in PER_SAMPLE_LISTS})
        .rename(columns=PER_SAMPLE_LISTS)
        .reset_index()
    )
    per_prompt = frame.drop_duplicates(group_keys).drop(
        columns=[*PER_SAMPLE_LISTS, *PER_SAMPLE_DROPPED]
    )
    write_table(per_prompt.merge(lists, on=group_keys, how="left"), path, fmt)
    return len(frame)
