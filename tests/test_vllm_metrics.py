"""Reading vLLM's /metrics: the text of real vLLM versions, several engines, and what is not vLLM."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from rollouts.vllm_metrics import MetricsUnavailable, VllmMetrics, fetch_metrics, parse_metrics

# As vLLM 0.24 (V1 engine, two data-parallel engines) exposes them, abridged.
VLLM_DP2 = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 30.0
vllm:num_requests_running{engine="1",model_name="m"} 34.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
vllm:num_requests_waiting{engine="1",model_name="m"} 1.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.41
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.93
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="m"} 3.0
vllm:num_preemptions_total{engine="1",model_name="m"} 4.0
vllm:num_preemptions_created{engine="0",model_name="m"} 1.7e9
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="m"} 1000.0
vllm:generation_tokens_total{engine="1",model_name="m"} 2345.0
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 123.0
"""

# Before vLLM 0.9 the KV gauge was called gpu_cache_usage_perc; no type lines, one engine.
VLLM_OLD = """\
vllm:num_requests_running{model_name="m"} 5
vllm:num_requests_waiting{model_name="m"} 0
vllm:gpu_cache_usage_perc{model_name="m"} 0.25
"""


def test_sums_over_engines_and_takes_the_fullest_kv_cache() -> None:
    assert parse_metrics(VLLM_DP2) == VllmMetrics(
        num_requests_running=64,
        num_requests_waiting=3,
        kv_cache_usage_perc=0.93,
        num_preemptions_total=7,
        generation_tokens_total=3345,
    )


def test_reads_the_pre_0_9_kv_name_and_missing_counters_as_zero() -> None:
    metrics = parse_metrics(VLLM_OLD)
    assert (metrics.num_requests_running, metrics.kv_cache_usage_perc) == (5, 0.25)
    assert (metrics.num_preemptions_total, metrics.generation_tokens_total) == (0, 0)


@pytest.mark.parametrize(
    "text",
    ["<html>Not Found</html>", 'vllm:num_requests_running{engine="0" 3', "python_info 1\n", ""],
)
def test_text_that_is_not_vllm_metrics_is_unavailable(text: str) -> None:
    with pytest.raises(MetricsUnavailable):
        parse_metrics(text)


def test_fetch_reads_a_real_endpoint_and_reports_a_missing_one() -> None:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=VLLM_DP2)

    async def scenario() -> tuple[VllmMetrics, str]:
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with aiohttp.ClientSession() as session:
                good = await fetch_metrics(session, f"http://127.0.0.1:{port}/v1")
                with pytest.raises(MetricsUnavailable) as missing:
                    await fetch_metrics(session, f"http://127.0.0.1:{port}/other")
        finally:
            await runner.cleanup()
        return good, missing.value.reason

    good, reason = asyncio.run(scenario())
    assert good.num_requests_running == 64
    assert "404" in reason
