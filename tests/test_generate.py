"""`rollouts generate` end to end against a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from rollouts.engine import sample_seed
from tests.generate_helpers import read_rows, run_generate, verl_rows, write_jsonl, write_parquet
from tests.openai_server import FakeOpenAIServer, Fault, prompt_text, response_text


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def test_parquet_verl_input_keeps_every_column_and_writes_one_row_per_sample(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    source = write_parquet(tmp_path / "gsm8k.parquet", verl_rows(5))
    out = tmp_path / "out.parquet"
    result = run_generate(source, "-o", out, "--base-url", server.url, "--n", "4", "--seed", "7")
    assert result.stdout.strip() == str(out)
    rows = read_rows(out)
    assert len(rows) == 20
    assert set(rows.groupby("prompt_id").size()) == {4}
    assert sorted(rows["sample_idx"].unique()) == [0, 1, 2, 3]
    for column in ("prompt", "data_source", "ability", "reward_model", "extra_info"):
        assert column in rows.columns
    first = rows[rows["data_idx"] == 3].iloc[0]
    assert first["reward_model"]["ground_truth"] == "6"
    assert first["extra_info"]["index"] == 3
    assert first["dataset"] == "gsm8k"
    assert first["model"] == "test-model"  # asked from the server's /v1/models
    assert rows["error"].isna().all()
    assert set(rows["finish_reason"]) == {"stop"}
    # Chat prompts went to /v1/chat/completions with n=4 in one request each.
    assert len(server.requests) == 5
    assert all("messages" in r and r["n"] == 4 for r in server.requests)
    # N samples in one request are unseeded (vLLM's per-request seeds slow sampling down).
    assert all("seed" not in r for r in server.requests)
    assert rows["seed"].isna().all()
    summary = json.loads((tmp_path / "out.parquet.summary.json").read_text())
    assert summary["output"]["rows"] == 20
    assert summary["this_run"]["requests"] == 5
    assert summary["this_run"]["completion_tokens"] == 5 * 4 * server.completion_tokens


def test_string_prompts_use_completions_and_jsonl_output(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    source = write_jsonl(tmp_path / "plain.jsonl", verl_rows(3, chat=False))
    out = tmp_path / "out.jsonl"
    run_generate(source, "-o", out, "--base-url", server.url, "--n", "2", "--model", "m",
                 "--samples-per-request", "1", "--max-tokens", "3")
    rows = read_rows(out)
    assert len(rows) == 6
    assert all("prompt" in r and r["n"] == 1 and r["model"] == "m" for r in server.requests)
    # max_tokens below what the server generates: finish_reason=length is a result, not an error.
    assert set(rows["finish_reason"]) == {"length"}
    assert rows["error"].isna().all()
    for _, row in rows.iterrows():
        assert row["response"] == response_text(row["prompt"], row["seed"], 0)


def test_one_request_per_sample_gives_distinct_reproducible_seeds(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(3))
    out = tmp_path / "out.parquet"
    run_generate(source, "-o", out, "--base-url", server.url, "--n", "4", "--seed", "11",
                 "--samples-per-request", "1")
    rows = read_rows(out)
    assert rows["seed"].nunique() == 12
    for _, row in rows.iterrows():
        assert row["seed"] == sample_seed(11, row["prompt_id"], row["sample_idx"])
    again = tmp_path / "again.parquet"
    run_generate(source, "-o", again, "--base-url", server.url, "--n", "4", "--seed", "11",
                 "--samples-per-request", "1")
    key = ["prompt_id", "sample_idx"]
    merged = rows.merge(read_rows(again), on=key, suffixes=("", "_again"))
    assert (merged["response"] == merged["response_again"]).all()


def test_wide_format_gives_verl_responses(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(4))
    out = tmp_path / "wide.parquet"
    run_generate(source, "-o", out, "--base-url", server.url, "--n", "3", "--format", "wide")
    rows = read_rows(out)
    assert len(rows) == 4
    assert list(rows["data_idx"]) == [0, 1, 2, 3]
    assert all(len(r) == 3 for r in rows["responses"])
    assert "response" not in rows.columns
    assert rows.iloc[2]["reward_model"]["ground_truth"] == "4"


def test_system_prompt_is_prepended(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(2, chat=False))
    run_generate(source, "-o", tmp_path / "o.parquet", "--base-url", server.url,
                 "--system-prompt", "Think step by step.")
    assert all(r["messages"][0] == {"role": "system", "content": "Think step by step."}
               for r in server.requests)


def test_concurrency_is_bounded(tmp_path: Path, server: FakeOpenAIServer) -> None:
    server.add_fault(Fault("slow", delay=0.05, times=None))
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(40))
    run_generate(source, "-o", tmp_path / "o.parquet", "--base-url", server.url,
                 "--max-concurrent", "5")
    assert server.max_in_flight == 5


def test_max_rps_limits_request_rate(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(12))
    started = time.monotonic()
    run_generate(source, "-o", tmp_path / "o.parquet", "--base-url", server.url, "--max-rps", "4")
    # 12 requests at 4/s: a burst of 4, then two more full one-second windows at least.
    assert time.monotonic() - started >= 1.9
    assert len(server.requests) == 12


def test_several_inputs_and_globs_go_to_one_output(tmp_path: Path, server: FakeOpenAIServer) -> None:
    write_jsonl(tmp_path / "a.jsonl", verl_rows(2, tag="a"))
    write_jsonl(tmp_path / "b.jsonl", verl_rows(3, tag="b"))
    out = tmp_path / "o.parquet"
    run_generate(str(tmp_path / "*.jsonl"), "-o", out, "--base-url", server.url, "--n", "2")
    rows = read_rows(out)
    assert rows.groupby("dataset").size().to_dict() == {"a": 4, "b": 6}


def test_prompt_key_selects_the_column(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", [{"question": "hi there", "id": 1}])
    out = tmp_path / "o.parquet"
    run_generate(source, "-o", out, "--base-url", server.url, "--prompt-key", "question")
    assert prompt_text(server.requests[0]) == "hi there"
    assert read_rows(out).iloc[0]["id"] == 1


def test_extra_body_reaches_the_server(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(1))
    run_generate(source, "-o", tmp_path / "o.parquet", "--base-url", server.url,
                 "--extra-body", '{"ignore_eos": true}', "--stop", "###", "--top-p", "0.9")
    request = server.requests[0]
    assert request["ignore_eos"] is True
    assert request["stop"] == ["###"]
    assert request["top_p"] == 0.9


def test_progress_bar_reports_rates(tmp_path: Path, server: FakeOpenAIServer) -> None:
    from click.testing import CliRunner

    from rollouts.cli import main

    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(3))
    result = CliRunner().invoke(
        main, ["generate", str(source), "-o", str(tmp_path / "o.parquet"), "--base-url", server.url]
    )
    assert result.exit_code == 0
    for field in ("sample", "req/s=", "tok/s=", "in_flight=", "retries=", "errors="):
        assert field in result.stderr


def test_rows_are_readable_by_pandas_with_nested_columns(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    rows = verl_rows(3)
    rows[1]["extra_info"] = {"index": 1, "split": "test", "note": "only here"}
    source = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "o.parquet"
    run_generate(source, "-o", out, "--base-url", server.url)
    frame = pd.read_parquet(out)
    notes = {r["index"]: r["note"] for r in frame["extra_info"]}
    assert notes == {0: None, 1: "only here", 2: None}


def test_server_info_files_name_the_servers_and_the_model(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    info = tmp_path / "node1.json"
    root = server.url.removesuffix("/v1")
    info.write_text(json.dumps({"base_url": root, "model": "served-name", "pid": 1}))
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(2))
    out = tmp_path / "o.parquet"
    run_generate(source, "-o", out, "--server-info", info, "--n", "2")
    assert {r["model"] for r in server.requests} == {"served-name"}
    assert len(read_rows(out)) == 4


def test_missing_server_info_file_is_a_clear_error(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(1))
    result = run_generate(source, "-o", tmp_path / "o.parquet", "--server-info",
                          tmp_path / "nope.json", expect=1)
    assert "nope.json" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
