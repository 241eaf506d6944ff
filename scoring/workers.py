"""A pool of worker processes that run tasks under a hard per-unit wall-clock limit.

A task is a batch of units (work items, or rows: see scoring.rows) run by a handler in one
worker; it crosses the pipe as one message and its reply comes back as one: pickling and pipe
round trips cost more than a cheap verdict. Task sizes adapt to how long units take (about
BATCH_TARGET_S of work per task, per kind of task), so a cheap reward pays for few round trips and a
slow one still spreads over every worker. An item batch crosses the pipe as one list per field;
keys stay in the parent and verdicts come back in batch order, a plain numeric verdict as its bare
score (see `compact`). Each worker writes the index and start time of the unit it is on into shared
memory, so the parent knows which unit hangs without a message per unit. A unit that runs past the
limit has its worker killed with every process its reward code started (SIGKILL: a C extension
stuck in a loop ignores anything softer; see scoring.processes) and replaced; the task is told
(`Task.fail`): an item becomes a `timeout` verdict and the rest of its batch (finished items
included, their verdicts died with the worker) is queued again. A worker that dies by itself makes
its current unit an `error`. Reward code runs in each worker's main thread, where signal-based
libraries behave.

Workers are not daemonic, so reward code may start processes of its own (multiprocessing,
concurrent.futures, subprocess). They die with the parent on any signal, SIGKILL included, and take
what they started with them (scoring.processes; one reaper per process watches every pool's
workers).

Workers are forked: a new or replacement worker costs milliseconds, starts with the reward modules
already imported and holds the table the pool is bound to (`bind`) without copying it; the child
runs only reward code, never the parent's other threads' libraries. (Fork is what every platform
rollouts runs on has: Linux, where bubblewrap and SLURM are, and macOS.)
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import fcntl
import gc
import itertools
import math
import multiprocessing
import multiprocessing.connection
import multiprocessing.sharedctypes
import operator
import os
import signal
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from scoring.cache import VerdictCache
from scoring.processes import Reaper, kill_tree, kill_trees, leash_worker
from scoring.rewards.base import RewardFn, RewardOptions
from scoring.rewards.registry import get_reward_fn
from scoring.tracebacks import describe_exception, traceback_tail
from scoring.types import NON_FINITE_KIND, RewardResult

# Batch sizes: the first batches are small (the cost of an item is unknown), later ones carry about
# BATCH_TARGET_S of work, never more than MAX_BATCH items.
FIRST_BATCH = 8
MAX_BATCH = 2048
BATCH_TARGET_S = 0.1
# How often the parent wakes to check deadlines when no worker has anything to say.
POLL_S = 0.5
# Shared progress slots: index of the item being judged, and when it started (time.monotonic).
_INDEX, _STARTED = 0, 1

_CONTEXT: Any = multiprocessing.get_context("fork")

OnResults = Callable[[dict[str, "RewardResult"]], None]


class WorkItem(NamedTuple):
    """One distinct thing to judge; `key` identifies its verdict (see scoring.scorer.item_key).
    A tuple: batches of them cross the pipe as plain tuples, which pickle several times faster."""

    key: str
    reward_fn: str
    answer: str
    ground_truth: Any
    data_source: str
    extra_info: dict[str, Any] | None


def error_result(message: str, status: str = "error", trace: str | None = None) -> RewardResult:
    extra: dict[str, Any] = {"score_error": message}
    if trace:
        extra["score_traceback"] = trace
    return RewardResult(score=0.0, acc=False, pred=None, status=status, extra=extra)  # type: ignore[arg-type]


def judge_item(item: WorkItem, options: RewardOptions) -> RewardResult:
    """Run one reward function; its exceptions become an `error` verdict, never a crash."""
    try:
        reward = get_reward_fn(item.reward_fn, options)
        return finite(reward.judge(item.answer, item.ground_truth, item.data_source, item.extra_info))
    except Exception as exc:  # reward code (user files included) may raise anything
        return error_result(describe_exception(exc), trace=traceback_tail(exc))


def finite(result: RewardResult) -> RewardResult:
    """The verdict, or an `error` verdict when its score is inf or NaN (no metric can hold it)."""
    if math.isfinite(result.score):
        return result
    return error_result(
        f"{NON_FINITE_KIND}: the reward returned {result.score!r}, not a finite number"
    )


class WorkerState:
    """What a worker keeps between tasks: the run's options, its reward functions by spec (a dict
    lookup per item, not lru_cache's hashing), and the table of rows it was forked with."""

    def __init__(self, options: RewardOptions, table: Any) -> None:
        self.options = options
        self.table = table
        self.memory: dict[Any, Any] = {}  # what handlers keep from one task to the next
        self._rewards: dict[str, RewardFn] = {}
        self._caches: dict[Path, VerdictCache] = {}

    def reward(self, spec: str) -> RewardFn:
        reward = self._rewards.get(spec)
        if reward is None:
            reward = self._rewards[spec] = get_reward_fn(spec, self.options)
        return reward

    def cache(self, directory: Path) -> VerdictCache:
        """The verdict cache, opened in this process (a connection does not survive a fork)."""
        cache = self._caches.get(directory)
        if cache is None:
            cache = self._caches[directory] = VerdictCache(directory)
        return cache


# A task's handler runs in a worker: handler(payload, progress, state) -> reply. It writes the
# index of the unit it is on and when it started into `progress` (see Task).
Handler = Callable[[Any, Any, WorkerState], Any]


def _worker_main(
    tasks: multiprocessing.connection.Connection,
    replies: multiprocessing.connection.Connection,
    progress: Any,
    options: RewardOptions,
    table: Any,
    parent_pid: int,
) -> None:
    leash_worker(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # The parent pauses its collector during a run; reward code needs one (cyclic garbage would
    # pile up). What was inherited, and what outlives each task, is frozen: collections do not
    # rescan it (nor copy the pages of what was inherited from the parent).
    gc.freeze()
    gc.enable()
    state = WorkerState(options, table)
    while True:
        try:
            message = tasks.recv()
        except EOFError:
            return
        if message is None:
            return
        handler, payload = message
        reply = handler(payload, progress, state)
        gc.freeze()
        try:
            replies.send(reply)
        except Exception:  # an unpicklable extra from user code: send what can be sent
            replies.send([_picklable(value) for value in reply])


def mark_started(progress: Any, index: int) -> None:
    """A handler is on unit `index` of its task from now (the parent's deadline for it runs)."""
    progress[_STARTED] = time.monotonic()
    progress[_INDEX] = index


def judge_columns(batch: tuple[list[Any], ...], progress: Any, state: WorkerState) -> list[Compact]:
    """The handler of item batches: one compact verdict per item, in batch order."""
    results = []
    for index, (spec, answer, gold, data_source, extra_info) in enumerate(zip(*batch, strict=True)):
        mark_started(progress, index)
        try:
            reward = state.reward(spec)
        except Exception as exc:  # a reward function that fails to load here
            results.append(compact(error_result(describe_exception(exc), trace=traceback_tail(exc))))
            continue
        results.append(judge_compact(reward, answer, gold, data_source, extra_info))
    return results


def judge_compact(
    reward: RewardFn, answer: str, gold: Any, data_source: str, extra_info: dict[str, Any] | None
) -> Compact:
    """One verdict as it crosses the pipe; reward code's exceptions become `error` verdicts."""
    try:
        result = finite(reward.judge(answer, gold, data_source, extra_info))
    except Exception as exc:  # reward code (user files included) may raise anything
        result = error_result(describe_exception(exc), trace=traceback_tail(exc))
    return compact(result)


def _columns(batch: list[WorkItem]) -> tuple[list[Any], ...]:
    """A batch as it crosses the pipe: one list per field (fewer objects to pickle than a tuple
    per item), without the keys, which stay in the parent."""
    return tuple(list(map(operator.itemgetter(field), batch)) for field in range(1, 6))


# Verdicts travel back in the batch's order, without keys. A plain verdict (status ok, no pred,
# extras or class; acc == score > 0: what a verl-style function returning a number gives) is
# just its score, so a cheap reward's batch comes back as a list of floats.
Compact = float | tuple[Any, ...]


def compact(result: RewardResult) -> Compact:
    if (result.status == "ok" and result.pred is None and not result.extra
            and result.answer_class is None and result.acc == (result.score > 0)
            and type(result.score) is float):
        return result.score
    return (result.score, result.acc, result.pred, result.status, result.extra, result.answer_class)


_PLAIN: dict[float, RewardResult] = {}


def expand(value: Compact) -> RewardResult:
    """The verdict of `compact`'s value; plain verdicts are shared (verdicts are never mutated)."""
    if isinstance(value, float):
        plain = _PLAIN.get(value)
        if plain is None:
            plain = RewardResult(value, value > 0, None)
            if len(_PLAIN) < 4096:  # a function returning many distinct scores: do not grow
                _PLAIN[value] = plain
        return plain
    return RewardResult(*value)


def _picklable(value: Compact) -> Compact:
    import pickle

    try:
        pickle.dumps(value)
    except Exception as exc:
        return compact(error_result(f"cannot return verdict: {exc}"))
    return value


# Bytes of answers per batch: a batch fits the enlarged pipe, so handing it over does not block.
MAX_BATCH_BYTES = 768 * 1024
_PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031  # Linux fcntl


def _enlarge(conn: multiprocessing.connection.Connection) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(conn.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)


def _take_batch(queue: deque[WorkItem], size: int) -> list[WorkItem]:
    """Up to `size` items from the front of the queue, at most MAX_BATCH_BYTES of answers (at
    least one item). Sized with C-level map/accumulate: this runs for every item."""
    front = itertools.islice(queue, min(size, len(queue)))
    ends = list(itertools.accumulate(map(len, map(_ANSWER, front))))
    keep = max(1, bisect.bisect_right(ends, MAX_BATCH_BYTES))
    return [queue.popleft() for _ in range(min(keep, len(queue)))]


_ANSWER = operator.itemgetter(2)


class Task(Protocol):
    """Work for one worker: `len` units (items or rows), run by `handler` on `payload`.

    The pool calls exactly one of `finish` (with the handler's reply) or `fail` (the unit at
    `index` hung or killed its worker: it gets `verdict`, and the task's owner queues the other
    units again, since what was done died with the worker)."""

    kind: str  # tasks of one kind share a batch sizer

    def __len__(self) -> int: ...

    def message(self) -> tuple[Handler, Any]: ...

    def finish(self, reply: Any) -> None: ...

    def fail(self, index: int, verdict: RewardResult) -> None: ...


class Feed(Protocol):
    """Where the pool gets its tasks."""

    def refill(self) -> bool:
        """Produce more work if some is wanted now; True while more may come without any reply
        (the run is not over while it is)."""
        ...

    def hungry(self) -> bool:
        """Wants to produce more right now: the pool checks its workers without waiting."""
        ...

    def take(self, size: Callable[[str, int], int]) -> Task | None:
        """The next task (None when nothing is queued); `size(kind, queued)` is how many units
        a task of that kind should hold."""
        ...


class _Worker:
    """One process, its pipes, its shared progress slots, and the task it is working on."""

    def __init__(self, options: RewardOptions, table: Any) -> None:
        # One pipe each way, enlarged so that a task is written without waiting for the worker.
        tasks_in, self.outbox = _CONTEXT.Pipe(duplex=False)
        self.conn, replies_out = _CONTEXT.Pipe(duplex=False)
        _enlarge(self.outbox)
        self.progress = multiprocessing.sharedctypes.RawArray("d", 2)
        self.process = _CONTEXT.Process(
            target=_worker_main,
            args=(tasks_in, replies_out, self.progress, options, table, os.getpid()),
            daemon=False,  # reward code may start processes of its own
        )
        self.process.start()
        tasks_in.close()
        replies_out.close()
        self.task: Task | None = None
        self.assigned_at = 0.0
        self.tasks_done = 0

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    @property
    def busy(self) -> bool:
        return self.task is not None

    def assign(self, task: Task) -> None:
        # The clock starts now: worker start-up and unpickling count towards the first unit.
        self.progress[_INDEX] = 0
        self.progress[_STARTED] = self.assigned_at = time.monotonic()
        self.outbox.send(task.message())
        self.task = task

    def current(self) -> tuple[int, float]:
        return int(self.progress[_INDEX]), float(self.progress[_STARTED])

    def kill(self) -> None:
        """SIGKILL the worker and every process below it."""
        if self.process.is_alive():
            kill_tree(self.pid)
        self.process.join()
        self.conn.close()
        self.outbox.close()


class _BatchSizer:
    """Units per task from the measured seconds per unit (a moving average)."""

    def __init__(self, workers: int, max_batch: int) -> None:
        self.workers = workers
        self.max_batch = max_batch
        self.per_item_s: float | None = None

    def record(self, items: int, seconds: float) -> None:
        if items:
            sample = max(seconds, 1e-6) / items
            previous = self.per_item_s
            # Down at once, up slowly: small first batches overstate the cost of an item (a round
            # trip weighs on few items), and a run of slow items still grows the average.
            if previous is None or sample < previous:
                self.per_item_s = sample
            else:
                self.per_item_s = 0.7 * previous + 0.3 * sample

    def size(self, queued: int) -> int:
        wanted = FIRST_BATCH if self.per_item_s is None else int(BATCH_TARGET_S / self.per_item_s)
        # Share what is queued between the workers: no worker idles while another holds a backlog.
        wanted = min(wanted, -(-queued // self.workers))
        return max(1, min(self.max_batch, wanted))


class WorkerPool:
    """`run(items)` -> verdict per key; `run_tasks(feed)` for other kinds of work. Workers are
    reused across runs (and forked again when `bind` gives them another table); close() stops
    them."""

    def __init__(
        self,
        workers: int,
        timeout_s: float,
        options: RewardOptions | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.size = workers
        self.timeout_s = timeout_s
        self.options = options or RewardOptions()
        self.max_batch = max_batch
        self._sizers: dict[str, _BatchSizer] = {}
        self._table: Any = None
        self._workers: list[_Worker] = []
        self._dying: list[_Worker] = []  # killed, not reaped yet
        self.replaced = 0
        # Non-daemonic workers would hold up interpreter exit if the pool were never closed.
        self._finalizer = weakref.finalize(self, _stop_all, self._workers, self._dying)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill the workers and everything their reward code started; the pool can be reused."""
        self._finalizer()
        self._finalizer = weakref.finalize(self, _stop_all, self._workers, self._dying)

    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def bind(self, table: Any) -> None:
        """Workers forked from now on hold `table` (inherited, not copied, where there is fork);
        workers holding another one are stopped."""
        if table is not self._table:
            for worker in self._dying:  # stopped with the previous table: long dead, reaped now
                worker.kill()
            self._dying.clear()
            _stop_workers(self._workers, self._dying)
            self._table = table

    def run(self, items: Sequence[WorkItem], on_results: OnResults | None = None) -> dict[str, RewardResult]:
        """Judge every item; a hung item is `timeout`, a crashed worker's item `error`."""
        return self.run_stream([list(items)], on_results)

    def run_stream(
        self, chunks: Iterable[list[WorkItem]], on_results: OnResults | None = None
    ) -> dict[str, RewardResult]:
        """Like run, for items that arrive in chunks: the caller produces the next chunk (when
        iterated) while the workers judge earlier ones. `on_results` sees each batch's verdicts
        as they arrive (an exception it raises stops the run)."""
        feed = _ItemFeed(chunks, on_results, self.size)
        self.run_tasks(feed)
        return feed.results

    def run_tasks(self, feed: Feed) -> None:
        """Run the feed's tasks until it has none left and none is in flight."""
        while True:
            producing = feed.refill()
            for index in range(self.size):
                if index < len(self._workers) and self._workers[index].busy:
                    continue
                task = feed.take(self._task_size)
                if task is None:
                    break
                self._assign(index, task)
            if not any(w.busy for w in self._workers):
                if not producing:
                    return
                continue
            # Wait for a worker only when the feed has nothing to produce right now.
            self._collect(block=not feed.hungry())

    def _task_size(self, kind: str, queued: int) -> int:
        sizer = self._sizers.get(kind)
        if sizer is None:
            sizer = self._sizers[kind] = _BatchSizer(self.size, self.max_batch)
        return sizer.size(queued)

    def _assign(self, index: int, task: Task) -> None:
        if index == len(self._workers):
            self._workers.append(self._new_worker())
        try:
            self._workers[index].assign(task)
        except OSError:  # died while idle (killed from outside): a fresh worker takes the task
            self._workers[index].kill()
            self._workers[index] = self._new_worker()
            self.replaced += 1
            self._workers[index].assign(task)

    def _new_worker(self) -> _Worker:
        worker = _Worker(self.options, self._table)
        shared_reaper().watch(worker.pid)
        return worker

    def _collect(self, block: bool) -> None:
        """Hand finished tasks their replies (waiting for one only when `block`), after enforcing
        deadlines."""
        busy = {w.conn: w for w in self._workers if w.busy}
        deadline = min(w.current()[1] for w in busy.values()) + self.timeout_s
        wait_s = max(0.0, min(POLL_S, deadline - time.monotonic())) if block else 0.0
        for conn in multiprocessing.connection.wait(list(busy), timeout=wait_s):
            worker = busy[conn]
            task = worker.task
            assert task is not None
            try:
                reply = worker.conn.recv()
            except (EOFError, OSError):
                self._replace(worker, "error", "worker process died")
                continue
            if worker.tasks_done:  # a worker's first task also paid for its start
                self._sizers[task.kind].record(len(task), time.monotonic() - worker.assigned_at)
            worker.tasks_done += 1
            worker.task = None
            task.finish(reply)
        now = time.monotonic()
        for worker in busy.values():
            if worker.busy and now - worker.current()[1] > self.timeout_s:
                self._replace(worker, "timeout", f"no verdict within {self.timeout_s:g}s; worker killed")

    def _replace(self, worker: _Worker, status: str, message: str) -> None:
        """Kill the worker (and its processes) and start another; its task's current unit gets
        `status`, the task's owner queues the rest again."""
        index, _ = worker.current()
        task = worker.task
        assert task is not None
        worker.kill()
        shared_reaper().forget(worker.pid)
        self._workers[self._workers.index(worker)] = self._new_worker()
        self.replaced += 1
        task.fail(index, error_result(message, status))


class _ItemBatch:
    """Items judged together; their verdicts go to the feed that made the batch."""

    kind = "items"

    def __init__(self, items: list[WorkItem], feed: _ItemFeed) -> None:
        self.items = items
        self.feed = feed

    def __len__(self) -> int:
        return len(self.items)

    def message(self) -> tuple[Handler, Any]:
        return judge_columns, _columns(self.items)

    def finish(self, reply: list[Compact]) -> None:
        self.feed.deliver({item.key: expand(v) for item, v in zip(self.items, reply, strict=True)})

    def fail(self, index: int, verdict: RewardResult) -> None:
        self.feed.queue.extendleft(reversed(self.items[:index] + self.items[index + 1 :]))
        self.feed.deliver({self.items[index].key: verdict})


class _ItemFeed:
    """Work items from the caller's chunks (pulled while the workers judge earlier ones)."""

    def __init__(self, chunks: Iterable[list[WorkItem]], on_results: OnResults | None, workers: int) -> None:
        self.pending = iter(chunks)
        self.more = True
        self.queue: deque[WorkItem] = deque()
        self.results: dict[str, RewardResult] = {}
        self.report = on_results or (lambda fresh: None)
        self.enough = workers * MAX_BATCH

    def refill(self) -> bool:
        if self.more and len(self.queue) < self.enough:
            chunk = next(self.pending, None)
            self.more = chunk is not None
            self.queue.extend(chunk or [])
        return self.more

    def hungry(self) -> bool:
        return self.more and len(self.queue) < self.enough

    def take(self, size: Callable[[str, int], int]) -> _ItemBatch | None:
        if not self.queue:
            return None
        return _ItemBatch(_take_batch(self.queue, size(_ItemBatch.kind, len(self.queue))), self)

    def deliver(self, fresh: dict[str, RewardResult]) -> None:
        self.results.update(fresh)
        self.report(fresh)


def _stop_workers(workers: list[_Worker], dying: list[_Worker]) -> None:
    """SIGKILL every worker's tree at once (see kill_trees); they are reaped later (`dying`),
    so that their teardown overlaps with the caller's work."""
    kill_trees([w.pid for w in workers if w.process.is_alive()], wait=False)
    for worker in workers:
        shared_reaper().forget(worker.pid)
    dying += workers
    workers.clear()


def _stop_all(workers: list[_Worker], dying: list[_Worker]) -> None:
    _stop_workers(workers, dying)
    for worker in dying:
        worker.kill()  # already killed: reaps it
    dying.clear()


_REAPER: list[Reaper] = []


def shared_reaper() -> Reaper:
    """The reaper of every pool in this process (see scoring.processes), started with the first
    worker: one fork per process rather than per pool. It exits with the process."""
    if _REAPER and (_REAPER[0].owner != os.getpid() or not _REAPER[0].process.is_alive()):
        _REAPER.clear()  # inherited through a fork, or killed from outside: start another
    if not _REAPER:
        _REAPER.append(Reaper(_CONTEXT))
        atexit.register(_REAPER[0].close)
    return _REAPER[0]


def default_workers() -> int:
    """One worker per available core."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
