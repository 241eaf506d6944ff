"""Scoring a frame's rows on the worker pool, with the rows themselves never crossing a pipe.

The workers are forked holding the frame's columns (a RowTable; responses may stay an Arrow
array, of which each worker makes Python strings for its own rows only) and get only row ranges.
For rows start..end a worker (score_rows):

  1. extracts every answer and finds the distinct items (reward fn, answer, ground truth and, for
     functions that use it, the context) by exact identity;
  2. gives items their known verdicts: those that hung or killed a worker before (presets), those
     it judged itself for an earlier range (short answers only: MEMORY_ANSWER_CHARS), and, when
     verdicts persist, those of the interrupted run's journal and of the cache (by item_key);
  3. judges the rest and replies once: per row its item number and pred source, per item a compact
     verdict (scoring.workers.compact) and its key.

The parent's work per row is placing the reply's item numbers (RowFeed.scored). Both steps run
under the pool's hard per-unit limit: a row whose extraction hangs or kills its worker gets that
verdict on its own; an item that does gets it for all its rows, in every range sent afterwards.
An item repeated in ranges that different workers score may be judged by each of them.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow as pa

from rollouts.io import to_python
from scoring.cache import CACHEABLE_STATUSES
from scoring.rewards.base import RewardFn
from scoring.types import RewardResult, generation_failed
from scoring.workers import (
    Compact,
    Handler,
    WorkerState,
    compact,
    expand,
    judge_compact,
    mark_started,
)

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


@dataclass(frozen=True, eq=False)
class RowTable:
    """What a worker reads, one entry per row (identity, not equality, tells two apart).

    content_keys: items get content keys (item_key), as the journal and the cache need; `kept`
    holds an interrupted run's verdicts by key and `cache_dir` the verdict cache, if any."""

    specs: list[str]
    responses: list[Any] | pa.Array | pa.ChunkedArray  # see column_slice
    golds: list[Any]
    data_sources: list[str]
    extras: list[Any]
    errors: list[Any]
    content_keys: bool = False
    kept: dict[str, RewardResult] = field(default_factory=dict)
    cache_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.specs)

    def context(self, reward: RewardFn, row: int) -> Any:
        """The row's extra_info as the reward function gets it (None unless it uses context)."""
        extra = self.extras[row]
        return None if extra is None or not reward.uses_context else to_python(extra)


def column_slice(column: list[Any] | pa.Array | pa.ChunkedArray, start: int, end: int) -> list[Any]:
    """Rows start..end of a column as Python values (None where an Arrow column has a null)."""
    if isinstance(column, list):
        return column[start:end]
    return column.slice(start, end - start).to_pylist()


# ---------------------------------------------------------------- in the workers

# Verdicts a worker remembers across its tasks (by exact item identity), at most; only those of
# answers up to MEMORY_ANSWER_CHARS long: short answers are the ones that repeat (a number, a
# letter), and keeping whole responses alive would make every later task's rows new memory.
MEMORY_ITEMS = 200_000
MEMORY_ANSWER_CHARS = 1000
_CACHEABLE = frozenset(CACHEABLE_STATUSES)


class RangeReply(NamedTuple):
    """What a worker returns for rows start..end: each row's item (an index into `verdicts`,
    NO_ANSWER_ROW or FAILED_ROW) and pred source; per item its first row, its verdict (compact),
    its key (content keys only); which items were judged (or given a verdict) in this task; and how
    many came from the interrupted run's journal and from the cache."""

    row_items: list[int]
    sources: list[str | None]
    first_rows: list[int]
    verdicts: list[Compact]
    keys: list[str] | None
    fresh: list[int]
    resumed: int
    cache_hits: int


class _Items:
    """The distinct items of one range, found by exact identity: identity -> item number, and
    per item its first row and answer (filled by _extract)."""

    def __init__(self) -> None:
        self.index: dict[tuple[Any, ...], int] = {}
        self.first_rows: list[int] = []
        self.answers: list[str] = []


def score_rows(task: tuple[int, int, dict[int, Compact]], progress: Any, state: WorkerState) -> RangeReply:
    """Rows start..end: extract every answer, dedupe, and judge each item not known already.

    Progress marks the row being extracted as its offset, the item being judged as the range's
    length plus its first row's offset (see _RowRange.fail). `presets` gives the items of some
    rows (of this range or any other) their verdict: one that hung or killed a worker before."""
    start, end, presets = task
    table: RowTable = state.table
    rewards = {spec: state.reward(spec) for spec in set(table.specs[start:end])}
    items = _Items()
    row_items, sources = _extract(table, start, end, items, progress, rewards)
    verdicts: list[Compact | None] = [None] * len(items.first_rows)
    fresh: list[int] = []
    for row, verdict in presets.items():
        identity = _identity(table, row, state)
        item = None if identity is None else items.index.get(identity)
        if item is not None and verdicts[item] is None:
            verdicts[item] = verdict
            fresh.append(item)
    identities = list(items.index)
    memory: dict[Any, Compact] = state.memory
    if memory:
        verdicts = [memory.get(identity) if v is None else v for identity, v in zip(identities, verdicts, strict=True)]
    keys = _content_keys(table, items, rewards) if table.content_keys else None
    resumed = cache_hits = 0
    if keys is not None:
        resumed = _fill(verdicts, keys, {k: compact(v) for k, v in _pick(table.kept, keys).items()})
        cache = state.cache(table.cache_dir) if table.cache_dir is not None else None
        if cache is not None:
            cache_hits = _fill(verdicts, keys, {k: compact(v) for k, v in cache.get_many(
                k for k, v in zip(keys, verdicts, strict=True) if v is None).items()})
    judged = _judge(table, items, verdicts, rewards, progress, offset=(end - start) - start)
    for item in judged:  # remembered for later ranges; failures may be transient
        made = verdicts[item]
        if len(items.answers[item]) > MEMORY_ANSWER_CHARS:
            continue
        if isinstance(made, float) or isinstance(made, tuple) and made[3] in _CACHEABLE:
            if len(memory) >= MEMORY_ITEMS:
                memory.clear()
            memory[identities[item]] = made
    return RangeReply(row_items, sources, items.first_rows, verdicts, keys, fresh + judged,  # type: ignore[arg-type]
                      resumed, cache_hits)


def _judge(
    table: RowTable,
    items: _Items,
    verdicts: list[Compact | None],
    rewards: dict[str, RewardFn],
    progress: Any,
    offset: int,
) -> list[int]:
    """Judge the items without a verdict (progress: offset + row); returns which were judged."""
    specs, golds, data_sources, extras = table.specs, table.golds, table.data_sources, table.extras
    judged = []
    for item, row in enumerate(items.first_rows):  # once per item: names bound above
        if verdicts[item] is not None:
            continue
        mark_started(progress, offset + row)
        reward = rewards[specs[row]]
        extra = extras[row]
        context = None if extra is None or not reward.uses_context else to_python(extra)
        verdicts[item] = judge_compact(reward, items.answers[item], golds[row], data_sources[row], context)
        judged.append(item)
    return judged


def _extract(
    table: RowTable, start: int, end: int, items: _Items, progress: Any, rewards: dict[str, RewardFn]
) -> tuple[list[int], list[str | None]]:
    specs, golds, data_sources = table.specs, table.golds, table.data_sources
    errors, extras = table.errors, table.extras
    responses = column_slice(table.responses, start, end)
    row_items: list[int] = []
    sources: list[str | None] = []
    add_row, add_source = row_items.append, sources.append
    index, add_first_row, add_answer = items.index, items.first_rows.append, items.answers.append
    for row in range(start, end):  # once per row: names bound above, items.add inlined
        mark_started(progress, row - start)
        error = errors[row]
        if error is not None and generation_failed(error):
            add_row(FAILED_ROW)
            add_source(None)
            continue
        spec = specs[row]
        reward = rewards[spec]
        response = responses[row - start]
        extraction = reward.extract(response if isinstance(response, str) else "")
        add_source(extraction.source)
        answer = extraction.answer
        if answer is None:
            add_row(NO_ANSWER_ROW)
            continue
        gold = golds[row]
        # _identity, inlined: a string gold stands for itself, another by its JSON in a tuple
        # (never equal to a str); the context only for functions that use it.
        gold_id = gold if type(gold) is str else ("j", _json(gold))
        if reward.uses_context:
            extra = extras[row]
            context: Any = (data_sources[row], None if extra is None else _json(to_python(extra)))
        else:
            context = None
        identity = (spec, answer, gold_id, context)
        item = index.get(identity)
        if item is None:
            item = index[identity] = len(index)
            add_first_row(row)
            add_answer(answer)
        add_row(item)
    return row_items, sources


def _identity(table: RowTable, row: int, state: WorkerState) -> tuple[Any, ...] | None:
    """The identity _extract gives the item of `row` (None: no answer)."""
    spec = table.specs[row]
    reward = state.reward(spec)
    response = column_slice(table.responses, row, row + 1)[0]
    answer = reward.extract(response if isinstance(response, str) else "").answer
    if answer is None:
        return None
    gold = table.golds[row]
    gold_id = gold if type(gold) is str else ("j", _json(gold))
    if not reward.uses_context:
        return (spec, answer, gold_id, None)
    extra = table.extras[row]
    return (spec, answer, gold_id, (table.data_sources[row], None if extra is None else _json(to_python(extra))))


def _content_keys(table: RowTable, items: _Items, rewards: dict[str, RewardFn]) -> list[str]:
    keys = []
    for item, row in enumerate(items.first_rows):
        reward = rewards[table.specs[row]]
        keys.append(item_key(reward, items.answers[item], table.golds[row], table.data_sources[row],
                             table.context(reward, row)))
    return keys


def _pick(known: dict[str, RewardResult], keys: list[str]) -> dict[str, RewardResult]:
    if not known:
        return {}
    return {key: known[key] for key in keys if key in known}


def _fill(verdicts: list[Compact | None], keys: list[str], known: dict[str, Compact]) -> int:
    """Verdicts of items that `known` answers (and had none); returns how many."""
    filled = 0
    for item, key in enumerate(keys):
        if verdicts[item] is None and key in known:
            verdicts[item] = known[key]
            filled += 1
    return filled



# ---------------------------------------------------------------- in the parent

OnFresh = Callable[[dict[str, RewardResult]], None]


@dataclass
class Sources:
    """Where verdicts came from, counted as replies arrive."""

    resumed: int = 0
    cache_hits: int = 0
    judged: int = 0


class RowFeed:
    """Feeds a pool (scoring.workers.Feed) the row ranges of one table, and keeps every row's
    item and every item's verdict.

    row_item[row] is the row's item number (an array), NO_ANSWER_ROW or FAILED_ROW, and
    verdicts[item] its verdict. `on_fresh` sees every verdict made in this run as it arrives, by
    content key, or by `row:N` after its first row when nothing persists."""

    def __init__(self, table: RowTable, on_fresh: OnFresh | None = None) -> None:
        self.table = table
        self.on_fresh = on_fresh or (lambda fresh: None)
        self.counts = Sources()
        size = len(table)
        self.row_item = np.full(size, NO_ANSWER_ROW, dtype=np.intp)
        self.sources: list[str | None] = [None] * size
        self.verdicts: list[RewardResult] = []
        self._content_keys: set[str] = set()
        self._first_row: dict[str, int] = {}  # content keys only: the row a verdict was made for
        self._ranges: deque[tuple[int, int]] = deque([(0, size)] if size else [])
        self.presets: dict[int, Compact] = {}  # row -> the verdict its item got by failing
        self._unread = size

    def results(self) -> list[RewardResult]:
        return self.verdicts

    def distinct_items(self) -> int:
        """Items by content key; without content keys, those that were judged (an item that a
        worker had judged for an earlier range is not judged again)."""
        return len(self._content_keys) if self.table.content_keys else self.counts.judged

    def spec_of(self, key: str) -> str:
        """The reward function of a verdict that on_fresh saw."""
        return self.table.specs[self._row_of(key)]

    def source_of(self, key: str) -> str:
        """The data source of (the first row of) a verdict that on_fresh saw."""
        return self.table.data_sources[self._row_of(key)]

    def _row_of(self, key: str) -> int:
        if key.startswith(_ROW_KEY):
            return int(key[len(_ROW_KEY) :])
        return self._first_row[key]

    # The pool's side (scoring.workers.Feed).

    def refill(self) -> bool:
        return False  # work comes only from the ranges queued

    def hungry(self) -> bool:
        return False

    def take(self, size: Callable[[str, int], int]) -> _RowRange | None:
        if not self._ranges:
            return None
        start, end = self._ranges.popleft()
        cut = min(end, start + size(_RowRange.kind, self._unread))
        if cut < end:
            self._ranges.appendleft((cut, end))
        self._unread -= cut - start
        return _RowRange(self, start, cut)

    def requeue(self, start: int, end: int) -> None:
        if start < end:
            self._ranges.appendleft((start, end))
            self._unread += end - start

    # Replies.

    def scored(self, start: int, reply: RangeReply) -> None:
        base = len(self.verdicts)
        verdicts = list(map(expand, reply.verdicts))
        self.verdicts += verdicts
        items = np.asarray(reply.row_items, dtype=np.intp)
        items[items >= 0] += base
        self.row_item[start : start + len(items)] = items
        self.sources[start : start + len(reply.sources)] = reply.sources
        self.counts.resumed += reply.resumed
        self.counts.cache_hits += reply.cache_hits
        self.counts.judged += len(reply.fresh)
        if reply.keys is not None:
            self._content_keys.update(reply.keys)
            keys = reply.keys
            self._first_row.update((keys[item], reply.first_rows[item]) for item in reply.fresh)
        else:
            keys = list(map(_ROW_KEY.__add__, map(str, reply.first_rows)))
        if reply.fresh:
            self.on_fresh({keys[item]: verdicts[item] for item in reply.fresh})

    def extraction_failed(self, row: int, verdict: RewardResult) -> None:
        """A row whose extraction hung or killed its worker: that verdict is the row's own."""
        self.row_item[row] = len(self.verdicts)
        self.verdicts.append(verdict)


_ROW_KEY = "row:"


class _RowRange:
    """Rows start..end scored in one worker (see score_rows)."""

    kind = "rows"

    def __init__(self, feed: RowFeed, start: int, end: int) -> None:
        self.feed, self.start, self.end = feed, start, end

    def __len__(self) -> int:
        return self.end - self.start

    def message(self) -> tuple[Handler, Any]:
        return score_rows, (self.start, self.end, self.feed.presets)

    def finish(self, reply: RangeReply) -> None:
        self.feed.scored(self.start, reply)

    def fail(self, index: int, verdict: RewardResult) -> None:
        size = len(self)
        if index < size:  # extracting row start + index: that row alone gets the verdict
            row = self.start + index
            self.feed.requeue(row + 1, self.end)
            self.feed.requeue(self.start, row)
            self.feed.extraction_failed(row, verdict)
        else:  # judging the item of row start + index - size: every row of that item gets it,
            # in this range and in every range sent from now on
            self.feed.presets[self.start + index - size] = compact(verdict)
            self.feed.requeue(self.start, self.end)


# ---------------------------------------------------------------- a judge model's questions


def collect_questions(task: tuple[int, int], progress: Any, state: WorkerState) -> list[tuple[str, Any]]:
    """Rows start..end: the questions their judge-model rewards would ask (`question`), for the
    items whose verdict is not known yet (an interrupted run's, the cache's): extraction, dedupe
    and look-ups as score_rows does them. Progress marks the row being worked on."""
    start, end = task
    table: RowTable = state.table
    rewards = {spec: state.reward(spec) for spec in set(table.specs[start:end])}
    items = _Items()
    _extract(table, start, end, items, progress, rewards)
    verdicts: list[Compact | None] = [None] * len(items.first_rows)
    if table.content_keys:
        keys = _content_keys(table, items, rewards)
        _fill(verdicts, keys, {k: compact(v) for k, v in _pick(table.kept, keys).items()})
        if table.cache_dir is not None:
            cache = state.cache(table.cache_dir)
            _fill(verdicts, keys, {k: compact(v) for k, v in cache.get_many(
                k for k, v in zip(keys, verdicts, strict=True) if v is None).items()})
    questions = []
    for item, row in enumerate(items.first_rows):
        reward = rewards[table.specs[row]]
        question = getattr(reward, "question", None)
        if verdicts[item] is not None or question is None:
            continue
        mark_started(progress, row - start)
        try:
            asked = question(items.answers[item], table.golds[row], table.data_sources[row],
                             table.context(reward, row))
        except Exception:  # judge() meets the same failure and makes it the row's error
            continue
        if asked is not None:
            questions.append(asked)
    return questions


class QuestionFeed:
    """Feeds a pool the row ranges of a table for collect_questions and gathers the questions.
    A range whose row hangs or kills a worker goes on after that row (judge() meets it later)."""

    def __init__(self, rows: list[tuple[int, int]]) -> None:
        self.questions: list[tuple[str, Any]] = []
        self._ranges: deque[tuple[int, int]] = deque(rows)

    def refill(self) -> bool:
        return False

    def hungry(self) -> bool:
        return False

    def take(self, size: Callable[[str, int], int]) -> _QuestionRange | None:
        if not self._ranges:
            return None
        start, end = self._ranges.popleft()
        cut = min(end, start + size(_QuestionRange.kind, sum(e - s for s, e in self._ranges) + end - start))
        if cut < end:
            self._ranges.appendleft((cut, end))
        return _QuestionRange(self, start, cut)

    def requeue(self, start: int, end: int) -> None:
        if start < end:
            self._ranges.appendleft((start, end))


class _QuestionRange:
    kind = "questions"

    def __init__(self, feed: QuestionFeed, start: int, end: int) -> None:
        self.feed, self.start, self.end = feed, start, end

    def __len__(self) -> int:
        return self.end - self.start

    def message(self) -> tuple[Handler, Any]:
        return collect_questions, (self.start, self.end)

    def finish(self, reply: list[tuple[str, Any]]) -> None:
        self.feed.questions += reply

    def fail(self, index: int, verdict: RewardResult) -> None:
        row = self.start + min(index, len(self) - 1)
        self.feed.requeue(row + 1, self.end)
        self.feed.requeue(self.start, row)  # their questions died with the worker
