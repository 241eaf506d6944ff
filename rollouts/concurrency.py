"""How many sequences each server gets at once: `--max-concurrent auto` (the default) or a number.

A number is a fixed bound on requests in flight (a pool of that many workers, as always). `auto`
gives each server its own limit, counted in sequences (a request with n=16 is 16), enforced by a
`ServerLimit` (a weighted semaphore) and set every POLL_INTERVAL_S by an AIMD rule on the server's
vLLM `/metrics` (rollouts.vllm_metrics):

- new preemptions: multiply the limit by BACKOFF (the server took more than its KV cache holds);
- more sequences waiting than a small target (plus a step): cut the limit to running + target;
- waiting under the target while the limit is in use and the KV cache not all but full: grow it
  (doubling while still probing from the start, then by a small step), so the scheduler never
  runs out of work;
- otherwise hold. A full KV cache alone is no reason to back off: a server bound by its cache
  runs best with it full; more sequences would only wait, which the waiting rule catches.
The start is the server's max_num_seqs when known (a managed server knows its flags), else
UNKNOWN_START_SEQUENCES or FALLBACK_REQUESTS requests' worth, whichever is more. A server without
a readable /metrics gets a fixed FALLBACK_REQUESTS requests, said once. Every change is kept with
its time, for the progress bar and the summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rollouts.errors import UserInputError
from rollouts.vllm_metrics import MetricsUnavailable, VllmMetrics

AUTO: Literal["auto"] = "auto"
MaxConcurrent = int | Literal["auto"]

POLL_INTERVAL_S = 1.0
FALLBACK_REQUESTS = 64  # requests in flight when a server's load cannot be read (the old default)
# Where to start when max_num_seqs is unknown, in sequences (or FALLBACK_REQUESTS requests if more):
# vLLM's own default max_num_seqs on smaller GPUs; on larger ones probing doubles it in a second.
UNKNOWN_START_SEQUENCES = 256
MIN_SEQUENCES = 1
MAX_SEQUENCES = 4096  # per server: far above any max_num_seqs in use
MAX_WORKERS = 16384  # across servers: idle workers cost memory, not time
BACKOFF = 0.7
KV_NEAR_FULL = 0.99
WAITING_TARGET_FRACTION = 0.01  # of running sequences: keep this many queued, at least a request
GROWTH_STEP_FRACTION = 0.01
PROBE_GROWTH = 1.0  # double per reading until the first sign of a full server


def parse_max_concurrent(value: object, where: str = "--max-concurrent") -> MaxConcurrent:
    """'auto' or a positive whole number; a clear error otherwise."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        number = int(str(value))
    except ValueError:
        number = 0
    if number < 1 or isinstance(value, bool | float):
        raise UserInputError(f"{where} must be 'auto' or a whole number >= 1, not {value!r}")
    return number


def fixed_requests(max_concurrent: MaxConcurrent) -> int:
    """Requests in flight for a path that has no adaptive limits (yet): the number, or the
    fallback for `auto`."""
    return FALLBACK_REQUESTS if max_concurrent == AUTO else max_concurrent


def max_num_seqs_from_args(args: Sequence[str]) -> int | None:
    """The value of vLLM's --max-num-seqs among server flags, if given."""
    for index, arg in enumerate(args):
        if arg.startswith("--max-num-seqs="):
            return int(arg.split("=", 1)[1])
        if arg == "--max-num-seqs" and index + 1 < len(args):
            return int(args[index + 1])
    return None


class ServerLimit:
    """A weighted semaphore of sequences for one server, with a limit that may change.

    Waiters are served first come, first served; a request larger than the limit still runs
    alone, so nothing waits forever."""

    def __init__(self, name: str, limit: int, *, adaptive: bool) -> None:
        self.name = name
        self.limit = limit
        self.adaptive = adaptive
        self.in_flight = 0
        self.note = ""  # why the limit is what it is (fallback reason), for the summary
        self.history: list[tuple[float, int]] = [(time.monotonic(), limit)]
        self._waiters: deque[tuple[asyncio.Future[None], int]] = deque()

    @property
    def queued(self) -> int:
        return sum(seqs for _, seqs in self._waiters)

    def load(self) -> float:
        """Sequences held and waiting per sequence of limit: routing sends work to the lowest."""
        return (self.in_flight + self.queued) / self.limit

    async def acquire(self, sequences: int) -> None:
        if not self._waiters and self._fits(sequences):
            self.in_flight += sequences
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((waiter, sequences))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(sequences)  # granted just as we were cancelled: give it back
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove((waiter, sequences))
            raise

    def release(self, sequences: int) -> None:
        self.in_flight -= sequences
        self._wake()

    def set_limit(self, limit: int) -> None:
        if limit != self.limit:
            self.limit = limit
            self.history.append((time.monotonic(), limit))
            self._wake()

    def _fits(self, sequences: int) -> bool:
        return self.in_flight == 0 or self.in_flight + sequences <= self.limit

    def _wake(self) -> None:
        while self._waiters and self._fits(self._waiters[0][1]):
            waiter, sequences = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += sequences
                waiter.set_result(None)

    def summary(self, started: float) -> dict[str, Any]:
        return {
            "server": self.name,
            "mode": "auto" if self.adaptive else f"fixed ({self.note})",
            "final_sequences": self.limit,
            "history": [[round(t - started, 1), limit] for t, limit in self.history],
        }


@dataclass
class Aimd:
    """The rule that turns one /metrics reading into a new limit (pure: no I/O, no clock)."""

    limit: int
    sequences_per_request: int
    probing: bool = True
    last_preemptions: int | None = None

    def target_waiting(self, running: int) -> int:
        return max(self.sequences_per_request, math.ceil(WAITING_TARGET_FRACTION * running))

    def step(self) -> int:
        return max(self.sequences_per_request, int(GROWTH_STEP_FRACTION * self.limit))

    def update(self, metrics: VllmMetrics, in_flight: int) -> int:
        preempted = (
            metrics.num_preemptions_total - self.last_preemptions
            if self.last_preemptions is not None
            else 0
        )
        self.last_preemptions = metrics.num_preemptions_total
        waiting = metrics.num_requests_waiting
        target = self.target_waiting(metrics.num_requests_running)
        kv_full = (metrics.kv_cache_usage_perc or 0.0) >= KV_NEAR_FULL
        if preempted > 0:
            self.probing = False
            new = int(self.limit * BACKOFF)
        elif waiting > target + self.step():
            self.probing = False
            # What runs plus the target: measured against what we hold now, so readings taken
            # before earlier cuts took effect (requests still finishing) do not cut again.
            new = min(self.limit - self.sequences_per_request, in_flight - (waiting - target))
        elif (
            waiting < target
            and not kv_full
            and in_flight + self.sequences_per_request > self.limit
        ):
            growth = int(self.limit * PROBE_GROWTH) if self.probing else self.step()
            new = self.limit + max(growth, self.sequences_per_request)
        else:
            new = self.limit
        self.limit = min(MAX_SEQUENCES, max(MIN_SEQUENCES, self.sequences_per_request, new))
        return self.limit


MetricsReader = Callable[[], Awaitable[VllmMetrics]]


@dataclass
class AdaptiveLimits:
    """The limits of one connection's servers and the loop that adapts them (`watch`)."""

    readers: dict[str, MetricsReader | None]  # server name -> its /metrics, None: cannot be read
    sequences_per_request: int
    max_num_seqs: int | None = None
    interval_s: float | None = None  # None: POLL_INTERVAL_S
    warn: Callable[[str], None] = print
    limits: dict[str, ServerLimit] = field(init=False)
    started: float = field(init=False, default_factory=time.monotonic)

    def __post_init__(self) -> None:
        start = self.max_num_seqs or max(
            UNKNOWN_START_SEQUENCES, FALLBACK_REQUESTS * self.sequences_per_request
        )
        self.limits = {name: ServerLimit(name, start, adaptive=True) for name in self.readers}
        self._rules = {name: Aimd(start, self.sequences_per_request) for name in self.readers}

    async def watch(self) -> None:
        """Read every adaptive server's /metrics each interval and set its limit."""
        names = list(self.readers)
        while True:
            adaptive = [n for n in names if self.limits[n].adaptive]
            if not adaptive:
                return
            await asyncio.gather(*(self._poll(name) for name in adaptive))
            await asyncio.sleep(self.interval_s or POLL_INTERVAL_S)

    async def _poll(self, name: str) -> None:
        limit, reader, rule = self.limits[name], self.readers[name], self._rules[name]
        try:
            if reader is None:
                raise MetricsUnavailable("not an HTTP server")
            metrics = await reader()
        except MetricsUnavailable as exc:
            if rule.last_preemptions is None:  # never read: this server has no usable /metrics
                self._fall_back(limit, exc.reason)
            return  # read before (a restart, a blip): keep the limit until it answers again
        limit.set_limit(rule.update(metrics, limit.in_flight))

    def _fall_back(self, limit: ServerLimit, reason: str) -> None:
        limit.adaptive = False
        limit.note = reason
        limit.set_limit(FALLBACK_REQUESTS * self.sequences_per_request)
        self.warn(
            f"{limit.name}: cannot read its load ({reason}); keeping a fixed "
            f"{FALLBACK_REQUESTS} requests in flight (set --max-concurrent to choose)"
        )

    def describe(self) -> str:
        """For the progress bar: the limit in force per server, in sequences."""
        return ",".join(str(limit.limit) for limit in self.limits.values())

    def summary(self) -> list[dict[str, Any]]:
        return [limit.summary(self.started) for limit in self.limits.values()]


def auto_workers(servers: int, sequences_per_request: int) -> int:
    """Workers for `auto`: enough to fill every server's highest possible limit."""
    return min(MAX_WORKERS, servers * max(1, math.ceil(MAX_SEQUENCES / sequences_per_request)))
