"""Poison prompts: a prompt that crashes the managed server every time is quarantined as error rows
and everything else completes (end to end with the stand-in vLLM), and the guard's rules as units.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import rollouts.client as client
from rollouts.client import RequestError
from rollouts.quarantine import PromptGuard, prompt_key
from tests.fake_vllm import FAKE_VLLM_COMMAND
from tests.generate_helpers import read_rows, run_generate, verl_rows, write_jsonl


@pytest.fixture
def stand_in_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOUTS_VLLM", FAKE_VLLM_COMMAND)
    monkeypatch.setattr(client, "INITIAL_RETRY_DELAY_S", 0.01)
    monkeypatch.setattr(client, "MAX_RETRY_DELAY_S", 0.05)


@pytest.mark.parametrize("samples_per_request", ["n", "1"])
def test_a_prompt_that_crashes_the_server_is_quarantined_and_the_rest_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stand_in_vllm: None, samples_per_request: str
) -> None:
    monkeypatch.setenv("FAKE_VLLM_CRASH_ON", "q 7:")
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(20))
    out = tmp_path / "o.parquet"
    result = run_generate(source, "-o", out, "--model", "m", "--n", "2", "--max-concurrent", "4",
                          "--samples-per-request", samples_per_request, expect=3)
    rows = read_rows(out)
    assert len(rows) == 40
    poisoned = rows[rows["error_kind"] == "poison"]
    assert set(poisoned["data_idx"]) == {7} and len(poisoned) == 2
    assert rows[rows["data_idx"] != 7]["error"].isna().all()
    assert "quarantined" in result.output and "q 7: what is 7 + 7?" in result.output
    assert "quarantined 1 prompts that brought the server down: d#7" in result.output
    summary = json.loads((tmp_path / "o.parquet.summary.json").read_text())
    [entry] = summary["this_run"]["quarantined_prompts"]
    assert entry["data_idx"] == 7 and entry["prompt_id"] == poisoned["prompt_id"].iloc[0]
    assert summary["output"]["errors_by_kind"] == {"poison": 2}


# -- the guard's rules, on one event loop ------------------------------------------------------


def test_a_prompt_at_two_incidents_becomes_a_suspect_and_is_confirmed_alone() -> None:
    async def scenario() -> None:
        guard = PromptGuard()
        a = await guard.admit("a")
        b = await guard.admit("b")
        guard.finished(a, answered=False, reached=True)  # the server died under both
        guard.finished(b, answered=False, reached=True)
        assert guard.record_incident() is None  # first death: a and b failed just before
        a = await guard.admit("a")
        c = await guard.admit("c")
        assert guard.record_incident() is None  # second death: only a was there both times
        assert guard.suspects == {prompt_key("a")}
        guard.finished(a, answered=False, reached=True)
        # The suspect waits for c to finish, then runs alone: nothing else is let in meanwhile.
        suspect = asyncio.ensure_future(guard.admit("a"))
        await asyncio.sleep(0.01)
        assert not suspect.done()
        other = asyncio.ensure_future(guard.admit("d"))
        guard.finished(c, answered=False, reached=True)
        await asyncio.sleep(0.01)
        assert suspect.done() and not other.done()
        assert guard.record_incident() == prompt_key("a")  # died while a ran alone
        await asyncio.sleep(0.01)
        assert other.done()  # traffic goes on
        with pytest.raises(RequestError) as refused:
            await guard.admit("a")
        assert refused.value.kind == "poison" and not refused.value.retryable

    asyncio.run(scenario())


def test_a_suspect_that_answers_alone_is_cleared() -> None:
    async def scenario() -> None:
        guard = PromptGuard()
        for _ in range(2):
            key = await guard.admit("a")
            guard.record_incident()
            guard.finished(key, answered=False, reached=True)
        assert guard.suspects == {prompt_key("a")}
        key = await guard.admit("a")
        guard.finished(key, answered=True, reached=True)
        assert guard.suspects == set() and guard.quarantined == {}
        assert await guard.admit("b") == prompt_key("b")  # no waiting any more

    asyncio.run(scenario())


def test_a_refused_connection_says_nothing_about_the_prompt() -> None:
    async def scenario() -> None:
        guard = PromptGuard()
        key = await guard.admit("a")
        guard.finished(key, answered=False, reached=False)
        assert guard.involved() == set()
        key = await guard.admit("a")
        guard.finished(key, answered=False, reached=True)
        assert guard.involved() == {prompt_key("a")}

    asyncio.run(scenario())
