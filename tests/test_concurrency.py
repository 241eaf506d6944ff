"""`--max-concurrent auto` against a server that emulates vLLM's scheduler (tests/vllm_scheduler.py):
the limit finds the level with the most tokens per second when more sequences make steps slower,
settles near the capacity when the server is full, holds steady, follows a change, and falls back
to a fixed limit when /metrics is missing or malformed."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from rollouts import concurrency
from rollouts.cli import main
from rollouts.client import OpenAIEndpoint
from rollouts.concurrency import (
    FALLBACK_REQUESTS,
    AdaptiveLimits,
    LimitRule,
    Search,
    ServerLimit,
    parse_max_concurrent,
)
from rollouts.errors import UserInputError
from rollouts.types import SamplingParams
from rollouts.vllm_metrics import VllmMetrics, fetch_metrics
from server.vllm import ServerConfig
from tests.fake_vllm import FAKE_VLLM_COMMAND
from tests.generate_helpers import read_rows, run_generate, verl_rows, write_jsonl
from tests.vllm_scheduler import SchedulerServer

N = 2  # samples per request: the limit counts sequences
INTERVAL_S = 0.05
WORKERS = 200
SETTLE_S = 10.0  # at most this long to settle (200 readings)
STEADY_S = 1.5  # then judged over this long


@pytest.fixture
def emulated() -> Iterator[SchedulerServer]:
    with SchedulerServer(capacity=80, service_s=0.5) as server:
        yield server


async def drive(
    server: SchedulerServer, phases: list[tuple[int, float]], max_num_seqs: int | None = None,
    warnings: list[str] | None = None, n: int = N, workers: int = WORKERS,
    rates: list[float] | None = None,
) -> tuple[list[list[int]], AdaptiveLimits]:
    """Keep the server loaded through adaptive limits for each (capacity, seconds) phase; return
    the limits read every interval during the last STEADY_S of each phase (and append the
    server's tokens/s over that time to `rates`)."""
    sink = warnings if warnings is not None else []
    # No connection limit, as `auto` runs (rollouts.launch.http_session): /metrics never waits.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        limits = AdaptiveLimits(
            {server.url: functools.partial(fetch_metrics, session, server.url)},
            n, max_num_seqs, interval_s=INTERVAL_S, warn=sink.append,
        )
        [limit] = limits.limits.values()
        endpoint = OpenAIEndpoint(server.url, "sched", session)
        params = SamplingParams(max_tokens=4)

        async def worker() -> None:
            while True:
                await limit.acquire(n)
                try:
                    await endpoint.complete([{"role": "user", "content": "q"}], n=n,
                                            params=params, seed=None)
                finally:
                    limit.release(n)

        tasks = [asyncio.create_task(worker()) for _ in range(workers)]
        tasks.append(asyncio.create_task(limits.watch()))
        readings: list[list[int]] = []
        try:
            for capacity, seconds in phases:
                await asyncio.to_thread(server.set_capacity, capacity)
                await asyncio.sleep(seconds - STEADY_S)
                steady, generated, started = [], server.generated, time.monotonic()
                for _ in range(int(STEADY_S / INTERVAL_S)):
                    steady.append(limit.limit)
                    await asyncio.sleep(INTERVAL_S)
                readings.append(steady)
                if rates is not None:
                    rates.append((server.generated - generated) / (time.monotonic() - started))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return readings, limits


def within(readings: list[int], capacity: int, fraction: float) -> bool:
    return all(abs(r - capacity) <= fraction * capacity for r in readings)


@pytest.mark.parametrize("start", [None, 16], ids=["from-fallback-over", "from-estimate-under"])
def test_settles_near_capacity_steadily_and_follows_a_change(
    emulated: SchedulerServer, start: int | None
) -> None:
    (first, second), _ = asyncio.run(drive(emulated, [(80, SETTLE_S), (160, SETTLE_S)], start))
    assert within(first, 80, 0.10), first
    assert max(first) - min(first) <= 0.10 * 80, first
    assert within(second, 160, 0.10), second
    assert max(second) - min(second) <= 0.10 * 160, second


def test_backs_off_on_preemptions(emulated: SchedulerServer) -> None:
    # Started at 4x the capacity: the server preempts until the limit comes down.
    [steady], limits = asyncio.run(drive(emulated, [(80, SETTLE_S)], 320))
    assert emulated.preemptions > 0
    assert within(steady, 80, 0.10), steady
    [limit] = limits.limits.values()
    assert min(value for _, value in limit.history) < 320 * 0.75


def test_a_server_that_shrinks_is_not_cut_below_what_it_holds() -> None:
    # A replica whose room halves mid-run, serving long requests: while the excess drains, its
    # queue stays long and its preemption counter grows for many readings. Cutting again on each
    # of them took a replica on an H100 from 512 sequences to 28; the limit must settle near
    # what the server holds.
    with SchedulerServer(capacity=160, service_s=1.0) as server:
        [_, steady], limits = asyncio.run(drive(server, [(160, 2.5), (80, 5.0)], 160, n=8))
    [limit] = limits.limits.values()
    assert server.preemptions > 0
    assert min(level for _, level in limit.history) >= 0.6 * 80, limit.history
    # Settled: the capacity, plus the queued requests the queue rules keep (one to three of 8).
    assert all(0.9 * 80 <= level <= 80 + 3 * 8 for level in steady), steady


def test_no_second_cut_while_the_first_drains() -> None:
    rule = LimitRule(limit=512, sequences_per_request=16, search=Search.CAPACITY,
                     last_preemptions=0)
    assert rule.update(reading(512, 64, preemptions=1), 512, now=0.0) == 358
    for second, held in enumerate(range(560, 358, -16), start=1):  # requests finishing
        assert rule.update(reading(358, 100, preemptions=1 + second), held, float(second)) == 358
    # Drained and still preempting: the server holds less than that, so cut again.
    assert rule.update(reading(340, 40, preemptions=99), 358, 99.0) == 250


def test_finds_the_level_with_the_most_tokens_below_the_capacity(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    # Room for 2,000 sequences, but a step is 2.5x slower past 512 (no CUDA graph) and the
    # sequences below it add little: the most tokens/s are at 512, which a queue-watching rule
    # alone would never see. (Probes of a held level are tested on their own below.)
    monkeypatch.setattr(concurrency, "PROBE_EVERY", 10_000)
    rates: list[float] = []
    with SchedulerServer(capacity=2000, per_sequence_s=4e-5, graph_limit=512,
                         eager_s=0.03) as server:
        [steady], limits = asyncio.run(drive(server, [(2000, SETTLE_S)], n=8, workers=200,
                                             rates=rates))
        best = server.tokens_per_s(512)
    assert within(steady, 512, 0.10), steady
    assert rates[0] >= 0.85 * best, (rates, best)
    [summary] = limits.summary()
    assert summary["search"] == "hold"
    assert [level for level, _ in summary["measured"]] == [512], summary["measured"]


def test_a_server_without_a_token_counter_is_held_by_its_queue() -> None:
    # Started at 512 with room for 600: it grows to the capacity by the queue rules alone.
    with SchedulerServer(capacity=600, service_s=0.5, metrics="no-tokens") as server:
        [steady], limits = asyncio.run(drive(server, [(600, SETTLE_S)], workers=400))
    assert within(steady, 600, 0.10), steady
    assert limits.summary()[0]["search"] == "off"


@pytest.mark.parametrize("mode", ["missing", "malformed"])
def test_falls_back_to_a_fixed_limit_said_once(mode: str) -> None:
    warnings: list[str] = []
    with SchedulerServer(capacity=48, metrics=mode) as server:
        [steady], limits = asyncio.run(drive(server, [(48, 2.0)], warnings=warnings))
    assert set(steady) == {FALLBACK_REQUESTS * N}
    assert len(warnings) == 1 and "fixed 64 requests" in warnings[0]
    [limit] = limits.limits.values()
    assert not limit.adaptive


def test_a_limit_is_never_exceeded_and_waiters_go_in_order() -> None:
    async def scenario() -> tuple[int, list[int]]:
        limit = ServerLimit("s", 4, adaptive=True)
        order: list[int] = []
        peak = 0

        async def hold(index: int, sequences: int) -> None:
            nonlocal peak
            await limit.acquire(sequences)
            order.append(index)
            peak = max(peak, limit.in_flight)
            await asyncio.sleep(0.01)
            limit.release(sequences)

        await asyncio.gather(*(hold(i, 2) for i in range(10)), hold(10, 8))
        return peak, order

    peak, order = asyncio.run(scenario())
    assert peak == 8  # the 8-sequence request ran alone (larger than the limit)
    assert order[:10] == list(range(10))


def test_parse_max_concurrent_and_max_num_seqs() -> None:
    assert parse_max_concurrent("auto") == "auto"
    assert parse_max_concurrent("AUTO") == "auto"
    assert parse_max_concurrent("12") == 12
    assert parse_max_concurrent(12) == 12
    for bad in ("0", "-3", "many", 1.5, True):
        with pytest.raises(UserInputError, match="'auto' or a whole number"):
            parse_max_concurrent(bad)
    assert ServerConfig(model="m", extra_args=("--max-num-seqs", "256")).max_num_seqs == 256
    assert ServerConfig(model="m", extra_args=("-O3", "--max-num-seqs=96")).max_num_seqs == 96
    assert ServerConfig(model="m", extra_args=("-O3",)).max_num_seqs == 512  # ours, not vLLM's


def test_generate_defaults_to_auto_and_records_the_limit_per_server(
    tmp_path: Path, emulated: SchedulerServer
) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(60))
    out = tmp_path / "o.parquet"
    run_generate(source, "-o", out, "--base-url", emulated.url, "--model", "sched", "--n", str(N))
    assert len(read_rows(out)) == 60 * N
    summary = json.loads((tmp_path / "o.parquet.summary.json").read_text())
    concurrency = summary["concurrency"]
    assert concurrency["max_concurrent"] == "auto"
    [server] = concurrency["servers"]
    assert server["mode"] == "auto"
    assert server["history"][0] == [0.0, 512]
    assert server["search"] in {"climb", "hold", "capacity"}


def test_a_given_number_stays_fixed(tmp_path: Path, emulated: SchedulerServer) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(20))
    out = tmp_path / "o.parquet"
    started = time.monotonic()
    run_generate(source, "-o", out, "--base-url", emulated.url, "--model", "sched", "--n", str(N),
                 "--max-concurrent", "3")
    assert time.monotonic() - started < 120
    summary = json.loads((tmp_path / "o.parquet.summary.json").read_text())
    assert summary["concurrency"] == {"max_concurrent": 3, "workers": 3, "servers": []}


@pytest.mark.parametrize("per_request, workers", [("n", 5), ("1", 5 * N)])
def test_a_job_starts_no_more_workers_than_requests(
    tmp_path: Path, emulated: SchedulerServer, per_request: str, workers: int
) -> None:
    # `auto` would fill 512 sequences (a SLURM task runs many small jobs like this at once).
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(5))
    run_generate(source, "-o", tmp_path / "o.parquet", "--base-url", emulated.url, "--model",
                 "sched", "--n", str(N), "--samples-per-request", per_request)
    summary = json.loads((tmp_path / "o.parquet.summary.json").read_text())
    assert summary["concurrency"]["workers"] == workers


def reading(running: int, waiting: int, preemptions: int = 0, kv: float = 0.5,
            tokens: int = 0) -> VllmMetrics:
    return VllmMetrics(num_requests_running=running, num_requests_waiting=waiting,
                       kv_cache_usage_perc=kv, num_preemptions_total=preemptions,
                       generation_tokens_total=tokens)


@pytest.mark.parametrize(
    ("search", "metrics", "in_flight", "expected"),
    [
        (Search.CLIMB, reading(200, 0, preemptions=5), 200, 140),  # new preemptions: x0.7
        (Search.HOLD, reading(150, 50), 200, 152),  # 50 waiting for a target of 2: running + 2
        (Search.CAPACITY, reading(150, 50), 180, 132),  # fewer held than the limit: from held
        (Search.CAPACITY, reading(200, 0, kv=0.995), 200, 200),  # KV all but full: no growth
        (Search.CAPACITY, reading(200, 3), 200, 200),  # within the band: hold
        (Search.CAPACITY, reading(200, 0), 200, 202),  # starving while in use: one step
        (Search.CAPACITY, reading(100, 0), 100, 200),  # not using the limit (little work left)
    ],
)
def test_safety_rules(search: Search, metrics: VllmMetrics, in_flight: int, expected: int) -> None:
    rule = LimitRule(limit=200, sequences_per_request=2, search=search, last_preemptions=1)
    assert rule.update(metrics, in_flight, now=1.0) == expected
    if metrics.num_requests_waiting > 10 or metrics.num_preemptions_total > 1:
        assert rule.search is Search.CAPACITY  # a full server: follow its capacity from now on


def climb(tokens_per_s: Callable[[int], float], readings: int, start: int = 512
          ) -> tuple[LimitRule, list[int]]:
    """Feed a rule one reading a second from a server that runs exactly the limit (settled at
    once) and makes tokens_per_s(running) tokens a second; the limits it set, reading by reading."""
    rule = LimitRule(limit=start, sequences_per_request=1)
    tokens, limits = 0.0, []
    for second in range(readings):
        running = rule.limit
        tokens += tokens_per_s(running)
        limits.append(rule.update(reading(running, 0, tokens=int(tokens)), running, float(second)))
    return rule, limits


def graph_edge(running: int) -> float:
    """Tokens/s of a small model: steps slow down 3x past 512 sequences (no CUDA graph)."""
    return running / (0.004 + 0.00001 * running + (0.012 if running > 512 else 0.0))


def test_the_search_climbs_to_the_best_level_and_holds_it() -> None:
    rule, limits = climb(graph_edge, 60)
    # Starts at the CUDA-graph edge and holds it: nothing else measured in the first minute.
    assert [level for level, _ in rule.measured] == [512], rule.measured
    assert rule.search is Search.HOLD and set(limits) == {512}
    # Held at the edge for good: probes past it (12.5% more) back off as each is worse, none
    # below it (never faster there).
    rule, limits = climb(graph_edge, 2000)
    levels = [level for level, _ in rule.measured]
    assert set(levels) == {512, 576} and levels.count(576) <= 4, rule.measured
    assert sum(limit != 512 for limit in limits) <= 0.02 * len(limits)
    assert limits[-1] == 512


def test_the_search_steps_past_the_edge_while_more_sequences_pay_well() -> None:
    # Linear up to 600, then 3x slower steps: a small step past 512 is worth its cost here.
    # A probe past the edge pays, so the climb resumes in small steps.
    rule, limits = climb(lambda r: r / (0.004 + (0.012 if r > 600 else 0.0)), 200)
    assert [level for level, _ in rule.measured][:3] == [512, 576, 648], rule.measured
    assert rule.search is Search.HOLD and limits[-1] == 576


def test_the_climb_steps_grow_while_more_sequences_pay() -> None:
    # A large model bound by memory traffic: more sequences help up to 2,000.
    rule, limits = climb(lambda r: r / (0.02 + 0.00001 * max(0, r - 2000) ** 2), 200)
    levels = [level for level, _ in rule.measured]
    assert levels[:6] == [512, 576, 648, 810, 1215, 2430], rule.measured
    assert rule.search is Search.HOLD and 1700 <= limits[-1] <= 2000, rule.measured


def test_the_edge_is_kept_when_fewer_sequences_read_faster() -> None:
    # Below the edge an engine is not faster with fewer sequences: a lower level reading faster
    # is vLLM's API server catching up on a backlog (seen on a GPU), not a reason to go down.
    rule, limits = climb(lambda r: r / (0.004 + 1e-7 * r * r), 1000)
    assert min(level for level, _ in rule.measured) == 512, rule.measured
    assert rule.search is Search.HOLD and limits[-1] == 512, rule.measured


def test_the_search_stops_where_more_sequences_no_longer_pay() -> None:
    # Throughput flat past 300 sequences (bound by memory bandwidth): no reason for more.
    rule, limits = climb(lambda r: 10.0 * min(r, 300), 60)
    assert rule.search is Search.HOLD and limits[-1] <= 512, rule.measured


def test_a_held_level_follows_a_better_neighbour() -> None:
    # The slow edge moves from 512 to 700 after the climb: probes find the new best in time.
    peak = [512]
    rule = LimitRule(limit=256, sequences_per_request=1)
    tokens = 0.0
    for second in range(2000):
        if second == 100:
            peak[0] = 700
        running = rule.limit
        tokens += running / (0.004 + (0.012 if running > peak[0] else 0.0))
        rule.update(reading(running, 0, tokens=int(tokens)), running, float(second))
    assert 600 <= rule.limit <= 700, rule.measured


def test_a_managed_server_starts_at_its_own_max_num_seqs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLOUTS_VLLM", FAKE_VLLM_COMMAND)
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(6))
    out = tmp_path / "o.parquet"
    run_generate(source, "-o", out, "--model", "tiny-model", "--n", str(N),
                 "--vllm-arg=--max-num-seqs 96")
    assert len(read_rows(out)) == 6 * N
    summary = json.loads((tmp_path / "o.parquet.summary.json").read_text())
    [server] = summary["concurrency"]["servers"]
    assert server["mode"] == "auto"  # the stand-in serves vLLM's gauges
    # Its batch full and a request queued behind it: no search past a batch the server caps.
    assert server["history"][0] == [0.0, 96 + N]
    assert server["search"] == "capacity"


def test_the_progress_bar_shows_the_limit_per_server(
    tmp_path: Path, emulated: SchedulerServer
) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(10))
    result = CliRunner().invoke(main, ["generate", str(source), "-o", str(tmp_path / "o.parquet"),
                                       "--base-url", emulated.url, "--model", "sched"])
    assert result.exit_code == 0, result.output
    assert "limit_seqs=512" in result.stderr


def test_the_edge_follows_a_known_max_num_seqs() -> None:
    limits = AdaptiveLimits({"a": None}, 2, max_num_seqs=96)
    assert limits._rules["a"].edge == 192 and limits.limits["a"].limit == 96 + 2
    limits = AdaptiveLimits({"a": None}, 1, max_num_seqs=512)  # the servers rollouts starts
    assert limits.limits["a"].limit == 512 + 6  # 1% queued behind the batch
    assert limits._rules["a"].search is Search.CAPACITY
    unknown = AdaptiveLimits({"a": None}, 2)
    assert unknown._rules["a"].edge == 512 and unknown._rules["a"].search is Search.CLIMB
    past_edge = AdaptiveLimits({"a": None}, 2, max_num_seqs=1024)  # may run past its graphs
    assert past_edge.limits["a"].limit == 512 and past_edge._rules["a"].search is Search.CLIMB
