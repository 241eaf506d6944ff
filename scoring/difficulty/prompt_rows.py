"""Each prompt's own columns, taken from its first sample's row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from rollouts.io import (
    dumps_json,
)
from scoring.difficulty.columns import (
    PER_SAMPLE_COLUMNS,
    PROMPT_COLUMNS,
    Rows,
)
from scoring.difficulty.reading import PromptStats, ScoredSource


def _varies_within_prompt(values: pd.Series, group: np.ndarray, first_row: np.ndarray) -> bool:
    """True when some prompt has two samples with different values in this column."""
    if values.dtype == object:
        # Lists, dicts and arrays compare by content through their JSON text.
        values = values.map(lambda v: None if v is None else dumps_json(v))
    array = values.to_numpy()
    reference = array[first_row][group]
    missing = pd.isna(values).to_numpy()
    same = (array == reference) | (missing & missing[first_row][group])
    return not bool(np.all(same))


def prompt_columns(
    sources: Sequence[ScoredSource], stats: PromptStats, keep: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """(columns to keep per prompt, unknown columns dropped because they vary within a prompt).
    `keep`: per-sample columns kept all the same (the --group-by ones, constant per group)."""
    ordered: list[str] = []
    for source in sources:
        ordered.extend(c for c in source.columns if c not in ordered)
    candidates = [c for c in ordered if c not in PER_SAMPLE_COLUMNS or c in keep]
    varying = []
    first_row = stats.frame["first_row"].to_numpy()
    for name in candidates:
        if name in PROMPT_COLUMNS:
            continue
        values = pd.concat([s.series(name) for s in sources], ignore_index=True)
        if _varies_within_prompt(values, stats.group_of_row, first_row):
            varying.append(name)
    return [c for c in candidates if c not in varying], varying


def first_rows(sources: Sequence[ScoredSource], first_row: np.ndarray, columns: list[str]) -> Rows:
    """The prompt columns of each prompt's first sample, in prompt order."""
    pieces: list[Rows] = []
    offset = 0
    for source in sources:
        lo, hi = np.searchsorted(first_row, [offset, offset + source.num_rows])
        if hi > lo:
            pieces.append(source.take(first_row[lo:hi] - offset, columns))
        offset += source.num_rows
    if all(isinstance(p, pa.Table) for p in pieces):
        return pa.concat_tables(pieces, promote_options="permissive")
    frames = [p.to_pandas() if isinstance(p, pa.Table) else p for p in pieces]
    return pd.concat(frames, ignore_index=True)


def with_columns(rows: Rows, columns: dict[str, Any]) -> Rows:
    if isinstance(rows, pa.Table):
        for name, values in columns.items():
            if name in rows.column_names:
                rows = rows.drop_columns([name])
            rows = rows.append_column(name, _to_arrow(values))
        return rows
    rows = rows.copy()
    for name, values in columns.items():
        rows[name] = values
    return rows


def _to_arrow(values: Any) -> pa.Array:
    array = np.asarray(values)
    # Object arrays here hold text or None (bucket, reason, prompt_id).
    return pa.array(array, type=pa.string() if array.dtype == object else None, from_pandas=True)


def select_rows(rows: Rows, mask: np.ndarray) -> Rows:
    if isinstance(rows, pa.Table):
        return rows.filter(pa.array(mask))
    return rows[mask].reset_index(drop=True)


