"""Disk full and read-only output folders: a one-line error, never a traceback, and the run resumes.

Each scenario runs real `rollouts generate` processes in a private mount namespace (`unshare
--mount --map-root-user`, so no mount outlives the test and no root is needed where user
namespaces are allowed) on a small tmpfs that fills up, or is remounted read-only, at a chosen
point; the tmpfs is then grown or made writable again and the same command resumes.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.generate_helpers import write_jsonl
from tests.openai_server import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = 6
ROW_BYTES = 200_000  # each row carries this much incompressible text, so sizes are predictable


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def source(tmp_path: Path) -> Path:
    rows = [{"prompt": f"question {i}", "blob": secrets.token_hex(ROW_BYTES // 2)}
            for i in range(PROMPTS)]
    return write_jsonl(tmp_path / "big.jsonl", rows)


def in_private_mount(tmp_path: Path, script: str, env: dict[str, str]) -> dict[str, tuple[int, str]]:
    """Run `script` (sh) with a tmpfs-ready folder $MNT; `gen NAME` runs generate and keeps its
    exit status and stderr. Returns {NAME: (status, stderr)}; OUT is copied to $LOG/out.parquet."""
    mnt, log = tmp_path / "mnt", tmp_path / "log"
    mnt.mkdir()
    log.mkdir()
    prelude = (
        'gen() { name=$1; shift; set +e; "$PY" -m rollouts.cli generate "$SOURCE" '
        '-o "$MNT/out/out.parquet" --base-url "$URL" --no-progress "$@" '
        '> /dev/null 2> "$LOG/$name.err"; echo $? > "$LOG/$name.rc"; set -e; }\n'
        # Rows a resume will find on disk (complete write-ahead lines and parts).
        'saved() { "$PY" -c "import sys, pathlib, rollouts.store as s; '
        'print(s.saved_rows(pathlib.Path(sys.argv[1])))" "$MNT/out/out.parquet" > "$LOG/saved"; }\n'
    )
    epilogue = '\ncp "$MNT/out/out.parquet" "$LOG/out.parquet" 2>/dev/null || true\n'
    full_env = {**os.environ, **env, "MNT": str(mnt), "LOG": str(log), "PY": sys.executable,
                "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-eu", "-c",
                           prelude + script + epilogue],
                          env=full_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return {
        rc.stem: (int(rc.read_text()), (log / f"{rc.stem}.err").read_text())
        for rc in log.glob("*.rc")
    }


def assert_one_line_error(result: tuple[int, str], *words: str) -> None:
    status, stderr = result
    assert status == 1, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    for word in words:
        assert word in lines[0]
    assert "rerun the same command to resume" in lines[0]


def assert_complete(tmp_path: Path) -> None:
    rows = pd.read_parquet(tmp_path / "log" / "out.parquet")
    assert len(rows) == PROMPTS
    assert rows["error"].isna().all()
    assert rows["prompt_id"].is_unique


def env_for(source: Path, server: FakeOpenAIServer, **extra: str) -> dict[str, str]:
    return {"SOURCE": str(source), "URL": server.url, **extra}


def test_disk_full_at_the_final_write_then_resume(
    tmp_path: Path, source: Path, server: FakeOpenAIServer
) -> None:
    # One-row shards compact as they go (peak: the parts plus one row); the final output needs
    # the parts' size once more, which a 1.8 MB tmpfs does not have.
    results = in_private_mount(tmp_path, (
        'mount -t tmpfs -o size=1800k tmpfs "$MNT"\n'
        "gen full --max-concurrent 1\n"
        'mount -o remount,size=16m "$MNT"\n'
        "gen resumed --max-concurrent 1\n"
    ), env_for(source, server, ROLLOUTS_ROWS_PER_SHARD="1"))
    assert_one_line_error(results["full"], "No space left on device")
    assert results["resumed"][0] == 0, results["resumed"][1]
    assert len(server.requests) == PROMPTS  # every sample was kept: none requested again
    assert_complete(tmp_path)


def test_disk_full_while_appending_to_the_write_ahead_log_then_resume(
    tmp_path: Path, source: Path, server: FakeOpenAIServer
) -> None:
    # No compaction (large shards): the write-ahead log itself fills a 700 KB tmpfs, mid-row;
    # the buffer that could not be written is flushed again when the log is closed.
    results = in_private_mount(tmp_path, (
        'mount -t tmpfs -o size=700k tmpfs "$MNT"\n'
        "gen full --max-concurrent 1\n"
        "saved\n"
        'mount -o remount,size=16m "$MNT"\n'
        "gen resumed --max-concurrent 1\n"
    ), env_for(source, server))
    assert_one_line_error(results["full"], "No space left on device")
    saved = int((tmp_path / "log" / "saved").read_text())
    assert 0 < saved < PROMPTS
    status, stderr = results["resumed"]
    assert status == 0, stderr
    # Only what was not on disk (the torn row, the request in flight) is requested again.
    assert f"({PROMPTS - saved} new samples" in stderr
    assert_complete(tmp_path)


def test_read_only_output_folder_for_a_new_run_and_on_resume(
    tmp_path: Path, source: Path, server: FakeOpenAIServer
) -> None:
    results = in_private_mount(tmp_path, (
        'mount -t tmpfs -o ro,size=16m tmpfs "$MNT"\n'
        "gen new_run\n"  # EROFS creating the state folder
        'mount -o remount,rw "$MNT"\n'
        "gen first\n"
        'mount -o remount,ro "$MNT"\n'
        "gen resume\n"  # EROFS taking the lock of the existing run
        'mount -o remount,rw "$MNT"\n'
        "gen resumed\n"
    ), env_for(source, server))
    assert_one_line_error(results["new_run"], "Read-only file system")
    assert results["first"][0] == 0, results["first"][1]
    assert_one_line_error(results["resume"], "Read-only file system")
    assert results["resumed"][0] == 0, results["resumed"][1]
    assert len(server.requests) == PROMPTS
    assert_complete(tmp_path)
    assert f"wrote {PROMPTS} rows" in results["resumed"][1]
