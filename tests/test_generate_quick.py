"""A quick try before a long run: --limit, --dry-run, and a wrong --model that fails at once and
leaves the output free for the corrected command."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollouts.store import state_dir_for
from tests.generate_helpers import read_rows, run_generate, verl_rows, write_jsonl
from tests.openai_server import FakeOpenAIServer


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROLLOUTS_RAISE", raising=False)


def test_limit_takes_the_first_prompts_and_the_full_run_resumes_it(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(5))
    out = tmp_path / "o.parquet"
    run_generate(source, "-o", out, "--base-url", server.url, "--n", "2", "--limit", "2")
    rows = read_rows(out)
    assert sorted(rows["data_idx"].unique()) == [0, 1] and len(rows) == 4
    server.requests.clear()
    run_generate(source, "-o", out, "--base-url", server.url, "--n", "2")
    assert len(read_rows(out)) == 10
    assert len(server.requests) == 3  # only the prompts the quick try left out


def test_dry_run_says_what_would_run_and_sends_nothing(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(5))
    out = tmp_path / "o.parquet"
    result = run_generate(source, "-o", out, "--base-url", server.url, "--n", "4", "--limit", "3", "--dry-run")
    assert "d: 3 prompt(s) -> 12 sample(s)" in result.output
    assert f"total: 12 sample(s) in at most 3 request(s) -> {out}" in result.output
    assert server.requests == [] and not out.exists() and not state_dir_for(out).exists()
    run_generate(source, "-o", out, "--base-url", server.url, "--n", "4", "--limit", "1")
    result = run_generate(source, "-o", out, "--base-url", server.url, "--n", "4", "--dry-run")
    assert "4 sample(s) already on disk: the run resumes" in result.output


def test_a_wrong_model_path_fails_at_once_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(2))
    out = tmp_path / "o.parquet"
    (tmp_path / "demo-out").mkdir()
    for model, says in [
        (tmp_path / "no" / "such" / "model", "no such directory"),
        ("demo-out/tiny-modle", "no such directory (demo-out exists)"),
        (tmp_path / "demo-out", "the directory has no config.json"),
        ("nobody/no-such-model", "not a local directory, not in the Hugging Face cache"),
    ]:
        started = time.monotonic()
        result = run_generate(source, "-o", out, "--backend", "hf", "--model", model, expect=1)
        assert time.monotonic() - started < 5
        assert result.output.startswith(f"Error: --model {model}: {says}"), result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not state_dir_for(out).exists() and not out.exists()


def test_a_model_that_fails_to_load_leaves_the_output_unclaimed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The load fails after the output was claimed: the claim goes, so the corrected command
    (another model) is not refused as a changed resume."""
    monkeypatch.chdir(tmp_path)
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(2))
    out = tmp_path / "o.parquet"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    result = run_generate(source, "-o", out, "--backend", "hf", "--model", broken, expect=None)
    assert result.exit_code != 0
    assert not state_dir_for(out).exists()
