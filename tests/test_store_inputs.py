"""A run's identity includes its inputs: another input set into an existing output is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollouts.dataset import input_identity, load_datasets
from rollouts.store import state_dir_for
from tests.generate_helpers import read_rows, run_generate, verl_rows, write_parquet
from tests.openai_server import FakeOpenAIServer


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def generate(source: Path, out: Path, server: FakeOpenAIServer, *extra: str, expect: int = 0) -> str:
    result = run_generate(source, "-o", out, "--base-url", server.url, "--n", "2", *extra,
                          expect=expect)
    return result.output


def test_another_input_into_the_same_output_is_refused(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    a = write_parquet(tmp_path / "a.parquet", verl_rows(4, tag="a"))
    b = write_parquet(tmp_path / "b.parquet", verl_rows(4, tag="b"))
    out = tmp_path / "out.parquet"
    generate(a, out, server)
    requests = len(server.requests)

    message = generate(b, out, server, expect=1)
    assert "holds rollouts of other inputs (b added, a missing)" in message
    assert "--overwrite" in message
    assert len(server.requests) == requests  # refused before any request
    assert set(read_rows(out)["dataset"]) == {"a"}  # nothing merged, nothing lost

    generate(b, out, server, "--overwrite")
    assert set(read_rows(out)["dataset"]) == {"b"}
    assert len(read_rows(out)) == 8


def test_same_name_with_other_prompts_is_refused_same_inputs_resume(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    source = write_parquet(tmp_path / "data.parquet", verl_rows(4))
    out = tmp_path / "out.parquet"
    generate(source, out, server)
    generate(source, out, server)  # same inputs: resumes, nothing to do
    write_parquet(source, verl_rows(5))
    message = generate(source, out, server, expect=1)
    assert "other inputs (data has other prompts)" in message


def test_an_added_input_is_refused(tmp_path: Path, server: FakeOpenAIServer) -> None:
    a = write_parquet(tmp_path / "a.parquet", verl_rows(2, tag="a"))
    b = write_parquet(tmp_path / "b.parquet", verl_rows(2, tag="b"))
    out = tmp_path / "out.parquet"
    generate(a, out, server)
    result = run_generate(a, b, "-o", out, "--base-url", server.url, "--n", "2", expect=1)
    assert "other inputs (b added)" in result.output


def test_a_run_recorded_before_inputs_were_kept_resumes_and_records_them(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    source = write_parquet(tmp_path / "data.parquet", verl_rows(3))
    out = tmp_path / "out.parquet"
    generate(source, out, server)
    run_file = state_dir_for(out) / "run.json"
    record = json.loads(run_file.read_text())
    del record["inputs"]  # as written by earlier versions
    run_file.write_text(json.dumps(record))
    generate(source, out, server)
    [dataset] = load_datasets([source])
    assert json.loads(run_file.read_text())["inputs"] == [input_identity(dataset)]


def test_the_digest_follows_the_prompts_not_file_times_or_row_order(tmp_path: Path) -> None:
    first = write_parquet(tmp_path / "x.parquet", verl_rows(3))
    [before] = load_datasets([first])
    write_parquet(first, verl_rows(3))  # rewritten with the same prompts: a new mtime
    [after] = load_datasets([first])
    assert input_identity(after) == input_identity(before)
    assert input_identity(before)["prompts"] == 3
    write_parquet(first, list(reversed(verl_rows(3))))  # shuffled rows: resuming is by prompt id
    [reordered] = load_datasets([first])
    assert input_identity(reordered) == input_identity(before)
    write_parquet(first, verl_rows(3, tag="other"))
    [changed] = load_datasets([first])
    assert input_identity(changed)["digest"] != input_identity(before)["digest"]
