"""A pool of worker processes that judge items under a hard per-item wall-clock limit.

Items travel in batches and verdicts come back one message per batch: pickling and pipe round
trips cost more than a cheap verdict. Each worker writes the index and start time of the item it
is on into shared memory, so the parent knows which item hangs without a message per item. An item
that runs past the limit has its worker killed (SIGKILL: a C extension stuck in a loop ignores
anything softer) and replaced; the item becomes a `timeout` verdict and the rest of its batch
(finished items included, their verdicts died with the worker) is queued again. A worker that dies
by itself makes its current item an `error`. Reward code runs in each worker's main thread, where
signal-based libraries behave.

Workers are forked (where the platform has fork): a new or replacement worker costs milliseconds
and starts with the reward modules already imported; the child runs only reward code, never the
parent's other threads' libraries. Elsewhere the forkserver is used, and a script using the pool
needs an `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.sharedctypes
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from scoring.rewards.base import RewardOptions
from scoring.rewards.registry import get_reward_fn
from scoring.types import RewardResult

# Items per batch: enough to amortise a round trip, few enough to spread over the workers.
MAX_BATCH = 64
BATCHES_PER_WORKER = 4
STREAM_BATCH = 32
# How often the parent wakes to check deadlines when no worker has anything to say.
POLL_S = 0.5
# Imported once by a forkserver (platforms without fork) instead of by every worker.
PRELOAD = ["scoring.score_cli"]
# Shared progress slots: index of the item being judged, and when it started (time.monotonic).
_INDEX, _STARTED = 0, 1

if "fork" in multiprocessing.get_all_start_methods():
    _CONTEXT: Any = multiprocessing.get_context("fork")
else:
    _CONTEXT = multiprocessing.get_context("forkserver")
    _CONTEXT.set_forkserver_preload(PRELOAD)


@dataclass(frozen=True)
class WorkItem:
    """One distinct thing to judge; `key` identifies its verdict (see scoring.scorer.item_key)."""

    key: str
    reward_fn: str
    answer: str
    ground_truth: Any
    data_source: str
    extra_info: dict[str, Any] | None


def error_result(message: str, status: str = "error") -> RewardResult:
    return RewardResult(
        score=0.0, acc=False, pred=None, status=status, extra={"score_error": message}  # type: ignore[arg-type]
    )


def judge_item(item: WorkItem, options: RewardOptions) -> RewardResult:
    """Run one reward function; its exceptions become an `error` verdict, never a crash."""
    try:
        reward = get_reward_fn(item.reward_fn, options)
        return reward.judge(item.answer, item.ground_truth, item.data_source, item.extra_info)
    except Exception as exc:  # reward code (user files included) may raise anything
        return error_result(f"{type(exc).__name__}: {exc}")


def _worker_main(
    conn: multiprocessing.connection.Connection,
    progress: Any,
    options: RewardOptions,
    environ: dict[str, str],
    cwd: str,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # A forkserver keeps the environment and directory of its own start; take the parent's now.
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(cwd)
    while True:
        try:
            batch = conn.recv()
        except EOFError:
            return
        if batch is None:
            return
        results = []
        for index, item in enumerate(batch):
            progress[_STARTED] = time.monotonic()
            progress[_INDEX] = index
            results.append((item.key, judge_item(item, options)))
        try:
            conn.send(results)
        except Exception:  # an unpicklable extra from user code: send what can be sent
            conn.send([_picklable(key, result) for key, result in results])


def _picklable(key: str, result: RewardResult) -> tuple[str, RewardResult]:
    import pickle

    try:
        pickle.dumps(result)
    except Exception as exc:
        return key, error_result(f"cannot return verdict: {exc}")
    return key, result


class _Worker:
    """One process, its pipe, its shared progress slots, and the batch it is working through."""

    def __init__(self, options: RewardOptions) -> None:
        self.conn, child = _CONTEXT.Pipe(duplex=True)
        self.progress = multiprocessing.sharedctypes.RawArray("d", 2)
        self.process = _CONTEXT.Process(
            target=_worker_main,
            args=(child, self.progress, options, dict(os.environ), os.getcwd()),
            daemon=True,
        )
        self.process.start()
        child.close()
        self.batch: list[WorkItem] = []

    @property
    def busy(self) -> bool:
        return bool(self.batch)

    def assign(self, batch: list[WorkItem]) -> None:
        self.batch = batch
        # The clock starts now: worker start-up and unpickling count towards the first item.
        self.progress[_INDEX] = 0
        self.progress[_STARTED] = time.monotonic()
        self.conn.send(batch)

    def current(self) -> tuple[int, float]:
        return int(self.progress[_INDEX]), float(self.progress[_STARTED])

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=2)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


class WorkerPool:
    """`run(items)` -> verdict per key. Workers are reused across runs; close() stops them."""

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
        self._workers: list[_Worker] = []
        self.replaced = 0

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
        self._workers = []

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def run(
        self, items: Sequence[WorkItem], on_done: Callable[[int], None] | None = None
    ) -> dict[str, RewardResult]:
        """Judge every item; a hung item is `timeout`, a crashed worker's item `error`."""
        size = max(1, min(self.max_batch, -(-len(items) // (self.size * BATCHES_PER_WORKER))))
        return self.run_stream([list(items)], on_done, batch_size=size)

    def run_stream(
        self,
        chunks: Iterable[list[WorkItem]],
        on_done: Callable[[int], None] | None = None,
        batch_size: int | None = None,
    ) -> dict[str, RewardResult]:
        """Like run, for items that arrive in chunks: the caller produces the next chunk (when
        iterated) while the workers judge earlier ones."""
        results: dict[str, RewardResult] = {}
        done = on_done or (lambda n: None)
        size = batch_size or STREAM_BATCH
        queue: deque[list[WorkItem]] = deque()
        pending = iter(chunks)
        more = True
        while True:
            if more and len(queue) < self.size:
                chunk = next(pending, None)
                more = chunk is not None
                if chunk:
                    queue.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
            if queue:
                self._ensure_workers(self.size)
            for index, worker in enumerate(self._workers):
                if not worker.busy and queue:
                    self._assign(index, worker, queue.popleft())
            if not any(w.busy for w in self._workers):
                if not more and not queue:
                    return results
                continue
            # Wait for a worker only when no chunk is wanted from the caller right now.
            self._collect(results, queue, done, block=not (more and len(queue) < self.size))

    def _assign(self, index: int, worker: _Worker, batch: list[WorkItem]) -> None:
        try:
            worker.assign(batch)
        except OSError:  # died while idle (killed from outside): a fresh worker takes the batch
            worker.kill()
            self._workers[index] = _Worker(self.options)
            self.replaced += 1
            self._workers[index].assign(batch)

    def _ensure_workers(self, count: int) -> None:
        while len(self._workers) < count:
            self._workers.append(_Worker(self.options))

    def _collect(
        self,
        results: dict[str, RewardResult],
        queue: deque[list[WorkItem]],
        on_done: Callable[[int], None],
        block: bool = True,
    ) -> None:
        """Take finished batches (waiting for one only when `block`), then enforce deadlines."""
        busy = {w.conn: w for w in self._workers if w.busy}
        deadline = min(w.current()[1] for w in busy.values()) + self.timeout_s
        wait_s = max(0.0, min(POLL_S, deadline - time.monotonic())) if block else 0.0
        for conn in multiprocessing.connection.wait(list(busy), timeout=wait_s):
            worker = busy[conn]
            try:
                finished = worker.conn.recv()
            except (EOFError, OSError):
                self._replace(worker, queue, results, "error", "worker process died")
                on_done(1)
                continue
            results.update(finished)
            worker.batch = []
            on_done(len(finished))
        now = time.monotonic()
        for worker in busy.values():
            if worker.busy and now - worker.current()[1] > self.timeout_s:
                message = f"no verdict within {self.timeout_s:g}s; worker killed"
                self._replace(worker, queue, results, "timeout", message)
                on_done(1)

    def _replace(
        self,
        worker: _Worker,
        queue: deque[list[WorkItem]],
        results: dict[str, RewardResult],
        status: str,
        message: str,
    ) -> None:
        """Kill the worker; its current item gets `status`, the rest of its batch goes back."""
        index, _ = worker.current()
        worker.kill()
        batch = worker.batch
        results[batch[index].key] = error_result(message, status)
        rest = batch[:index] + batch[index + 1 :]
        if rest:
            queue.appendleft(rest)
        self._workers[self._workers.index(worker)] = _Worker(self.options)
        self.replaced += 1


def default_workers() -> int:
    """One worker per available core."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
