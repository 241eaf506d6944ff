"""A YAML dataset's `name:` labels it everywhere; a seed that samples n per request cannot honour
is said once at start, naming the option that honours it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from rollouts.cli import main
from rollouts.dataset import prompt_id_for
from tests.generate_helpers import read_rows, run_generate, verl_rows, write_jsonl
from tests.openai_server import FakeOpenAIServer

NOTICE = "--samples-per-request 1 to give each sample its own seed"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def run_config(tmp_path: Path, config: dict[str, object], expect: int = 0) -> Result:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = CliRunner().invoke(main, ["run", str(path), "--no-progress"])
    assert result.exit_code == expect, (result.output, result.exception)
    return result


def test_a_dataset_name_labels_rows_log_and_summaries(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "test-00000-of-00001.jsonl", verl_rows(3))
    config: dict[str, object] = {
        "base_urls": [server.url],
        "output_dir": "out",
        "defaults": {"n": 2},
        "datasets": [{"path": source.name, "name": "gsm8k", "output": "out/o.parquet"}],
    }
    result = run_config(tmp_path, config)
    out = tmp_path / "out" / "o.parquet"
    rows = read_rows(out)
    assert set(rows["dataset"]) == {"gsm8k"}
    assert f"gsm8k: generated -> {out}" in result.stderr
    run_summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert [d["name"] for d in run_summary["datasets"]] == ["gsm8k"]
    summary = json.loads((tmp_path / "out" / "o.parquet.summary.json").read_text())
    assert [d["name"] for d in summary["datasets"]] == ["gsm8k"]
    # Prompt ids stay those of the file, so naming a dataset never orphans rows already made.
    first = rows[rows["data_idx"] == 0].iloc[0]
    prompt = [dict(m) for m in first["prompt"]]
    assert first["prompt_id"] == prompt_id_for("test-00000-of-00001", prompt)
    # Another name into the same output would label its rows twice: refused like another input.
    config["datasets"] = [{"path": source.name, "name": "gsm", "output": "out/o.parquet"}]
    assert "other inputs (gsm added, gsm8k missing)" in run_config(tmp_path, config, 1).stderr


def test_a_name_for_a_glob_of_several_files_is_refused(tmp_path: Path) -> None:
    for part in ("a", "b"):
        write_jsonl(tmp_path / f"part-{part}.jsonl", verl_rows(2, tag=part))
    result = run_config(tmp_path, {
        "base_urls": ["http://127.0.0.1:9/v1"],
        "datasets": [{"path": "part-*.jsonl", "name": "train"}],
    }, expect=1)
    assert "a name labels one file" in result.stderr


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (("--seed", "0"), True),  # the demo's case: a seed asked for, n per request
        (("--seed", "3", "--n", "1"), True),  # one sample per request still goes unseeded
        ((), False),  # no seed asked for
        (("--seed", "0", "--samples-per-request", "1"), False),  # honoured
        (("--seed", "0", "--temperature", "0"), False),  # greedy: nothing to seed
    ],
)
def test_an_unhonoured_seed_is_said_once(
    tmp_path: Path, server: FakeOpenAIServer, extra: tuple[str, ...], said: bool
) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(2))
    result = run_generate(source, "-o", tmp_path / "o.parquet", "--base-url",
                          server.url, "--n", "4", *extra)
    assert result.stderr.count(NOTICE) == (1 if said else 0)


def test_a_run_config_seed_is_said_in_its_own_terms(tmp_path: Path, server: FakeOpenAIServer) -> None:
    write_jsonl(tmp_path / "d.jsonl", verl_rows(2))
    config = {"base_urls": [server.url], "seed": 0, "defaults": {"n": 2},
              "datasets": [{"path": "d.jsonl"}]}
    result = run_config(tmp_path, config)
    assert result.stderr.count("pass `samples_per_request: 1` to give each sample its own seed") == 1
    config["samples_per_request"] = "1"
    config["output_dir"] = "seeded"
    assert "own seed" not in run_config(tmp_path, config).stderr
