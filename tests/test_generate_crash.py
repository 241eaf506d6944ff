"""Durability: a real `rollouts generate` subprocess SIGKILLed at several points, then resumed."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.generate_helpers import read_rows, run_generate, verl_rows, write_jsonl
from tests.openai_server import FakeOpenAIServer, Fault

PROMPTS = 60
N = 4


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        srv.add_fault(Fault("slow", delay=0.03, times=None))
        yield srv


def start_generate(source: Path, out: Path, url: str, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ROLLOUTS_ROWS_PER_SHARD": "25"}
    command = [sys.executable, "-m", "rollouts.cli", "generate", str(source), "-o", str(out),
               "--base-url", url, "--n", str(N), "--max-concurrent", "8", "--no-progress", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr.decode()


def finished_rows(state_dir: Path) -> list[dict[str, object]]:
    """What a resume will find: committed parts plus every complete line of the shards."""
    rows: list[dict[str, object]] = []
    manifest_file = state_dir / "manifest.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.exists() else {"parts": []}
    compacted = set(manifest.get("compacted_shards", []))
    for part in manifest["parts"]:
        rows += pq.read_table(state_dir / part["file"], columns=["prompt_id", "sample_idx", "seed"]
                              ).to_pylist()
    for shard in sorted(state_dir.glob("wal-*.jsonl")):
        if shard.name in compacted:
            continue
        for line in shard.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # the torn tail of a killed write
                rows.append(json.loads(line))
    return rows


def kill_when(process: subprocess.Popen[bytes], state_dir: Path, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"generate ended early: {finish(process)}")
        try:
            if len(finished_rows(state_dir)) >= at_least:
                break
        except (OSError, ValueError):
            pass  # caught mid-rename: look again
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    finish(process)


@pytest.mark.parametrize("samples_per_request", ["1", "n"])
def test_sigkill_at_several_points_then_resume_is_exact(
    tmp_path: Path, server: FakeOpenAIServer, samples_per_request: str
) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(PROMPTS))
    out = tmp_path / "o.parquet"
    state_dir = tmp_path / "o.parquet.rollouts"
    extra = ("--samples-per-request", samples_per_request)
    checkpoints: list[tuple[int, set[object]]] = []
    for target in (0, 40, 130, 200):
        process = start_generate(source, out, server.url, *extra)
        kill_when(process, state_dir, target)
        finished = finished_rows(state_dir)
        assert len(finished) >= target
        checkpoints.append((len(server.requests), {r["seed"] for r in finished}))
    process = start_generate(source, out, server.url, *extra)
    code, stderr = finish(process)
    assert code == 0, stderr
    rows = read_rows(out)
    assert len(rows) == PROMPTS * N
    assert not rows.duplicated(["prompt_id", "sample_idx"]).any()
    per_prompt = rows.groupby("prompt_id")["sample_idx"].apply(lambda s: tuple(sorted(s)))
    assert set(per_prompt) == {tuple(range(N))}
    assert rows["error"].isna().all()
    # The state folder holds parts only: every shard was compacted.
    assert not list(state_dir.glob("wal-*.jsonl"))
    if samples_per_request == "1":
        # Each sample has its own seed: nothing on disk at a kill was requested after it.
        for requests_before, seeds_done in checkpoints:
            later = {r["seed"] for r in server.requests[requests_before:]}
            assert not seeds_done & later


def test_resume_after_input_rows_were_shuffled(tmp_path: Path, server: FakeOpenAIServer) -> None:
    rows = verl_rows(PROMPTS)
    source = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "o.parquet"
    state_dir = tmp_path / "o.parquet.rollouts"
    process = start_generate(source, out, server.url, "--samples-per-request", "1")
    kill_when(process, state_dir, 100)
    done_seeds = {r["seed"] for r in finished_rows(state_dir)}
    assert done_seeds
    random.Random(3).shuffle(rows)
    write_jsonl(source, rows)
    requests_before = len(server.requests)
    run_generate(source, "-o", out, "--base-url", server.url, "--n", str(N),
                 "--samples-per-request", "1")
    later_seeds = {r["seed"] for r in server.requests[requests_before:]}
    assert not done_seeds & later_seeds
    frame = read_rows(out)
    assert len(frame) == PROMPTS * N
    assert not frame.duplicated(["prompt_id", "sample_idx"]).any()
    # The ground truth stays attached to its own prompt whatever the row order was.
    for _, row in frame.iterrows():
        index = int(row["prompt"][0]["content"].split(":")[0].split()[1])
        assert row["reward_model"]["ground_truth"] == str(2 * index)
    assert isinstance(frame, pd.DataFrame)


def test_a_corrupt_record_in_the_middle_of_the_log_is_skipped_and_generated_again(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(PROMPTS))
    out = tmp_path / "o.parquet"
    state_dir = tmp_path / "o.parquet.rollouts"
    extra = ("--samples-per-request", "1")
    kill_when(start_generate(source, out, server.url, *extra), state_dir, 40)
    shards = [s for s in sorted(state_dir.glob("wal-*.jsonl")) if s.read_bytes().count(b"\n") >= 4]
    assert shards, "no write-ahead shard with records at the kill"
    shard = shards[0]
    lines = shard.read_bytes().splitlines(keepends=True)
    lost = json.loads(lines[1])
    lines[1] = b'{"prompt_id": "\xff\xfe' + lines[1][20:]  # a bad block: not UTF-8, not JSON
    shard.write_bytes(b"".join(lines))
    requests_before = len(server.requests)
    code, stderr = finish(start_generate(source, out, server.url, *extra))
    assert code == 0, stderr
    assert "Traceback" not in stderr
    [report] = [line for line in stderr.splitlines() if "corrupt record" in line]
    assert f"{shard} line 2" in report and "0xff" in report and "generated again" in report
    assert (state_dir / f"corrupt-{shard.name}").read_bytes() == lines[1]
    rows = read_rows(out)
    assert len(rows) == PROMPTS * N and rows["error"].isna().all()
    assert not rows.duplicated(["prompt_id", "sample_idx"]).any()
    assert lost["seed"] in {r["seed"] for r in server.requests[requests_before:]}
