"""Streaming: a request the server is still answering is never cut and resubmitted; a stream that
falls silent for the limit is retried; the streamed text and usage equal the whole answer's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import rollouts.client as client
from tests.generate_helpers import read_rows, run_generate, verl_rows, write_jsonl
from tests.openai_server import FakeOpenAIServer, Fault, response_text


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "INITIAL_RETRY_DELAY_S", 0.01)
    monkeypatch.setattr(client, "MAX_RETRY_DELAY_S", 0.05)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def generate(tmp_path: Path, server: FakeOpenAIServer, *, chat: bool = True) -> Path:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(3, chat=chat))
    out = tmp_path / "o.parquet"
    run_generate(source, "-o", out, "--base-url", server.url, "--n", "2", "--request-timeout", "1")
    return out


def test_an_answer_longer_than_the_silence_limit_is_not_resubmitted(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    # 4 events (2 choices, usage, [DONE]) 0.6 s apart: 2.4 s in all, over the 1 s limit.
    server.add_fault(Fault("trickle", delay=0.6, times=None, match="q 1:"))
    rows = read_rows(generate(tmp_path, server))
    assert len(server.requests) == 3
    assert all(r["stream"] for r in server.requests)
    assert len(rows) == 6 and rows["error"].isna().all()
    assert (rows["attempts"] == 1).all()


def test_a_stream_silent_for_the_limit_is_retried(tmp_path: Path, server: FakeOpenAIServer) -> None:
    server.add_fault(Fault("stall", times=1, match="q 1:"))
    rows = read_rows(generate(tmp_path, server))
    assert len(server.requests) == 4
    assert len(rows) == 6 and rows["error"].isna().all()
    assert sorted(rows["attempts"]) == [1, 1, 1, 1, 2, 2]


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completions"])
def test_streamed_text_and_usage_match_the_answer(
    tmp_path: Path, server: FakeOpenAIServer, chat: bool
) -> None:
    rows = read_rows(generate(tmp_path, server, chat=chat))
    for row in rows.itertuples():
        text = row.prompt[0]["content"] if chat else row.prompt
        assert row.response == response_text(text, None, row.sample_idx)
    assert (rows["finish_reason"] == "stop").all()
    assert rows["prompt_tokens"].notna().all()


def test_a_server_that_does_not_stream_is_read_whole(tmp_path: Path) -> None:
    with FakeOpenAIServer(streams=False) as plain:
        rows = read_rows(generate(tmp_path, plain))
    assert len(rows) == 6 and rows["error"].isna().all()
    assert (rows["attempts"] == 1).all()
