"""`rollouts run CONFIG.yaml`: many datasets, one model load, per-dataset options and outputs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from rollouts.cli import main
from tests.fake_vllm import FAKE_VLLM_COMMAND
from tests.generate_helpers import read_rows, verl_rows, write_jsonl
from tests.openai_server import FakeOpenAIServer


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def run_config(path: Path, *extra: str, expect: int = 0) -> Result:
    result = CliRunner().invoke(main, ["run", str(path), "--no-progress", *extra])
    assert result.exit_code == expect, (result.output, result.exception)
    return result


def write_config(tmp_path: Path, config: dict[str, object]) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def two_datasets(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "gsm8k.jsonl", verl_rows(4, tag="g"))
    write_jsonl(tmp_path / "data" / "math.jsonl", verl_rows(3, tag="m"))


def test_datasets_get_their_own_options_and_templated_outputs(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    two_datasets(tmp_path)
    config = write_config(tmp_path, {
        "base_urls": [server.url],
        "max_concurrent": 8,
        "output_dir": "runs/{model_name}",
        "model": "org/test-model",
        "defaults": {"n": 2, "max_tokens": 64},
        "datasets": [
            {"path": "data/gsm8k.jsonl", "temperature": 0.6},
            {"path": "data/math.jsonl", "name": "math500", "n": 3, "system_prompt": "Be brief.",
             "output": "{output_dir}/{name}_t{temperature}_n{n}.jsonl"},
        ],
    })
    result = run_config(config)
    gsm8k = tmp_path / "runs" / "test-model" / "gsm8k.parquet"
    math = tmp_path / "runs" / "test-model" / "math500_t1.0_n3.jsonl"
    assert result.stdout.split() == [str(gsm8k), str(math)]
    g, m = read_rows(gsm8k), read_rows(math)
    assert len(g) == 8 and set(g["temperature"]) == {0.6}
    assert len(m) == 9 and set(m["temperature"]) == {1.0}
    system = [r for r in server.requests if r["messages"][0]["role"] == "system"]
    assert len(system) == 3
    assert all(r["model"] == "org/test-model" for r in server.requests)
    summary = json.loads((tmp_path / "runs" / "test-model" / "run_summary.json").read_text())
    assert [d["status"] for d in summary["datasets"]] == ["generated", "generated"]
    # A rerun skips both datasets: no request at all.
    before = len(server.requests)
    run_config(config)
    assert len(server.requests) == before
    summary = json.loads((tmp_path / "runs" / "test-model" / "run_summary.json").read_text())
    assert [d["status"] for d in summary["datasets"]] == ["skipped (complete)"] * 2


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"temprature": 1}, "unknown key(s) ['temprature']"),
        ({"datasets": [{"path": "data/nope.jsonl"}]}, "no such file"),
        ({"datasets": [{"path": "data/gsm8k.jsonl", "sample": 3}]}, "unknown key(s) ['sample']"),
        ({"datasets": [{"path": "data/gsm8k.jsonl", "output": "same.parquet"},
                       {"path": "data/math.jsonl", "output": "same.parquet"}]}, "both write"),
        ({"datasets": [{"path": "data/gsm8k.jsonl", "output": "{bogus}.parquet"}]},
         "unknown field 'bogus'"),
        ({"server": {"tensor_parallel": 2}}, "unknown key(s) ['tensor_parallel']"),
        ({"datasets": []}, "non-empty list"),
    ],
)
def test_config_errors_fail_before_the_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict[str, object], expected: str
) -> None:
    two_datasets(tmp_path)
    pids = tmp_path / "pids"
    monkeypatch.setenv("ROLLOUTS_VLLM", FAKE_VLLM_COMMAND)
    monkeypatch.setenv("FAKE_VLLM_PIDS_FILE", str(pids))
    config: dict[str, object] = {"model": "tiny-model", "datasets": [{"path": "data/gsm8k.jsonl"}]}
    config.update(change)
    result = run_config(write_config(tmp_path, config), expect=1)
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not pids.exists()


def test_one_managed_server_serves_every_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_datasets(tmp_path)
    monkeypatch.setenv("ROLLOUTS_VLLM", FAKE_VLLM_COMMAND)
    log = tmp_path / "server.log"
    config = write_config(tmp_path, {
        "model": "tiny-model",
        "server": {"log_file": str(log), "max_model_len": 2048, "extra_args": "--max-num-seqs 32"},
        "output_dir": "out",
        "defaults": {"n": 2},
        "datasets": [{"path": "data/gsm8k.jsonl"}, {"path": "data/math.jsonl"}],
    })
    run_config(config)
    assert log.read_text().count("=== rollouts: starting") == 1
    assert "--max-num-seqs 32" in log.read_text() and "--max-model-len 2048" in log.read_text()
    assert len(read_rows(tmp_path / "out" / "gsm8k.parquet")) == 8
    assert len(read_rows(tmp_path / "out" / "math.parquet")) == 6
    # Everything is complete: a rerun does not start the server at all.
    run_config(config)
    assert log.read_text().count("=== rollouts: starting") == 1


def test_a_rerun_resumes_only_the_unfinished_dataset(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    two_datasets(tmp_path)
    base = {"base_urls": [server.url], "output_dir": "out", "defaults": {"n": 2}}
    first = write_config(tmp_path, {**base, "datasets": [{"path": "data/gsm8k.jsonl"}]})
    run_config(first)
    before = len(server.requests)
    both = write_config(tmp_path, {**base, "datasets": [{"path": "data/gsm8k.jsonl"},
                                                         {"path": "data/math.jsonl"}]})
    run_config(both)
    assert len(server.requests) - before == 3  # the 3 prompts of math only


def test_in_process_backend_serves_every_dataset(tmp_path: Path) -> None:
    from rollouts.tiny_model import build_tiny_model

    two_datasets(tmp_path)
    model = build_tiny_model(tmp_path / "tiny")
    config = write_config(tmp_path, {
        "model": str(model), "backend": "hf", "output_dir": "out",
        "defaults": {"n": 2, "max_tokens": 4},
        "datasets": [{"path": "data/gsm8k.jsonl"}, {"path": "data/math.jsonl", "n": 1}],
    })
    run_config(config)
    gsm8k, math = read_rows(tmp_path / "out" / "gsm8k.parquet"), read_rows(tmp_path / "out" / "math.parquet")
    assert len(gsm8k) == 8 and len(math) == 3
    assert gsm8k["error"].isna().all() and set(gsm8k["model"]) == {str(model)}
