"""Reading and writing tables: parquet, jsonl and json, by file extension.

Shared by generation, scoring and filtering. Writes are atomic (temp file, fsync, rename), so a
reader never sees half a file and a crash never leaves a truncated output behind.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from rollouts.errors import UserInputError

if TYPE_CHECKING:
    import pandas as pd

# pandas is imported where a function needs it: `rollouts generate` never does, and importing it
# is a third of the command's start-up time.

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
JSON_SUFFIXES = (".json",)


def table_format(path: str | Path) -> str:
    """'parquet', 'jsonl' or 'json' from the file name; a clear error for anything else."""
    name = str(path).lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(JSON_SUFFIXES):
        return "json"
    raise UserInputError(
        f"{path}: unknown table format; use a .parquet, .jsonl or .json file name"
    )


def expand_paths(patterns: Sequence[str | Path]) -> list[Path]:
    """Expand globs and check every file exists, in the order given (each glob sorted)."""
    if not patterns:
        raise UserInputError("no input files given; pass one or more files or globs")
    paths: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        if glob.has_magic(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise UserInputError(f"{text}: no file matches this glob; check the pattern")
            paths.extend(Path(m) for m in matches)
        else:
            path = Path(text)
            if not path.is_file():
                raise UserInputError(f"{text}: no such file; check the path")
            paths.append(path)
    seen: set[Path] = set()
    unique = []
    for path in paths:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append(path)
    return unique


def to_python(value: Any) -> Any:
    """Numpy scalars and arrays (as pandas gives for parquet list columns) to plain Python."""
    if isinstance(value, np.ndarray):
        return [to_python(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_python(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def iter_records(path: str | Path, batch_size: int = 4096) -> Iterator[dict[str, Any]]:
    """Stream the rows of a table as plain dicts, without loading the whole file."""
    fmt = table_format(path)
    try:
        if fmt == "parquet":
            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(batch_size=batch_size):
                try:
                    rows = batch.to_pylist()
                except UnicodeDecodeError as exc:
                    raise invalid_utf8_error(path) from exc
                yield from rows
        elif fmt == "jsonl":
            with open(path, "rb") as handle:
                for line_no, raw in enumerate(handle, 1):
                    if raw.strip():
                        yield _parse_json_line(path, line_no, _utf8_line(path, line_no, raw))
        else:
            yield from _read_json_records(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserInputError(f"{path}: cannot read {fmt} file ({exc}); check the file") from exc


def _utf8_line(path: str | Path, line_no: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_byte(f"{path} line {line_no}", raw[exc.start], exc.start, "the line") from exc


_REENCODE = "fix: re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or repair"
_REWRITE = "fix: write that column as UTF-8 text (or as binary) or repair"


def _bad_byte(where: str, byte: int, offset: int, within: str) -> UserInputError:
    fix = _REWRITE if within == "the value" else _REENCODE
    return UserInputError(
        f"{where}: invalid UTF-8 byte 0x{byte:02X} at byte {offset + 1} of {within}; {fix} {within}"
    )


def utf8_text(path: str | Path, data: bytes) -> str:
    """A whole text file's bytes as text; invalid UTF-8 is a one-line error naming the line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line_no = data.count(b"\n", 0, exc.start) + 1
        raise _bad_byte(f"{path} line {line_no}", data[exc.start], exc.start - line_start,
                        "the line") from exc


def invalid_utf8_error(path: str | Path) -> UserInputError:
    """The one-line error for a file a reader found invalid UTF-8 in: where (line, or parquet
    row group, row and column) and which byte. Only called after a decode failed (a second
    pass over the file)."""
    if table_format(path) != "parquet":
        return utf8_error_of_text_file(path)
    parquet = pq.ParquetFile(path)
    first_row = 0
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group)
        for name, column in zip(table.column_names, table.columns, strict=True):
            found = _first_bad_string(column)
            if found is not None:
                row, value, offset = found
                return _bad_byte(
                    f"{path} row group {group} (row {first_row + row}), column {name!r}",
                    value[offset], offset, "the value")
        first_row += table.num_rows
    return UserInputError(f"{path}: holds text that is not UTF-8; {_REWRITE} the file")


def utf8_error_of_text_file(path: str | Path) -> UserInputError:
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return _bad_byte(f"{path} line {line_no}", raw[exc.start], exc.start, "the line")
    return UserInputError(f"{path}: holds text that is not UTF-8; {_REENCODE} the file")


def _first_bad_string(column: pa.ChunkedArray) -> tuple[int, bytes, int] | None:
    """(row, raw value, offset of the bad byte) of the first invalid UTF-8 string in a column
    (strings nested in lists and structs included)."""
    offset = 0
    for chunk in column.chunks:
        try:
            chunk.validate(full=True)
        except pa.ArrowInvalid:
            for row, value in enumerate(_as_bytes(chunk)):
                bad = _bad_offset(value)
                if bad is not None:
                    return offset + row, value, bad
        offset += len(chunk)
    return None


def _as_bytes(chunk: pa.Array) -> list[bytes]:
    """Each row's strings as raw bytes, joined (nested values flattened row by row)."""
    if pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type):
        return [b"" if v is None else v for v in chunk.view(pa.binary() if pa.types.is_string(
            chunk.type) else pa.large_binary()).to_pylist()]
    if pa.types.is_struct(chunk.type):
        fields = [_as_bytes(chunk.field(i)) for i in range(chunk.type.num_fields)]
        return [b"".join(parts) for parts in zip(*fields, strict=True)] if fields else []
    if pa.types.is_list(chunk.type) or pa.types.is_large_list(chunk.type):
        inner = _as_bytes(chunk.values)
        offsets = chunk.offsets.to_pylist()
        return [b"".join(inner[a:b]) for a, b in zip(offsets, offsets[1:], strict=False)]
    return [b""] * len(chunk)


def _bad_offset(value: bytes) -> int | None:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return None


def _parse_json_line(path: str | Path, line_no: int, line: str) -> dict[str, Any]:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:  # the standard parser also takes NaN and Infinity, which some writers emit
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserInputError(
                f"{path}:{line_no}: invalid JSON ({exc.msg}); fix that line"
            ) from exc
        _no_lone_surrogate(path, line_no, record)
    if not isinstance(record, dict):
        raise UserInputError(f"{path}:{line_no}: expected a JSON object per line")
    return record


def _no_lone_surrogate(path: str | Path, line_no: int, record: Any) -> None:
    """A `\\ud800`-style escape with no partner decodes to a string no file format can hold
    (orjson refuses it; the standard parser, tried second, does not)."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(exc.object[exc.start])
        raise UserInputError(
            f"{path} line {line_no}: a lone surrogate \\u{code:04x} in a string (half of a "
            f"UTF-16 pair); fix: remove it or write the whole pair in that line"
        ) from exc


def _read_json_records(path: str | Path) -> list[dict[str, Any]]:
    with open(path, "rb") as handle:
        text = utf8_text(path, handle.read())
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        # Many ".json" files are really JSON lines.
        return [
            _parse_json_line(path, n, line)
            for n, line in enumerate(text.splitlines(), 1)
            if line.strip()
        ]
    if isinstance(data, dict):
        data = data.get("data", data.get("rows", [data]))
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserInputError(f"{path}: expected a JSON list of objects")
    return data


def read_table(path: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Load a whole table into pandas (parquet through pyarrow; jsonl/json line by line)."""
    fmt = table_format(path)
    if fmt == "parquet":
        try:
            table = pq.read_table(path, columns=list(columns) if columns else None)
            table.validate(full=True)  # invalid UTF-8 fails here, not in whoever reads a value
            return table.to_pandas()
        except pa.ArrowInvalid as exc:
            if "utf8" in str(exc).lower() or "utf-8" in str(exc).lower():
                raise invalid_utf8_error(path) from exc
            raise UserInputError(f"{path}: cannot read parquet file ({exc}); check the file") from exc
        except (pa.ArrowException, OSError) as exc:
            raise UserInputError(f"{path}: cannot read parquet file ({exc}); check the file") from exc
    import pandas as pd

    frame = pd.DataFrame.from_records(list(iter_records(path)))
    if columns:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise UserInputError(f"{path}: missing column(s) {missing}")
        frame = frame[list(columns)]
    return frame


# How much of a jsonl file is read to estimate its bytes per row: enough lines to average over,
# little enough that the estimate costs nothing next to reading the file.
ROW_SIZE_SAMPLE_BYTES = 1 << 20


def bytes_per_row(path: str | Path) -> float | None:
    """About how many bytes of data one row of a table file holds, without reading it: a parquet
    file's uncompressed size over its rows (from its metadata), else the bytes per line of the
    file's first MiB. None where it cannot be told (an empty or unreadable file: reading it says
    why)."""
    try:
        if table_format(path) == "parquet":
            meta = pq.ParquetFile(path).metadata
            size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            return size / meta.num_rows if meta.num_rows else None
        with open(path, "rb") as handle:
            head = handle.read(ROW_SIZE_SAMPLE_BYTES)
    except (pa.ArrowException, OSError, UserInputError):
        return None
    if not head.strip():
        return None
    # A first line longer than the sample is at least the sample's size.
    return len(head) / max(head.count(b"\n"), 1)


def read_table_batches(
    path: str | Path, rows: int, *, parquet_skips: Sequence[str] = ()
) -> Iterator[pd.DataFrame]:
    """The table as frames of at most `rows` rows, read as they are needed (parquet by record
    batches, jsonl line by line), so that memory holds one batch, not the file; a `.json`
    document is parsed whole (a JSON array has no rows to stop at) and handed out in slices.
    parquet_skips: columns a parquet file's batches leave out (one without them reads them all)."""
    import pandas as pd

    fmt = table_format(path)
    if fmt == "parquet":
        yield from _parquet_batches(path, rows, parquet_skips)
        return
    records: list[dict[str, Any]] = []
    for record in iter_records(path):
        records.append(record)
        if len(records) == rows:
            yield pd.DataFrame.from_records(records)
            records = []
    if records:
        yield pd.DataFrame.from_records(records)


def _parquet_batches(path: str | Path, rows: int, skips: Sequence[str]) -> Iterator[pd.DataFrame]:
    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        kept = [name for name in names if name not in skips]
        batches = parquet.iter_batches(batch_size=rows, columns=kept if len(kept) < len(names) else None)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            batch.validate(full=True)  # invalid UTF-8 fails here, not in whoever reads a value
            yield pa.Table.from_batches([batch]).to_pandas()
    except pa.ArrowInvalid as exc:
        if "utf8" in str(exc).lower() or "utf-8" in str(exc).lower():
            raise invalid_utf8_error(path) from exc
        raise UserInputError(f"{path}: cannot read parquet file ({exc}); check the file") from exc
    except (pa.ArrowException, OSError) as exc:
        raise UserInputError(f"{path}: cannot read parquet file ({exc}); check the file") from exc


def _json_default(value: Any) -> Any:
    converted = to_python(value)
    if converted is value:
        if hasattr(value, "isoformat"):  # datetime, date, pandas Timestamp
            return value.isoformat()
        raise TypeError(f"cannot write {type(value).__name__} as JSON")
    return converted


def dumps_json(record: Any) -> str:
    """Compact JSON for one record, tolerant of numpy values."""
    return json.dumps(record, ensure_ascii=False, default=_json_default)


# Schema metadata naming the columns a table holds as JSON text (see parquet_cannot_hold).
JSON_COLUMNS_KEY = b"rollouts.json_columns"


def parquet_cannot_hold(data_type: pa.DataType) -> bool:
    """Whether parquet cannot store values of this type: a struct with no fields anywhere inside,
    which is what `{}` in a JSON input becomes (IFEval's `"kwargs": [{}]`). Such columns are
    written as JSON text."""
    if pa.types.is_struct(data_type):
        return data_type.num_fields == 0 or any(parquet_cannot_hold(f.type) for f in data_type)
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type) or \
            pa.types.is_fixed_size_list(data_type):
        return parquet_cannot_hold(data_type.value_type)
    if pa.types.is_map(data_type):
        return parquet_cannot_hold(data_type.key_type) or parquet_cannot_hold(data_type.item_type)
    return False


def json_columns(schema: pa.Schema) -> list[str]:
    """The columns a schema says are held as JSON text."""
    value = (schema.metadata or {}).get(JSON_COLUMNS_KEY)
    return list(json.loads(value)) if value else []


JSON_LINE_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def json_line(record: Any) -> bytes:
    """One record as a JSON line in UTF-8 bytes: the hot path of the write-ahead log (orjson is
    several times faster than json; NaN becomes null, which JSON readers accept)."""
    return orjson.dumps(record, default=_json_default, option=JSON_LINE_OPTIONS)


def fsync_dir(directory: str | Path) -> None:
    """Make a rename durable by syncing its directory."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """A hidden temp name beside `path`, for write-then-rename."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_table(frame: pd.DataFrame | pa.Table, path: str | Path, fmt: str) -> None:
    """Write a table to `path` in `fmt` ('parquet' or 'jsonl'), not atomically: see
    write_table_atomic."""
    if fmt == "parquet":
        table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(
            frame, preserve_index=False
        )
        pq.write_table(table, path)
    else:
        # Through arrow, so missing values become JSON null (pandas gives NaN, invalid JSON).
        table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(
            frame, preserve_index=False
        )
        _write_lines(Path(path), (dumps_json(r) for r in table.to_pylist()))


def write_table_atomic(frame: pd.DataFrame | pa.Table, path: str | Path) -> None:
    """Write parquet or jsonl (by extension) to a temp name, fsync, then rename into place."""
    path = Path(path)
    fmt = table_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write_table(frame, tmp, fmt)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line)
            handle.write("\n")


def write_json_atomic(data: Any, path: str | Path) -> None:
    """A JSON document (summaries, manifests, info files), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False, default=_json_default)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
