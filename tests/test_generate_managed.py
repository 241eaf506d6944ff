"""`rollouts generate --model M` with no server: a managed server (the stand-in `vllm`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rollouts.client as client
from tests.fake_vllm import FAKE_VLLM_COMMAND, live_pids, recorded_pids
from tests.generate_helpers import read_rows, run_generate, verl_rows, write_jsonl


@pytest.fixture(autouse=True)
def stand_in_vllm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("ROLLOUTS_VLLM", FAKE_VLLM_COMMAND)
    monkeypatch.setattr(client, "INITIAL_RETRY_DELAY_S", 0.01)
    pids = tmp_path / "pids"
    monkeypatch.setenv("FAKE_VLLM_PIDS_FILE", str(pids))
    return pids


def assert_server_gone(pids_file: Path) -> None:
    pids = recorded_pids(pids_file)
    assert pids and live_pids(pids) == []


def test_managed_server_is_started_used_and_stopped(tmp_path: Path, stand_in_vllm: Path) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(6))
    out = tmp_path / "o.parquet"
    log = tmp_path / "server.log"
    run_generate(source, "-o", out, "--model", "tiny-model", "--n", "3", "--server-log", log,
                 "-tp", "1", "--vllm-arg=--max-num-seqs 64")
    rows = read_rows(out)
    assert len(rows) == 18
    assert set(rows["model"]) == {"tiny-model"}
    assert rows["error"].isna().all()
    assert_server_gone(stand_in_vllm)
    assert "--max-num-seqs 64" in log.read_text()


def test_bad_input_fails_before_the_server_starts(tmp_path: Path, stand_in_vllm: Path) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", [{"prompt": ""}])
    result = run_generate(source, "-o", tmp_path / "o.parquet", "--model", "tiny-model", expect=1)
    assert "empty prompt" in result.stderr
    assert not stand_in_vllm.exists()


def test_server_dying_mid_run_is_restarted_and_nothing_is_lost(
    tmp_path: Path, stand_in_vllm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_DIE_AFTER", "30")
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(40))
    out = tmp_path / "o.parquet"
    result = run_generate(source, "-o", out, "--model", "tiny-model", "--n", "2",
                          "--samples-per-request", "1", "--max-concurrent", "4",
                          "--max-restarts", "5")
    assert "restart 1/5" in result.stderr
    rows = read_rows(out)
    assert len(rows) == 80
    assert not rows.duplicated(["prompt_id", "sample_idx"]).any()
    assert rows["error"].isna().all()
    assert_server_gone(stand_in_vllm)


def test_a_server_that_keeps_dying_stops_the_run_with_its_log(
    tmp_path: Path, stand_in_vllm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_DIE_AFTER", "5")
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(40))
    out = tmp_path / "o.parquet"
    result = run_generate(source, "-o", out, "--model", "tiny-model", "--max-concurrent", "1",
                          "--max-restarts", "1", expect=1)
    assert "died 2 times" in result.stderr and "Log tail" in result.stderr
    assert_server_gone(stand_in_vllm)
    # What was generated is kept: a rerun resumes from it.
    state = tmp_path / "o.parquet.rollouts"
    assert any(state.glob("wal-*.jsonl")) or any(state.glob("part-*.parquet"))


def test_ctrl_c_stops_the_managed_server(tmp_path: Path, stand_in_vllm: Path) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(3000))
    out = tmp_path / "o.parquet"
    env = {**os.environ}
    process = subprocess.Popen(
        [sys.executable, "-m", "rollouts.cli", "generate", str(source), "-o", str(out),
         "--model", "tiny-model", "--n", "2", "--max-concurrent", "2", "--no-progress"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    state = tmp_path / "o.parquet.rollouts"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
        p.stat().st_size > 0 for p in state.glob("wal-*.jsonl")
    ):
        assert process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert_server_gone(stand_in_vllm)
    assert b"Traceback" not in stderr
