"""Several servers: least-outstanding routing, prompt affinity, ejection and re-admission."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import rollouts.client as client
import rollouts.router as router
from tests.generate_helpers import read_rows, run_generate, verl_rows, write_jsonl
from tests.openai_server import FakeOpenAIServer, Fault


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "INITIAL_RETRY_DELAY_S", 0.01)
    monkeypatch.setattr(client, "MAX_RETRY_DELAY_S", 0.05)


@pytest.fixture
def two_servers() -> Iterator[tuple[FakeOpenAIServer, FakeOpenAIServer]]:
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        for server in (a, b):
            server.add_fault(Fault("slow", delay=0.03, times=None))
        yield a, b


def stop_after(server: FakeOpenAIServer, requests: int, restart_after: float | None = None) -> threading.Thread:
    def watch() -> None:
        while len(server.requests) < requests:
            time.sleep(0.005)
        server.stop()
        if restart_after is not None:
            time.sleep(restart_after)
            server.start()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_load_is_shared_and_samples_of_a_prompt_stay_on_one_server(
    tmp_path: Path, two_servers: tuple[FakeOpenAIServer, FakeOpenAIServer]
) -> None:
    a, b = two_servers
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(30))
    out = tmp_path / "o.parquet"
    run_generate(source, "-o", out, "--base-url", a.url, "--base-url", b.url, "--n", "4",
                 "--samples-per-request", "1", "--max-concurrent", "8")
    assert len(a.requests) > 20 and len(b.requests) > 20
    rows = read_rows(out)
    assert len(rows) == 120
    assert (rows.groupby("prompt_id")["endpoint"].nunique() == 1).all()


def test_a_server_dying_mid_run_is_ejected_and_the_run_completes(
    tmp_path: Path, two_servers: tuple[FakeOpenAIServer, FakeOpenAIServer]
) -> None:
    a, b = two_servers
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(40))
    out = tmp_path / "o.parquet"
    watcher = stop_after(a, 15)
    run_generate(source, "-o", out, "--base-url", a.url, "--base-url", b.url, "--n", "4",
                 "--samples-per-request", "1", "--max-concurrent", "8")
    watcher.join()
    rows = read_rows(out)
    assert len(rows) == 160
    assert not rows.duplicated(["prompt_id", "sample_idx"]).any()
    assert rows["error"].isna().all()
    assert rows["endpoint"].value_counts()[b.url] > 100
    summary = json.loads((tmp_path / "o.parquet.summary.json").read_text())
    by_name = {e["name"]: e for e in summary["endpoints"]}
    assert by_name[a.url]["ejections"] >= 1


def test_a_server_that_comes_back_is_used_again(
    tmp_path: Path, two_servers: tuple[FakeOpenAIServer, FakeOpenAIServer]
) -> None:
    a, b = two_servers
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(150))
    out = tmp_path / "o.parquet"
    watcher = stop_after(a, 10, restart_after=0.2)
    run_generate(source, "-o", out, "--base-url", a.url, "--base-url", b.url, "--n", "4",
                 "--samples-per-request", "1", "--max-concurrent", "4")
    watcher.join()
    rows = read_rows(out)
    assert len(rows) == 600
    assert rows["error"].isna().all()
    # The restarted server keeps its request log: it answered again after the restart.
    assert len(a.requests) - 10 > 10


def test_a_server_that_fails_every_readmission_waits_longer_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    two_servers: tuple[FakeOpenAIServer, FakeOpenAIServer],
) -> None:
    """It answers the 1-token probe but fails every real request: each failed re-admission doubles
    the wait for the next health check, so it costs a few requests, not one round per interval."""
    monkeypatch.setattr(router, "HEALTH_INTERVAL_S", 0.05)
    a, b = two_servers
    a.faults.insert(0, Fault("status", status=500, times=None, match="what is"))  # probes pass
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(60))
    out = tmp_path / "o.parquet"
    started = time.monotonic()
    run_generate(source, "-o", out, "--base-url", a.url, "--base-url", b.url, "--n", "4",
                 "--samples-per-request", "1", "--max-concurrent", "4")
    elapsed = time.monotonic() - started
    rows = read_rows(out)
    assert len(rows) == 240 and rows["error"].isna().all()
    summary = json.loads((tmp_path / "o.parquet.summary.json").read_text())
    by_name = {e["name"]: e for e in summary["endpoints"]}
    readmitted = by_name[a.url]["readmissions"]
    # Without back-off: one re-admission per 0.05 s interval (dozens over a run of seconds).
    assert elapsed > 1.5
    assert 2 <= readmitted <= 2 + math.log2(elapsed / 0.05)
    # Each admission costs at most the requests in flight when it fails (--max-concurrent 4), and
    # the retries of its first failures that were sent to it before the ejecting one came back.
    per_admission = 4 + router.FAILURES_BEFORE_EJECTION - 1
    assert by_name[a.url]["failures"] <= per_admission * (readmitted + 1)
