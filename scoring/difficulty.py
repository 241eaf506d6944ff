"""Bucket prompts by pass rate: the library behind `filter-difficulty`.

Scored rollouts are long (one row per sample). They are grouped by prompt (`dataset` when present,
then `prompt_id`, else a hash of the prompt's content); each prompt gets a pass rate with a Wilson
95% interval, and a strategy puts it in a named bucket. Each bucket is written as the prompts'
original rows (one per prompt, per-sample columns dropped) plus the pass-rate columns, so a bucket
can go straight back into training or generation.

Pass rule: `acc` when every input has it; otherwise `score > 0` (covers 0/1 and -1/+1 rewards);
`pass_threshold=T` replaces both with `score >= T`.

Set aside, never bucketed: prompts with an unscoreable sample (score_status timeout, error or
sandbox_error; a generation error; no verdict at all) and, unless `keep_mixed`, prompts whose sample
count differs from the majority count of their dataset. `no_answer` is a genuine fail.

Only the columns needed for the statistics are read for every row; the prompt columns are read
once more, keeping only each prompt's first sample, so 10M rows fit in seconds and modest memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rollouts.errors import OutputConflictError, UserInputError
from rollouts.io import (
    dumps_json,
    expand_paths,
    fsync_dir,
    read_table,
    table_format,
    to_python,
    write_json_atomic,
    write_table_atomic,
)

WILSON_Z = 1.959963984540054  # two-sided 95%
UNSCOREABLE_STATUSES = ("timeout", "error", "sandbox_error")
SUMMARY_NAME = "summary.json"
SET_ASIDE_BUCKET = "set_aside"
PLOT_NAME = "pass_rates.png"
OUTPUT_FORMATS = ("parquet", "jsonl")
UNKNOWN_SOURCE = "unknown"

# Columns that describe one sample or the run that produced it, never the prompt.
PER_SAMPLE_COLUMNS = frozenset(
    {
        "response", "sample_idx", "seed", "finish_reason", "prompt_tokens", "completion_tokens",
        "latency_s", "endpoint", "attempts", "error",
        "temperature", "top_p", "max_tokens", "model", "config_hash",
        "score", "acc", "pred", "score_status", "reward_fn", "reward_fn_version",
        "pred_source", "answer_class", "score_error",
    }
)
# Columns known to be per prompt; any other column is kept only if it is constant within a prompt.
PROMPT_COLUMNS = frozenset(
    {"prompt", "data_source", "ability", "reward_model", "extra_info", "data_idx", "prompt_id",
     "dataset"}
)
STAT_COLUMNS = ("pass_rate", "n_samples", "n_pass", "pass_rate_ci_low", "pass_rate_ci_high",
                "bucket")
SET_ASIDE_COLUMNS = ("n_unscoreable", "set_aside_reason")

Rows: TypeAlias = pa.Table | pd.DataFrame


# --------------------------------------------------------------------------- statistics

def wilson_interval(
    n_pass: np.ndarray, n: np.ndarray, z: float = WILSON_Z
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for n_pass successes out of n (NaN where n == 0)."""
    n_pass = np.asarray(n_pass, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = n_pass / n
        z2 = z * z
        denom = 1.0 + z2 / n
        center = (p + z2 / (2.0 * n)) / denom
        half = z / denom * np.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    # Clip rounding noise so 0/n gives exactly 0 and n/n exactly 1.
    return np.clip(center - half, 0.0, 1.0), np.clip(center + half, 0.0, 1.0)


def pass_rates(n_pass: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(n_pass, dtype=np.float64) / np.asarray(n, dtype=np.float64)


# --------------------------------------------------------------------------- strategies

class Strategy(Protocol):
    """Puts each prompt (given its passes and samples) into one of `bucket_names()`."""

    name: ClassVar[str]
    option_names: ClassVar[tuple[str, ...]]

    def bucket_names(self) -> list[str]: ...

    def assign(self, n_pass: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Bucket index per prompt, and details for the summary (e.g. computed cutoffs)."""
        ...

    def parameters(self) -> dict[str, Any]: ...


def _label(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class PercentileStrategy:
    """Cut at percentiles of the pass rate; the first bucket holds the hardest prompts.

    Cutoff c_i is numpy's (linear) percentile p_i of the bucketed prompts' pass rates; a prompt
    goes to the first bucket whose cutoff is >= its rate (ties stay together), else the last.
    """

    percentiles: tuple[float, ...] = (33.0, 66.0)
    name: ClassVar[str] = "percentile"
    option_names: ClassVar[tuple[str, ...]] = ("percentiles",)

    def __post_init__(self) -> None:
        values = tuple(float(p) for p in self.percentiles)
        object.__setattr__(self, "percentiles", values)
        if not values:
            raise UserInputError("--percentiles needs at least one value, e.g. --percentiles 33,66")
        if any(not 0.0 < p < 100.0 for p in values):
            raise UserInputError(
                f"--percentiles {','.join(map(_label, values))}: each must be strictly between "
                "0 and 100"
            )
        if any(b <= a for a, b in zip(values, values[1:], strict=False)):
            raise UserInputError(
                f"--percentiles {','.join(map(_label, values))}: give them in increasing order "
                "without repeats"
            )

    def bucket_names(self) -> list[str]:
        edges = (0.0, *self.percentiles, 100.0)
        return [f"p{_label(lo)}-{_label(hi)}" for lo, hi in zip(edges, edges[1:], strict=False)]

    def assign(self, n_pass: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        rates = pass_rates(n_pass, n)
        if rates.size == 0:
            return np.zeros(0, dtype=np.int64), {"cutoffs": []}
        cutoffs = np.percentile(rates, self.percentiles)
        return np.searchsorted(cutoffs, rates, side="left"), {"cutoffs": cutoffs.tolist()}

    def parameters(self) -> dict[str, Any]:
        return {"percentiles": list(self.percentiles)}


@dataclass(frozen=True)
class BandStrategy:
    """Keep prompts with min < pass rate < max (both strict); the rest are dropped."""

    min_rate: float = 0.0
    max_rate: float = 1.0
    name: ClassVar[str] = "band"
    option_names: ClassVar[tuple[str, ...]] = ("min_rate", "max_rate")

    def __post_init__(self) -> None:
        for flag, value in (("--min", self.min_rate), ("--max", self.max_rate)):
            if not 0.0 <= value <= 1.0:
                raise UserInputError(f"{flag} {_label(value)}: a pass rate must be in [0, 1]")
        if self.min_rate >= self.max_rate:
            raise UserInputError(
                f"--min {_label(self.min_rate)} must be below --max {_label(self.max_rate)}"
            )

    def bucket_names(self) -> list[str]:
        return ["kept", "dropped"]

    def assign(self, n_pass: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        rates = pass_rates(n_pass, n)
        kept = (rates > self.min_rate) & (rates < self.max_rate)
        return np.where(kept, 0, 1), {}

    def parameters(self) -> dict[str, Any]:
        return {"min": self.min_rate, "max": self.max_rate}


BIN_NAMES = ("impossible", "very_hard", "hard", "medium", "easy", "very_easy", "perfect")
BIN_EDGES = (0.2, 0.4, 0.6, 0.8)


@dataclass(frozen=True)
class BinsStrategy:
    """Fixed buckets: impossible (rate 0), very_hard (0, 0.2], hard (0.2, 0.4], medium (0.4, 0.6],
    easy (0.6, 0.8], very_easy (0.8, 1), perfect (rate 1)."""

    name: ClassVar[str] = "bins"
    option_names: ClassVar[tuple[str, ...]] = ()

    def bucket_names(self) -> list[str]:
        return list(BIN_NAMES)

    def assign(self, n_pass: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        rates = pass_rates(n_pass, n)
        # Interior bins are right-closed; all-fail and all-pass are decided on counts, not floats.
        index = 1 + np.searchsorted(np.asarray(BIN_EDGES), rates, side="left")
        index = np.where(n_pass == 0, 0, index)
        index = np.where(n_pass == n, len(BIN_NAMES) - 1, index)
        return index, {"edges": [0.0, *BIN_EDGES, 1.0]}

    def parameters(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class NonzeroVarianceStrategy:
    """Keep prompts with at least one pass and one fail (DAPO's dynamic sampling filter)."""

    name: ClassVar[str] = "nonzero-variance"
    option_names: ClassVar[tuple[str, ...]] = ()

    def bucket_names(self) -> list[str]:
        return ["kept", "dropped"]

    def assign(self, n_pass: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        kept = (n_pass > 0) & (n_pass < n)
        return np.where(kept, 0, 1), {}

    def parameters(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class KOfNStrategy:
    """Keep prompts solved by min_k <= n_pass <= max_k samples (inclusive); `k` means exactly k."""

    min_k: int | None = None
    max_k: int | None = None
    k: int | None = None
    name: ClassVar[str] = "k-of-n"
    option_names: ClassVar[tuple[str, ...]] = ("min_k", "max_k", "k")

    def __post_init__(self) -> None:
        if self.k is not None and (self.min_k is not None or self.max_k is not None):
            raise UserInputError("--k means exactly k passes; use it alone or use --min-k/--max-k")
        if self.k is None and self.min_k is None and self.max_k is None:
            raise UserInputError(
                "--strategy k-of-n needs --min-k K (at least K passes), --max-k K (at most K) "
                "or --k K (exactly K)"
            )
        for flag, value in (("--k", self.k), ("--min-k", self.min_k), ("--max-k", self.max_k)):
            if value is not None and value < 0:
                raise UserInputError(f"{flag} {value}: a number of passes cannot be negative")
        if self.low > self.high:
            raise UserInputError(f"--min-k {self.min_k} must not exceed --max-k {self.max_k}")

    @property
    def low(self) -> int:
        return self.k if self.k is not None else (self.min_k or 0)

    @property
    def high(self) -> int | float:
        if self.k is not None:
            return self.k
        return self.max_k if self.max_k is not None else math.inf

    def bucket_names(self) -> list[str]:
        return ["kept", "dropped"]

    def assign(self, n_pass: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        if n.size and self.low > int(n.max()):
            raise UserInputError(
                f"k-of-n: at least {self.low} passes asked, but no prompt has more than "
                f"{int(n.max())} samples; lower --min-k/--k"
            )
        kept = (n_pass >= self.low) & (n_pass <= self.high)
        return np.where(kept, 0, 1), {}

    def parameters(self) -> dict[str, Any]:
        high = None if math.isinf(self.high) else int(self.high)
        return {"min_k": self.low, "max_k": high}


STRATEGIES: dict[str, Callable[..., Strategy]] = {
    cls.name: cls
    for cls in (
        PercentileStrategy,
        BandStrategy,
        BinsStrategy,
        NonzeroVarianceStrategy,
        KOfNStrategy,
    )
}
OPTION_FLAGS = {
    "percentiles": "--percentiles",
    "min_rate": "--min",
    "max_rate": "--max",
    "min_k": "--min-k",
    "max_k": "--max-k",
    "k": "--k",
}


def make_strategy(name: str, **options: Any) -> Strategy:
    """Build a strategy by name; options left as None are unset; a set option that the strategy
    does not take is an error (so `--min` with `--strategy bins` never passes silently)."""
    factory = STRATEGIES.get(name)
    if factory is None:
        raise UserInputError(
            f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}"
        )
    given = {key: value for key, value in options.items() if value is not None}
    accepted: tuple[str, ...] = factory.option_names  # type: ignore[attr-defined]
    stray = [OPTION_FLAGS.get(key, key) for key in given if key not in accepted]
    if stray:
        raise UserInputError(
            f"{', '.join(stray)} does not apply to --strategy {name}; drop it or pick the "
            "strategy it belongs to"
        )
    return factory(**given)


def parse_percentiles(values: Sequence[str]) -> tuple[float, ...]:
    """'33,66', '33 66' or repeated values, to floats."""
    out: list[float] = []
    for value in values:
        for part in value.replace(",", " ").split():
            try:
                out.append(float(part))
            except ValueError as exc:
                raise UserInputError(
                    f"--percentiles {value!r}: expected numbers, e.g. --percentiles 33,66"
                ) from exc
    return tuple(out)


# --------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class PassRule:
    """How a sample counts as a pass: the `acc` column, or the score against a threshold."""

    column: str  # "acc" or "score"
    threshold: float | None = None  # score >= threshold; None with "score" means score > 0

    def describe(self) -> str:
        if self.column == "acc":
            return "acc"
        return "score > 0" if self.threshold is None else f"score >= {_label(self.threshold)}"


@dataclass
class _Source:
    """One input file; jsonl/json files are small enough to hold whole, parquet is read by column."""

    path: Path
    columns: list[str]
    num_rows: int
    frame: pd.DataFrame | None = None

    @classmethod
    def open(cls, path: Path) -> _Source:
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


def _prompt_key_array(source: _Source) -> pa.Array:
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


def _sample_table(source: _Source, rule: PassRule, key_column: str) -> pa.Table:
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


def _generation_failed(source: _Source) -> pa.Array:
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


def prompt_stats(samples: pa.Table) -> PromptStats:
    """Group per-row statistics by (dataset, key) with vectorised counts."""
    dataset = _codes(samples.column("dataset"))
    key = _codes(samples.column("key"))
    combined = dataset * (int(key.max(initial=0)) + 1) + key
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


# --------------------------------------------------------------------------- prompt rows

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


def _prompt_columns(
    sources: Sequence[_Source], stats: PromptStats
) -> tuple[list[str], list[str]]:
    """(columns to keep per prompt, unknown columns dropped because they vary within a prompt)."""
    ordered: list[str] = []
    for source in sources:
        ordered.extend(c for c in source.columns if c not in ordered)
    candidates = [c for c in ordered if c not in PER_SAMPLE_COLUMNS]
    varying = []
    first_row = stats.frame["first_row"].to_numpy()
    for name in candidates:
        if name in PROMPT_COLUMNS:
            continue
        values = pd.concat([s.series(name) for s in sources], ignore_index=True)
        if _varies_within_prompt(values, stats.group_of_row, first_row):
            varying.append(name)
    return [c for c in candidates if c not in varying], varying


def _first_rows(sources: Sequence[_Source], first_row: np.ndarray, columns: list[str]) -> Rows:
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


def _with_columns(rows: Rows, columns: dict[str, Any]) -> Rows:
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


def _select(rows: Rows, mask: np.ndarray) -> Rows:
    if isinstance(rows, pa.Table):
        return rows.filter(pa.array(mask))
    return rows[mask].reset_index(drop=True)


# --------------------------------------------------------------------------- the whole run

@dataclass
class FilterConfig:
    """Everything one `filter-difficulty` run needs; checked before any input is read."""

    inputs: Sequence[str | Path]
    output_dir: Path
    strategy: Strategy
    output_format: str = "parquet"
    pass_threshold: float | None = None
    keep_mixed: bool = False
    plot: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        if self.output_format not in OUTPUT_FORMATS:
            raise UserInputError(
                f"--format {self.output_format}: choose one of {', '.join(OUTPUT_FORMATS)}"
            )
        if self.pass_threshold is not None and not math.isfinite(self.pass_threshold):
            raise UserInputError("--pass-threshold must be a finite number")

    def bucket_file(self, bucket: str) -> Path:
        return self.output_dir / f"{bucket}.{self.output_format}"

    def output_files(self) -> list[Path]:
        names = [*self.strategy.bucket_names(), SET_ASIDE_BUCKET]
        files = [self.bucket_file(b) for b in names] + [self.output_dir / SUMMARY_NAME]
        return files + ([self.output_dir / PLOT_NAME] if self.plot else [])


@dataclass
class FilterResult:
    summary: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def check_output_dir(config: FilterConfig) -> None:
    """Refuse to mix this run's buckets with an earlier run's, unless told to overwrite."""
    if config.overwrite or not config.output_dir.exists():
        return
    if not config.output_dir.is_dir():
        raise UserInputError(f"{config.output_dir}: exists and is not a directory; pick another -o")
    taken = [p.name for p in config.output_files() if p.exists()]
    if (config.output_dir / SUMMARY_NAME).exists() or taken:
        raise OutputConflictError(
            f"{config.output_dir} already holds bucket files ({', '.join(taken) or SUMMARY_NAME}); "
            "pass --overwrite or pick another -o"
        )


def _pass_rule(sources: Sequence[_Source], threshold: float | None) -> PassRule:
    lacking_score = [str(s.path) for s in sources if "score" not in s.columns]
    if lacking_score:
        raise UserInputError(
            f"{lacking_score[0]}: no score column; these are not scored rollouts, run `score` "
            "on them first"
        )
    if threshold is None and all("acc" in s.columns for s in sources):
        return PassRule("acc")
    return PassRule("score", threshold)


def _key_column(sources: Sequence[_Source]) -> str:
    if all("prompt_id" in s.columns for s in sources):
        return "prompt_id"
    if all("prompt" in s.columns for s in sources):
        return "prompt"
    raise UserInputError(
        "inputs have neither prompt_id nor prompt columns; cannot group samples by prompt"
    )


def _majority_counts(stats: pd.DataFrame) -> pd.Series:
    """The most common sample count per dataset (the larger one on a tie)."""
    counts = stats.groupby(["dataset", "n_samples"], sort=True).size().reset_index(name="c")
    counts = counts.sort_values(["dataset", "c", "n_samples"], ascending=[True, False, False])
    return counts.drop_duplicates("dataset").set_index("dataset")["n_samples"]


def assign_buckets(
    frame: pd.DataFrame, strategy: Strategy, keep_mixed: bool
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Add n_scored, majority_n, bucket and set_aside_reason to the per-prompt frame.

    Returns the strategy's details, and the masks of prompts with a mixed sample count and with
    unscoreable samples.
    """
    frame["n_scored"] = frame["n_samples"] - frame["n_unscoreable"]
    frame["majority_n"] = frame["dataset"].map(_majority_counts(frame)).to_numpy()
    mixed = (frame["n_samples"] != frame["majority_n"]).to_numpy()
    unscoreable = (frame["n_unscoreable"] > 0).to_numpy()
    set_aside = unscoreable | (mixed & (not keep_mixed))
    bucketed = ~set_aside

    n_pass = frame["n_pass"].to_numpy()
    n_scored = frame["n_scored"].to_numpy()
    index, details = strategy.assign(n_pass[bucketed], n_scored[bucketed])
    bucket = np.full(len(frame), SET_ASIDE_BUCKET, dtype=object)
    bucket[bucketed] = np.asarray(strategy.bucket_names(), dtype=object)[index]
    reason = np.full(len(frame), None, dtype=object)
    reason[set_aside] = "sample_count"
    reason[unscoreable] = "unscoreable"  # the stronger reason wins
    frame["bucket"] = bucket
    frame["set_aside_reason"] = reason
    return details, mixed, unscoreable


def run_filter(config: FilterConfig) -> FilterResult:
    """Read scored rollouts, bucket their prompts, write the buckets, set-aside file and summary."""
    check_output_dir(config)
    # Empty files (a run that produced nothing yet) have no columns to check; skip them.
    sources = [s for s in (_Source.open(p) for p in expand_paths(config.inputs)) if s.num_rows]
    if not sources:
        raise UserInputError("the inputs hold no rows; check that generation and scoring finished")
    rule = _pass_rule(sources, config.pass_threshold)
    key_column = _key_column(sources)
    samples = pa.concat_tables([_sample_table(s, rule, key_column) for s in sources])
    stats = prompt_stats(samples)
    del samples
    frame = stats.frame
    details, mixed, unscoreable = assign_buckets(frame, config.strategy, config.keep_mixed)
    bucketed = (frame["bucket"] != SET_ASIDE_BUCKET).to_numpy()

    columns, varying = _prompt_columns(sources, stats)
    rows = _first_rows(sources, frame["first_row"].to_numpy(), columns)
    rows = _with_columns(rows, _stat_columns(frame, key_column, "prompt_id" in columns))
    written = _write_outputs(config, rows, frame)
    warnings = _warnings(frame, mixed, unscoreable, config.keep_mixed)
    summary = build_summary(config, rule, sources, frame, mixed, details, varying, written)
    if config.plot:
        plot_pass_rates(frame[bucketed], config.output_dir / PLOT_NAME, details)
    _remove_stale_files(config, written)
    write_json_atomic(summary, config.output_dir / SUMMARY_NAME)
    return FilterResult(summary, warnings)


def _stat_columns(frame: pd.DataFrame, key_column: str, has_prompt_id: bool) -> dict[str, Any]:
    n_pass = frame["n_pass"].to_numpy()
    n_scored = frame["n_scored"].to_numpy()
    low, high = wilson_interval(n_pass, n_scored)
    columns: dict[str, Any] = {}
    if key_column == "prompt" and not has_prompt_id:
        # Without a prompt_id, give each prompt a stable one: a hash of its content.
        columns["prompt_id"] = [
            hashlib.sha256(str(k).encode("utf-8")).hexdigest()[:16] for k in frame["key"]
        ]
    columns.update(
        {
            "pass_rate": pass_rates(n_pass, n_scored),
            "n_samples": frame["n_samples"].to_numpy(),
            "n_pass": n_pass,
            "pass_rate_ci_low": low,
            "pass_rate_ci_high": high,
            "bucket": frame["bucket"].to_numpy(),
            "n_unscoreable": frame["n_unscoreable"].to_numpy(),
            "set_aside_reason": frame["set_aside_reason"].to_numpy(),
        }
    )
    return columns


def _write_outputs(config: FilterConfig, rows: Rows, frame: pd.DataFrame) -> dict[str, str]:
    """One file per bucket (empty buckets too, so downstream globs are predictable)."""
    written: dict[str, str] = {}
    bucket = frame["bucket"].to_numpy()
    for name in [*config.strategy.bucket_names(), SET_ASIDE_BUCKET]:
        part = _select(rows, bucket == name)
        if name != SET_ASIDE_BUCKET:
            part = _drop(part, SET_ASIDE_COLUMNS)
        path = config.bucket_file(name)
        try:
            write_table_atomic(part, path)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            # jsonl inputs can mix value types in a column (string and message-list prompts).
            raise UserInputError(
                f"{path}: cannot write these rows as {config.output_format} ({exc}); "
                "try --format jsonl"
            ) from exc
        written[name] = path.name
    return written


def _drop(rows: Rows, columns: Sequence[str]) -> Rows:
    if isinstance(rows, pa.Table):
        return rows.drop_columns([c for c in columns if c in rows.column_names])
    return rows.drop(columns=[c for c in columns if c in rows.columns])


def _remove_stale_files(config: FilterConfig, written: dict[str, str]) -> None:
    """On --overwrite, delete bucket files an earlier run listed that this run did not write."""
    summary_path = config.output_dir / SUMMARY_NAME
    if not summary_path.exists():
        return
    try:
        earlier = json.loads(summary_path.read_text(encoding="utf-8")).get("files", {})
    except (json.JSONDecodeError, OSError, AttributeError):
        return
    keep = set(written.values()) | {SUMMARY_NAME} | ({PLOT_NAME} if config.plot else set())
    for name in earlier.values() if isinstance(earlier, dict) else []:
        if isinstance(name, str) and name not in keep and "/" not in name:
            (config.output_dir / name).unlink(missing_ok=True)
    fsync_dir(config.output_dir)


def _warnings(
    frame: pd.DataFrame, mixed: np.ndarray, unscoreable: np.ndarray, keep_mixed: bool
) -> list[str]:
    out = []
    if unscoreable.any():
        out.append(
            f"{int(unscoreable.sum())} prompt(s) have unscoreable samples (timeout, error, "
            f"sandbox_error or a failed request): set aside in {SET_ASIDE_BUCKET}"
        )
    if mixed.any():
        majority = ", ".join(
            f"{int(n)}" for n in sorted(frame["majority_n"].unique())
        )
        action = "bucketed with their own counts" if keep_mixed else (
            f"set aside in {SET_ASIDE_BUCKET} (pass --keep-mixed to bucket them)"
        )
        out.append(
            f"{int(mixed.sum())} prompt(s) have a sample count other than the majority "
            f"({majority}): {action}"
        )
    return out


# --------------------------------------------------------------------------- summary and plot

def _count_table(frame: pd.DataFrame, names: Sequence[str]) -> dict[str, dict[str, int]]:
    """{data_source: {bucket: count}} with every bucket present, zeros included."""
    table = frame.groupby(["data_source", "bucket"], sort=True).size()
    out: dict[str, dict[str, int]] = {}
    for source in sorted(frame["data_source"].astype(str).unique()):
        out[source] = {name: int(table.get((source, name), 0)) for name in names}
    return out


def build_summary(
    config: FilterConfig,
    rule: PassRule,
    sources: Sequence[_Source],
    frame: pd.DataFrame,
    mixed: np.ndarray,
    details: dict[str, Any],
    varying: list[str],
    written: dict[str, str],
) -> dict[str, Any]:
    names = [*config.strategy.bucket_names(), SET_ASIDE_BUCKET]
    bucket_counts = frame["bucket"].value_counts()
    set_aside = frame[frame["bucket"] == SET_ASIDE_BUCKET]
    bucketed = frame[frame["bucket"] != SET_ASIDE_BUCKET]
    rates = pass_rates(bucketed["n_pass"].to_numpy(), bucketed["n_scored"].to_numpy())
    histogram = frame["n_samples"].value_counts().sort_index()
    mixed_rows = frame[mixed]
    files: dict[str, str] = dict(written)
    if config.plot:
        files["plot"] = PLOT_NAME
    return {
        "inputs": [str(s.path) for s in sources],
        "n_rows": int(frame["n_samples"].sum()),
        "n_prompts": len(frame),
        "n_bucketed": len(bucketed),
        "strategy": config.strategy.name,
        "parameters": config.strategy.parameters(),
        "details": details,
        "pass_rule": rule.describe(),
        "mean_pass_rate": float(rates.mean()) if rates.size else None,
        "buckets": {name: int(bucket_counts.get(name, 0)) for name in names},
        "counts_by_data_source": _count_table(frame, names),
        "set_aside": {
            "count": len(set_aside),
            "by_reason": {
                str(k): int(v) for k, v in set_aside["set_aside_reason"].value_counts().items()
            },
            "unscoreable_samples": int(frame["n_unscoreable"].sum()),
        },
        "sample_counts": {
            "majority_by_dataset": {
                str(k): int(v)
                for k, v in frame.groupby("dataset")["majority_n"].first().to_dict().items()
            },
            "histogram": {str(k): int(v) for k, v in histogram.to_dict().items()},
            "n_mixed_prompts": int(mixed.sum()),
            "mixed_bucketed": config.keep_mixed,
            "mixed_examples": [
                {"dataset": str(d), "key": str(k)[:200], "n_samples": int(n)}
                for d, k, n in zip(
                    mixed_rows["dataset"].head(20).tolist(),
                    mixed_rows["key"].head(20).tolist(),
                    mixed_rows["n_samples"].head(20).tolist(),
                    strict=True,
                )
            ],
        },
        "dropped_per_sample_columns": varying,
        "format": config.output_format,
        "files": files,
    }


def plot_pass_rates(frame: pd.DataFrame, path: Path, details: dict[str, Any]) -> None:
    """One histogram of pass rates per data source, written atomically as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sources = sorted(frame["data_source"].astype(str).unique()) or [UNKNOWN_SOURCE]
    ncols = min(3, len(sources))
    nrows = math.ceil(len(sources) / ncols)
    figure = Figure(figsize=(4.5 * ncols, 3.2 * nrows), layout="constrained")
    FigureCanvasAgg(figure)
    n_max = int(frame["n_scored"].max()) if len(frame) else 1
    # One bin per attainable rate k/n when n is small, so bars never straddle two rates.
    bins = (
        np.linspace(-0.5 / n_max, 1 + 0.5 / n_max, n_max + 2)
        if n_max <= 64
        else np.linspace(0.0, 1.0, 21)
    )
    cutoffs = details.get("cutoffs", details.get("edges", []))  # quantile cutoffs, or bins' edges
    figure.suptitle("Prompts by pass rate" + (" (dashed: bucket edges)" if cutoffs else ""))
    for i, source in enumerate(sources):
        axes = figure.add_subplot(nrows, ncols, i + 1)
        part = frame[frame["data_source"].astype(str) == source]
        rates = pass_rates(part["n_pass"].to_numpy(), part["n_scored"].to_numpy())
        axes.hist(rates, bins=bins.tolist(), color="#4C72B0", edgecolor="white")
        for cut in cutoffs:
            axes.axvline(cut, color="#C44E52", linestyle="--", linewidth=1)
        axes.set_title(f"{source} ({len(part)} prompts)", fontsize=9)
        axes.set_xlabel("pass rate (passed / scored samples)")
        axes.set_ylabel("prompts")
        axes.set_xlim(-0.05, 1.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        figure.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
