"""The progress watchdog against real processes: the stand-in vLLM, hung while /health says 200.

A managed server that stalls is restarted and its requests retried; an external one is ejected and
its requests go elsewhere; progress is read from vLLM's /metrics token counter when there is one;
a server ejected for failing requests comes back only after a real 1-token generation.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest
import yaml

import rollouts.client as client
from rollouts.client import RequestError
from rollouts.runconfig import load_plan
from rollouts.types import SamplingParams
from rollouts.watchdog import WatchedEndpoint
from server.process import pick_free_port
from tests.fake_vllm import FAKE_VLLM_COMMAND
from tests.generate_helpers import read_rows, run_generate, verl_rows, write_jsonl
from tests.openai_server import FakeOpenAIServer, Fault
from tests.vllm_scheduler import SchedulerServer


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOUTS_VLLM", FAKE_VLLM_COMMAND)
    monkeypatch.setattr(client, "INITIAL_RETRY_DELAY_S", 0.01)
    monkeypatch.setattr(client, "MAX_RETRY_DELAY_S", 0.05)


@contextmanager
def external_vllm(**faults: str) -> Iterator[str]:
    """A stand-in vLLM started by hand (not managed by rollouts); yields its /v1 URL."""
    port = pick_free_port("127.0.0.1")
    env = {**os.environ, **{f"FAKE_VLLM_{k.upper()}": v for k, v in faults.items()}}
    command = [*shlex.split(FAKE_VLLM_COMMAND), "serve", "m", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(process.pid, 9)
        process.wait(30)


def endpoint_stats(out: Path) -> dict[str, dict[str, int]]:
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    return {e["name"]: e for e in summary["endpoints"]}


def test_a_hung_managed_server_is_restarted_and_its_requests_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_HANG_AFTER", "8")
    monkeypatch.setenv("FAKE_VLLM_FAULT_ONCE", str(tmp_path / "hung-once"))
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(24))
    out = tmp_path / "o.parquet"
    result = run_generate(source, "-o", out, "--model", "m", "--max-concurrent", "4",
                          "--stall-timeout", "2", "--request-timeout", "300")
    assert (tmp_path / "hung-once").exists()  # it did hang
    assert "managed server hung: no progress for" in result.output
    assert "vllm:generation_tokens_total did not move" in result.output
    assert "restart 1/3" in result.output
    rows = read_rows(out)
    assert len(rows) == 24 and rows["error"].isna().all()


def test_a_stalled_external_server_is_ejected_and_its_requests_go_elsewhere(
    tmp_path: Path,
) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(30))
    out = tmp_path / "o.parquet"
    with external_vllm(hang_after="2") as hung, external_vllm() as sound:
        result = run_generate(source, "-o", out, "--base-url", hung, "--base-url", sound,
                              "--model", "m", "--max-concurrent", "4", "--stall-timeout", "2",
                              "--request-timeout", "300")
    assert f"ejected {hung}: no progress for" in result.output
    assert f"re-admitted {hung}" not in result.output  # its 1-token probe hangs too
    rows = read_rows(out)
    assert len(rows) == 30 and rows["error"].isna().all()
    assert set(rows["endpoint"]) <= {hung, sound}
    assert endpoint_stats(out)[hung]["ejections"] == 1


@pytest.mark.parametrize("metrics", ["on", "off"])
def test_progress_is_read_from_the_token_counter_when_the_server_has_one(
    tmp_path: Path, metrics: str
) -> None:
    """Each request takes 6 s, one token a second. With /metrics the counter moves and nothing
    stalls; without it, no request finishing within the 3 s limit is a stall."""
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(2))
    out = tmp_path / "o.parquet"
    with external_vllm(token_delay="1.0", metrics=metrics) as url:
        result = run_generate(source, "-o", out, "--base-url", url, "--model", "m",
                              "--stall-timeout", "3", "--max-attempts", "1", expect=None)
    if metrics == "on":
        assert result.exit_code == 0, result.output
        assert "ejected" not in result.output
        assert read_rows(out)["error"].isna().all()
    else:
        assert result.exit_code == 3, result.output
        assert f"ejected {url}: no progress for" in result.output
        assert "the server exports no vLLM /metrics" in result.output
        assert set(read_rows(out)["error_kind"]) == {"stalled"}


def test_a_server_failing_every_completion_is_not_readmitted_on_health_alone(
    tmp_path: Path,
) -> None:
    """/health says 200 while every completion answers 500: ejected once, and kept out, since
    its 1-token probe fails too (re-admitting on /health alone would eject it again and again)."""
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(60))
    out = tmp_path / "o.parquet"
    with external_vllm(engine="500") as failing, external_vllm(token_delay="0.05") as sound:
        result = run_generate(source, "-o", out, "--base-url", failing, "--base-url", sound,
                              "--model", "m", "--max-concurrent", "4")
    rows = read_rows(out)
    assert len(rows) == 60 and rows["error"].isna().all()
    stats = endpoint_stats(out)[failing]
    assert stats["ejections"] == 1 and stats["requests"] <= 4
    assert f"re-admitted {failing}" not in result.output


def test_an_ejection_cuts_requests_in_flight_and_frees_their_connections() -> None:
    """Two hung requests hold both connections of a pool of two; ejecting cuts them (retryable,
    the server marked down), a real cancellation still cancels, and after re-admission by a
    1-token generation a request gets a connection: none leaked."""

    async def scenario(server: FakeOpenAIServer) -> None:
        params = SamplingParams(max_tokens=4)
        connector = aiohttp.TCPConnector(limit=2)
        async with aiohttp.ClientSession(connector=connector) as session:
            endpoint = WatchedEndpoint(server.url, server.model, session)
            hung = [
                asyncio.ensure_future(endpoint.complete("hang", n=1, params=params, seed=None))
                for _ in range(2)
            ]
            while server.in_flight < 2:
                await asyncio.sleep(0.01)
            endpoint.eject("a test stall")
            for task in hung:
                with pytest.raises(RequestError) as cut:
                    await task
                assert cut.value.kind == "stalled" and cut.value.endpoint_down
            assert endpoint.progress.in_flight == 0
            assert await endpoint.healthy() and endpoint.ejected is None
            batch = await asyncio.wait_for(
                endpoint.complete("fine", n=1, params=params, seed=None), timeout=60
            )
            assert batch.completions[0].text
            cancelled = asyncio.ensure_future(endpoint.complete("hang", n=1, params=params,
                                                                seed=None))
            await asyncio.sleep(0.2)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled

    with FakeOpenAIServer(faults=[Fault("hang", times=None, match="hang")]) as server:
        asyncio.run(scenario(server))


def test_the_stall_limit_is_checked_and_read_from_a_run_config(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(1))
    result = run_generate(source, "-o", tmp_path / "o.parquet", "--base-url",
                          "http://127.0.0.1:9/v1", "--model", "m", "--stall-timeout", "-1",
                          expect=1)
    assert "--stall-timeout must be >= 0 seconds (0 turns the watchdog off)" in result.output
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "model": "m", "base_urls": ["http://127.0.0.1:9/v1"], "stall_timeout": 30,
        "datasets": [{"path": str(source)}],
    }))
    assert load_plan(config).jobs[0].stall_timeout_s == 30.0


def test_a_streaming_server_without_metrics_makes_progress_by_its_chunks(tmp_path: Path) -> None:
    """No /metrics, answers taking 4 s, one event a second, against a 2 s stall limit: the events
    are progress, so nothing is ejected (judged on finished requests alone, it would be)."""
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(2))
    out = tmp_path / "o.parquet"
    with FakeOpenAIServer(faults=[Fault("trickle", delay=1.0, times=None)]) as server:
        result = run_generate(source, "-o", out, "--base-url", server.url, "--n", "2",
                              "--stall-timeout", "2", "--max-attempts", "1")
    assert "ejected" not in result.output
    assert read_rows(out)["error"].isna().all()


def test_requests_waiting_in_the_server_queue_are_not_timed_out(tmp_path: Path) -> None:
    """32 requests in flight, room for 4: most wait in the queue longer than the 0.5 s silence
    limit. The server's /metrics says they wait, so none is cut and sent again."""
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(100))
    out = tmp_path / "o.parquet"
    with SchedulerServer(capacity=4, service_s=0.2) as server:
        started = time.monotonic()
        run_generate(source, "-o", out, "--base-url", server.url, "--n", "1",
                     "--max-concurrent", "32", "--request-timeout", "0.5", "--max-attempts", "2",
                     "--server-wait", "10")
        elapsed = time.monotonic() - started
    assert elapsed > 4  # 25 rounds of 0.2 s: the last requests waited seconds in the queue
    rows = read_rows(out)
    assert len(rows) == 100 and rows["error"].isna().all()
    summary = json.loads((tmp_path / "o.parquet.summary.json").read_text())
    assert [e["requests"] for e in summary["endpoints"]] == [100]


def test_a_request_the_server_does_not_report_waiting_still_times_out() -> None:
    async def scenario() -> None:
        with FakeOpenAIServer() as server:
            server.add_fault(Fault("hang"))
            async with aiohttp.ClientSession() as session:
                endpoint = WatchedEndpoint(server.url, "m", session, read_timeout_s=0.3)
                started = time.monotonic()
                with pytest.raises(RequestError) as raised:
                    await endpoint.complete("q", n=1, params=SamplingParams(max_tokens=4), seed=1)
                assert raised.value.kind == "timeout"
                assert time.monotonic() - started < 3

    asyncio.run(scenario())
