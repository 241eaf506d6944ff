"""Every failure rule of `rollouts generate`, against injected faults on a real local server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import rollouts.client as client
from tests.generate_helpers import read_rows, run_generate, verl_rows, write_jsonl
from tests.openai_server import FakeOpenAIServer, Fault


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "INITIAL_RETRY_DELAY_S", 0.01)
    monkeypatch.setattr(client, "MAX_RETRY_DELAY_S", 0.05)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def generate(tmp_path: Path, server: FakeOpenAIServer, *extra: str, prompts: int = 3,
             expect: int | None = 0) -> tuple[Path, object]:
    source = tmp_path / "d.jsonl"
    if not source.exists():
        write_jsonl(source, verl_rows(prompts))
    out = tmp_path / "o.parquet"
    result = run_generate(source, "-o", out, "--base-url", server.url, "--n", "2",
                          "--request-timeout", "1", *extra, expect=expect)
    return out, result


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", status=500, times=2, match="q 1:"),
        Fault("status", status=503, times=2, match="q 1:"),
        Fault("status", status=408, times=1, match="q 1:"),
        Fault("status", status=429, retry_after=0.2, times=2, match="q 1:"),
        Fault("reset", times=2, match="q 1:"),
        Fault("hang", times=1, match="q 1:"),
        Fault("malformed", times=2, match="q 1:"),
        Fault("short", times=2, match="q 1:"),
        Fault("slow", delay=0.3, times=1, match="q 1:"),
    ],
    ids=lambda f: f"{f.kind}-{f.status}" if f.kind == "status" else f.kind,
)
def test_transient_faults_are_retried_until_success(
    tmp_path: Path, server: FakeOpenAIServer, fault: Fault
) -> None:
    server.add_fault(fault)
    out, _ = generate(tmp_path, server)
    rows = read_rows(out)
    assert len(rows) == 6
    assert rows["error"].isna().all()
    faulty = rows[rows["data_idx"] == 1]
    expected_attempts = 1 if fault.kind == "slow" else fault.times + 1  # type: ignore[operator]
    assert set(faulty["attempts"]) == {expected_attempts}
    assert set(rows[rows["data_idx"] != 1]["attempts"]) == {1}


def test_retry_after_is_honoured(tmp_path: Path, server: FakeOpenAIServer) -> None:
    server.add_fault(Fault("status", status=429, retry_after=0.5, times=1, match="q 0:"))
    generate(tmp_path, server, prompts=1)
    first, second = server.requests
    assert first == second
    # Backoff is patched down to at most 0.05 s: the gap can only come from Retry-After.
    assert server.arrivals[1] - server.arrivals[0] >= 0.45


def test_retry_after_is_capped() -> None:
    assert client.backoff_delay(1, retry_after=10_000) == client.MAX_RETRY_AFTER_S


@pytest.mark.parametrize("attempt", [1, 2, 3, 8, 20])
def test_backoff_is_jittered_exponential_and_capped(attempt: int) -> None:
    ceiling = min(client.MAX_RETRY_DELAY_S, client.INITIAL_RETRY_DELAY_S * 2 ** (attempt - 1))
    delays = {client.backoff_delay(attempt) for _ in range(50)}
    assert all(0 <= d <= ceiling for d in delays)
    assert len(delays) > 1


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (401, False), (404, False), (422, False), (408, True), (409, True),
     (429, True), (500, True), (502, True), (503, True), (504, True)],
)
def test_retry_predicate_table(status: int, retryable: bool) -> None:
    assert client.is_retryable_status(status) is retryable


def test_context_length_400_is_an_error_row_at_once(tmp_path: Path, server: FakeOpenAIServer) -> None:
    server.max_prompt_chars = 10_000
    rows = verl_rows(3)
    rows[2]["prompt"] = [{"role": "user", "content": "long " * 5000}]
    write_jsonl(tmp_path / "d.jsonl", rows)
    out, result = generate(tmp_path, server, expect=3)
    frame = read_rows(out)
    failed = frame[frame["data_idx"] == 2]
    assert len(failed) == 2
    assert set(failed["error_kind"]) == {"http_400"}
    assert set(failed["attempts"]) == {1}
    assert "maximum context length" in failed.iloc[0]["error"]
    assert frame[frame["data_idx"] != 2]["error"].isna().all()
    summary = json.loads((tmp_path / "o.parquet.summary.json").read_text())
    assert summary["output"]["errors_by_kind"] == {"http_400": 2}
    assert "2 samples failed" in result.stderr  # type: ignore[attr-defined]


def test_out_of_retries_becomes_error_rows_and_the_run_goes_on(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    server.add_fault(Fault("status", status=500, times=None, match="q 0:"))
    out, _ = generate(tmp_path, server, "--max-attempts", "3", expect=3)
    frame = read_rows(out)
    assert len(frame) == 6
    failed = frame[frame["error"].notna()]
    assert set(failed["data_idx"]) == {0}
    assert set(failed["attempts"]) == {3}
    assert set(failed["error_kind"]) == {"http_500"}
    # --retry-errors on a rerun asks for the failed samples again, and only those.
    server.faults.clear()
    before = len(server.requests)
    generate(tmp_path, server, "--max-attempts", "3", "--retry-errors")
    assert len(server.requests) == before + 1
    frame = read_rows(out)
    assert len(frame) == 6
    assert frame["error"].isna().all()
    # A rerun without --retry-errors would have kept them: check with a new failure.


def test_error_rows_stay_done_without_retry_errors(tmp_path: Path, server: FakeOpenAIServer) -> None:
    server.add_fault(Fault("status", status=400, times=None, match="q 0:"))
    generate(tmp_path, server, expect=3)
    server.faults.clear()
    before = len(server.requests)
    generate(tmp_path, server, expect=3)
    assert len(server.requests) == before


def test_a_failing_disk_stops_the_run_with_a_clear_error(
    tmp_path: Path, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rollouts.store as store

    calls = {"n": 0}
    real_json_line = store.json_line

    def encode_then_fail(row: dict[str, object]) -> bytes:
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(28, "No space left on device")
        return real_json_line(row)

    monkeypatch.setattr(store, "json_line", encode_then_fail)
    server.add_fault(Fault("slow", delay=0.02, times=None))
    _, result = generate(tmp_path, server, "--max-concurrent", "1", prompts=5, expect=1)
    assert "No space left on device" in result.stderr  # type: ignore[attr-defined]
    assert "rerun the same command to resume" in result.stderr  # type: ignore[attr-defined]
    assert len(server.requests) < 5  # the run stopped instead of going on without saving
