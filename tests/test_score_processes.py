"""Reward code that starts processes: it may (verdicts equal a direct call), and nothing it starts
outlives its item's timeout, the run, or a SIGKILL of `score` itself. Real processes throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from scoring.processes import is_alive
from scoring.rewards.custom import CustomReward
from scoring.workers import WorkerPool, WorkItem, shared_reaper

POOL_REWARD = """
import multiprocessing
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor


def _square(x):
    return x * x


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    n = int(solution_str)
    with ProcessPoolExecutor(max_workers=2) as executor:
        futures = sum(executor.map(_square, [n, n]))
    with multiprocessing.Pool(2) as pool:
        pooled = sum(pool.map(_square, [n]))
    echoed = int(subprocess.run([sys.executable, "-c", f"print({n} * {n})"],
                                capture_output=True, text=True, check=True).stdout)
    return float(futures == 2 * pooled == 2 * echoed == 2 * int(ground_truth))
"""

LEAK_REWARD = """
import os, subprocess, sys, time

LOOP = "import time\\nwhile True: time.sleep(0.05)"


def record(path, pid):
    with open(path, "a") as handle:
        handle.write(f"{pid}\\n")


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    record(ground_truth + ".workers", os.getpid())
    child = subprocess.Popen([sys.executable, "-c", LOOP], start_new_session=True)
    record(ground_truth, child.pid)
    if solution_str == "daemon":  # double fork into a new session: orphaned at once
        first = os.fork()
        if first == 0:
            os.setsid()
            if os.fork() == 0:
                record(ground_truth, os.getpid())
                while True:
                    time.sleep(0.05)
            os._exit(0)
        os.waitpid(first, 0)
    if solution_str.startswith("hang"):
        while True:
            time.sleep(0.05)
    return 1.0
"""


def write(tmp_path: Path, name: str, source: str) -> str:
    path = tmp_path / name
    path.write_text(source)
    return f"{path}:compute_score"


def item(spec: str, answer: str, gold: str) -> WorkItem:
    return WorkItem(key=answer, reward_fn=spec, answer=answer, ground_truth=gold,
                    data_source="t", extra_info=None)


def wait_for_lines(path: Path, count: int, timeout_s: float = 60.0,
                   process: subprocess.Popen[bytes] | None = None) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"exited early: {process.communicate()}")
        if path.exists():
            lines = [int(x) for x in path.read_text().split()]
            if len(lines) >= count:
                return lines
        time.sleep(0.05)
    raise AssertionError(f"{path}: fewer than {count} pids after {timeout_s}s")


def survivors(pids: list[int], timeout_s: float = 20.0) -> list[int]:
    """The pids still alive (zombies count as dead) after waiting up to timeout_s."""
    deadline = time.monotonic() + timeout_s
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _alive(pid)]
        time.sleep(0.05)
    return alive


def _alive(pid: int) -> bool:
    try:
        return is_alive(psutil.Process(pid))
    except psutil.Error:
        return False


def test_reward_that_starts_processes_gets_the_direct_call_verdict(tmp_path: Path) -> None:
    spec = write(tmp_path, "pool_reward.py", POOL_REWARD)
    direct = CustomReward(spec).judge("7", "49", "t", None)
    assert direct.score == 1.0
    with WorkerPool(workers=2, timeout_s=60.0) as pool:
        results = pool.run([item(spec, "7", "49"), item(spec, "3", "9"), item(spec, "4", "15")])
    assert {k: (r.status, r.score) for k, r in results.items()} == {
        "7": ("ok", 1.0), "3": ("ok", 1.0), "4": ("ok", 0.0)}


def test_timeout_kills_every_process_the_reward_started(tmp_path: Path) -> None:
    spec = write(tmp_path, "leak_reward.py", LEAK_REWARD)
    pids = tmp_path / "pids"
    with WorkerPool(workers=1, timeout_s=1.5) as pool:
        results = pool.run([item(spec, "hang", str(pids))])
        assert results["hang"].status == "timeout"
        started = wait_for_lines(pids, 1)
        assert survivors(started, timeout_s=5) == []


def test_processes_left_behind_by_finished_items_die_with_the_run(tmp_path: Path) -> None:
    spec = write(tmp_path, "leak_reward.py", LEAK_REWARD)
    pids = tmp_path / "pids"
    with WorkerPool(workers=1, timeout_s=60.0) as pool:
        results = pool.run([item(spec, "leave", str(pids)), item(spec, "daemon", str(pids))])
        assert {r.score for r in results.values()} == {1.0}
        started = wait_for_lines(pids, 3)
        assert all(_alive(pid) for pid in started)  # still running until the run ends
        workers = pool.pids()
    assert survivors(started + workers) == []


def score_command() -> list[str]:
    return [sys.executable, "-c", "from scoring.score_cli import main; main()"]


@pytest.mark.slow
def test_sigkill_of_score_leaves_no_worker_or_child(tmp_path: Path) -> None:
    spec = write(tmp_path, "leak_reward.py", LEAK_REWARD)
    pids = tmp_path / "pids"
    rows = [{"prompt": f"p{i}", "response": f"hang{i}", "data_source": "t",
             "ground_truth": str(pids)} for i in range(2)]
    data = tmp_path / "rollouts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**os.environ, "ROLLOUTS_SCORE_CACHE": str(tmp_path / "cache")}
    command = [*score_command(), str(data), "--reward-fn", spec, "--workers", "2",
               "--timeout", "600"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        children = wait_for_lines(pids, 2, process=process)
        workers = wait_for_lines(Path(str(pids) + ".workers"), 2)
        below = [p.pid for p in psutil.Process(process.pid).children(recursive=True)]
        assert set(workers) <= set(below)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)
    assert survivors(sorted(set(children + workers + below))) == []


def test_pools_share_one_reaper_and_kill_every_tree_on_close(tmp_path: Path) -> None:
    spec = write(tmp_path, "leak_reward.py", LEAK_REWARD)
    pids = tmp_path / "pids"
    with WorkerPool(workers=2, timeout_s=60.0) as first, WorkerPool(workers=1, timeout_s=60.0) as second:
        first.run([item(spec, "a", str(pids)), item(spec, "b", str(pids))])
        second.run([item(spec, "c", str(pids))])
        reaper = shared_reaper()
        assert reaper.process.is_alive() and reaper is shared_reaper()
        started = wait_for_lines(pids, 3)
        workers = first.pids() + second.pids()
        assert all(_alive(pid) for pid in started)
    assert survivors(started + workers) == []
    assert shared_reaper() is reaper  # closing the pools leaves the process's reaper running


SESSION_REWARD = """
import subprocess
import time


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    # `setsid sleep`: a grandchild in a session of its own, out of reach of a group signal.
    for _ in range(2):
        subprocess.Popen(["setsid", "sleep", ground_truth], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    while True:
        time.sleep(0.05)
"""


def _sleeping(token: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if process.info["cmdline"] == ["sleep", token] and is_alive(process):
            found.append(process)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP])
def test_signal_to_the_process_group_of_score_leaves_no_process(tmp_path: Path, sig: int) -> None:
    """A closed terminal, `kill -- -PGID` or a job's end signals the whole group at once: the
    workers and the reaper die with `score` unless they live outside its group."""
    spec = write(tmp_path, "session_reward.py", SESSION_REWARD)
    token = f"{4000 + os.getpid() % 1000 + sig}.{time.monotonic_ns() % 997}"  # this test's sleeps
    rows = [{"prompt": f"p{i}", "response": f"r{i}", "data_source": "t", "ground_truth": token}
            for i in range(4)]
    data = tmp_path / "rollouts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**os.environ, "ROLLOUTS_SCORE_CACHE": str(tmp_path / "cache")}
    command = [*score_command(), str(data), "--reward-fn", spec, "--workers", "2",
               "--timeout", "600"]
    log = (tmp_path / "score.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(_sleeping(token)) < 4 and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "score.log").read_text()
            time.sleep(0.05)
        assert len(_sleeping(token)) == 4
    finally:
        os.killpg(process.pid, sig)
        process.wait(timeout=60)
        log.close()
    deadline = time.monotonic() + 5
    while _sleeping(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _sleeping(token)
    for survivor in left:
        survivor.kill()
    assert left == []
