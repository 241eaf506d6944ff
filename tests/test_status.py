"""`rollouts status` on a real generate subprocess: while it runs, after SIGKILL, and when done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from rollouts.cli import main
from rollouts.status import RunStatus, read_status
from rollouts.store import state_dir_for
from tests.generate_helpers import run_generate, verl_rows, write_jsonl
from tests.openai_server import FakeOpenAIServer, Fault

PROMPTS = 40


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        srv.add_fault(Fault("status", status=400, match="q 3:", times=None))  # error rows
        srv.add_fault(Fault("slow", delay=0.15, times=None))
        yield srv


def wait_for(output: Path, ready: object, process: subprocess.Popen[bytes]) -> RunStatus:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            status = read_status(output)
        except Exception:  # noqa: BLE001 (the state folder is not there yet)
            status = None
        if status is not None and ready(status):  # type: ignore[operator]
            return status
        time.sleep(0.1)
    raise AssertionError(f"status never got there: {status}")


def test_status_of_a_running_then_killed_then_finished_run(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", verl_rows(PROMPTS))
    out = tmp_path / "out.parquet"
    args = [str(source), "-o", str(out), "--base-url", server.url, "--max-concurrent", "2",
            "--max-attempts", "1"]
    env = {**os.environ, "ROLLOUTS_SUMMARY_REFRESH_S": "0.2"}
    process = subprocess.Popen([sys.executable, "-m", "rollouts.cli", "generate", *args,
                                "--no-progress"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        status = wait_for(out, lambda s: s.rate_per_s and s.done >= 8 and s.errors_by_kind, process)
        assert status.state == "running" and status.expected == PROMPTS
        assert f"pid {process.pid} alive" == status.writer
        assert status.errors_by_kind == {"http_400": 1}
        assert status.eta_s is not None and status.eta_s > 0
        assert status.last_write is not None and time.time() - status.last_write < 30
        text = CliRunner().invoke(main, ["status", str(out)]).output
        assert "running" in text and f"/ {PROMPTS}" in text and "http_400=1" in text and "ETA" in text
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    stopped = read_status(out)
    assert stopped.state == "stopped" and "gone" in stopped.writer and stopped.rate_per_s is None
    assert 8 <= stopped.done < PROMPTS

    run_generate(*args, expect=3)  # resumes; the error rows make it exit 3
    finished = json.loads(CliRunner().invoke(main, ["status", str(out), "--json"]).output)
    assert finished["state"] == "finished" and finished["done"] == finished["expected"] == PROMPTS
    assert finished["errors_by_kind"] == {"http_400": 1}


def test_status_names_a_path_without_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status", str(tmp_path / "nothing.parquet")])
    assert result.exit_code != 0


def test_status_reads_a_consistent_snapshot_while_the_writer_compacts(tmp_path: Path) -> None:
    """Shards of 2 rows: the writer compacts (part written, manifest updated, shard removed) many
    times a second while status reads in a loop; no read fails and the count never goes back."""
    source = write_jsonl(tmp_path / "in.jsonl", verl_rows(150))
    out = tmp_path / "out.parquet"
    env = {**os.environ, "ROLLOUTS_ROWS_PER_SHARD": "2"}
    with FakeOpenAIServer() as srv:
        srv.add_fault(Fault("slow", delay=0.01, times=None))
        process = subprocess.Popen(
            [sys.executable, "-m", "rollouts.cli", "generate", str(source), "-o", str(out),
             "--base-url", srv.url, "--n", "2", "--samples-per-request", "1",
             "--max-concurrent", "4", "--no-progress"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        counts: list[int] = []
        deadline = time.monotonic() + 120
        try:
            while process.poll() is None and time.monotonic() < deadline:
                if state_dir_for(out).is_dir():
                    counts.append(read_status(out).done)
        finally:
            process.kill() if process.poll() is None else None
            _, stderr = process.communicate()
    assert process.returncode == 0, stderr
    assert len(counts) > 20 and counts[-1] > 0
    assert all(later >= earlier for earlier, later in zip(counts, counts[1:], strict=False)), counts
    assert read_status(out).done == 300
