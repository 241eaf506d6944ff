"""Bad input gets a one-line error before any request; resume, config and writer rules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollouts.errors import OutputConflictError, UserInputError
from rollouts.store import RolloutStore, output_schema
from tests.generate_helpers import read_rows, run_generate, verl_rows, write_jsonl
from tests.openai_server import FakeOpenAIServer


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def fails_before_any_request(server: FakeOpenAIServer, *args: str | Path) -> str:
    result = run_generate(*args, "--base-url", server.url, expect=1)
    assert server.requests == []
    message = result.stderr.strip()
    assert message.startswith("Error: ")
    assert len(message.splitlines()) == 1
    return message


def test_missing_file(tmp_path: Path, server: FakeOpenAIServer) -> None:
    message = fails_before_any_request(server, tmp_path / "nope.jsonl", "-o", tmp_path / "o.parquet")
    assert "no such file" in message


def test_glob_matching_nothing(tmp_path: Path, server: FakeOpenAIServer) -> None:
    message = fails_before_any_request(server, str(tmp_path / "*.parquet"), "-o", tmp_path / "o.parquet")
    assert "no file matches" in message


def test_unreadable_parquet(tmp_path: Path, server: FakeOpenAIServer) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    message = fails_before_any_request(server, bad, "-o", tmp_path / "o.parquet")
    assert "cannot read parquet" in message


def test_missing_prompt_column(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", [{"question": "hi"}])
    message = fails_before_any_request(server, source, "-o", tmp_path / "o.parquet")
    assert "no prompt column 'prompt'" in message and "--prompt-key" in message


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("", "empty prompt"),
        ("   ", "empty prompt"),
        (None, "prompt is null"),
        ([], "empty message list"),
        ([{"content": "no role"}], "malformed chat message"),
        ([{"role": "wizard", "content": "x"}], "unknown chat role"),
        ([{"role": "user", "content": ""}], "empty or malformed content"),
        (42, "must be a string or a list"),
    ],
)
def test_bad_prompts(tmp_path: Path, server: FakeOpenAIServer, prompt: object, expected: str) -> None:
    rows = verl_rows(3)
    rows[2]["prompt"] = prompt
    source = write_jsonl(tmp_path / "d.jsonl", rows)
    message = fails_before_any_request(server, source, "-o", tmp_path / "o.parquet")
    assert expected in message
    assert "row 2" in message


def test_duplicate_prompts(tmp_path: Path, server: FakeOpenAIServer) -> None:
    rows = verl_rows(3)
    rows[2]["prompt"] = rows[0]["prompt"]
    source = write_jsonl(tmp_path / "d.jsonl", rows)
    message = fails_before_any_request(server, source, "-o", tmp_path / "o.parquet")
    assert "rows 0 and 2 hold the same prompt" in message


def test_invalid_json_line(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = tmp_path / "d.jsonl"
    source.write_text('{"prompt": "a"}\n{"prompt": \n')
    message = fails_before_any_request(server, source, "-o", tmp_path / "o.parquet")
    assert "d.jsonl:2: invalid JSON" in message


def test_outputs_of_the_tools_go_back_into_generate(tmp_path: Path, server: FakeOpenAIServer) -> None:
    """A scored file (N rows per prompt) and a bucket file are inputs: prompts taken once each,
    generated/scored/bucket columns set aside, the new rows carry the prompts' own columns."""
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(3))
    first = tmp_path / "first.parquet"
    run_generate(source, "-o", first, "--base-url", server.url, "--n", "2")
    scored = read_rows(first).assign(score=1.0, acc=True, pred="2", score_status="ok")
    scored.to_parquet(tmp_path / "scored.parquet")
    buckets = scored.drop_duplicates("prompt_id").assign(pass_rate=0.5, bucket="kept")
    buckets.to_parquet(tmp_path / "kept.parquet")
    for name in ("scored", "kept"):
        server.requests.clear()
        again = tmp_path / f"again-{name}.parquet"
        result = run_generate(tmp_path / f"{name}.parquet", "-o", again, "--base-url", server.url,
                              "--n", "2")
        assert "taking its 3 prompt(s)" in result.stderr
        rows = read_rows(again)
        assert len(rows) == 6 and rows["error"].isna().all()
        assert sorted(rows["data_idx"].unique()) == [0, 1, 2]
        assert rows["dataset"].unique().tolist() == [name]
        assert {"score", "acc", "pass_rate", "bucket"}.isdisjoint(rows.columns)
        assert sorted(rows["extra_info"].map(lambda e: e["index"]).unique()) == [0, 1, 2]
        assert len(server.requests) == 3  # one request of n=2 per prompt
        assert set(rows["prompt_id"]) == set(scored["prompt_id"])  # pairs with the first run


def test_the_columns_set_aside_cover_what_score_and_filter_add() -> None:
    from rollouts.dataset import DERIVED_COLUMNS
    from scoring.difficulty import SET_ASIDE_COLUMNS, STAT_COLUMNS
    from scoring.scorer import SCORE_COLUMNS

    assert set(SCORE_COLUMNS) | set(STAT_COLUMNS) | set(SET_ASIDE_COLUMNS) <= set(DERIVED_COLUMNS)


def test_unknown_output_extension(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(1))
    message = fails_before_any_request(server, source, "-o", tmp_path / "o.csv")
    assert "unknown table format" in message


def test_output_of_another_run_is_not_overwritten(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(1))
    existing = tmp_path / "o.parquet"
    existing.write_bytes(b"precious")
    message = fails_before_any_request(server, source, "-o", existing)
    assert "already exists" in message and "--overwrite" in message
    assert existing.read_bytes() == b"precious"


def test_no_server_reachable_after_bounded_wait(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(1))
    result = run_generate(source, "-o", tmp_path / "o.parquet", "--model", "m",
                          "--base-url", "http://127.0.0.1:9/v1", "--server-wait", "0.5", expect=1)
    assert "no server answered" in result.stderr
    assert not (tmp_path / "o.parquet").exists()


def test_bad_sampling_options(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(1))
    assert "top_p" in fails_before_any_request(server, source, "-o", tmp_path / "o.parquet",
                                               "--top-p", "0")
    assert "--n must be" in fails_before_any_request(server, source, "-o", tmp_path / "o.parquet",
                                                     "--n", "0")
    assert "--extra-body" in fails_before_any_request(server, source, "-o", tmp_path / "o.parquet",
                                                      "--extra-body", "{nope")


def test_rerun_resumes_without_new_requests(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(4))
    out = tmp_path / "o.parquet"
    run_generate(source, "-o", out, "--base-url", server.url, "--n", "3")
    first = read_rows(out)
    requests = len(server.requests)
    run_generate(source, "-o", out, "--base-url", server.url, "--n", "3")
    assert len(server.requests) == requests
    again = read_rows(out)
    assert sorted(again["response"]) == sorted(first["response"])


def test_changed_config_is_refused_unless_overwrite(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(2))
    out = tmp_path / "o.parquet"
    run_generate(source, "-o", out, "--base-url", server.url, "--temperature", "0.7")
    before = out.read_bytes()
    requests = len(server.requests)
    message = fails_after(server, requests, source, "-o", out, "--temperature", "1.0")
    assert "another config" in message and "temperature" in message and "0.7" in message
    assert out.read_bytes() == before
    message = fails_after(server, requests, source, "-o", out, "--temperature", "0.7",
                          "--model", "other-model")
    assert "model" in message
    run_generate(source, "-o", out, "--base-url", server.url, "--temperature", "1.0", "--overwrite")
    assert set(read_rows(out)["temperature"]) == {1.0}


def fails_after(server: FakeOpenAIServer, requests: int, *args: str | Path) -> str:
    result = run_generate(*args, "--base-url", server.url, expect=1)
    assert len(server.requests) == requests
    return str(result.stderr)


def test_second_writer_is_refused(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(1))
    out = tmp_path / "o.parquet"
    holder = RolloutStore(out, schema=output_schema([]), config={}, config_hash="x")
    with holder:
        message = fails_before_any_request(server, source, "-o", out)
    assert "being written by pid" in message


def test_lock_is_released_after_a_run(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    with RolloutStore(out, schema=output_schema([]), config={}, config_hash="x"):
        pass
    with RolloutStore(out, schema=output_schema([]), config={}, config_hash="x"):
        pass
    with pytest.raises(OutputConflictError), \
            RolloutStore(out, schema=output_schema([]), config={}, config_hash="y"):
        pass


def test_summary_counts_rows_of_all_runs(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(2))
    out = tmp_path / "o.parquet"
    run_generate(source, "-o", out, "--base-url", server.url, "--n", "2")
    run_generate(source, "-o", out, "--base-url", server.url, "--n", "2")
    summary = json.loads((tmp_path / "o.parquet.summary.json").read_text())
    assert summary["output"]["rows"] == 4
    assert summary["this_run"]["samples"] == 0


def test_prompt_ids_are_content_hashes_and_a_changed_input_is_refused(tmp_path: Path) -> None:
    from rollouts.dataset import iter_prompts, load_datasets, prompt_id_for

    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(3))
    [dataset] = load_datasets([source])
    records = list(iter_prompts(dataset, None))
    assert [r.prompt_id for r in records] == [prompt_id_for("d", r.prompt) for r in records]
    write_jsonl(source, verl_rows(4))
    with pytest.raises(UserInputError, match="changed after it was checked"):
        list(iter_prompts(dataset, None))
