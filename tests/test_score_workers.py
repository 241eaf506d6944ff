"""The worker pool: batches, a hard per-item time limit that kills real processes, crash recovery."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from scoring.workers import WorkerPool, WorkItem

REWARD_SOURCE = """
import os, time

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    if solution_str == "hang":
        with open(ground_truth, "w") as handle:
            handle.write(str(os.getpid()))
        time.sleep(600)
    if solution_str == "crash":
        os._exit(3)
    if solution_str == "raise":
        raise RuntimeError("reward exploded")
    return {"score": float(len(solution_str)), "pid": os.getpid()}
"""


@pytest.fixture
def reward_spec(tmp_path: Path) -> str:
    path = tmp_path / "slow_reward.py"
    path.write_text(REWARD_SOURCE)
    return f"{path}:compute_score"


def item(spec: str, answer: str, ground_truth: str = "") -> WorkItem:
    return WorkItem(key=answer, reward_fn=spec, answer=answer, ground_truth=ground_truth,
                    data_source="t", extra_info=None)


def test_hung_item_is_killed_and_marked_timeout(reward_spec: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "hung.pid"
    items = [item(reward_spec, "a"), item(reward_spec, "hang", str(pid_file)),
             item(reward_spec, "bbb"), item(reward_spec, "cc")]
    with WorkerPool(workers=1, timeout_s=1.0, max_batch=8) as pool:
        results = pool.run(items)
        assert pool.replaced == 1
        hung_pid = int(pid_file.read_text())
        assert not psutil.pid_exists(hung_pid)
        assert hung_pid not in pool.pids()
    assert results["hang"].status == "timeout"
    assert "worker killed" in results["hang"].extra["score_error"]
    # The rest of the hung item's batch was scored by the replacement worker.
    assert {k: results[k].score for k in ("a", "bbb", "cc")} == {"a": 1.0, "bbb": 3.0, "cc": 2.0}
    assert results["bbb"].extra["pid"] != hung_pid


def test_crashed_worker_marks_item_error_and_goes_on(reward_spec: str) -> None:
    items = [item(reward_spec, "x"), item(reward_spec, "crash"), item(reward_spec, "yy")]
    with WorkerPool(workers=1, timeout_s=30.0, max_batch=8) as pool:
        results = pool.run(items)
        assert pool.replaced == 1
    assert results["crash"].status == "error"
    assert "died" in results["crash"].extra["score_error"]
    assert (results["x"].score, results["yy"].score) == (1.0, 2.0)


def test_reward_exception_is_error_verdict_not_a_crash(reward_spec: str) -> None:
    with WorkerPool(workers=1, timeout_s=30.0) as pool:
        results = pool.run([item(reward_spec, "raise"), item(reward_spec, "ok")])
        assert pool.replaced == 0
    assert results["raise"].status == "error"
    # The message names the user's file and line; the traceback tail comes with it.
    message = results["raise"].extra["score_error"]
    assert message.startswith("RuntimeError: reward exploded (") and "slow_reward.py:12)" in message
    assert 'raise RuntimeError("reward exploded")' in results["raise"].extra["score_traceback"]
    assert "scoring" + os.sep + "workers.py" not in results["raise"].extra["score_traceback"]
    assert results["ok"].score == 2.0


def test_items_spread_over_workers_in_batches(reward_spec: str) -> None:
    items = [item(reward_spec, "z" * n) for n in range(1, 41)]
    done: list[int] = []
    with WorkerPool(workers=2, timeout_s=30.0, max_batch=5) as pool:
        results = pool.run(items, lambda fresh: done.append(len(fresh)))
    assert [results["z" * n].score for n in range(1, 41)] == [float(n) for n in range(1, 41)]
    assert len({r.extra["pid"] for r in results.values()}) == 2
    assert sum(done) == 40


def test_pool_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        WorkerPool(workers=0, timeout_s=1)
    with pytest.raises(ValueError):
        WorkerPool(workers=1, timeout_s=0)


def test_worker_killed_while_idle_is_replaced(reward_spec: str) -> None:
    with WorkerPool(workers=1, timeout_s=30.0) as pool:
        assert pool.run([item(reward_spec, "a")])["a"].score == 1.0
        (pid,) = pool.pids()
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(timeout=10)
        results = pool.run([item(reward_spec, "bb")])
        assert pool.replaced == 1 and pool.pids() != [pid]
    assert results["bb"].score == 2.0


MARK_REWARD = """
from pathlib import Path

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    Path(ground_truth).write_text("judged")
    return float(len(solution_str))
"""


def test_stream_judges_early_chunks_while_later_ones_are_produced(tmp_path: Path) -> None:
    path = tmp_path / "mark.py"
    path.write_text(MARK_REWARD)
    spec = f"{path}:compute_score"
    mark = tmp_path / "first.mark"
    judged_before_second_chunk: list[bool] = []

    def chunks() -> Iterator[list[WorkItem]]:
        yield [item(spec, "a", str(mark))]
        # The consumer asks for more only after handing out the first chunk: wait until a worker
        # has judged it, which proves judging and producing overlap.
        for _ in range(200):
            if mark.exists():
                break
            time.sleep(0.05)
        judged_before_second_chunk.append(mark.exists())
        yield []
        yield [item(spec, "bb", str(tmp_path / "x")), item(spec, "ccc", str(tmp_path / "y"))]

    with WorkerPool(workers=1, timeout_s=30.0) as pool:
        results = pool.run_stream(chunks())
    assert judged_before_second_chunk == [True]
    assert {k: r.score for k, r in results.items()} == {"a": 1.0, "bb": 2.0, "ccc": 3.0}


PLAIN_OR_RICH_SOURCE = """
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    if solution_str.startswith("rich"):
        return {"score": 0.5, "pred": solution_str, "note": [1, 2]}
    if solution_str == "zero":
        return 0
    return float(len(solution_str))
"""


def test_plain_and_rich_verdicts_come_back_in_order(tmp_path: Path) -> None:
    """Keys stay in the parent and plain verdicts travel as bare scores: every verdict must still
    land on its own key, whatever the mix in a batch."""
    path = tmp_path / "mixed_reward.py"
    path.write_text(PLAIN_OR_RICH_SOURCE)
    spec = f"{path}:compute_score"
    answers = [f"rich{i}" if i % 7 == 0 else ("zero" if i % 5 == 0 else "x" * (i % 4 + 1))
               for i in range(300)]
    with WorkerPool(workers=2, timeout_s=30.0, max_batch=64) as pool:
        results = pool.run([item(spec, a, str(i)) for i, a in enumerate(dict.fromkeys(answers))])
    for answer in dict.fromkeys(answers):
        result = results[answer]
        assert result.status == "ok"
        if answer.startswith("rich"):
            assert (result.score, result.pred, result.extra) == (0.5, answer, {"note": [1, 2]})
        elif answer == "zero":
            assert (result.score, result.acc, result.pred, result.extra) == (0.0, False, None, {})
        else:
            assert (result.score, result.acc, result.pred) == (float(len(answer)), True, None)
