"""Inputs holding `{}` (IFEval's `"kwargs": [{}]`): parquet cannot store an empty struct, so such a
column is written as JSON text, and `score` reads it back."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rollouts.io import parquet_cannot_hold
from tests.generate_helpers import read_rows, run_generate, write_jsonl
from tests.openai_server import FakeOpenAIServer


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def ifeval_rows(count: int) -> list[dict[str, object]]:
    return [{"prompt": f"Write about river {i} without commas.", "data_source": "ifeval",
             "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
            for i in range(count)]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_empty_objects_are_written_as_json_text(
    tmp_path: Path, server: FakeOpenAIServer, fmt: str
) -> None:
    source = write_jsonl(tmp_path / "ifeval.jsonl", ifeval_rows(3))
    out = tmp_path / f"out.{fmt}"
    result = run_generate(source, "-o", out, "--base-url", server.url, "--n", "2")
    rows = read_rows(out)
    assert len(rows) == 6
    assert [json.loads(v) for v in rows["kwargs"]] == [[{}]] * 6
    assert rows["instruction_id_list"].map(list).tolist() == [["punctuation:no_comma"]] * 6
    assert "kwargs hold {} (an empty object)" in result.stderr
    if fmt == "parquet":
        assert pq.read_schema(out).metadata[b"rollouts.json_columns"] == b'["kwargs"]'


def test_score_reads_the_json_text_back(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "ifeval.jsonl", ifeval_rows(2))
    out = tmp_path / "out.parquet"
    run_generate(source, "-o", out, "--base-url", server.url, "--n", "2")
    score = Path(sys.executable).with_name("score")  # the installed command
    done = subprocess.run([str(score), str(out), "--reward-fn", "ifeval", "--workers", "1"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    scored = read_rows(tmp_path / "out.scored.parquet")
    assert len(scored) == 4 and scored["score"].notna().all()


@pytest.mark.parametrize(("data_type", "expected"), [
    (pa.struct([]), True),
    (pa.list_(pa.struct([])), True),
    (pa.struct([("a", pa.list_(pa.struct([])))]), True),
    (pa.map_(pa.string(), pa.struct([])), True),
    (pa.list_(pa.struct([("a", pa.int64())])), False),
    (pa.string(), False),
])
def test_which_types_parquet_cannot_hold(data_type: pa.DataType, expected: bool) -> None:
    assert parquet_cannot_hold(data_type) is expected


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_score_writes_an_input_holding_empty_objects(tmp_path: Path, suffix: str) -> None:
    rows = [{**row, "response": "No commas here at all."} for row in ifeval_rows(2)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / f"scored{suffix}"
    score = Path(sys.executable).with_name("score")
    done = subprocess.run([str(score), str(source), "-o", str(out), "--reward-fn", "ifeval",
                           "--workers", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    scored = read_rows(out)
    assert scored["score"].tolist() == [1.0, 1.0]
    assert [json.loads(v) for v in scored["kwargs"]] == [[{}], [{}]]
