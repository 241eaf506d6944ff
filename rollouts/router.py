"""Routing requests over several servers.

Least-outstanding routing: each request goes to the healthy server with the fewest requests in
flight, except that samples of one prompt stay on the server that got the prompt first, so its
prefix cache serves them. A server that cannot be reached, or fails several requests in a row, is
taken out of rotation; a background health check puts it back once it answers. A server re-admitted
that fails again before serving one request (it answers the 1-token probe but not real requests)
waits twice as long for its next check each time, up to READMIT_BACKOFF_MAX_S; one success brings
the wait back to the health interval. When no server is
left, requests wait for one to come back, up to a bounded time, and then the run stops
(`ServerUnavailable`): that is the server being gone, not one request failing.

With per-server limits (`--max-concurrent auto`, rollouts.concurrency), a request also waits for
room on its server, counted in sequences, and new prompts go to the least loaded server relative
to its limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from rollouts.concurrency import ServerLimit
from rollouts.errors import ServerUnavailable
from rollouts.types import Backend

FAILURES_BEFORE_EJECTION = 3
HEALTH_INTERVAL_S = 1.0
READMIT_BACKOFF_MAX_S = 60.0
HealthCheck = Callable[[Backend], Awaitable[bool]]


@dataclass(eq=False)
class EndpointState:
    backend: Backend
    outstanding: int = 0
    healthy: bool = True
    consecutive_failures: int = 0
    requests: int = 0
    failures: int = 0
    ejections: int = 0
    readmissions: int = 0
    # Re-admitted and not yet through one request: a failure now means the re-admission failed.
    on_probation: bool = False
    readmit_delay_s: float = 0.0  # wait before the next health check after an ejection
    next_check_at: float = 0.0

    @property
    def name(self) -> str:
        return self.backend.name


@dataclass(eq=False)
class Router:
    backends: list[Backend]
    health_check: HealthCheck
    health_interval_s: float = field(default_factory=lambda: HEALTH_INTERVAL_S)
    server_wait_s: float = 600.0
    affinity_size: int = 65536
    limits: dict[str, ServerLimit] | None = None  # by server name; None: no per-server bound
    endpoints: list[EndpointState] = field(init=False)
    _affinity: OrderedDict[str, EndpointState] = field(init=False, default_factory=OrderedDict)
    _any_healthy: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _health_task: asyncio.Task[None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not self.backends:
            raise ValueError("a router needs at least one backend")
        self.endpoints = [
            EndpointState(b, readmit_delay_s=self.health_interval_s) for b in self.backends
        ]
        self._any_healthy.set()

    async def __aenter__(self) -> Router:
        self._health_task = asyncio.create_task(self._health_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._health_task:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task

    @property
    def in_flight(self) -> int:
        return sum(e.outstanding for e in self.endpoints)

    async def wait_until_reachable(self) -> None:
        """Before the run: check every server, and wait (bounded) until at least one answers."""
        results = await asyncio.gather(*(self.health_check(e.backend) for e in self.endpoints))
        for endpoint, healthy in zip(self.endpoints, results, strict=True):
            endpoint.healthy = healthy
        self._refresh_event()
        await self._wait_for_healthy()

    async def acquire(self, affinity_key: str, sequences: int = 1) -> EndpointState:
        """Choose a server for one request attempt of `sequences` samples and count it as in
        flight until `release`, waiting for room under the server's limit when there is one.

        (A plain pair of calls rather than a context manager: this is the hot path.)"""
        endpoint = self._pick(affinity_key)
        while endpoint is None:
            await self._wait_for_healthy()
            endpoint = self._pick(affinity_key)
        if self.limits is not None:
            await self.limits[endpoint.name].acquire(sequences)
        endpoint.outstanding += 1
        endpoint.requests += 1
        return endpoint

    def release(self, endpoint: EndpointState, sequences: int = 1) -> None:
        endpoint.outstanding -= 1
        if self.limits is not None:
            self.limits[endpoint.name].release(sequences)

    def record_success(self, endpoint: EndpointState) -> None:
        endpoint.consecutive_failures = 0
        if endpoint.on_probation:
            endpoint.on_probation = False
            endpoint.readmit_delay_s = self.health_interval_s

    def record_failure(self, endpoint: EndpointState, *, unreachable: bool) -> None:
        endpoint.failures += 1
        endpoint.consecutive_failures += 1
        if unreachable or endpoint.consecutive_failures >= FAILURES_BEFORE_EJECTION:
            self._eject(endpoint)

    def _pick(self, affinity_key: str) -> EndpointState | None:
        """The prompt's sticky server if healthy, else the least busy healthy one (or None)."""
        if len(self.endpoints) == 1:
            only = self.endpoints[0]
            return only if only.healthy else None
        sticky = self._affinity.get(affinity_key)
        if sticky is not None and sticky.healthy:
            self._affinity.move_to_end(affinity_key)
            return sticky
        healthy = [e for e in self.endpoints if e.healthy]
        if not healthy:
            return None
        chosen = min(healthy, key=self._load)
        self._remember(affinity_key, chosen)
        return chosen

    def _load(self, endpoint: EndpointState) -> float:
        if self.limits is None:
            return endpoint.outstanding
        return self.limits[endpoint.name].load()

    def _remember(self, key: str, endpoint: EndpointState) -> None:
        self._affinity[key] = endpoint
        if len(self._affinity) > self.affinity_size:
            self._affinity.popitem(last=False)

    def _eject(self, endpoint: EndpointState) -> None:
        if endpoint.healthy:
            endpoint.healthy = False
            endpoint.ejections += 1
            if endpoint.on_probation:  # failed again before serving anything: back off
                endpoint.on_probation = False
                endpoint.readmit_delay_s = min(READMIT_BACKOFF_MAX_S, 2 * endpoint.readmit_delay_s)
            endpoint.next_check_at = time.monotonic() + endpoint.readmit_delay_s
            self._refresh_event()

    def _refresh_event(self) -> None:
        if any(e.healthy for e in self.endpoints):
            self._any_healthy.set()
        else:
            self._any_healthy.clear()

    async def _wait_for_healthy(self) -> None:
        if self._any_healthy.is_set():
            return
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._any_healthy.wait(), timeout=self.server_wait_s)
        except TimeoutError:
            names = ", ".join(e.name for e in self.endpoints)
            raise ServerUnavailable(
                f"no server answered for {time.monotonic() - started:.0f}s ({names}); "
                "check the servers, then rerun the same command to resume"
            ) from None

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            now = time.monotonic()
            down = [e for e in self.endpoints if not e.healthy and e.next_check_at <= now]
            if not down:
                continue
            results = await asyncio.gather(*(self.health_check(e.backend) for e in down))
            for endpoint, healthy in zip(down, results, strict=True):
                if healthy:
                    endpoint.healthy = True
                    endpoint.consecutive_failures = 0
                    endpoint.readmissions += 1
                    endpoint.on_probation = True
            self._refresh_event()
