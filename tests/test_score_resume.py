"""Nothing scored is lost: verdicts kept as they are made (a SIGKILLed `score` resumes), outputs that
hold mixed ground-truth types, unwritable outputs refused before work, and early stop when the
reward function fails on everything. The real `score` command throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from scoring.cache import VerdictCache
from scoring.journal import JOURNAL_FILE, state_dir_for

SLOW_REWARD = """
import os, time

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    with open(os.environ["CALL_LOG"], "a") as log:
        log.write(solution_str + "\\n")
    time.sleep(0.05)
    return {"score": float(solution_str == ground_truth), "seen": solution_str}
"""

FAILING_REWARD = """
import os

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    with open(os.environ["CALL_LOG"], "a") as log:
        log.write(solution_str + "\\n")
    if solution_str.startswith("fine"):
        return 1.0
    return extra_info["no_such_key"]
"""

TYPE_REWARD = """
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    return float(type(ground_truth).__name__ == solution_str)
"""


def score(*args: str | Path, env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from scoring.score_cli import main; main()", *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, **kwargs)


def environment(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "CALL_LOG": str(tmp_path / "calls.log"),
            "ROLLOUTS_SCORE_CACHE": str(tmp_path / "cache")}


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows_for(answers: list[str], gold: Any = "a0") -> list[dict[str, Any]]:
    return [{"prompt": f"p{i}", "response": a, "data_source": "t",
             "reward_model": {"ground_truth": gold}} for i, a in enumerate(answers)]


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().split() if log.exists() else []


def test_sigkilled_score_resumes_judging_only_what_is_missing(tmp_path: Path) -> None:
    reward = tmp_path / "slow.py"
    reward.write_text(SLOW_REWARD)
    data = write_rows(tmp_path / "in.jsonl", rows_for([f"a{i}" for i in range(60)]))
    env = environment(tmp_path)
    command = [sys.executable, "-c", "from scoring.score_cli import main; main()", str(data),
               "--reward-fn", str(reward), "--workers", "1"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(calls(tmp_path)) < 20 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    output = tmp_path / "in.scored.parquet"
    assert not output.exists()
    journal = state_dir_for(output) / JOURNAL_FILE
    kept = {json.loads(line)["verdict"]["extra"]["seen"] for line in journal.read_text().splitlines()}
    assert len(kept) >= 10
    with VerdictCache(tmp_path / "cache") as cache:  # the cache too is written as verdicts come
        assert cache.count() >= len(kept)
    before = len(calls(tmp_path))

    # The same command again (without the cache: the journal alone must do it).
    done = score(data, "--reward-fn", reward, "--workers", "1", "--no-cache", env=env)
    assert done.returncode == 0, done.stderr
    again = calls(tmp_path)[before:]
    assert not set(again) & kept
    assert set(again) | kept == {f"a{i}" for i in range(60)}
    assert f"{len(kept)} kept from an interrupted run" in done.stderr
    scored = pd.read_parquet(output)
    assert len(scored) == 60 and scored["score"].sum() == 1.0
    assert not state_dir_for(output).exists()


def test_mixed_ground_truth_types_are_written_as_json_in_both_formats(tmp_path: Path) -> None:
    reward = tmp_path / "types.py"
    reward.write_text(TYPE_REWARD)
    rows = [
        {"prompt": "mbpp", "response": "list", "data_source": "t",
         "reward_model": {"ground_truth": ["assert f(1) == 1"]}},
        {"prompt": "humaneval", "response": "str", "data_source": "t",
         "reward_model": {"ground_truth": "def check(candidate): pass"}},
        {"prompt": "mcq", "response": "int", "data_source": "t",
         "reward_model": {"ground_truth": 1}},
    ]
    data = write_rows(tmp_path / "mixed.jsonl", rows)
    env = environment(tmp_path)
    for name in ("out.parquet", "out.jsonl"):
        done = score(data, "--reward-fn", reward, "-o", tmp_path / name, env=env)
        assert done.returncode == 0, done.stderr
        assert "reward_model hold mixed types; written as JSON text" in done.stderr
        results = json.loads((tmp_path / (name.split(".")[0] + ".results.json")).read_text())
        assert results["json_columns"] == ["reward_model"]
        (tmp_path / "out.results.json").unlink()
    scored = pd.read_parquet(tmp_path / "out.parquet")
    assert scored["score"].tolist() == [1.0, 1.0, 1.0]
    assert json.loads(scored["reward_model"][0]) == {"ground_truth": ["assert f(1) == 1"]}
    # A scored file with JSON text columns scores again.
    done = score(tmp_path / "out.parquet", "--reward-fn", reward, "-o", tmp_path / "again.parquet",
                 env=env)
    assert done.returncode == 0, done.stderr
    assert pd.read_parquet(tmp_path / "again.parquet")["score"].tolist() == [1.0, 1.0, 1.0]


def test_unwritable_output_is_refused_before_any_judging(tmp_path: Path) -> None:
    reward = tmp_path / "slow.py"
    reward.write_text(SLOW_REWARD)
    data = write_rows(tmp_path / "in.jsonl", rows_for(["a0", "a1"]))
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    done = score(data, "--reward-fn", reward, "-o", blocker / "out.parquet", env=environment(tmp_path))
    assert done.returncode == 1
    assert "cannot write beside the output" in done.stderr and "Traceback" not in done.stderr
    assert calls(tmp_path) == []


@pytest.mark.parametrize("count", [400, 5])
def test_reward_failing_on_everything_stops_with_the_first_error(tmp_path: Path, count: int) -> None:
    reward = tmp_path / "failing.py"
    reward.write_text(FAILING_REWARD)
    data = write_rows(tmp_path / "in.jsonl", rows_for([f"bad{i}" for i in range(count)]))
    done = score(data, "--reward-fn", reward, "--workers", "2", env=environment(tmp_path))
    assert done.returncode == 1
    assert "First error: KeyError: 'no_such_key'" in done.stderr
    assert f"{reward}\", line 9" in done.stderr  # the traceback tail
    assert 'return extra_info["no_such_key"]' in done.stderr
    if count == 400:
        assert "failed on 100 of the last 100 distinct answers of data source 't'" in done.stderr
        assert len(calls(tmp_path)) < 400
    else:
        assert "failed on every item (5)" in done.stderr
    assert not (tmp_path / "in.scored.parquet").exists()


def test_reward_failing_on_some_rows_finishes(tmp_path: Path) -> None:
    reward = tmp_path / "failing.py"
    reward.write_text(FAILING_REWARD)
    answers = ["fine"] + [f"bad{i}" for i in range(80)]
    data = write_rows(tmp_path / "in.jsonl", rows_for(answers))
    done = score(data, "--reward-fn", reward, "--workers", "1", "--on-error", "skip",
                 env=environment(tmp_path))
    assert done.returncode == 0, done.stderr
    scored = pd.read_parquet(tmp_path / "in.scored.parquet")
    assert scored["score_status"].value_counts().to_dict() == {"error": 80, "ok": 1}
