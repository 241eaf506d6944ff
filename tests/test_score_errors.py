"""Rows a reward function cannot judge are loud: kept out of the metrics (or counted as wrong on
request), counted per data source, a non-zero exit; inf/NaN rewards are errors; a run stops early
only when a data source's recent answers nearly all fail; error verdicts are never kept for a
rerun. The real `score` command on real files, real worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from scoring.journal import VerdictJournal, state_dir_for
from scoring.types import RewardResult

# Fails on answers starting with "bad"; every call is logged.
SOMETIMES_FAILING = """
import os

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    with open(os.environ["CALL_LOG"], "a") as log:
        log.write(solution_str + "\\n")
    if solution_str.startswith("bad"):
        raise RuntimeError("cannot parse " + solution_str)
    return float(solution_str.startswith("right"))
"""

NON_FINITE = """
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    return {"inf": float("inf"), "nan": float("nan"), "-inf": {"score": float("-inf")}}.get(
        solution_str, 1.0)
"""

# Needs a package that is installed only later (a folder put on PYTHONPATH).
NEEDS_PACKAGE = """
import os

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    with open(os.environ["CALL_LOG"], "a") as log:
        log.write(solution_str + "\\n")
    import grading_helper
    return grading_helper.grade(solution_str, ground_truth)
"""


def score(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from scoring.score_cli import main; main()", *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "CALL_LOG": str(tmp_path / "calls.log"),
            "ROLLOUTS_SCORE_CACHE": str(tmp_path / "cache"), **extra}


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().split() if log.exists() else []


def write_rows(path: Path, answers: list[tuple[str, str, str]]) -> Path:
    """(data source, prompt, answer) per row; samples of a prompt share its prompt id."""
    rows = [
        {"prompt": prompt, "response": answer, "data_source": source,
         "reward_model": {"ground_truth": "x"}}
        for source, prompt, answer in answers
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def strict_json(path: Path) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def tenth_failing(tmp_path: Path) -> tuple[Path, Path]:
    """20 prompts x 5 samples of source `s`, one in ten raising; 3 clean rows of source `clean`."""
    reward = tmp_path / "reward.py"
    reward.write_text(SOMETIMES_FAILING)
    answers = []
    for prompt in range(20):
        for sample in range(5):
            kind = "bad" if (prompt * 5 + sample) % 10 == 3 else ("right" if sample % 2 else "wrong")
            answers.append(("s", f"p{prompt}", f"{kind}{prompt}_{sample}"))
    answers += [("clean", "q", f"right{i}") for i in range(3)]
    return reward, write_rows(tmp_path / "in.jsonl", answers)


def expected_mean(answers: list[str], count_errors: bool) -> float:
    """mean@n by hand: per prompt the mean over its kept samples, then over prompts."""
    by_prompt: dict[str, list[float]] = {}
    for answer in answers:
        prompt = answer.split("_")[0].lstrip("abdghinortw")
        if answer.startswith("bad") and not count_errors:
            continue
        by_prompt.setdefault(prompt, []).append(float(answer.startswith("right")))
    return sum(sum(v) / len(v) for v in by_prompt.values()) / len(by_prompt)


@pytest.mark.parametrize(("on_error", "exit_code"), [(None, 3), ("fail", 3), ("skip", 0), ("zero", 0)])
def test_reward_errors_are_kept_out_of_metrics_counted_and_fail_the_run(
    tmp_path: Path, on_error: str | None, exit_code: int
) -> None:
    reward, data = tenth_failing(tmp_path)
    options = [] if on_error is None else ["--on-error", on_error]
    done = score(data, "--reward-fn", reward, "--workers", "1", "--no-cache", *options,
                 env=environment(tmp_path))
    assert done.returncode == exit_code, done.stderr
    assert "Traceback" not in done.stderr
    # Nothing is lost: every row is written, the failed ones with their error.
    scored = pd.read_parquet(tmp_path / "in.scored.parquet")
    assert len(scored) == 103
    failed = scored[scored["score_status"] == "error"]
    assert len(failed) == 10 and failed["score_error"].str.contains("RuntimeError: cannot parse").all()
    results = strict_json(tmp_path / "in.scored.results.json")
    source = results["data_sources"]["s"]
    assert results["error_rows"] == 10 and source["error_rows"] == 10
    assert results["data_sources"]["clean"]["error_rows"] == 0
    answers = scored[scored["data_source"] == "s"]["response"].tolist()
    counted = on_error == "zero"
    assert source["mean@n"] == pytest.approx(expected_mean(answers, count_errors=counted))
    assert source["n_samples"] == (100 if counted else 90)
    assert "10 rows failed in the reward function (s=10)" in done.stderr
    if exit_code:
        assert "--on-error skip" in done.stderr


def test_all_ten_percent_failing_lowers_nothing_by_default(tmp_path: Path) -> None:
    """The default's metrics are those of the rows that were judged: equal to `skip`'s."""
    reward, data = tenth_failing(tmp_path)
    env = environment(tmp_path)
    score(data, "--reward-fn", reward, "--workers", "1", "--no-cache", "-o", tmp_path / "a.parquet",
          env=env)
    score(data, "--reward-fn", reward, "--workers", "1", "--no-cache", "-o", tmp_path / "b.parquet",
          "--on-error", "zero", env=env)
    kept = strict_json(tmp_path / "a.results.json")["data_sources"]["s"]
    zero = strict_json(tmp_path / "b.results.json")["data_sources"]["s"]
    assert kept["mean@n"] > zero["mean@n"]
    assert kept["pass@k"]["1"] == pytest.approx(kept["mean@n"])


def test_non_finite_rewards_are_error_rows_of_their_own_kind(tmp_path: Path) -> None:
    reward = tmp_path / "nonfinite.py"
    reward.write_text(NON_FINITE)
    data = write_rows(tmp_path / "in.jsonl", [("s", "p", a) for a in ("ok", "inf", "nan", "-inf")])
    done = score(data, "--reward-fn", reward, "--workers", "1", "--no-cache", "--on-error", "zero",
                 env=environment(tmp_path))
    assert done.returncode == 0, done.stderr
    scored = pd.read_parquet(tmp_path / "in.scored.parquet")
    assert scored["score_status"].tolist() == ["ok", "error", "error", "error"]
    assert scored["score"].tolist() == [1.0, 0.0, 0.0, 0.0]
    kinds = scored["score_error"][1:].tolist()
    assert all(k.startswith("NonFiniteScore: the reward returned") for k in kinds), kinds
    results = strict_json(tmp_path / "in.scored.results.json")  # no Infinity, no NaN
    assert results["data_sources"]["s"]["mean@n"] == 0.25
    assert results["error_rows"] == 3


def test_failures_that_come_first_do_not_stop_the_run(tmp_path: Path) -> None:
    """60 failing answers first, then 540 fine ones: a count from the start would stop; a rate
    over the last 100 does not."""
    reward = tmp_path / "reward.py"
    reward.write_text(SOMETIMES_FAILING)
    answers = [("s", f"p{i}", f"bad{i}") for i in range(60)]
    answers += [("s", f"p{i}", f"right{i}") for i in range(60, 600)]
    data = write_rows(tmp_path / "in.jsonl", answers)
    done = score(data, "--reward-fn", reward, "--workers", "1", "--no-cache", "--on-error", "skip",
                 env=environment(tmp_path))
    assert done.returncode == 0, done.stderr
    assert len(calls(tmp_path)) == 600
    assert strict_json(tmp_path / "in.scored.results.json")["error_rows"] == 60


def test_a_failing_source_stops_the_run_and_is_named(tmp_path: Path) -> None:
    """Source `good` is fine; source `broken` fails on everything after its first answers."""
    reward = tmp_path / "reward.py"
    reward.write_text(SOMETIMES_FAILING)
    answers = [("good", f"g{i}", f"right{i}") for i in range(50)]
    answers += [("broken", f"b{i}", f"bad{i}") for i in range(3000)]
    data = write_rows(tmp_path / "in.jsonl", answers)
    env = environment(tmp_path)
    done = score(data, "--reward-fn", reward, "--workers", "1", "--no-cache", env=env)
    assert done.returncode == 1
    assert "of data source 'broken', more than --max-error-rate 0.9; stopped" in done.stderr
    assert "First error: RuntimeError: cannot parse bad0" in done.stderr
    assert len(calls(tmp_path)) < 1500
    # Disabled: everything is judged, the outputs are written, the run exits 3 (--overwrite:
    # from nothing, not from the good source's verdicts the stopped run kept).
    (tmp_path / "calls.log").unlink()
    done = score(data, "--reward-fn", reward, "--workers", "1", "--no-cache", "--overwrite",
                 "--max-error-rate", "1", env=env)
    assert done.returncode == 3, done.stderr
    assert len(calls(tmp_path)) == 3050
    assert "3000 rows failed in the reward function (broken=3000)" in done.stderr


def test_bad_error_options_are_one_line_errors(tmp_path: Path) -> None:
    reward, data = tenth_failing(tmp_path)
    done = score(data, "--reward-fn", reward, "--max-error-rate", "1.5", env=environment(tmp_path))
    assert done.returncode == 1 and "--max-error-rate 1.5: give a share from 0 to 1" in done.stderr
    done = score(data, "--reward-fn", reward, "--on-error", "ignore", env=environment(tmp_path))
    assert done.returncode == 2 and "'ignore' is not one of 'fail', 'zero', 'skip'" in done.stderr


def test_error_verdicts_are_judged_again_once_the_cause_is_fixed(tmp_path: Path) -> None:
    """A reward fails for a missing package and the run stops; the package is installed; the
    same command judges every row again (the stopped run's journal kept no error verdict)."""
    reward = tmp_path / "grader" / "reward.py"
    reward.parent.mkdir()
    reward.write_text(NEEDS_PACKAGE)
    site = tmp_path / "site"
    site.mkdir()
    data = write_rows(tmp_path / "in.jsonl", [("s", f"p{i}", f"a{i}") for i in range(8)])
    env = environment(tmp_path, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    done = score(data, "--reward-fn", reward, "--workers", "1", "--no-cache", env=env)
    assert done.returncode == 1 and "No module named 'grading_helper'" in done.stderr
    (site / "grading_helper.py").write_text("def grade(answer, gold):\n    return 1.0\n")
    (tmp_path / "calls.log").unlink()
    done = score(data, "--reward-fn", reward, "--workers", "1", "--no-cache", env=env)
    assert done.returncode == 0, done.stderr
    assert len(calls(tmp_path)) == 8
    scored = pd.read_parquet(tmp_path / "in.scored.parquet")
    assert scored["score"].tolist() == [1.0] * 8


def test_journal_keeps_only_results_and_overwrite_starts_from_nothing(tmp_path: Path) -> None:
    output = tmp_path / "out.parquet"
    journal = VerdictJournal(output)
    journal.append({
        "ok": RewardResult(1.0, True, "7"),
        "none": RewardResult(0.0, False, None, status="no_answer"),
        "error": RewardResult(0.0, False, None, status="error", extra={"score_error": "x"}),
        "timeout": RewardResult(0.0, False, None, status="timeout"),
    })
    journal.close()
    # An older journal may hold an error verdict: it is not given back either.
    with open(state_dir_for(output) / "verdicts.jsonl", "a") as handle:
        handle.write(json.dumps({"key": "old", "verdict": {
            "score": 0.0, "acc": False, "pred": None, "status": "error", "extra": {}}}) + "\n")
    again = VerdictJournal(output)
    assert sorted(again.load()) == ["none", "ok"]
    again.close()
    fresh = VerdictJournal(output, fresh=True)
    assert fresh.load() == {}
    fresh.close()


@pytest.mark.slow  # three runs of a command that stops after a window of failures
def test_overwrite_rejudges_what_a_stopped_run_kept(tmp_path: Path) -> None:
    """A run stops early and keeps its 20 results; the same command resumes from them, the same
    command with --overwrite judges them again."""
    reward = tmp_path / "reward.py"
    reward.write_text(SOMETIMES_FAILING)
    answers = [("s", f"p{i}", f"right{i}") for i in range(20)]
    answers += [("s", f"q{i}", f"bad{i}") for i in range(300)]
    data = write_rows(tmp_path / "in.jsonl", answers)
    env = environment(tmp_path)

    def rejudged(*options: str) -> int:
        (tmp_path / "calls.log").unlink(missing_ok=True)
        done = score(data, "--reward-fn", reward, "--workers", "1", "--no-cache", *options, env=env)
        assert done.returncode == 1 and "stopped" in done.stderr
        return sum(call.startswith("right") for call in calls(tmp_path))

    assert rejudged() == 20
    assert rejudged() == 0  # resumed from the stopped run's journal
    assert rejudged("--overwrite") == 20
