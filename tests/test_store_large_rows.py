"""Rows of any size that fit in memory: written, compacted, resumed (a 64 MB response, 2 MB
input columns), and a run folder left unbuildable by a reader with a fixed 1 MiB block recovers."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq
import pytest

from rollouts import store
from rollouts.store import RolloutStore, output_schema, read_shard
from tests.generate_helpers import read_rows, run_generate, verl_rows, write_jsonl, write_parquet
from tests.openai_server import FakeOpenAIServer

MB = 1 << 20
BIG_RESPONSE = ("0123456789abcdef" * (50 * MB // 16))  # 50 MB


class BigAnswerServer(FakeOpenAIServer):
    """The test server, answering a 50 MB text to prompts that say BIG."""

    def _body(self, payload: dict[str, Any], text: str, n: int, chat: bool) -> dict[str, Any]:
        body = super()._body(payload, text, n, chat)
        if "BIG" in text:
            for choice in body["choices"]:
                if chat:
                    choice["message"]["content"] = BIG_RESPONSE
                else:
                    choice["text"] = BIG_RESPONSE
        return body


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def rows_with_test_cases(count: int, size: int) -> list[dict[str, Any]]:
    """verl rows carrying a large column, as code datasets with big test cases do."""
    rows = verl_rows(count)
    for row in rows:
        row["tests"] = secrets.token_hex(size // 2)
    return rows


def sample_row(prompt_id: str, response: str) -> dict[str, Any]:
    return {"prompt": "p", "prompt_id": prompt_id, "sample_idx": 0, "dataset": "d",
            "data_idx": int(prompt_id, 16), "response": response, "error": None}


def open_store(out: Path, **kwargs: Any) -> RolloutStore:
    schema = output_schema([pa.schema([("prompt", pa.string())])])
    return RolloutStore(out, schema=schema, config={"model": "m"}, config_hash="h", **kwargs)


def test_a_64_mb_response_is_compacted_on_resume_and_written(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    huge = "ab" * (32 * MB)
    with open_store(out) as first:
        first.append([sample_row("01", "small"), sample_row("02", huge), sample_row("03", "x")])
    # Closed without finalize, as a killed run leaves it: the resume compacts the shard.
    with open_store(out) as resumed:
        assert resumed.done_index(retry_errors=False).count() == 3
        assert not list(resumed.state_dir.glob("wal-*.jsonl"))
        rows, errors = resumed.finalize(wide=False)
    assert (rows, errors) == (3, {})
    table = pq.read_table(out, columns=["prompt_id", "response"]).to_pydict()
    responses = dict(zip(table["prompt_id"], table["response"], strict=True))
    assert responses["02"] == huge
    assert responses["01"] == "small"


def test_a_shard_is_compacted_by_bytes_as_well_as_rows(tmp_path: Path) -> None:
    """Memory during compaction stays bounded whatever the size of a row."""
    with open_store(tmp_path / "out.parquet", bytes_per_shard=3 * MB) as run:
        for number in range(1, 5):
            run.append([sample_row(f"{number:02x}", "y" * 2 * MB)])
        parts = run.part_paths()
        assert [pq.read_metadata(p).num_rows for p in parts] == [2, 2]


def test_read_shard_reads_lines_longer_than_the_default_block(tmp_path: Path) -> None:
    schema = output_schema([pa.schema([("prompt", pa.string())])])
    shard = tmp_path / "wal-000000.jsonl"
    with open_store(tmp_path / "out.parquet") as run:
        run.append([sample_row("01", "z" * 3 * MB), sample_row("02", "ok")])
        shard = next(run.state_dir.glob("wal-*.jsonl"))
        with pytest.raises(pa.ArrowInvalid, match="straddling"):
            pajson.read_json(shard)  # the reader as it was: a 1 MiB block
        table = read_shard(shard, schema)
    assert table["response"].to_pylist() == ["z" * 3 * MB, "ok"]


def read_shard_with_default_block(shard: Path, schema: pa.Schema) -> pa.Table:
    """The reader as it was before block sizing (pyarrow's 1 MiB block)."""
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    return pajson.read_json(shard, parse_options=options).select(schema.names).cast(schema)


def test_a_run_left_unbuildable_by_the_old_reader_recovers(
    tmp_path: Path, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_parquet(tmp_path / "code.parquet", rows_with_test_cases(3, 2 * MB))
    out = tmp_path / "out.parquet"
    args = (source, "-o", out, "--base-url", server.url, "--n", "2")
    # How such folders came to be: every sample is accepted, then compaction fails.
    with monkeypatch.context() as patched:
        patched.setattr(store, "read_shard", read_shard_with_default_block)
        broken = run_generate(*args, expect=None)
    assert broken.exit_code != 0
    assert "straddling" in str(broken.exception)
    state = store.state_dir_for(out)
    assert [p.name for p in state.glob("wal-*.jsonl")] == ["wal-000000.jsonl"]
    assert not out.exists()
    requests = len(server.requests)

    run_generate(*args)  # the same command: recovers and finishes without a new request
    assert len(server.requests) == requests
    rows = read_rows(out)
    assert len(rows) == 6
    given = pq.read_table(source, columns=["tests"])["tests"].to_pylist()
    assert [given[i] for i in rows["data_idx"]] == list(rows["tests"])
    assert rows["error"].isna().all()


def test_a_50_mb_response_through_generate_is_written_and_resumed(tmp_path: Path) -> None:
    prompts = verl_rows(3, chat=False)
    prompts[1]["prompt"] = "BIG answer please"
    source = write_jsonl(tmp_path / "mixed.jsonl", prompts)
    out = tmp_path / "out.parquet"
    # Small shards: the shard holding the 50 MB row is compacted while the run goes on.
    env = {**os.environ, "ROLLOUTS_ROWS_PER_SHARD": "2", "ROLLOUTS_BYTES_PER_SHARD": str(MB)}
    with BigAnswerServer() as big_server:
        command = [sys.executable, "-m", "rollouts.cli", "generate", str(source), "-o", str(out),
                   "--base-url", big_server.url, "--max-concurrent", "2",
                   "--no-progress"]
        first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr
        requests = len(big_server.requests)
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert len(big_server.requests) == requests  # resumed: nothing requested again
    rows = read_rows(out)
    assert len(rows) == 3
    big = rows[rows["prompt"] == "BIG answer please"]
    assert len(big) == 1
    assert all(response == BIG_RESPONSE for response in big["response"])
