"""Scoring a frame's rows on the worker pool, with the rows themselves never crossing a pipe.

The workers are forked holding the frame's columns (a RowTable) and get only row numbers:

  1. extract: a worker reads rows start..end, extracts each answer and returns its item key (a
     content hash of reward fn, version, answer, ground truth and, for functions that use it, the
     context) and how the answer was found;
  2. judge: the parent dedupes the keys of every row and, after the journal of an interrupted run
     and the verdict cache have answered what they can, sends each distinct item once, as the
     number of the first row that holds it; a worker extracts that answer again and judges it.

The parent's work per row is a dict lookup on the key; the reply of a judge batch is a list of
compact verdicts (scoring.workers). Both steps run under the pool's hard per-unit limit: a row
whose extraction hangs or kills its worker gets that verdict on its own.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from rollouts.io import to_python
from scoring.cache import VerdictCache
from scoring.rewards.base import RewardFn
from scoring.types import RewardResult
from scoring.workers import Compact, Handler, WorkerState, expand, judge_compact, mark_started

# row_item values of rows that have no item.
NO_ANSWER_ROW = -1
FAILED_ROW = -2


def item_key(reward: RewardFn, answer: str, ground_truth: Any, data_source: str, extra_info: Any) -> str:
    """The verdict's identity: same key, same verdict (the cache and dedupe rely on it)."""
    if isinstance(ground_truth, str) and not reward.uses_context:
        # The common case without JSON; the "s"/"j" tag keeps it apart from the general form.
        text = "\x00".join(("s", reward.name, reward.version, answer, ground_truth))
    else:
        return hashlib.sha256(_context_blob(reward, answer, ground_truth, data_source, extra_info)).hexdigest()
    return hashlib.sha256(text.encode()).hexdigest()


def _context_blob(
    reward: RewardFn, answer: str, ground_truth: Any, data_source: str, extra_info: Any
) -> bytes:
    """Everything a verdict depends on, as canonical JSON bytes (the general form of item_key)."""
    parts: list[Any] = [reward.name, reward.version, answer, ground_truth]
    if reward.uses_context:
        parts += [data_source, extra_info]
    return b"j" + _json(parts)


_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _json(value: Any) -> bytes:
    """Canonical JSON (sorted keys); orjson: this runs once per row."""
    return orjson.dumps(value, option=_JSON_OPTIONS, default=str)


def generation_failed(value: Any) -> bool:
    """The `error` column: null on success, a kind and message otherwise."""
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return not (isinstance(value, str | dict | list) and len(value) == 0)


@dataclass(frozen=True, eq=False)
class RowTable:
    """The columns a worker reads, one entry per row (identity, not equality, tells two apart)."""

    specs: list[str]
    responses: list[Any]
    golds: list[Any]
    data_sources: list[str]
    extras: list[Any]
    errors: list[Any]

    def __len__(self) -> int:
        return len(self.specs)

    def context(self, reward: RewardFn, row: int) -> Any:
        """The row's extra_info as the reward function gets it (None unless it uses context)."""
        extra = self.extras[row]
        return None if extra is None or not reward.uses_context else to_python(extra)


# ---------------------------------------------------------------- in the workers


def extract_rows(bounds: tuple[int, int], progress: Any, state: WorkerState) -> tuple[list[str | None], list[str | None], list[int]]:
    """Rows start..end: each row's item key (None: no answer), pred source, and the offsets of
    rows whose generation failed."""
    start, end = bounds
    table: RowTable = state.table
    specs, responses, golds, sources_of = table.specs, table.responses, table.golds, table.data_sources
    errors = table.errors
    keys: list[str | None] = []
    sources: list[str | None] = []
    failed: list[int] = []
    for row in range(start, end):
        mark_started(progress, row - start)
        error = errors[row]
        if error is not None and generation_failed(error):
            failed.append(row - start)
            keys.append(None)
            sources.append(None)
            continue
        reward = state.reward(specs[row])
        response = responses[row]
        extraction = reward.extract(response if isinstance(response, str) else "")
        sources.append(extraction.source)
        answer = extraction.answer
        keys.append(None if answer is None else item_key(
            reward, answer, golds[row], sources_of[row], table.context(reward, row)))
    return keys, sources, failed


def judge_rows(rows: list[int], progress: Any, state: WorkerState) -> list[Compact]:
    """One compact verdict per row (the first row of each item), in order."""
    table: RowTable = state.table
    results = []
    for index, row in enumerate(rows):
        mark_started(progress, index)
        spec = table.specs[row]
        reward = state.reward(spec)
        response = table.responses[row]
        answer = reward.extract(response if isinstance(response, str) else "").answer
        assert answer is not None  # extraction is deterministic: the extract step found one
        results.append(judge_compact(state.reward, spec, answer, table.golds[row],
                                     table.data_sources[row], table.context(reward, row)))
    return results


# ---------------------------------------------------------------- in the parent

OnFresh = Callable[[dict[str, RewardResult]], None]


@dataclass
class Sources:
    """Where verdicts came from, counted as items are resolved."""

    resumed: int = 0
    cache_hits: int = 0
    judged: int = 0


class RowFeed:
    """Feeds a pool (scoring.workers.Feed) the extract and judge tasks of one table, and keeps
    every row's item and every item's verdict.

    row_item[row] is the row's item number, NO_ANSWER_ROW or FAILED_ROW; keys[item] its key,
    verdicts[item] its verdict. `on_fresh` sees every verdict made in this run, as it arrives."""

    def __init__(
        self,
        table: RowTable,
        *,
        kept: dict[str, RewardResult] | None = None,
        cache: VerdictCache | None = None,
        on_fresh: OnFresh | None = None,
    ) -> None:
        self.table = table
        self.kept = kept or {}
        self.cache = cache
        self.on_fresh = on_fresh or (lambda fresh: None)
        self.counts = Sources()
        size = len(table)
        self.row_item = [NO_ANSWER_ROW] * size
        self.sources: list[str | None] = [None] * size
        self.keys: list[str] = []
        self.item_row: list[int] = []
        self.verdicts: list[RewardResult | None] = []
        self._index: dict[str, int] = {}
        self._ranges: deque[tuple[int, int]] = deque([(0, size)] if size else [])
        self._unread = size
        self._queue: deque[int] = deque()  # items to judge

    def results(self) -> list[RewardResult]:
        """Every item's verdict, once the run is over."""
        missing = self.verdicts.count(None)
        if missing:
            raise RuntimeError(f"{missing} item(s) have no verdict")
        return self.verdicts  # type: ignore[return-value]  # no None left

    def spec_of(self, key: str) -> str:
        return self.table.specs[self.item_row[self._index[key]]]

    # The pool's side (scoring.workers.Feed).

    def refill(self) -> bool:
        return False  # new work comes only with replies

    def hungry(self) -> bool:
        return False

    def take(self, size: Callable[[str, int], int]) -> _JudgeItems | _ExtractRange | None:
        if self._queue:
            count = min(size(_JudgeItems.kind, len(self._queue)), len(self._queue))
            return _JudgeItems(self, [self._queue.popleft() for _ in range(count)])
        if self._ranges:
            start, end = self._ranges.popleft()
            cut = min(end, start + size(_ExtractRange.kind, self._unread))
            if cut < end:
                self._ranges.appendleft((cut, end))
            self._unread -= cut - start
            return _ExtractRange(self, start, cut)
        return None

    # Replies.

    def extracted(self, start: int, keys: list[str | None], sources: list[str | None], failed: list[int]) -> None:
        """Rows start.. got their keys: new items are resolved from the journal or the cache, or
        queued to be judged."""
        self.sources[start : start + len(sources)] = sources
        row_item, index, new = self.row_item, self._index, []
        for row, key in enumerate(keys, start):  # once per row: names bound above
            if key is None:
                continue
            item = index.get(key)
            if item is None:
                item = index[key] = len(self.keys)
                self.keys.append(key)
                self.item_row.append(row)
                new.append(item)
            row_item[row] = item
        for offset in failed:
            row_item[start + offset] = FAILED_ROW
        self.verdicts.extend([None] * len(new))
        self._resolve(new)

    def _resolve(self, new: list[int]) -> None:
        if self.kept and new:
            new = self._answer_from(new, self.kept)
        if self.cache is not None and new:
            hits = self.cache.get_many(self.keys[item] for item in new)
            before = len(new)
            new = self._answer_from(new, hits)
            self.counts.cache_hits += before - len(new)
        self._queue.extend(new)

    def _answer_from(self, new: list[int], known: dict[str, RewardResult]) -> list[int]:
        """Items still without a verdict once `known` has answered."""
        rest = []
        for item in new:
            verdict = known.get(self.keys[item])
            if verdict is None:
                rest.append(item)
            else:
                self.verdicts[item] = verdict
                if known is self.kept:
                    self.counts.resumed += 1
        return rest

    def judged(self, items: list[int], verdicts: list[RewardResult]) -> None:
        fresh = {}
        for item, verdict in zip(items, verdicts, strict=True):
            self.verdicts[item] = verdict
            fresh[self.keys[item]] = verdict
        self.counts.judged += len(fresh)
        self.on_fresh(fresh)

    def extraction_failed(self, row: int, verdict: RewardResult) -> None:
        """A row whose extraction hung or killed its worker: that verdict is the row's own."""
        self.row_item[row] = len(self.keys)
        self.keys.append(f"row:{row}")
        self.item_row.append(row)
        self.verdicts.append(verdict)

    def requeue_rows(self, start: int, end: int) -> None:
        if start < end:
            self._ranges.appendleft((start, end))
            self._unread += end - start

    def requeue_items(self, items: list[int]) -> None:
        self._queue.extendleft(reversed(items))


class _ExtractRange:
    kind = "extract"

    def __init__(self, feed: RowFeed, start: int, end: int) -> None:
        self.feed, self.start, self.end = feed, start, end

    def __len__(self) -> int:
        return self.end - self.start

    def message(self) -> tuple[Handler, Any]:
        return extract_rows, (self.start, self.end)

    def finish(self, reply: tuple[list[str | None], list[str | None], list[int]]) -> None:
        self.feed.extracted(self.start, *reply)

    def fail(self, index: int, verdict: RewardResult) -> None:
        row = self.start + index
        self.feed.requeue_rows(row + 1, self.end)
        self.feed.requeue_rows(self.start, row)
        self.feed.extraction_failed(row, verdict)


class _JudgeItems:
    kind = "judge"

    def __init__(self, feed: RowFeed, items: list[int]) -> None:
        self.feed, self.items = feed, items

    def __len__(self) -> int:
        return len(self.items)

    def message(self) -> tuple[Handler, Any]:
        item_row = self.feed.item_row
        return judge_rows, [item_row[item] for item in self.items]

    def finish(self, reply: list[Compact]) -> None:
        self.feed.judged(self.items, list(map(expand, reply)))

    def fail(self, index: int, verdict: RewardResult) -> None:
        self.feed.requeue_items(self.items[:index] + self.items[index + 1 :])
        self.feed.judged([self.items[index]], [verdict])
