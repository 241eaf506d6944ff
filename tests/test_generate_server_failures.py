"""How `rollouts generate` names and waits out server failures: read timeouts, a server that is
not up yet when no --model is given."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import rollouts.client as client
from server.process import pick_free_port
from tests.generate_helpers import read_rows, run_generate, verl_rows, write_jsonl
from tests.openai_server import FakeOpenAIServer, Fault


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "INITIAL_RETRY_DELAY_S", 0.01)
    monkeypatch.setattr(client, "MAX_RETRY_DELAY_S", 0.05)


def test_a_read_timeout_is_an_error_of_kind_timeout(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(2))
    out = tmp_path / "o.parquet"
    with FakeOpenAIServer(faults=[Fault("hang", times=None)]) as server:
        result = run_generate(source, "-o", out, "--base-url", server.url, "--request-timeout",
                              "1", "--max-attempts", "2", expect=3)
    rows = read_rows(out)
    assert list(rows["error_kind"]) == ["timeout", "timeout"]
    assert rows["error"].str.startswith("timeout: no data for 1s").all()
    assert "timeout=2" in result.output


def test_without_model_a_server_not_up_yet_is_waited_for(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(3))
    out = tmp_path / "o.parquet"
    port = pick_free_port("127.0.0.1")
    server = FakeOpenAIServer(port=port, model="late-model")
    starter = threading.Timer(2.0, server.start)
    starter.start()
    try:
        result = run_generate(source, "-o", out, "--base-url", f"http://127.0.0.1:{port}/v1",
                              "--server-wait", "60")
    finally:
        starter.join()
        server.stop()
    assert "waiting up to 60s" in result.output
    rows = read_rows(out)
    assert len(rows) == 3 and set(rows["model"]) == {"late-model"}


def test_without_model_an_absent_server_fails_after_the_server_wait(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(1))
    port = pick_free_port("127.0.0.1")
    result = run_generate(source, "-o", tmp_path / "o.parquet", "--base-url",
                          f"http://127.0.0.1:{port}/v1", "--server-wait", "1.5", expect=1)
    assert "no answer after waiting 1.5s" in result.output
