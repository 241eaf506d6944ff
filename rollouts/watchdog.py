"""Progress watchdog: find a server that takes requests and makes no progress.

vLLM can hang with `/health` still answering 200; its requests then only time out one by one, and
their retries go to the same hung engine. So each server's progress is watched while requests are
in flight there:

- progress is vLLM's generation-token counter (`vllm:generation_tokens_total` on `/metrics`)
  moving, when the server exports it; otherwise (and also) a request finishing with an answer, or
  a piece of a streamed answer arriving;
- no progress for the stall limit (`--stall-timeout`, default 120 s) with requests in flight is a
  stall: a managed server is restarted (its requests are retried), an external one is ejected
  (its requests in flight are cut and retried elsewhere) and a warning says why.

A server taken out of rotation, for a stall or for failing requests, comes back only when a real
1-token generation succeeds, not on `/health` alone (`WatchedEndpoint.healthy`).

A request's silence limit (rollouts.client) does not run out before its first byte while the
server's /metrics reports requests waiting (`vllm:num_requests_waiting`): a queued request is not
cut and sent again. A dead or hung server is still found: its /metrics fails, or its token counter
stops while requests wait, which is a stall.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from rollouts.client import OpenAIEndpoint, RequestError, check_health
from rollouts.quarantine import PromptGuard
from rollouts.types import CompletionBatch, PromptInput, SamplingParams
from rollouts.vllm_metrics import MetricsUnavailable, fetch_metrics
from server.vllm import PROBE_TIMEOUT_S, probe_completion

DEFAULT_STALL_TIMEOUT_S = 120.0
MAX_WATCH_INTERVAL_S = 5.0
MIN_WATCH_INTERVAL_S = 0.2
STALLED_KIND = "stalled"
# How long one /metrics reading answers "does the server queue requests?" for every request asking.
QUEUE_READING_S = 0.5


def echo_warning(message: str) -> None:
    print(f"rollouts: {message}", file=sys.stderr, flush=True)


@dataclass
class Progress:
    """When one server last made progress, counted only while it has requests in flight."""

    clock: Callable[[], float] = time.monotonic
    in_flight: int = 0
    last_progress: float = field(init=False)
    generation_tokens: int | None = None  # the last reading of vLLM's counter
    metrics: bool | None = None  # None: not known yet; False: the server exports none

    def __post_init__(self) -> None:
        self.last_progress = self.clock()

    def request_started(self) -> None:
        if self.in_flight == 0:  # time without requests is not a stall
            self.last_progress = self.clock()
        self.in_flight += 1

    def request_ended(self, *, answered: bool) -> None:
        self.in_flight -= 1
        if answered:
            self.last_progress = self.clock()

    def saw_stream_data(self) -> None:
        self.last_progress = self.clock()

    def saw_generation_tokens(self, total: int) -> None:
        # Any change counts: a restarted server counts from zero again.
        if self.generation_tokens is not None and total != self.generation_tokens:
            self.last_progress = self.clock()
        self.generation_tokens = total
        self.metrics = True

    def restarted(self) -> None:
        self.last_progress = self.clock()
        self.generation_tokens = None

    def stalled_for(self) -> float:
        return self.clock() - self.last_progress if self.in_flight else 0.0

    def signal(self) -> str:
        if self.metrics:
            return "vllm:generation_tokens_total did not move and no request finished"
        return "no request finished or streamed; the server exports no vLLM /metrics"


@dataclass(eq=False)
class WatchedEndpoint(OpenAIEndpoint):
    """An OpenAIEndpoint whose progress is watched; it can be paused (a managed server being
    restarted: requests wait instead of failing), ejected (requests in flight are cut), and
    guarded against poison prompts (managed servers)."""

    guard: PromptGuard | None = None
    # Managed servers: a connection error may be the server dying, so requests wait for the
    # supervisor's next look instead of spending their attempts on a dead port.
    hold_on_connection_error: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.progress = Progress()
        self.on_stream_data = self.progress.saw_stream_data
        self.ejected: str | None = None  # why, while out of rotation after a stall
        self.needs_probe = False  # the last request failed: /health alone cannot re-admit
        self._available = asyncio.Event()
        self._available.set()
        self._requests: set[asyncio.Task[Any]] = set()  # tasks with a request in flight here
        self._cut: set[asyncio.Task[Any]] = set()
        self._held_since: float | None = None
        self._queue_reading: asyncio.Future[bool] | None = None
        self._queue_read_at = 0.0

    async def complete(
        self, prompt: PromptInput, *, n: int, params: SamplingParams, seed: int | None
    ) -> CompletionBatch:
        if not self._available.is_set():
            await self._available.wait()
        if self.ejected is not None:
            raise RequestError(STALLED_KIND, f"out of rotation: {self.ejected}", retryable=True,
                               endpoint_down=True)
        key = await self.guard.admit(prompt) if self.guard is not None else None
        answered, reached = False, True
        # `eject` cancels the tasks waiting here; each runs one request at a time (an engine
        # worker), and a cut is told from a real cancellation as asyncio.timeout does.
        task = asyncio.current_task()
        assert task is not None
        self._requests.add(task)
        self.progress.request_started()
        try:
            batch = await super().complete(prompt, n=n, params=params, seed=seed)
            answered = True
        except asyncio.CancelledError:
            if task in self._cut and task.uncancel() == 0:
                raise RequestError(STALLED_KIND, f"cut: {self.ejected}", retryable=True,
                                   endpoint_down=True) from None
            raise
        except RequestError as exc:
            # A 4xx is the server refusing one request (a prompt over the context length): an
            # answer, and no sign of trouble.
            answered = exc.kind.startswith("http_4")
            reached = not exc.endpoint_down
            self.needs_probe = not answered
            if exc.kind == "connection" and self.hold_on_connection_error:
                self._hold()
            raise
        finally:
            self._requests.discard(task)
            self._cut.discard(task)
            self.progress.request_ended(answered=answered)
            if key is not None and self.guard is not None:
                self.guard.finished(key, answered=answered, reached=reached)
        self.needs_probe = False
        return batch

    async def queued_on_server(self) -> bool:
        """vLLM's /metrics reports requests waiting; one reading serves every request that asks
        within QUEUE_READING_S (many queued requests fall due together)."""
        if self.progress.metrics is False or self.ejected is not None:
            return False
        now = time.monotonic()
        if self._queue_reading is None or now - self._queue_read_at > QUEUE_READING_S:
            self._queue_read_at = now
            self._queue_reading = asyncio.ensure_future(self._read_queue())
        return await asyncio.shield(self._queue_reading)

    async def _read_queue(self) -> bool:
        try:
            metrics = await fetch_metrics(self.session, self.root_url)
        except MetricsUnavailable:
            return False
        return metrics.num_requests_waiting > 0

    # -- control -------------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return not self._available.is_set()

    def pause(self) -> None:
        """Requests wait (they are not failed) until `resume`: the server is being restarted."""
        self._available.clear()
        self._held_since = None

    def resume(self) -> None:
        self.progress.restarted()
        self._available.set()

    def _hold(self) -> None:
        if self._available.is_set():
            self._available.clear()
            self._held_since = time.monotonic()

    def release_hold(self, min_age_s: float) -> None:
        """The supervisor saw the server running: a hold set at least min_age_s ago ends."""
        held = self._held_since
        if held is not None and time.monotonic() - held >= min_age_s:
            self._held_since = None
            self._available.set()

    def eject(self, reason: str) -> None:
        """Out of rotation until a 1-token generation succeeds; requests in flight are cut (and
        retried, on another server when there is one)."""
        self.ejected = reason
        self.needs_probe = True
        for task in self._requests - self._cut:
            self._cut.add(task)
            task.cancel()
        echo_warning(f"ejected {self.name}: {reason}; it is re-admitted once a 1-token "
                     "generation succeeds")

    async def healthy(self) -> bool:
        """/health answers 200, and, after failures or a stall, a 1-token generation succeeds."""
        if not await check_health(self.session, self.root_url):
            return False
        if not (self.needs_probe or self.ejected):
            return True
        if not await probe_completion(self.session, self.root_url, self.model, PROBE_TIMEOUT_S,
                                      self.api_key):
            return False
        if self.ejected is not None:
            echo_warning(f"re-admitted {self.name}: a 1-token generation succeeded")
        self.ejected = None
        self.needs_probe = False
        return True


OnStall = Callable[[WatchedEndpoint, str], None]


class ProgressWatch:
    """Reads each server's generation-token counter and reports a stall through `on_stall`
    (once per stall: the handler ejects or restarts, which resets the server's progress)."""

    def __init__(
        self,
        endpoints: Sequence[WatchedEndpoint],
        stall_timeout_s: float,
        on_stall: OnStall,
    ) -> None:
        self.endpoints = list(endpoints)
        self.stall_timeout_s = stall_timeout_s
        self.on_stall = on_stall
        self.interval_s = min(
            MAX_WATCH_INTERVAL_S, max(MIN_WATCH_INTERVAL_S, stall_timeout_s / 4)
        )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await asyncio.gather(*(self._read_counter(e) for e in self.endpoints))
            for endpoint in self.endpoints:
                self._check(endpoint)

    def _check(self, endpoint: WatchedEndpoint) -> None:
        stalled = endpoint.progress.stalled_for()
        if endpoint.ejected is None and not endpoint.paused and stalled >= self.stall_timeout_s:
            reason = (
                f"no progress for {stalled:.0f}s with {endpoint.progress.in_flight} requests "
                f"in flight ({endpoint.progress.signal()})"
            )
            endpoint.progress.restarted()  # one report per stall
            self.on_stall(endpoint, reason)

    async def _read_counter(self, endpoint: WatchedEndpoint) -> None:
        if endpoint.progress.metrics is False or not endpoint.progress.in_flight:
            return
        try:
            metrics = await fetch_metrics(endpoint.session, endpoint.root_url)
        except MetricsUnavailable as exc:
            # Unreachable now (restarting, say): ask again later. Absent or not vLLM's: stop
            # asking, and rely on requests finishing.
            if not isinstance(exc.__cause__, (aiohttp.ClientError, TimeoutError, OSError)):
                endpoint.progress.metrics = False
            return
        endpoint.progress.saw_generation_tokens(metrics.generation_tokens_total)


def watched_endpoints(
    base_urls: Sequence[str],
    model: str,
    session: aiohttp.ClientSession,
    api_key: str | None,
    request_timeout_s: float | None,
    guard: PromptGuard | None = None,
) -> list[WatchedEndpoint]:
    return [
        WatchedEndpoint(url, model, session, api_key, request_timeout_s, guard=guard)
        for url in base_urls
    ]
