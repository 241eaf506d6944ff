"""`rollouts prepare code` checks reference solutions in parallel workers, each under one limit for
all its tests, says how far it got, and keeps its checks across an interrupted run. Real
subprocesses, real sandbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from scoring.journal import JOURNAL_FILE, state_dir_for
from tests.prepare_fixtures import write_jsonl

ROOT = Path(__file__).resolve().parents[1]
TESTS_PER_ITEM = 30  # at each test's own 6 s limit, a solution that never ends would cost 3 minutes


def apps_row(i: int, solution: str, tests: int) -> dict[str, object]:
    inputs = [f"{n} {i}\n" for n in range(tests)]
    outputs = [f"{n + i}\n" for n in range(tests)]
    return {"problem_id": i, "question": f"Add {i} to a number.",
            "input_output": json.dumps({"inputs": inputs, "outputs": outputs}),
            "solutions": json.dumps([solution]), "starter_code": "", "difficulty": "interview"}


ADDS = "a, b = map(int, input().split())\nprint(a + b)\n"
NEVER_ENDS = "while True:\n    pass\n"


def prepare_command(source: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "rollouts.cli", "prepare", "code", str(source), "-o", str(out),
            "--check-timeout", "3", "--workers", "2"]


@pytest.mark.slow
def test_reference_checks_are_bounded_parallel_reported_and_resumed(tmp_path: Path) -> None:
    rows = ([apps_row(i, ADDS, 2) for i in range(6)]
            + [apps_row(i, NEVER_ENDS, TESTS_PER_ITEM) for i in range(6, 10)])
    source = write_jsonl(tmp_path / "apps.jsonl", rows)
    out = tmp_path / "code.parquet"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    journal = state_dir_for(out) / JOURNAL_FILE
    first = subprocess.Popen(prepare_command(source, out), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 7:
            break
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # interrupted mid-way: no output, the checks kept
    first.communicate(timeout=60)
    assert not out.exists()
    kept = journal.read_bytes().count(b"\n")
    assert 7 <= kept < len(rows)

    started = time.monotonic()
    second = subprocess.run(prepare_command(source, out), env=env, capture_output=True, text=True,
                            timeout=120)
    elapsed = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    assert f"checking {len(rows)} reference solution(s) in the sandbox ({kept} kept" in second.stderr
    assert f"checked {len(rows)}/{len(rows)} reference solution(s), 4 failed" in second.stderr
    assert "dropped 4 code item(s)" in second.stderr
    # The items left ran 2 at a time for at most 3 s each, not 30 tests x 6 s.
    assert elapsed < 30
    assert len(pd.read_parquet(out)) == 6
    assert not state_dir_for(out).exists()  # the checks are dropped once the output is written
