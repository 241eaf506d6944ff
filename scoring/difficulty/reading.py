"""Reading scored files by column, and counting each prompt's samples and passes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rollouts.errors import UserInputError
from rollouts.io import (
    read_table,
    table_format,
    to_python,
)
from scoring.difficulty.columns import (
    UNKNOWN_SOURCE,
    UNSCOREABLE_STATUSES,
    Rows,
)
from scoring.difficulty.strategies import rate_label


@dataclass(frozen=True)
class PassRule:
    """How a sample counts as a pass: the `acc` column, or the score against a threshold."""

    column: str  # "acc" or "score"
    threshold: float | None = None  # score >= threshold; None with "score" means score > 0

    def describe(self) -> str:
        if self.column == "acc":
            return "acc"
        return "score > 0" if self.threshold is None else f"score >= {rate_label(self.threshold)}"


@dataclass
class ScoredSource:
    """One input file; jsonl/json files are small enough to hold whole, parquet is read by column."""

    path: Path
    columns: list[str]
    num_rows: int
    frame: pd.DataFrame | None = None

    @classmethod
    def open(cls, path: Path) -> ScoredSource:
        if table_format(path) == "parquet":
            try:
                meta = pq.ParquetFile(path)
            except (pa.ArrowException, OSError) as exc:
                raise UserInputError(f"{path}: cannot read parquet file ({exc}); check it") from exc
            return cls(path, list(meta.schema_arrow.names), meta.metadata.num_rows)
        frame = read_table(path)
        return cls(path, [str(c) for c in frame.columns], len(frame), frame)

    def arrow_columns(self, columns: Sequence[str], dictionary: Sequence[str] = ()) -> pa.Table:
        """Columns present in this file as an arrow table (strings dictionary-encoded if asked)."""
        wanted = [c for c in columns if c in self.columns]
        if self.frame is not None:
            return pa.Table.from_pandas(self.frame[wanted], preserve_index=False)
        schema = pq.read_schema(self.path)
        as_dict = [c for c in dictionary if c in wanted and pa.types.is_string(schema.field(c).type)]
        return pq.read_table(self.path, columns=wanted, read_dictionary=as_dict or None)

    def series(self, column: str) -> pd.Series:
        if column not in self.columns:
            return pd.Series([None] * self.num_rows, dtype=object)
        if self.frame is not None:
            return self.frame[column].reset_index(drop=True)
        return pq.read_table(self.path, columns=[column]).column(0).to_pandas()

    def take(self, rows: np.ndarray, columns: Sequence[str]) -> Rows:
        """Rows (sorted local indices) of the given columns, streaming parquet batch by batch."""
        wanted = [c for c in columns if c in self.columns]
        if self.frame is not None:
            return self.frame.iloc[rows][wanted].reset_index(drop=True)
        parquet = pq.ParquetFile(self.path)
        pieces: list[pa.Table] = []
        start = 0
        for batch in parquet.iter_batches(batch_size=1 << 18, columns=wanted):
            end = start + batch.num_rows
            lo, hi = np.searchsorted(rows, [start, end])
            if hi > lo:
                pieces.append(pa.Table.from_batches([batch]).take(rows[lo:hi] - start))
            start = end
        if not pieces:
            return parquet.schema_arrow.empty_table().select(wanted)
        return pa.concat_tables(pieces)


def _canonical_prompt(value: Any) -> str:
    value = to_python(value)
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _prompt_key_array(source: ScoredSource) -> pa.Array:
    """Grouping text when there is no prompt_id: the prompt itself, JSON for message lists."""
    if source.frame is None:
        column = pq.read_table(source.path, columns=["prompt"]).column(0)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            return column.combine_chunks()
        values = column.to_pylist()
    else:
        values = source.frame["prompt"].tolist()
    return pa.array([_canonical_prompt(v) for v in values], type=pa.string())


def _as_string(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column])
    if not pa.types.is_string(column.type):
        column = pc.cast(column, pa.string())
    return column


def _as_dictionary(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    """Text as dictionary<int32, string>: grouping then works on small integer codes.

    Parquet string columns arrive encoded already (read_dictionary); anything else is encoded here.
    Chunks may carry different dictionaries; pandas unifies them when converting.
    """
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column])
    if column.type == pa.dictionary(pa.int32(), pa.string()):
        return column
    return pc.dictionary_encode(_as_string(column))


def _constant(value: str, n: int) -> pa.ChunkedArray:
    array = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([value]))
    return pa.chunked_array([array])


def sample_table(source: ScoredSource, rule: PassRule, key_column: str) -> pa.Table:
    """Per-row statistics of one file: dataset, key, data_source, passed, unscoreable."""
    # A prompt key is computed separately (its values may be message lists).
    text = ["dataset", "data_source", "score_status"]
    wanted = [*text, rule.column]
    if key_column != "prompt":
        wanted.append(key_column)
        text.append(key_column)
    table = source.arrow_columns(wanted, dictionary=text)
    n = source.num_rows

    def column(name: str, default: str) -> pa.ChunkedArray:
        if name in table.column_names:
            return _as_dictionary(table.column(name))
        return _constant(default, n)

    verdict = table.column(rule.column)
    if rule.column == "acc":
        if not pa.types.is_boolean(verdict.type):
            verdict = pc.cast(verdict, pa.bool_())
        passed = verdict
        missing = pc.is_null(verdict)
    else:
        verdict = pc.cast(verdict, pa.float64())
        passed = (
            pc.greater(verdict, 0.0)
            if rule.threshold is None
            else pc.greater_equal(verdict, rule.threshold)
        )
        missing = pc.or_(pc.is_null(verdict), pc.is_nan(pc.fill_null(verdict, 0.0)))
    bad_status = pc.is_in(column("score_status", "ok"), value_set=pa.array(UNSCOREABLE_STATUSES))
    unscoreable = pc.or_(pc.fill_null(missing, True), pc.fill_null(bad_status, False))
    if "error" in source.columns:
        unscoreable = pc.or_(unscoreable, _generation_failed(source))
    if key_column == "prompt":
        key = _as_dictionary(_prompt_key_array(source))
    else:
        key = column(key_column, "")
    return pa.table(
        {
            "dataset": column("dataset", ""),
            "key": key,
            "data_source": column("data_source", UNKNOWN_SOURCE),
            "passed": pc.fill_null(passed, False),
            "unscoreable": unscoreable,
        }
    )


def _generation_failed(source: ScoredSource) -> pa.Array:
    """A sample whose request failed (error column set) has no real response to judge."""
    if source.frame is not None:
        return pa.array(source.frame["error"].notna().to_numpy())
    return pc.is_valid(pq.read_table(source.path, columns=["error"]).column(0)).combine_chunks()


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """Dense integer codes (null included) for a dictionary-encoded column."""
    values = column.to_pandas()
    if isinstance(values.dtype, pd.CategoricalDtype):
        # Categorical codes are dense already (null is -1): no hashing of 10M values needed.
        return values.cat.codes.to_numpy().astype(np.int64) + 1
    codes, _ = pd.factorize(values, use_na_sentinel=False)
    return np.asarray(codes, dtype=np.int64)


def _first_values(column: pa.ChunkedArray, first_row: np.ndarray, default: str) -> np.ndarray:
    values = pc.cast(column.take(pa.array(first_row)), pa.string())
    return np.asarray(pc.fill_null(values, default).to_numpy(zero_copy_only=False), dtype=object)


@dataclass
class PromptStats:
    """One row per prompt (in order of first appearance) plus the row -> prompt mapping."""

    frame: pd.DataFrame  # dataset, key, data_source, n_samples, n_pass, n_unscoreable, first_row
    group_of_row: np.ndarray
    n_rows: int


def run_ids(sources: Sequence[ScoredSource], columns: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Per row of all sources: the id of its run (its values of `columns`, e.g. model and
    temperature), and each id's description (`model=a temperature=0.6`). Columns are read
    dictionary-encoded, so 10M rows cost integer codes, not strings."""
    names: dict[str, int] = {}
    pieces = []
    for source in sources:
        present = [c for c in columns if c in source.columns]
        table = source.arrow_columns(present) if present else None
        combined = np.zeros(source.num_rows, dtype=np.int64)
        dictionaries = []
        for name in present:
            assert table is not None
            encoded = pc.dictionary_encode(table.column(name)).combine_chunks()
            dictionary = encoded.dictionary.to_pylist() + [None]  # the last code: null
            codes = pc.fill_null(encoded.indices, len(dictionary) - 1).to_numpy(zero_copy_only=False)
            combined = combined * len(dictionary) + codes
            dictionaries.append((name, dictionary))
        unique, first, local = np.unique(combined, return_index=True, return_inverse=True)
        mapping = np.empty(len(unique), dtype=np.int64)
        for code in np.argsort(first, kind="stable"):  # the first seen is named first
            mapping[code] = names.setdefault(_describe(int(unique[code]), dictionaries), len(names))
        pieces.append(mapping[local])
    ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    return ids, list(names)


def _describe(code: int, dictionaries: list[tuple[str, list[Any]]]) -> str:
    """`model=a temperature=0.6` from a combined code of dictionary indices."""
    parts = []
    for name, dictionary in reversed(dictionaries):
        code, index = divmod(code, len(dictionary))
        parts.append(f"{name}={dictionary[index]}")
    return " ".join(reversed(parts))


def prompt_stats(samples: pa.Table, run: np.ndarray | None = None) -> PromptStats:
    """Group per-row statistics by (dataset, key), and by `run` (a run id per row) when given,
    with vectorised counts."""
    dataset = _codes(samples.column("dataset"))
    key = _codes(samples.column("key"))
    combined = dataset * (int(key.max(initial=0)) + 1) + key
    if run is not None:
        combined = combined * (int(run.max(initial=0)) + 1) + run
    group, _ = pd.factorize(combined)
    group = np.asarray(group, dtype=np.int64)
    n_groups = int(group.max(initial=-1)) + 1
    # Codes follow first appearance, so a row starts a new group exactly where the running max grows.
    running_max = np.maximum.accumulate(np.concatenate(([-1], group[:-1])))
    first_row = np.flatnonzero(group > running_max)
    passed = samples.column("passed").to_numpy(zero_copy_only=False)
    unscoreable = samples.column("unscoreable").to_numpy(zero_copy_only=False)
    frame = pd.DataFrame(
        {
            "dataset": _first_values(samples.column("dataset"), first_row, ""),
            "key": _first_values(samples.column("key"), first_row, ""),
            "data_source": _first_values(samples.column("data_source"), first_row, UNKNOWN_SOURCE),
            "n_samples": np.bincount(group, minlength=n_groups),
            "n_pass": np.bincount(group, weights=passed & ~unscoreable, minlength=n_groups)
            .astype(np.int64),
            "n_unscoreable": np.bincount(group, weights=unscoreable, minlength=n_groups)
            .astype(np.int64),
            "first_row": first_row,
        }
    )
    return PromptStats(frame, group, len(group))


