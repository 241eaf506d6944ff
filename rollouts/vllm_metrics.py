"""Reading a vLLM server's Prometheus `/metrics`: the scheduler's state in one typed snapshot.

Used by the adaptive concurrency controller (rollouts.concurrency) and by anything that watches a
server's progress. Only vLLM's own metric names are read; the text is parsed by prometheus_client.

Names (vLLM 0.8 to 0.24, V1 engine; counters carry the `_total` suffix in the exposition):
  vllm:num_requests_running, vllm:num_requests_waiting      gauges, per engine
  vllm:kv_cache_usage_perc (older: vllm:gpu_cache_usage_perc) gauge, 0..1, per engine
  vllm:num_preemptions_total, vllm:generation_tokens_total  counters, per engine
With data parallelism there is one series per engine (label `engine`): counts are summed over
them, KV usage is the fullest engine's. The V1 engine runs a request with n samples as n child
requests, so its running/waiting counts are sequences.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"
KV_USAGE_OLD = "vllm:gpu_cache_usage_perc"  # renamed in vLLM 0.9, later hidden
PREEMPTIONS = "vllm:num_preemptions_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"

DEFAULT_FETCH_TIMEOUT_S = 5.0


class MetricsUnavailable(Exception):
    """The server has no usable vLLM /metrics: absent (404, another OpenAI server), unreachable,
    or text without vLLM's scheduler gauges. `reason` says which, in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class VllmMetrics:
    """One reading of a vLLM server's scheduler, summed over its engines."""

    num_requests_running: int
    num_requests_waiting: int
    # Fraction of KV-cache blocks in use, 0..1 (the fullest engine); None if not exported.
    kv_cache_usage_perc: float | None
    # Cumulative counters since the server started (0 when not exported).
    num_preemptions_total: int
    generation_tokens_total: int


def parse_metrics(text: str) -> VllmMetrics:
    """Parse Prometheus exposition text; raise MetricsUnavailable when it is not vLLM's."""
    try:
        values = _sample_values(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError) as exc:
        raise MetricsUnavailable(f"malformed /metrics ({exc})") from exc
    if RUNNING not in values or WAITING not in values:
        raise MetricsUnavailable(f"/metrics has no {RUNNING} / {WAITING} (not a vLLM server?)")
    kv = values.get(KV_USAGE) or values.get(KV_USAGE_OLD)
    return VllmMetrics(
        num_requests_running=int(sum(values[RUNNING])),
        num_requests_waiting=int(sum(values[WAITING])),
        kv_cache_usage_perc=max(kv) if kv else None,
        num_preemptions_total=int(sum(values.get(PREEMPTIONS, [0.0]))),
        generation_tokens_total=int(sum(values.get(GENERATION_TOKENS, [0.0]))),
    )


_WANTED = frozenset({RUNNING, WAITING, KV_USAGE, KV_USAGE_OLD, PREEMPTIONS, GENERATION_TOKENS})


def _sample_values(families: Iterable[Metric]) -> dict[str, list[float]]:
    """Values of the wanted samples, one per label set (engine), keyed by sample name. Matching on
    sample names works whether or not the text declares the metric types."""
    values: dict[str, list[float]] = {}
    for family in families:
        for sample in family.samples:
            if sample.name in _WANTED:
                values.setdefault(sample.name, []).append(float(sample.value))
    return values


async def fetch_metrics(
    session: aiohttp.ClientSession, root_url: str, *, timeout_s: float = DEFAULT_FETCH_TIMEOUT_S
) -> VllmMetrics:
    """GET `root_url`/metrics (root_url without /v1) and parse it; MetricsUnavailable otherwise."""
    url = root_url.rstrip("/").removesuffix("/v1") + "/metrics"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            if response.status != 200:
                raise MetricsUnavailable(f"GET /metrics answered {response.status}")
            text = await response.text(errors="replace")
    except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
        raise MetricsUnavailable(f"GET /metrics failed: {type(exc).__name__}: {exc}") from exc
    return parse_metrics(text)
