"""Rows scored by forked workers that read the frame themselves (scoring.rows): a hang or a dead
worker while judging or while extracting costs only its own item or row; nothing else is lost or
judged twice in a worker; the output is the same whatever the worker count."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from scoring.rewards.custom import CustomReward
from scoring.rewards.extract import Extraction
from scoring.scorer import SCORE_COLUMNS, ScoreConfig, Scorer

FAULTY_REWARD = """
import os, time

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    with open(os.environ["CALL_LOG"], "a") as log:
        log.write(solution_str + "\\n")
    if solution_str == "hang":
        time.sleep(600)
    if solution_str == "crash":
        os._exit(3)
    return float(solution_str == ground_truth)
"""


@pytest.fixture
def faulty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = tmp_path / "faulty.py"
    path.write_text(FAULTY_REWARD)
    monkeypatch.setenv("CALL_LOG", str(tmp_path / "calls.log"))
    return f"{path}:compute_score"


def frame_of(responses: list[str], gold: str = "ok") -> pd.DataFrame:
    return pd.DataFrame({
        "prompt_id": ["p"] * len(responses),
        "response": responses,
        "data_source": "t",
        "reward_model": [{"ground_truth": gold}] * len(responses),
    })


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().split() if log.exists() else []


def score(frame: pd.DataFrame, spec: str, workers: int = 1, timeout_s: float = 30.0) -> Any:
    with Scorer(ScoreConfig(reward_fn=spec, workers=workers, timeout_s=timeout_s, cache_dir=None)) as scorer:
        return scorer.score(frame)


def test_hang_and_crash_cost_only_their_own_items(faulty: str, tmp_path: Path) -> None:
    # 40 rows in several ranges; "hang" twice (one item), "crash" once.
    responses = [f"r{i}" if i % 3 else "ok" for i in range(40)]
    responses[5] = responses[25] = "hang"
    responses[12] = "crash"
    scored, stats = score(frame_of(responses), faulty, timeout_s=1.0)
    status = dict(zip(range(40), scored["score_status"], strict=True))
    assert status[5] == status[25] == "timeout" and "worker killed" in scored["score_error"][5]
    assert status[12] == "error" and "died" in scored["score_error"][12]
    others = [i for i in range(40) if i not in (5, 12, 25)]
    assert all(status[i] == "ok" for i in others)
    assert list(scored["score"][others]) == [float(responses[i] == "ok") for i in others]
    # Every other item is judged exactly once more after a kill at most: nothing is lost.
    judged = calls(tmp_path)
    assert set(judged) == set(responses)
    assert judged.count("hang") == 1 and stats.rows == 40


def test_a_row_whose_extraction_kills_its_worker_gets_that_error_alone(
    faulty: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_extract = CustomReward.extract

    def dies_on_poison(self: CustomReward, response: str) -> Extraction:
        if response == "poison":
            os._exit(5)  # the forked worker inherits this method
        return real_extract(self, response)

    monkeypatch.setattr(CustomReward, "extract", dies_on_poison)
    responses = ["ok", "no", "poison", "ok", "no"] * 3
    scored, _ = score(frame_of(responses), faulty)
    for i, response in enumerate(responses):
        if response == "poison":
            assert scored["score_status"][i] == "error"
            assert "died" in scored["score_error"][i]
        else:
            assert (scored["score_status"][i], scored["score"][i]) == ("ok", float(response == "ok"))


def test_output_is_the_same_with_one_or_several_workers(faulty: str) -> None:
    responses = [f"a{i % 7}" if i % 5 else "ok" for i in range(3000)]
    one, one_stats = score(frame_of(responses), faulty, workers=1)
    two, _ = score(frame_of(responses), faulty, workers=2)
    pd.testing.assert_frame_equal(one, two)
    # One worker remembers short answers across its ranges: 8 distinct items, judged once each.
    assert one_stats.judged == 8


def test_plain_verdicts_add_only_the_score_columns(faulty: str) -> None:
    scored, _ = score(frame_of(["ok", "no"]), faulty)
    assert list(scored.columns) == ["prompt_id", "response", "data_source", "reward_model",
                                    "sample_idx", *SCORE_COLUMNS]


def test_reward_extras_are_columns_for_the_rows_that_have_them(tmp_path: Path) -> None:
    path = tmp_path / "extras.py"
    path.write_text(
        "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
        "    if solution_str == 'rich':\n"
        "        return {'score': 0.5, 'tests': [1, 2]}\n"
        "    return 1.0\n"
    )
    frame = frame_of(["plain", "rich", "plain"])
    frame["error"] = pd.Series([None, None, {"kind": "http_500"}], dtype=object)
    scored, stats = score(frame, f"{path}:compute_score")
    assert list(scored["score_status"]) == ["ok", "ok", "error"]
    assert list(scored["tests"].isna()) == [True, False, True] and scored["tests"][1] == "[1, 2]"
    assert list(scored["score_error"].isna()) == [True, True, False]
    assert scored["score_error"][2] == "generation failed"
    assert stats.generation_errors == 1


CYCLIC_REWARD = """
import resource

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    for _ in range(5):
        garbage = {"payload": bytearray(10_000)}
        garbage["self"] = garbage  # freed only by the cyclic collector
    return {"score": 1.0, "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
"""


def test_cyclic_garbage_of_reward_code_is_collected_in_workers(tmp_path: Path) -> None:
    path = tmp_path / "cyclic.py"
    path.write_text(CYCLIC_REWARD)
    # 20,000 rows x 5 x 10 KB: 1 GB if nothing collected the cycles.
    scored, _ = score(frame_of([f"r{i}" for i in range(20_000)]), f"{path}:compute_score")
    grown_mb = (scored["rss_kb"].max() - scored["rss_kb"].min()) / 1024
    assert grown_mb < 200, grown_mb
