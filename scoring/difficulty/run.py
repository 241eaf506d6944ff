"""The whole `filter-difficulty` run: check, read, bucket, write."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from rollouts.errors import OutputConflictError, UserInputError
from rollouts.io import (
    expand_paths,
    fsync_dir,
    write_json_atomic,
    write_table_atomic,
)
from scoring.difficulty.columns import (
    OUTPUT_FORMATS,
    PLOT_NAME,
    RUN_COLUMNS,
    SET_ASIDE_BUCKET,
    SET_ASIDE_COLUMNS,
    SUMMARY_NAME,
    Rows,
)
from scoring.difficulty.prompt_rows import first_rows, prompt_columns, select_rows, with_columns
from scoring.difficulty.reading import PassRule, ScoredSource, prompt_stats, run_ids, sample_table
from scoring.difficulty.stats import pass_rates, wilson_interval
from scoring.difficulty.strategies import Strategy
from scoring.difficulty.summary import build_summary, plot_pass_rates


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
    group_by: tuple[str, ...] = ()  # bucket each run apart (model, checkpoint, temperature)
    pool: bool = False  # pool the samples of different runs of a prompt, said aloud

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        unknown = [c for c in self.group_by if c not in RUN_COLUMNS]
        if unknown:
            raise UserInputError(
                f"--group-by {','.join(unknown)}: choose from {', '.join(RUN_COLUMNS)}"
            )
        if self.group_by and self.pool:
            raise UserInputError("--group-by and --pool exclude each other: bucket runs apart, or pool them")
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


def _pass_rule(sources: Sequence[ScoredSource], threshold: float | None) -> PassRule:
    lacking_score = [str(s.path) for s in sources if "score" not in s.columns]
    if lacking_score:
        raise UserInputError(
            f"{lacking_score[0]}: no score column; these are not scored rollouts, run `score` "
            "on them first"
        )
    if threshold is None and all("acc" in s.columns for s in sources):
        return PassRule("acc")
    return PassRule("score", threshold)


def _key_column(sources: Sequence[ScoredSource]) -> str:
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
    sources = [s for s in (ScoredSource.open(p) for p in expand_paths(config.inputs)) if s.num_rows]
    if not sources:
        raise UserInputError("the inputs hold no rows; check that generation and scoring finished")
    rule = _pass_rule(sources, config.pass_threshold)
    key_column = _key_column(sources)
    samples = pa.concat_tables([sample_table(s, rule, key_column) for s in sources])
    runs, run_names = run_ids(sources, RUN_COLUMNS)
    grouping = run_ids(sources, config.group_by)[0] if config.group_by else None
    stats = prompt_stats(samples, grouping)
    del samples
    pooled = _pooled_prompts(stats.group_of_row, runs)
    if pooled and not config.pool:
        raise UserInputError(_pooling_message(pooled, run_names))
    frame = stats.frame
    details, mixed, unscoreable = assign_buckets(frame, config.strategy, config.keep_mixed)
    bucketed = (frame["bucket"] != SET_ASIDE_BUCKET).to_numpy()

    columns, varying = prompt_columns(sources, stats, keep=config.group_by)
    rows = first_rows(sources, frame["first_row"].to_numpy(), columns)
    rows = with_columns(rows, _stat_columns(frame, key_column, "prompt_id" in columns))
    written = _write_outputs(config, rows, frame)
    warnings = _warnings(frame, mixed, unscoreable, config.keep_mixed)
    if pooled:
        warnings.insert(0, f"pooling the samples of {len(run_names)} runs ({'; '.join(run_names[:4])}) "
                           f"on {pooled} shared prompt(s), as --pool asks")
    summary = build_summary(config, rule, sources, frame, mixed, details, varying, written)
    summary["runs"] = {"found": run_names, "group_by": list(config.group_by),
                       "pooled_prompts": pooled}
    if config.plot:
        plot_pass_rates(frame[bucketed], config.output_dir / PLOT_NAME, details,
                        config.strategy.parameters())
    _remove_stale_files(config, written)
    write_json_atomic(summary, config.output_dir / SUMMARY_NAME)
    return FilterResult(summary, warnings)


def _pooled_prompts(group_of_row: np.ndarray, runs: np.ndarray) -> int:
    """How many prompts (groups) hold samples of more than one run."""
    if len(runs) == 0 or runs.min() == runs.max():
        return 0
    pairs = np.unique(group_of_row * (int(runs.max()) + 1) + runs)
    return int((np.bincount(pairs // (int(runs.max()) + 1)) > 1).sum())


def _pooling_message(pooled: int, run_names: list[str]) -> str:
    shown = "; ".join(run_names[:4]) + ("; ..." if len(run_names) > 4 else "")
    return (
        f"the inputs hold {len(run_names)} runs ({shown}) with samples of the same {pooled} "
        "prompt(s); pass --group-by model,temperature (or checkpoint) to bucket each run apart, "
        "or --pool to pool their samples into one pass rate per prompt"
    )


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
        part = select_rows(rows, bucket == name)
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


