"""Scoring rollouts: the library behind the `score` command.

    prepare_frame(frame)        long rows (wide `responses` exploded), prompt_id, checked columns
    Scorer(config).score(frame) scored rows: the input + score, acc, pred, score_status, ...
    score_files(inputs, ...)    files in, scored files + results JSON out, one batch summary back

Work per run: the worker pool, forked holding the frame's columns, extracts every row's answer
and key; only distinct (reward fn, version, answer, ground truth) items are judged, after the
journal and the verdict cache have answered what they can (scoring.rows). Failed generations
(`error` set) are `error` rows and never reach a reward function.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import operator
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rollouts.dataset import prompt_id_for
from rollouts.errors import OutputConflictError, UserInputError
from rollouts.io import (
    bytes_per_row,
    dumps_json,
    expand_paths,
    parquet_cannot_hold,
    read_table,
    read_table_batches,
    to_python,
    write_json_atomic,
)
from scoring.cache import VerdictCache
from scoring.journal import VerdictJournal
from scoring.metrics import metrics_by_source, status_counts
from scoring.output import ScoredWriter
from scoring.rewards.base import DEFAULT_PASS_THRESHOLD, RewardFn, RewardOptions
from scoring.rewards.code import check_sandbox
from scoring.rewards.ifeval import (
    LOOSE_COLUMN,
    N_COLUMN,
    STRICT_COLUMN,
    IfevalReward,
    has_instruction_columns,
    instruction_counts,
    instruction_ground_truths,
)
from scoring.rewards.registry import (
    AUTO,
    canonical_spec,
    dispatch_all,
    get_reward_fn,
    has_metric_variants,
    validate_spec,
)
from scoring.rows import FAILED_ROW, NO_ANSWER_ROW, QuestionFeed, RowFeed, RowTable
from scoring.rows import item_key as item_key  # the verdict identity, documented here
from scoring.types import REWARD_ERROR_STATUSES, RewardResult
from scoring.workers import WorkerPool, default_workers

if TYPE_CHECKING:
    from scoring.judge_client import JudgeSettings

RESPONSE = "response"
WIDE_RESPONSES = "responses"
# The columns `score` adds to every row (reward extras come after them).
SCORE_COLUMNS = (
    "score",
    "acc",
    "pred",
    "score_status",
    "reward_fn",
    "reward_fn_version",
    "pred_source",
    "answer_class",
)
UNKNOWN_SOURCE = "unknown"
DEFAULT_TIMEOUT_S = 30.0
# The default per-item limit when a judge model is asked (its answer may take minutes under load,
# retries included; the worker is killed past it).
JUDGE_TIMEOUT_S = 900.0

# What rows the reward function could not judge count as (`--on-error`): `fail` and `skip` leave
# them out of every metric, and `fail` makes the command exit non-zero; `zero` counts them as
# wrong answers with score 0.
ON_ERROR_CHOICES = ("fail", "zero", "skip")
DEFAULT_ON_ERROR = "fail"
# A data source whose last ERROR_WINDOW distinct answers failed in more than this share stops
# the run (`--max-error-rate`; 1 never stops).
DEFAULT_MAX_ERROR_RATE = 0.9
ERROR_WINDOW = 100
# Rows read, scored and written at a time (`--batch-rows`): memory holds one batch, not the file.
# Unless given, a file's batches hold about BATCH_BYTES of row data (see default_batch_rows):
# 5,000 responses of 8 KB are 40 MB of text, and the parquet reader and the scored copies take
# several times that (a batch of 20,000 such rows peaked at 1.2 GB, one of 5,000 at 0.5 GB), while
# short rows go in few batches, since each batch costs a fork of the workers and a part file.
BATCH_BYTES = 40 << 20
MIN_BATCH_ROWS = 1_000
MAX_BATCH_ROWS = 100_000


def default_batch_rows(path: str | Path) -> int:
    """Rows per batch for one input: about BATCH_BYTES of its rows, within MIN/MAX_BATCH_ROWS."""
    size = bytes_per_row(path)
    if not size:
        return MAX_BATCH_ROWS
    return max(MIN_BATCH_ROWS, min(MAX_BATCH_ROWS, int(BATCH_BYTES / size)))


@dataclass(frozen=True, kw_only=True)
class ScoreConfig:
    """How to score. cache_dir None means no cache."""

    reward_fn: str = AUTO
    workers: int = field(default_factory=default_workers)
    timeout_s: float = DEFAULT_TIMEOUT_S
    cache_dir: Path | None = None
    allow_unsandboxed: bool = False
    progress: bool = False
    on_error: str = DEFAULT_ON_ERROR
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    judge: JudgeSettings | None = None
    pass_threshold: float = DEFAULT_PASS_THRESHOLD
    batch_rows: int | None = None  # None: default_batch_rows of each input

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UserInputError(f"--workers {self.workers}: must be at least 1")
        if self.batch_rows is not None and self.batch_rows < 1:
            raise UserInputError(f"--batch-rows {self.batch_rows}: must be at least 1")
        if not self.timeout_s > 0:
            raise UserInputError(f"--timeout {self.timeout_s}: must be more than 0 seconds")
        if self.on_error not in ON_ERROR_CHOICES:
            raise UserInputError(f"--on-error {self.on_error}: use one of {', '.join(ON_ERROR_CHOICES)}")
        if not 0 <= self.max_error_rate <= 1:
            raise UserInputError(
                f"--max-error-rate {self.max_error_rate}: give a share from 0 to 1 (1: never stop)"
            )
        object.__setattr__(self, "reward_fn", canonical_spec(self.reward_fn))

    @property
    def options(self) -> RewardOptions:
        return RewardOptions(
            allow_unsandboxed=self.allow_unsandboxed, judge=self.judge,
            pass_threshold=self.pass_threshold,
        )

    def rows_per_batch(self, path: str | Path) -> int:
        """--batch-rows where given, else sized to the input's rows (default_batch_rows)."""
        return self.batch_rows if self.batch_rows is not None else default_batch_rows(path)


@dataclass
class ScoreStats:
    """Where the verdicts came from, for the summary."""

    rows: int = 0
    generation_errors: int = 0
    no_answer: int = 0
    distinct_items: int = 0
    resumed: int = 0
    cache_hits: int = 0
    judged: int = 0
    elapsed_s: float = 0.0

    def add(self, other: ScoreStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


# ---------------------------------------------------------------- input shape


@dataclass
class BatchCarry:
    """What numbering carries from one batch of a file to the next: the wide form's data_idx of
    the next row, and per prompt the samples numbered so far (when the input has no sample_idx)."""

    next_data_idx: int = 0
    samples_seen: dict[str, int] = field(default_factory=dict)


def prepare_frame(
    frame: pd.DataFrame, source: str = "input", carry: BatchCarry | None = None
) -> pd.DataFrame:
    """Long rows with prompt_id, sample_idx and data_source; one-line errors for missing columns.
    A file read in batches passes the same carry with each batch, in order."""
    if RESPONSE not in frame.columns and WIDE_RESPONSES in frame.columns:
        first = carry.next_data_idx if carry is not None else 0
        if carry is not None:
            carry.next_data_idx += len(frame)
        frame = explode_wide(frame, first)
    if RESPONSE not in frame.columns:
        raise UserInputError(
            f"{source}: no '{RESPONSE}' (or wide '{WIDE_RESPONSES}') column; "
            f"columns are {sorted(map(str, frame.columns))}"
        )
    if ground_truth_column(frame) is None and not has_instruction_columns(frame):
        raise UserInputError(
            f"{source}: no ground truth; expected a 'reward_model' column with 'ground_truth' "
            f"or a 'ground_truth' column"
        )
    frame = frame.reset_index(drop=True)
    if "data_source" not in frame.columns:
        frame["data_source"] = UNKNOWN_SOURCE
    if "prompt_id" not in frame.columns:
        frame["prompt_id"] = derive_prompt_ids(frame, source)
    if "sample_idx" not in frame.columns:
        frame["sample_idx"] = _sample_numbers(frame, carry)
    return frame


def _sample_numbers(frame: pd.DataFrame, carry: BatchCarry | None) -> Any:
    """Each row's number among its prompt's rows, counting those of earlier batches."""
    numbers = frame.groupby("prompt_id", sort=False).cumcount()
    if carry is None:
        return numbers
    seen = carry.samples_seen
    ids = frame["prompt_id"].astype(str)
    if seen:
        numbers = numbers + ids.map(seen).fillna(0).astype("int64")
    for prompt, count in ids.value_counts(sort=False).items():
        seen[str(prompt)] = seen.get(str(prompt), 0) + int(count)
    return numbers


def explode_wide(frame: pd.DataFrame, first_data_idx: int = 0) -> pd.DataFrame:
    """verl's wide form (one row per prompt, `responses` a list) -> one row per sample."""
    wide = frame.copy()
    if "data_idx" not in wide.columns:
        wide["data_idx"] = range(first_data_idx, first_data_idx + len(wide))
    wide[WIDE_RESPONSES] = [to_python(r) if r is not None else [] for r in wide[WIDE_RESPONSES]]
    wide["sample_idx"] = [list(range(len(r))) for r in wide[WIDE_RESPONSES]]
    long = wide.explode([WIDE_RESPONSES, "sample_idx"], ignore_index=True)
    long = long[long["sample_idx"].notna()]
    long = long.rename(columns={WIDE_RESPONSES: RESPONSE})
    long["sample_idx"] = long["sample_idx"].astype("int64")
    return long.reset_index(drop=True)


def derive_prompt_ids(frame: pd.DataFrame, source: str) -> list[str]:
    """`rollouts generate`'s id (a hash of data source and prompt), or one from data_idx."""
    if "prompt" in frame.columns:
        return [
            prompt_id_for(str(s), to_python(p))
            for p, s in zip(frame["prompt"], frame["data_source"], strict=True)
        ]
    if "data_idx" in frame.columns:
        return [hashlib.sha256(f"data_idx:{i}".encode()).hexdigest()[:16] for i in frame["data_idx"]]
    raise UserInputError(
        f"{source}: no 'prompt_id', 'prompt' or 'data_idx' column to group samples by prompt"
    )


def _values(column: pd.Series) -> list[Any] | pa.Array | pa.ChunkedArray:
    """The column as a list, or as its Arrow array when it has one: workers then make Python
    strings of only their own rows (see scoring.rows.column_slice)."""
    values = column.array
    if hasattr(values, "__arrow_array__"):
        return pa.array(values)
    return column.tolist()


def ground_truth_column(frame: pd.DataFrame) -> str | None:
    if "reward_model" in frame.columns:
        return "reward_model"
    return "ground_truth" if "ground_truth" in frame.columns else None


def ground_truths(frame: pd.DataFrame, source: str) -> list[Any]:
    column = ground_truth_column(frame)
    if column is None:  # IFEval rows: instruction_id_list and kwargs columns
        return instruction_ground_truths(frame)
    if column == "ground_truth":
        return [to_python(g) for g in frame["ground_truth"]]
    models = frame["reward_model"].tolist()
    every_plain = _plain_ground_truths(models)
    if every_plain is not None:
        return every_plain
    values = []
    for i, reward_model in enumerate(models):
        if isinstance(reward_model, str):  # written as JSON text (see json_safe_columns)
            reward_model = _decoded(reward_model)
        plain = isinstance(reward_model, dict) and isinstance(reward_model.get("ground_truth"), str)
        model = reward_model if plain else to_python(reward_model)
        if not isinstance(model, dict) or "ground_truth" not in model:
            raise UserInputError(f"{source}: row {i}: reward_model has no 'ground_truth'")
        values.append(model["ground_truth"])
    return values


def _plain_ground_truths(models: list[Any]) -> list[Any] | None:
    """The common case in one pass: every reward_model a dict with a string ground truth."""
    try:
        golds = [model["ground_truth"] for model in models]
    except (TypeError, KeyError, IndexError):
        return None
    if all(type(m) is dict for m in models) and all(type(g) is str for g in golds):
        return golds
    return None


def _decoded(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def reward_specs(frame: pd.DataFrame, reward_fn: str) -> list[str]:
    """The reward function of every row: the one asked for, or by data_source under `auto`."""
    if reward_fn != AUTO:
        return [reward_fn] * len(frame)
    sources = frame["data_source"].astype(str).tolist()
    metrics = reward_metrics(frame, sources)
    mapping = dispatch_all(sources, metrics)
    return [mapping[pair] for pair in zip(sources, metrics, strict=True)]


def reward_metrics(frame: pd.DataFrame, sources: list[str]) -> list[Any]:
    """Each row's `extra_info["reward_metric"]` (GURU names a math row's reward there), read only
    for data sources whose reward has such variants; None elsewhere."""
    varied = {source for source in set(sources) if has_metric_variants(source)}
    if "extra_info" not in frame.columns or not varied:
        return [None] * len(frame)
    return [
        _reward_metric(info) if source in varied else None
        for source, info in zip(sources, frame["extra_info"], strict=True)
    ]


def _reward_metric(extra_info: Any) -> Any:
    if isinstance(extra_info, str):
        extra_info = _decoded(extra_info)
    if isinstance(extra_info, dict):
        metric = extra_info.get("reward_metric")
        return metric if isinstance(metric, str) else None
    return None


def check_rows(frame: pd.DataFrame, specs: list[str], options: RewardOptions, source: str) -> None:
    """Reward functions that can check their ground truths up front (ifeval) do it here."""
    golds = ground_truths(frame, source)
    extras = frame["extra_info"].tolist() if "extra_info" in frame.columns else [None] * len(frame)
    for spec in sorted(set(specs)):
        check = getattr(get_reward_fn(spec, options), "check_rows", None)
        if check is not None:
            rows = [i for i, s in enumerate(specs) if s == spec]
            check([golds[i] for i in rows], [to_python(extras[i]) for i in rows], rows)


# ---------------------------------------------------------------- scoring


class Scorer:
    """Scores frames with one worker pool and one cache; use as a context manager."""

    def __init__(self, config: ScoreConfig) -> None:
        self.config = config
        self.pool = WorkerPool(config.workers, config.timeout_s, config.options)
        self.cache = VerdictCache(config.cache_dir) if config.cache_dir else None

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.pool.close()
        if self.cache is not None:
            self.cache.close()

    def score(
        self,
        frame: pd.DataFrame,
        source: str = "input",
        journal: VerdictJournal | None = None,
        *,
        kept: dict[str, RewardResult] | None = None,
        carry: BatchCarry | None = None,
        watch: FailureWatch | None = None,
    ) -> tuple[pd.DataFrame, ScoreStats]:
        """Scored copy of a long frame (see prepare_frame), and where its verdicts came from.

        With a journal, verdicts of an interrupted earlier run are reused (`kept`: those already
        loaded from it) and new ones are kept as they arrive. Raises RewardFunctionFailed when the
        reward code fails on everything. The batches of one file pass one `watch`: its windows
        span the batches, and the caller checks that not every item failed."""
        if kept is None:
            kept = journal.load() if journal is not None else {}
        with _collector_paused():
            return self._score(prepare_frame(frame, source, carry), source, journal, kept, watch)

    def _score(
        self, frame: pd.DataFrame, source: str, journal: VerdictJournal | None,
        kept: dict[str, RewardResult], file_watch: FailureWatch | None,
    ) -> tuple[pd.DataFrame, ScoreStats]:
        started = time.monotonic()
        table = row_table(
            frame, reward_specs(frame, self.config.reward_fn), source,
            content_keys=self.cache is not None or journal is not None,
            kept=kept,
            cache_dir=self.config.cache_dir,
        )
        for spec in set(table.specs):  # loaded here, so that forked workers have them
            get_reward_fn(spec, self.config.options)
        self._ask_judge(table)  # before the workers that judge the rows are forked
        feed = RowFeed(table)
        watch = file_watch or FailureWatch(feed.spec_of, feed.source_of, self.config.max_error_rate)
        watch.spec_of, watch.source_of = feed.spec_of, feed.source_of
        with _Progress(self.config.progress) as advance:

            def arrived(fresh: dict[str, RewardResult]) -> None:
                if journal is not None:
                    journal.append(fresh)
                self._remember(feed, fresh)
                watch.observe(fresh)
                advance(len(fresh))

            feed.on_fresh = arrived
            self.pool.bind(table)
            try:
                self.pool.run_tasks(feed)
            finally:
                self.pool.bind(None)  # the workers hold this frame's rows: let them go
                if self.config.judge is not None:
                    from scoring.judge_client import forget_answers

                    forget_answers()
        if file_watch is None:
            watch.check_all_failed()
        scored = count_instructions(attach_results(frame, feed, self.config.options), table)
        return scored, _stats(feed, started)

    def _ask_judge(self, table: RowTable) -> None:
        """Ask a judge model every question of the table at once (not one per worker): workers
        find what judge-model rewards would ask (collect_questions), this process asks the
        distinct questions with generate's per-server adaptive concurrency, and the workers
        forked afterwards read the answers (scoring.judge_client)."""
        judge = self.config.judge
        if judge is None:
            return
        from rollouts.watchdog import echo_warning
        from scoring.judge_client import ask_all, remember_answers

        asking = {spec for spec in set(table.specs)
                  if hasattr(get_reward_fn(spec, self.config.options), "question")}
        runs = row_runs([spec in asking for spec in table.specs])
        if not runs:
            return
        feed = QuestionFeed(runs)
        self.pool.bind(dataclasses.replace(table))  # a copy: the judging workers fork anew
        self.pool.run_tasks(feed)
        remember_answers(ask_all(judge, feed.questions, warn=echo_warning))

    def _remember(self, feed: RowFeed, fresh: dict[str, RewardResult]) -> None:
        if self.cache is None or not fresh:
            return
        options = self.config.options
        entries = {}
        for key, result in fresh.items():
            spec = feed.spec_of(key)
            entries[key] = (spec, get_reward_fn(spec, options).version, result)
        self.cache.put_many(entries)


def row_runs(wanted: list[bool]) -> list[tuple[int, int]]:
    """The (start, end) ranges of consecutive wanted rows."""
    runs: list[tuple[int, int]] = []
    for row, want in enumerate(wanted):
        if not want:
            continue
        if runs and runs[-1][1] == row:
            runs[-1] = (runs[-1][0], row + 1)
        else:
            runs.append((row, row + 1))
    return runs


def count_instructions(scored: pd.DataFrame, table: RowTable) -> pd.DataFrame:
    """IFEval rows without a verdict get their number of instructions all the same, so that
    IFEval's four metrics treat them alike (see scoring.rewards.ifeval.instruction_metrics)."""
    counted = (scored[N_COLUMN].notna().to_numpy() if N_COLUMN in scored.columns
               else np.zeros(len(scored), dtype=bool))
    lacking = [
        row for row, spec in enumerate(table.specs) if spec == IfevalReward.name and not counted[row]
    ]
    if not lacking:
        return scored
    counts = instruction_counts([table.golds[r] for r in lacking],
                                [to_python(table.extras[r]) for r in lacking])
    column = scored[N_COLUMN].astype(object) if N_COLUMN in scored.columns else pd.Series(
        [None] * len(scored), index=scored.index, dtype=object)
    column.iloc[lacking] = counts
    scored[N_COLUMN] = pd.array(column.tolist(), dtype="Int64")
    return scored


def _stats(feed: RowFeed, started: float) -> ScoreStats:
    return ScoreStats(
        rows=len(feed.row_item),
        generation_errors=int((feed.row_item == FAILED_ROW).sum()),
        no_answer=int((feed.row_item == NO_ANSWER_ROW).sum()),
        distinct_items=feed.distinct_items(),
        resumed=feed.counts.resumed,
        cache_hits=feed.counts.cache_hits,
        judged=feed.counts.judged,
        elapsed_s=time.monotonic() - started,
    )


def row_table(
    frame: pd.DataFrame,
    specs: list[str],
    source: str,
    *,
    content_keys: bool = False,
    kept: dict[str, RewardResult] | None = None,
    cache_dir: Path | None = None,
) -> RowTable:
    """What the workers read (see prepare_frame for the frame's shape and RowTable for the rest)."""
    none = [None] * len(frame)
    return RowTable(
        specs=specs,
        responses=_values(frame[RESPONSE]),
        golds=ground_truths(frame, source),
        data_sources=frame["data_source"].astype(str).tolist(),
        extras=frame["extra_info"].tolist() if "extra_info" in frame.columns else none,
        errors=frame["error"].tolist() if "error" in frame.columns else none,
        content_keys=content_keys,
        kept=kept or {},
        cache_dir=cache_dir,
    )


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector: a run makes a few objects per row and keeps them
    all, so the collector would rescan the growing heap again and again (half of the main
    process's time with a cheap reward). Nothing here makes cycles; it runs again afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class RewardFunctionFailed(UserInputError):
    """The reward code fails on every item, or on more than --max-error-rate of a data source's
    last ERROR_WINDOW distinct answers."""


class FailureWatch:
    """Watches verdicts as they arrive, per data source, for a reward function that cannot work.

    A rate over a sliding window of distinct answers, not a count from the start: a few failing
    items that happen to come first stop nothing, a function failing on nearly everything stops
    after one window."""

    def __init__(
        self,
        spec_of: Callable[[str], str],
        source_of: Callable[[str], str],
        max_rate: float = DEFAULT_MAX_ERROR_RATE,
        window: int = ERROR_WINDOW,
    ) -> None:
        self.spec_of, self.source_of = spec_of, source_of
        self.max_rate, self.window = max_rate, window
        self.recent: dict[str, deque[bool]] = {}
        self.failing: dict[str, int] = {}  # failures in each source's window
        self.first: dict[str, tuple[str, RewardResult]] = {}  # each source's first failure, spec
        self.judged = self.failures = 0

    def observe(self, fresh: dict[str, RewardResult]) -> None:
        failures = sum(result.status in REWARD_ERROR_STATUSES for result in fresh.values())
        self.judged += len(fresh)
        self.failures += failures
        if not failures and not any(self.failing.values()):
            # Only successes, and none in any window: nothing can trip. The windows start again
            # (they would hold only successes), which never stops a run earlier than the exact
            # window would, and spares a lookup per verdict of a healthy run.
            self.recent.clear()
            self.failing.clear()
            return
        for key, result in fresh.items():
            failed = result.status in REWARD_ERROR_STATUSES
            source = self.source_of(key)
            recent = self.recent.get(source)
            if recent is None:
                recent = self.recent[source] = deque()
                self.failing[source] = 0
            if failed and source not in self.first:
                self.first[source] = (self.spec_of(key), result)
            recent.append(failed)
            self.failing[source] += failed
            if len(recent) > self.window:
                self.failing[source] -= recent.popleft()
            if len(recent) == self.window and self.failing[source] > self.max_rate * self.window:
                raise self._error(
                    source,
                    f"failed on {self.failing[source]} of the last {self.window} distinct answers "
                    f"of data source {source!r}, more than --max-error-rate {self.max_rate}; "
                    f"stopped (--max-error-rate 1 never stops)",
                )

    def check_all_failed(self) -> None:
        if self.judged and self.failures == self.judged:
            raise self._error(next(iter(self.first)), f"failed on every item ({self.judged})")

    def _error(self, source: str, what: str) -> RewardFunctionFailed:
        spec, result = self.first[source]
        trace = result.extra.get("score_traceback") or result.extra.get("score_error")
        return RewardFunctionFailed(
            f"reward function {spec} {what}. First error: "
            f"{result.extra.get('score_error')}\n{trace}"
        )


class _Progress:
    """A tqdm bar on stderr when asked for, else a no-op; yields the advance callback."""

    def __init__(self, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(desc="judging", unit="item", leave=False)

    def __enter__(self) -> Callable[[int], Any]:
        return self.bar.update if self.bar is not None else (lambda n: None)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------- output rows


def attach_results(frame: pd.DataFrame, feed: RowFeed, options: RewardOptions) -> pd.DataFrame:
    """The input columns followed by the score columns and the reward functions' extras."""
    # Every verdict once, then picked for all rows at once: FAILED_ROW and NO_ANSWER_ROW (-2, -1)
    # index the two verdicts appended at the end.
    results = [*feed.results(), GENERATION_ERROR, NO_ANSWER]
    picks = feed.row_item % len(results)

    def field(name: str, dtype: Any = object) -> np.ndarray:
        # Scores and flags are numbers; statuses, preds and classes strings or None.
        return np.fromiter(map(operator.attrgetter(name), results), dtype, count=len(results))

    specs = feed.table.specs
    rewards = {spec: get_reward_fn(spec, options) for spec in set(specs)}
    columns: dict[str, Any] = {
        "score": field("score", float).take(picks),
        "acc": field("acc", bool).take(picks),
        "pred": _strings(field("pred"), picks),
        "score_status": _strings(field("status"), picks),
        "reward_fn": _strings(np.array([rewards[s].name for s in rewards], dtype=object),
                              _spec_picks(specs, rewards)),
        "reward_fn_version": _strings(np.array([rewards[s].version for s in rewards], dtype=object),
                                      _spec_picks(specs, rewards)),
        "pred_source": _strings(np.array(feed.sources, dtype=object), None),
        "answer_class": _strings(field("answer_class"), picks),
    }
    taken = set(map(str, frame.columns)) | set(columns)
    for name, values in _extras(results, picks).items():
        columns[name if name not in taken else f"reward_{name}"] = values
    scored = frame.drop(columns=[c for c in columns if c in frame.columns])
    return pd.concat([scored, pd.DataFrame(columns, index=scored.index)], axis=1)


def _extras(results: list[RewardResult], picks: np.ndarray) -> dict[str, list[Any]]:
    """The reward functions' extra columns, from the verdicts that some row has."""
    used = np.zeros(len(results), dtype=bool)
    used[picks] = True
    with_extras = [i for i in np.flatnonzero(used).tolist() if results[i].extra]
    columns = {}
    for name in sorted({name for i in with_extras for name in results[i].extra}):
        values: list[Any] = [None] * len(results)
        for i in with_extras:
            values[i] = results[i].extra.get(name)
        # Converted per verdict: the same as per row, since only used verdicts have values.
        columns[name] = _as_objects(_column_values(values)).take(picks).tolist()
    return columns


_STRINGS = pd.StringDtype("pyarrow", na_value=np.nan)  # what pandas makes of a list of strings


def _strings(values: np.ndarray, picks: np.ndarray | None) -> Any:
    """values[picks] (strings or None) as pandas would make them from a list, converted by Arrow
    once per distinct verdict rather than once per row; all None stays a list of None."""
    array = pa.array(values, type=pa.large_string(), from_pandas=True)
    if picks is not None:
        array = array.take(pa.array(picks))
    if array.null_count == len(array):
        return [None] * len(array)
    return pd.array(array, dtype=_STRINGS)


def _spec_picks(specs: list[str], rewards: dict[str, RewardFn]) -> np.ndarray:
    """Each row's position in `rewards` (by spec)."""
    if len(rewards) == 1:
        return np.zeros(len(specs), dtype=np.intp)
    position = {spec: index for index, spec in enumerate(rewards)}
    return np.fromiter(map(position.__getitem__, specs), np.intp, count=len(specs))


def _as_objects(values: list[Any]) -> np.ndarray:
    """An object array holding each value as it is (lists stay lists, not a second axis)."""
    array = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        array[index] = value
    return array


GENERATION_ERROR = RewardResult(
    score=0.0, acc=False, pred=None, status="error", extra={"score_error": "generation failed"}
)
NO_ANSWER = RewardResult(score=0.0, acc=False, pred=None, status="no_answer")


def _column_values(values: list[Any]) -> list[Any]:
    """Reward extras as one parquet-friendly type: mixed or nested values become strings/JSON."""
    present = [v for v in values if v is not None]
    if any(isinstance(v, dict | list | tuple) for v in present):
        return [None if v is None else dumps_json(v) for v in values]
    kinds = {type(v) for v in present}
    if len(kinds) > 1 and not kinds <= {int, float}:
        return [None if v is None else str(v) for v in values]
    return values


# ---------------------------------------------------------------- files


@dataclass(frozen=True)
class FileJob:
    """One input and where its results go."""

    input: Path
    output: Path
    results: Path


@dataclass
class FileResult:
    job: FileJob
    results: dict[str, Any]
    stats: ScoreStats


# What `score` names its outputs: a glob over a run folder must not take them as inputs.
SCORED_NAMES = (".scored.parquet", ".results.json")


def output_paths(inputs: Sequence[Path], output: Path | None) -> list[FileJob]:
    """`<stem>.scored.parquet` beside each input, or in OUTPUT (a file only for one input)."""
    one_file = output is not None and len(inputs) == 1 and _is_table_name(output) and not output.is_dir()
    jobs = []
    for path in inputs:
        if one_file:
            assert output is not None
            target = output
        else:
            directory = output if output is not None else path.parent
            target = directory / f"{_stem(path)}.scored.parquet"
        jobs.append(FileJob(path, target, target.with_name(f"{_stem(target)}.results.json")))
    targets = [job.output for job in jobs]
    if len(set(targets)) != len(targets):
        raise UserInputError("several inputs have the same file name; pass -o DIR per batch")
    if output is not None and len(inputs) > 1 and _is_table_name(output):
        raise UserInputError(f"-o {output}: with several inputs, -o must be a directory")
    return jobs


def without_own_outputs(
    inputs: Sequence[Path], output: Path | None, summary: Path | None = None
) -> tuple[list[Path], list[Path]]:
    """The inputs less the files this command writes for them (a glob such as 'runs/*' matches
    last run's `x.scored.parquet` and `x.results.json`): never score our own outputs again."""
    sources = [p for p in inputs if not p.name.endswith(SCORED_NAMES)] or list(inputs)
    if len(sources) > 1 and output is not None and _is_table_name(output):
        return list(inputs), []  # output_paths says what is wrong with that
    ours = {summary.resolve()} if summary is not None else set()
    for job in output_paths(sources, output):
        ours |= {job.output.resolve(), job.results.resolve()}
    kept = [p for p in inputs if p.resolve() not in ours]
    return kept, [p for p in inputs if p.resolve() in ours]


def _is_table_name(path: Path) -> bool:
    return path.name.lower().endswith((".parquet", ".pq", ".jsonl", ".ndjson", ".json"))


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".parquet", ".pq", ".jsonl", ".ndjson", ".json"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_parquet(path: Path) -> bool:
    return path.name.lower().endswith((".parquet", ".pq"))


def json_nulls(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing values as None, so JSON lines get `null` rather than the invalid `NaN`."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or out[column].isna().any():
            values = out[column].astype(object)
            out[column] = values.where(values.notna(), None)
    return out


def check_outputs(jobs: Sequence[FileJob], summary: Path | None, overwrite: bool) -> None:
    """Refuse to replace existing outputs unless asked to."""
    if overwrite:
        return
    existing = [p for job in jobs for p in (job.output, job.results) if p.exists()]
    if summary is not None and summary.exists():
        existing.append(summary)
    if existing:
        raise OutputConflictError(
            f"{existing[0]} exists ({len(existing)} output file(s) in all); pass --overwrite"
        )


def results_document(job: FileJob, scored: pd.DataFrame, on_error: str = DEFAULT_ON_ERROR) -> dict[str, Any]:
    """The per-input results JSON: no timings, so the same input gives the same document."""
    versions = scored.groupby("reward_fn")["reward_fn_version"].first()
    by_source = metrics_by_source(scored, count_errors=on_error == "zero")
    return {
        "input": str(job.input),
        "output": str(job.output),
        "rows": len(scored),
        "reward_fns": {str(k): str(v) for k, v in versions.items()},
        "status_counts": status_counts(scored),
        "on_error": on_error,
        "error_rows": sum(m["error_rows"] for m in by_source.values()),
        "data_sources": by_source,
    }


def json_safe_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that parquet cannot hold as they are (mixed types in one column, such as MBPP's
    list of tests next to HumanEval's string; `{}`, an empty struct, as in IFEval's kwargs): they
    are written as JSON text, in both formats."""
    mixed = []
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        try:
            if parquet_cannot_hold(pa.array(frame[column], from_pandas=True).type):
                mixed.append(str(column))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            mixed.append(str(column))
    return mixed


def as_json_text(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    # dumps_json converts numpy values itself, only where it meets them (most cells hold none).
    out = frame.copy()
    for column in columns:
        out[column] = [None if v is None else dumps_json(v) for v in out[column]]
    return out


@dataclass
class _Prepared:
    job: FileJob
    json_columns: list[str]
    journal: VerdictJournal
    # The input as its check read it, when a run's one input is a single batch: scored without
    # reading the file again (None: read a batch at a time when scored).
    whole: pd.DataFrame | None = None


class ColumnTypes:
    """The Arrow type of every column over a file's batches, to find the columns that
    parquet cannot hold as they are (see json_safe_columns) in the whole file, not in one batch:
    a column of strings in one batch and of lists in another is mixed."""

    def __init__(self) -> None:
        self.types: dict[str, list[pa.DataType]] = {}
        self.mixed: set[str] = set()

    def add(self, frame: pd.DataFrame) -> None:
        mixed = set(json_safe_columns(frame))
        self.mixed |= mixed
        for column in frame.columns:  # every dtype: a batch of strings alone is not `object`
            name = str(column)
            if name not in mixed:
                kind = pa.array(frame[column], from_pandas=True).type
                seen = self.types.setdefault(name, [])
                if kind not in seen:
                    seen.append(kind)

    def json_columns(self) -> list[str]:
        """In the order of the file's columns, as json_safe_columns gives them."""
        found = [name for name in self.types if name in self.mixed or not _joinable(self.types[name])]
        return found + sorted(self.mixed - set(found))


def _joinable(types: list[pa.DataType]) -> bool:
    if len(types) < 2:
        return True
    try:
        pa.unify_schemas([pa.schema([pa.field("c", t)]) for t in types], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return False
    return True


def score_files(
    patterns: Sequence[str | Path],
    config: ScoreConfig,
    *,
    output: Path | None = None,
    summary: Path | None = None,
    overwrite: bool = False,
    on_file: Callable[[FileResult], None] | None = None,
) -> dict[str, Any]:
    """Score every input into its own output and results JSON; returns the batch summary.

    Every check (paths, outputs and their folders, columns, reward functions, sandbox) runs before
    any scoring. Verdicts are kept as they are made (scoring.journal): a rerun of an interrupted
    command judges only what is missing.
    """
    started = time.monotonic()
    inputs, own = without_own_outputs(expand_paths(patterns), output, summary)
    jobs = output_paths(inputs, output)
    check_outputs(jobs, summary, overwrite)
    validate_spec(config.reward_fn, config.options)
    prepared = _prepare_jobs(jobs, config, overwrite)
    file_results: list[FileResult] = []
    total = ScoreStats()
    try:
        with Scorer(config) as scorer:
            for job in prepared:
                result = _score_one(scorer, job)
                file_results.append(result)
                total.add(result.stats)
                if on_file:
                    on_file(result)
    finally:
        for each in prepared:
            each.journal.close()
    total.elapsed_s = time.monotonic() - started
    batch = batch_summary(file_results, total, config)
    if own:
        shown = ", ".join(p.name for p in own[:3]) + (", ..." if len(own) > 3 else "")
        batch["notes"].insert(0, f"left out {len(own)} file(s) the inputs matched that this command "
                                 f"writes itself ({shown})")
    if summary is not None:
        write_json_atomic(batch, summary)
    return batch


def _prepare_jobs(jobs: Sequence[FileJob], config: ScoreConfig, overwrite: bool) -> list[_Prepared]:
    """Read and check every input, a batch at a time, then open each output's journal (which
    checks its folder; overwrite: an earlier run's journal is dropped)."""
    checked = [_check_input(job.input, config, keep=len(jobs) == 1) for job in jobs]
    specs = {spec for _, file_specs, _ in checked for spec in file_specs}
    if any(getattr(get_reward_fn(spec, config.options), "needs_sandbox", False) for spec in specs):
        check_sandbox(config.options)
    prepared: list[_Prepared] = []
    try:
        for job, (types, _, whole) in zip(jobs, checked, strict=True):
            journal = VerdictJournal(job.output, fresh=overwrite)
            prepared.append(_Prepared(job, types.json_columns(), journal, whole))
    except BaseException:
        for done in prepared:
            done.journal.close()
        raise
    return prepared


def _check_input(
    path: Path, config: ScoreConfig, keep: bool = False
) -> tuple[ColumnTypes, set[str], pd.DataFrame | None]:
    """Every batch of one input checked (columns, ground truths) before any scoring; its column
    types, reward functions and, with `keep`, the input as read when it is a single batch read
    whole (a jsonl file of up to one batch's rows: then scored without reading it twice)."""
    source, types, specs, carry = str(path), ColumnTypes(), set(), BatchCarry()
    # A parquet file's responses are one type throughout and no check reads them: left unread.
    skipped = [RESPONSE] if RESPONSE in _parquet_columns(path) else []
    whole = None
    for count, batch in enumerate(
        read_table_batches(path, config.rows_per_batch(path), parquet_skips=skipped), 1
    ):
        # Kept only when read with every column; let go when a second batch comes.
        whole = batch if keep and not skipped and count == 1 else None
        if skipped:
            batch[RESPONSE] = ""
        frame = prepare_frame(batch, source, carry)
        batch_specs = reward_specs(frame, config.reward_fn)
        check_rows(frame, batch_specs, config.options, source)
        types.add(frame)
        specs.update(batch_specs)
    if not specs and not types.types:  # an empty file: checked as today's whole read did
        prepare_frame(read_table(path), source)
    return types, specs, whole


def _parquet_columns(path: Path) -> list[str]:
    """A parquet file's column names; none for other files, or where the schema cannot be read
    (reading the file then says why)."""
    if not _is_parquet(path):
        return []
    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError):
        return []


# What the results JSON is computed from: per row only these few small columns are kept across
# batches (see results_document), never the responses.
SUMMARY_COLUMNS = (
    "data_source", "prompt_id", "sample_idx", "score", "acc", "score_status", "answer_class",
    "reward_fn", "reward_fn_version", "error", N_COLUMN, STRICT_COLUMN, LOOSE_COLUMN,
)


def summary_rows(scored: pd.DataFrame) -> pd.DataFrame:
    """The columns of a scored batch that the results JSON needs; `error` only where it matters
    (rows whose reward failed: was it the generation?)."""
    slim = scored[[c for c in SUMMARY_COLUMNS if c in scored.columns]].copy()
    if "error" in slim.columns:
        needed = slim["score_status"].isin(REWARD_ERROR_STATUSES).to_numpy(dtype=bool)
        slim["error"] = [e if keep else None for e, keep in zip(slim["error"], needed, strict=True)]
    return slim


def _score_one(scorer: Scorer, job: _Prepared) -> FileResult:
    """One input read, scored and written a batch at a time (scoring.output)."""
    target, source = job.job.output, str(job.job.input)
    writer = ScoredWriter(target, job.journal.directory)
    kept = job.journal.load()
    stats, carry, summaries, specs = ScoreStats(), BatchCarry(), [], set()
    rows_per_batch = scorer.config.rows_per_batch(job.job.input)
    if job.whole is not None:  # read by its check
        batches: Iterator[pd.DataFrame] = iter([job.whole])
        job.whole = None
    else:
        batches = read_table_batches(job.job.input, rows_per_batch)
    watch = FailureWatch(str, str, scorer.config.max_error_rate)  # bound to each batch's rows
    for batch in batches:
        scored, batch_stats = scorer.score(batch, source, journal=job.journal, kept=kept, carry=carry,
                                           watch=watch)
        stats.add(batch_stats)
        specs.update(reward_specs(scored, scorer.config.reward_fn))
        summaries.append(summary_rows(scored))
        written = as_json_text(scored, job.json_columns)
        writer.add(written if _is_parquet(target) else json_nulls(written))
        full = len(batch) >= rows_per_batch
        del scored, written, batch
        if full:  # more may follow (a short batch is the last; a small input costs nothing)
            # The batch's frames are in reference cycles (pandas makes some) and the collector
            # was paused while scoring: without a collection, batches pile up until one happens.
            gc.collect()
    if not summaries:  # an empty input: an empty output, as a whole read gives
        scored, stats = scorer.score(read_table(job.job.input), source, journal=job.journal, kept=kept)
        specs.update(reward_specs(scored, scorer.config.reward_fn))
        summaries.append(summary_rows(scored))
        writer.add(as_json_text(scored, job.json_columns))
    watch.check_all_failed()  # over the whole file, before its output is written
    writer.finish()
    scored = pd.concat(summaries, ignore_index=True) if len(summaries) > 1 else summaries[0]
    document = results_document(job.job, scored, scorer.config.on_error)
    notes = reward_notes(specs, scorer.config)
    if job.json_columns:
        document["json_columns"] = job.json_columns
        notes.append(
            f"{target}: column(s) {', '.join(job.json_columns)} hold mixed types; written as "
            f"JSON text (json.loads gives the values back)"
        )
    document["notes"] = notes
    write_json_atomic(document, job.job.results)
    job.journal.finish()
    return FileResult(job.job, document, stats)


def reward_notes(specs: set[str], config: ScoreConfig) -> list[str]:
    """What the user should know about the reward functions used (e.g. cache-key limits)."""
    notes = []
    for spec in sorted(specs):
        note = getattr(get_reward_fn(spec, config.options), "cache_note", None)
        if note:
            notes.append(note)
    return notes


def batch_summary(files: Sequence[FileResult], total: ScoreStats, config: ScoreConfig) -> dict[str, Any]:
    return {
        "reward_fn": config.reward_fn,
        "inputs": [
            {
                "input": str(f.job.input),
                "output": str(f.job.output),
                "results": str(f.job.results),
                "rows": f.results["rows"],
                "status_counts": f.results["status_counts"],
                "error_rows": f.results["error_rows"],
                "data_sources": f.results["data_sources"],
            }
            for f in files
        ],
        "on_error": config.on_error,
        "error_rows": sum(f.results["error_rows"] for f in files),
        "notes": sorted({note for f in files for note in f.results.get("notes", [])}),
        "totals": {**vars(total), "elapsed_s": round(total.elapsed_s, 3)},
    }
