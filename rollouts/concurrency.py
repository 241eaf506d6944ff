"""How many sequences each server gets at once: `--max-concurrent auto` (the default) or a number.

A number is a fixed bound on requests in flight (a pool of that many workers, as always). `auto`
gives each server its own limit, counted in sequences (a request with n=16 is 16), enforced by a
`ServerLimit` (a weighted semaphore) and set every POLL_INTERVAL_S from the server's vLLM
`/metrics` (rollouts.vllm_metrics) by a `LimitRule`:

- safety first: new preemptions multiply the limit by BACKOFF (the server took more than its KV
  cache holds); more sequences waiting than a small target (plus a step) cut it to running +
  target. Either means the server is full: from then on the limit follows its capacity, growing
  a step while the server starves (waiting under the target, the limit in use, KV cache not all
  but full). A full KV cache alone is no reason to back off: a server bound by its cache runs best
  with it full; more sequences would only wait, which the waiting rule catches. While more is
  held than the limit (a cut still draining) neither rule cuts again: the queue and preemptions
  then are those of the excess, and cutting on each reading took a limit to a twentieth.
- a server whose batch is known to stop at or below the CUDA-graph edge (the servers rollouts
  starts: --max-num-seqs 512) is held at that batch plus the waiting target from the start, by
  the rules above alone: its queue is never empty, so a sequence starts the step another ends.
- until then, the limit is the level that generates the most tokens per second, measured from
  vLLM's token counter: more sequences are not always faster (a batch larger than the largest
  CUDA graph vLLM captured runs without one, several times slower per step on a small model). The
  search starts at that edge (START_SEQUENCES, or the server's max_num_seqs when known and lower)
  and holds it; now and then it tries a neighbour, and where more sequences pay it climbs on in
  small steps that grow while they pay (a step past a slow edge takes seconds to undo), so it
  follows a model that runs faster past the edge and a changing workload (see LimitRule).
A server without a readable /metrics gets a fixed FALLBACK_REQUESTS requests, said once; one
without a token counter is held by the safety rules alone. Every change is kept with its time,
and every level measured with its rate, for the progress bar and the summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from rollouts.types import parse_auto_or_count
from rollouts.vllm_metrics import MetricsUnavailable, VllmMetrics

AUTO: Literal["auto"] = "auto"
MaxConcurrent = int | Literal["auto"]

POLL_INTERVAL_S = 1.0
FALLBACK_REQUESTS = 64  # requests in flight when a server's load cannot be read (the old default)
# Where the search starts, in sequences (or the server's max_num_seqs when known and lower): the
# largest batch vLLM captures as a CUDA graph by default (GRAPH_EDGE), where a small model runs
# fastest and a large one nearly so; a climb from lower down costs seconds at a slower level.
START_SEQUENCES = 512
MIN_SEQUENCES = 1
MAX_SEQUENCES = 4096  # per server: far above any max_num_seqs in use
MAX_WORKERS = 16384  # across servers: idle workers cost memory, not time
BACKOFF = 0.7
KV_NEAR_FULL = 0.99
WAITING_TARGET_FRACTION = 0.01  # of running sequences: keep this many queued, at least a request
GROWTH_STEP_FRACTION = 0.01
# The throughput search (LimitRule), in readings of /metrics. Going up is quick to undo only when
# the step was small: sequences admitted past a slow edge must finish before the limit is back.
FIRST_GROWTH = 1.0  # the first step doubles the start (256 -> 512, vLLM's largest CUDA graph)
FINE_GROWTH = 0.125  # later steps start this small and double after each better level,
MAX_GROWTH = 1.0  # up to doubling; after a worse large step, a small one from the best
# vLLM captures CUDA graphs for batches up to min(2 x max_num_seqs, 512) sequences by default; a
# larger decode batch runs without one, on a small model several times slower per step (on one
# H200, 0.39B model: 512 sequences made 48k-53k tokens/s, 1,024 made 20k-34k). A step past the
# edge, which takes seconds to undo, is tried only while doubling still paid at least EDGE_RETURN
# of a doubling (a model bound by memory traffic, far from its compute limit).
GRAPH_EDGE = 512
EDGE_RETURN = 0.5
SMALL_STEP = 0.25  # a step up at most this large is measured from the first reading after it
GAIN = 0.03  # a level must beat the best by this much to count as better (readings are noisy)
MEASURE_READINGS = 2  # token rates averaged per level
SETTLED_FRACTION = 0.9  # going up: measured once the server runs this much of the new level
MAX_SETTLE_UP = 5
MAX_SETTLE_DOWN = 60  # going down waits for requests to finish, at most this many readings
PROBE_EVERY = 120  # holding: a neighbour is tried this often (doubling after each worse one)
MAX_PROBE_EVERY = 1920
PROBE_FACTOR = 1.125  # that far up or down

def parse_max_concurrent(value: object, where: str = "--max-concurrent") -> MaxConcurrent:
    """'auto' or a whole number >= 1; a clear error otherwise."""
    return parse_auto_or_count(value, where)


def fixed_requests(max_concurrent: MaxConcurrent) -> int:
    """Requests in flight for a path that has no adaptive limits (yet): the number, or the
    fallback for `auto`."""
    return FALLBACK_REQUESTS if max_concurrent == AUTO else max_concurrent


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
        self.search = ""  # the throughput search's state (LimitRule.search), for the summary
        self.measured: list[tuple[int, int]] = []  # (sequences, tokens/s) the search measured
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
            "search": self.search,
            "measured": [list(pair) for pair in self.measured],
            "history": [[round(t - started, 1), limit] for t, limit in self.history],
        }


class Search(enum.Enum):
    """Where a server's throughput search stands."""

    CLIMB = "climb"  # measuring levels outward from the start, then between the best and worse
    HOLD = "hold"  # at the best level found; now and then a neighbour is tried
    CAPACITY = "capacity"  # the server is full: the queue rules alone follow its capacity
    OFF = "off"  # the server exports no token counter: the queue rules alone


@dataclass
class Trial:
    """One level being measured: wait until the server runs about that many sequences (at once
    going up, as in-flight requests finish going down), skip a reading that holds the change
    itself (the prefills of many new requests, the tail of a drain; a small step up has little
    of either and is measured at once, so a step past a slow edge costs only MEASURE_READINGS),
    then average MEASURE_READINGS token rates."""

    level: int
    rising: bool  # the level is above the one before
    skip: int = 1
    waited: int = 0
    rates: list[float] = field(default_factory=list)

    def feed(self, rate: float, running: int, sequences_per_request: int) -> float | None:
        """Take one in-use reading; the level's mean tokens/s once measured, else None."""
        if self.rising:
            settled = running >= SETTLED_FRACTION * self.level or self.waited >= MAX_SETTLE_UP
        else:
            settled = running <= self.level + sequences_per_request or self.waited >= MAX_SETTLE_DOWN
        if not settled:
            self.waited += 1
            return None
        if self.skip:
            self.skip -= 1
            return None
        self.rates.append(rate)
        return sum(self.rates) / len(self.rates) if len(self.rates) >= MEASURE_READINGS else None


@dataclass
class LimitRule:
    """Turns one /metrics reading into a new limit (pure: the caller passes the clock).

    Safety first: new preemptions or a growing queue mean the server is full, and from then on
    the queue rules follow its capacity. Until then the limit is the level with the most generated
    tokens per second, found by measuring: more sequences do not always mean more tokens (past
    the largest batch vLLM captured as a CUDA graph a step gets several times slower). A start at
    the edge is held at once; a start below it doubles up to the edge, and climbs past it only
    while the steps paid at least EDGE_RETURN of linear scaling. Held, it tries a neighbour every
    PROBE_EVERY readings (half as often in a direction that was worse); a better level above
    resumes the climb in steps of FINE_GROWTH that double after each better level (a worse large
    step is followed by a small one from the best) until a small step is not better by GAIN."""

    limit: int
    sequences_per_request: int
    edge: int = GRAPH_EDGE  # the largest batch with a CUDA graph (see GRAPH_EDGE)
    search: Search = Search.CLIMB
    last_preemptions: int | None = None
    best: tuple[int, float] | None = None  # (level, tokens/s)
    returns: float = 1.0  # the last better step's gain, as a fraction of the gain of linear scaling
    growth: float = FIRST_GROWTH
    doubled_start: bool = True  # the next step measured is the start's doubling
    trial: Trial | None = None
    since_probe: int = 0
    probe_up: bool = True
    probe_every: dict[int, int] = field(default_factory=lambda: {+1: PROBE_EVERY, -1: PROBE_EVERY})
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=MEASURE_READINGS))
    measured: list[tuple[int, int]] = field(default_factory=list)  # (level, tokens/s) tried
    _tokens: tuple[float, int] | None = None  # (time, generation_tokens_total) last read

    def target_waiting(self, running: int) -> int:
        return max(self.sequences_per_request, math.ceil(WAITING_TARGET_FRACTION * running))

    def step(self) -> int:
        return max(self.sequences_per_request, int(GROWTH_STEP_FRACTION * self.limit))

    def update(self, metrics: VllmMetrics, in_flight: int, now: float) -> int:
        rate = self._rate(metrics, now)
        preempted = (
            metrics.num_preemptions_total - self.last_preemptions
            if self.last_preemptions is not None
            else 0
        )
        self.last_preemptions = metrics.num_preemptions_total
        waiting = metrics.num_requests_waiting
        target = self.target_waiting(metrics.num_requests_running)
        in_use = in_flight + self.sequences_per_request > self.limit
        # More held than the limit: an earlier cut is still taking effect as requests finish,
        # and the server's queue and preemptions are those of the excess. Cutting again on
        # each such reading would take the limit far below what the server holds once settled.
        draining = in_flight > self.limit
        if draining and (preempted > 0 or waiting > target + self.step()):
            pass
        elif preempted > 0:
            self._server_full(int(self.limit * BACKOFF))
        elif waiting > target + self.step():
            # What runs plus the target: measured against what we hold now, so readings taken
            # before earlier cuts took effect (requests still finishing) do not cut again.
            self._server_full(min(self.limit - self.sequences_per_request,
                                  in_flight - (waiting - target)))
        elif self.search in (Search.CAPACITY, Search.OFF):
            kv_full = (metrics.kv_cache_usage_perc or 0.0) >= KV_NEAR_FULL
            if waiting < target and not kv_full and in_use:
                self.limit += self.step()  # the server starves: one step more
        elif rate is not None and in_use:
            self._search(rate, metrics.num_requests_running, waiting < target)
        self.limit = min(MAX_SEQUENCES, max(MIN_SEQUENCES, self.sequences_per_request, self.limit))
        return self.limit

    def _rate(self, metrics: VllmMetrics, now: float) -> float | None:
        """Generated tokens per second since the last reading (None on the first)."""
        last, self._tokens = self._tokens, (now, metrics.generation_tokens_total)
        if last is None or now <= last[0] or metrics.generation_tokens_total < last[1]:
            return None  # the first reading, or a restarted server's counter
        return (metrics.generation_tokens_total - last[1]) / (now - last[0])

    def _server_full(self, limit: int) -> None:
        self.limit = limit
        self.trial = None
        if self.search is not Search.OFF:
            self.search = Search.CAPACITY

    def _search(self, rate: float, running: int, room: bool) -> None:
        """One in-use reading for the throughput search."""
        if self.trial is None and self.search is Search.CLIMB:
            if rate <= 0 and running > 0:  # running but no tokens counted: no usable counter
                self.search = Search.OFF
                return
            self.trial = Trial(self.limit, rising=True)  # skips the ramp-up's prefills
        if self.trial is None:
            self._hold(rate, room)
            return
        measured = self.trial.feed(rate, running, self.sequences_per_request)
        if measured is None:
            return
        level, self.trial = self.trial.level, None
        self.measured.append((level, round(measured)))
        if self.search is Search.CLIMB:
            self._climbed(level, measured)
        else:
            self._probed(level, measured)

    def _try(self, level: int) -> None:
        level = min(MAX_SEQUENCES, max(self.sequences_per_request, level))
        if level == self.limit:
            return self._settle()
        rising = level > self.limit
        small = rising and level <= self.limit * (1 + SMALL_STEP)
        self.trial = Trial(level, rising=rising, skip=0 if small else 1)
        self.limit = level

    def _climbed(self, level: int, rate: float) -> None:
        """The climb's next level once `level` is measured."""
        previous = self.best
        if previous is None:  # the start
            self.best = (level, rate)
            if level < self.edge:
                return self._up_from(level)
            # At the edge already: hold it. Whether more sequences pay there is left to the
            # probes; measured at once it costs a step past a slow edge (or a drain below it)
            # in every run, and requests started together make an early reading noisy.
            return self._settle()
        after_doubling, self.doubled_start = self.doubled_start, False
        if rate > previous[1] * (1 + GAIN):
            self.best = (level, rate)
            # The step paid: the next one may be larger (after the start's doubling, small).
            self.returns = (rate / previous[1] - 1) / (level / previous[0] - 1)
            self.growth = FINE_GROWTH if after_doubling else min(MAX_GROWTH, self.growth * 2)
            return self._up_from(level)
        if self.growth > FINE_GROWTH:
            self.growth = FINE_GROWTH  # a large step went too far: a small one from the best
            return self._up_from(previous[0])
        self._settle()

    def _up_from(self, level: int) -> None:
        """Step up from `level`: to the edge first when the step would cross it, past the edge
        only while more sequences still paid well; else hold `level`."""
        target = round(level * (1 + self.growth))
        if level < self.edge < target:
            target = self.edge
        elif level >= self.edge and not self._past_edge_pays():
            return self._settle()
        self._try(target)

    def _past_edge_pays(self) -> bool:
        return self.returns >= EDGE_RETURN

    def _settle(self) -> None:
        assert self.best is not None
        self.trial = None
        self.limit = self.best[0]
        self.search = Search.HOLD
        self.since_probe = 0
        self.recent.clear()

    def _hold(self, rate: float, room: bool) -> None:
        """At the best level: keep its recent rate, and now and then try one neighbour (up and
        down in turn; down only past the edge); move there only if it is clearly better. A
        direction that was worse is tried half as often as before (past a slow edge a probe
        costs while it drains)."""
        self.recent.append(rate)
        self.since_probe += 1
        direction = +1 if self.probe_up else -1
        if self.since_probe < self.probe_every[direction] or len(self.recent) < MEASURE_READINGS:
            return
        self.since_probe = 0
        self.probe_up = not self.probe_up
        if direction > 0 and (not room or (self.limit >= self.edge and not self._past_edge_pays())):
            return
        if direction < 0 and self.limit <= self.edge:
            return  # below the edge fewer sequences are not faster (see _climbed)
        self.best = (self.limit, sum(self.recent) / len(self.recent))
        self._try(round(self.limit * PROBE_FACTOR ** direction))

    def _probed(self, level: int, rate: float) -> None:
        assert self.best is not None
        previous = self.best
        direction = +1 if level > previous[0] else -1
        if rate > previous[1] * (1 + GAIN):
            self.best = (level, rate)
            self.probe_every[direction] = PROBE_EVERY
            if direction > 0:  # more sequences paid: climb on from here, in small steps
                self.returns = (rate / previous[1] - 1) / (level / previous[0] - 1)
                self.search, self.growth, self.doubled_start = Search.CLIMB, FINE_GROWTH, False
                return self._up_from(level)
        else:
            self.probe_every[direction] = min(MAX_PROBE_EVERY, 2 * self.probe_every[direction])
        self._settle()


MetricsReader = Callable[[], Awaitable[VllmMetrics]]


@dataclass
class AdaptiveLimits:
    """The limits of one connection's servers and the loop that adapts them (`watch`)."""

    readers: dict[str, MetricsReader | None]  # server name -> its /metrics, None: cannot be read
    sequences_per_request: int
    max_num_seqs: int | None = None
    interval_s: float | None = None  # None: POLL_INTERVAL_S
    warn: Callable[[str], None] = print
    fallback_hint: str = "set --max-concurrent to choose"  # ends the fallback's warning, if any
    limits: dict[str, ServerLimit] = field(init=False)
    started: float = field(init=False, default_factory=time.monotonic)

    def __post_init__(self) -> None:
        start = min(self.max_num_seqs or START_SEQUENCES, START_SEQUENCES)
        start = max(start, self.sequences_per_request)
        # vLLM's default: graphs up to min(2 x max_num_seqs, 512) sequences.
        edge = min(2 * self.max_num_seqs, GRAPH_EDGE) if self.max_num_seqs else GRAPH_EDGE
        capped = self.max_num_seqs is not None and self.max_num_seqs <= GRAPH_EDGE
        if capped:
            # The server never runs a batch past its CUDA graphs (the servers rollouts starts
            # cap it at 512): no level to search for. Hold its batch full and a few requests
            # queued behind it, so that one starts the step another ends, as offline.
            rule = LimitRule(start, self.sequences_per_request, edge)
            start += rule.target_waiting(start)
        self.limits = {name: ServerLimit(name, start, adaptive=True) for name in self.readers}
        self._rules = {
            name: LimitRule(start, self.sequences_per_request, edge,
                            search=Search.CAPACITY if capped else Search.CLIMB)
            for name in self.readers
        }

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
        limit.set_limit(rule.update(metrics, limit.in_flight, time.monotonic()))
        limit.search, limit.measured = rule.search.value, rule.measured

    def _fall_back(self, limit: ServerLimit, reason: str) -> None:
        limit.adaptive = False
        limit.note = reason
        limit.set_limit(FALLBACK_REQUESTS * self.sequences_per_request)
        hint = f" ({self.fallback_hint})" if self.fallback_hint else ""
        self.warn(
            f"{limit.name}: cannot read its load ({reason}); keeping a fixed "
            f"{FALLBACK_REQUESTS} requests in flight{hint}"
        )

    def describe(self) -> str:
        """For the progress bar: the limit in force per server, in sequences."""
        return ",".join(str(limit.limit) for limit in self.limits.values())

    def summary(self) -> list[dict[str, Any]]:
        return [limit.summary(self.started) for limit in self.limits.values()]


def auto_workers(servers: int, sequences_per_request: int) -> int:
    """Workers for `auto`: enough to fill every server's highest possible limit."""
    return min(MAX_WORKERS, servers * max(1, math.ceil(MAX_SEQUENCES / sequences_per_request)))
