"""A scored file written batch by batch, into place only when whole.

`score` scores an input a batch of rows at a time; each scored batch is handed to a
ScoredWriter, which keeps it on disk in the output's state folder (`OUT.scoring/`, beside the
verdict journal) and forgets it. `finish()` makes OUT: jsonl batches are already lines of one temp
file; parquet batches are parts, joined into one file whose schema holds every part (a reward's
extra column that one batch lacks is null there; a column typed differently by two batches, as an
extra that is an int in one and a string in another, becomes text in all). The file is written to a
temp name, fsynced and renamed, so OUT never exists half-written and a kill leaves only the state
folder, which the next run clears.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rollouts.io import dumps_json, fsync_dir, table_format, temp_path, write_table

PART_PREFIX = "part-"


class ScoredWriter:
    """Scored batches of one output (see the module docstring)."""

    def __init__(self, output: Path, state_dir: Path) -> None:
        self.output = output
        self.state_dir = state_dir
        self.format = table_format(output)
        for stale in state_dir.glob(f"{PART_PREFIX}*"):  # left by a run that was killed
            stale.unlink()
        self.parts: list[Path] = []

    def add(self, frame: pd.DataFrame) -> None:
        """Keep one scored batch (its missing values already JSON-safe for jsonl)."""
        suffix = "parquet" if self.format == "parquet" else "jsonl"
        part = self.state_dir / f"{PART_PREFIX}{len(self.parts):06d}.{suffix}"
        write_table(frame, part, self.format)
        self.parts.append(part)

    def finish(self) -> None:
        """Write the output from the batches, atomically."""
        self.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(self.output)
        try:
            if self.format == "parquet":
                _join_parquet(self.parts, tmp)
            else:
                _join_lines(self.parts, tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, self.output)
            fsync_dir(self.output.parent)
        finally:
            tmp.unlink(missing_ok=True)
        for part in self.parts:
            part.unlink(missing_ok=True)


def _join_lines(parts: list[Path], target: Path) -> None:
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    out.write(chunk)


def _join_parquet(parts: list[Path], target: Path) -> None:
    if len(parts) == 1:  # the whole input in one batch: the part is the file
        os.replace(parts[0], target)
        return
    if not parts:
        pq.write_table(pa.table({}), target)
        return
    schemas = [pq.read_schema(part) for part in parts]
    schema, text = joint_schema(schemas)
    with pq.ParquetWriter(target, schema) as writer:
        for part in parts:
            writer.write_table(_conformed(pq.read_table(part), schema, text))


def joint_schema(schemas: list[pa.Schema]) -> tuple[pa.Schema, set[str]]:
    """One schema holding every part's columns (in order of first appearance) and the columns
    that must become text because the parts type them differently; the first part's metadata
    (pandas' dtypes) is kept."""
    names: dict[str, list[pa.DataType]] = {}
    for schema in schemas:
        for column in schema:
            names.setdefault(column.name, []).append(column.type)
    fields, text = [], set()
    for name, types in names.items():
        try:
            joined = pa.unify_schemas([pa.schema([pa.field(name, t)]) for t in types],
                                      promote_options="permissive")
            fields.append(joined.field(name))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            fields.append(pa.field(name, pa.large_string()))
            text.add(name)
    return pa.schema(fields, metadata=schemas[0].metadata), text


def _conformed(table: pa.Table, schema: pa.Schema, text: set[str]) -> pa.Table:
    columns = []
    for column in schema:
        if column.name not in table.column_names:
            columns.append(pa.nulls(len(table), column.type))
        elif column.name in text:
            columns.append(pa.array([_as_text(v) for v in table[column.name].to_pylist()],
                                    column.type))
        else:
            values = table[column.name]
            try:
                columns.append(values.cast(column.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                # struct fields the part lacks, for one: through Python values
                columns.append(pa.array(values.to_pylist(), column.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _as_text(value: Any) -> str | None:
    """How the scorer writes a value of a column of mixed types: scalars as text, the rest JSON."""
    if value is None:
        return None
    return dumps_json(value) if isinstance(value, dict | list | tuple) else str(value)
