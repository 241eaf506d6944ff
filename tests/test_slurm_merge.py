"""`rollouts slurm merge` and `status` on a finished run (its task run in this process with the
stand-in `vllm`): merges at the same time all succeed with the same files, and what is broken is
said in one line."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from rollouts.cli import main
from slurm.submit import load_run, write_run_dir
from slurm.task import run_task
from slurm.units import done_ids, unit_output
from tests.fake_vllm import FAKE_VLLM_COMMAND
from tests.generate_helpers import verl_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
HELD_S = 4.0


@pytest.fixture
def finished_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run of three datasets (six units), every unit done, nothing merged yet."""
    monkeypatch.setenv("ROLLOUTS_VLLM", FAKE_VLLM_COMMAND)
    datasets = []
    for name in ("a", "b", "c"):
        write_jsonl(tmp_path / f"{name}.jsonl", verl_rows(6, tag=name))
        datasets.append({"path": f"{name}.jsonl"})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "model": "tiny-model", "max_concurrent": 8, "output_dir": "out",
        "defaults": {"n": 2, "max_tokens": 8}, "datasets": datasets,
        "slurm": {"array_size": 1, "unit_prompts": 3, "heartbeat": 1, "lease_timeout": 10},
    }), encoding="utf-8")
    run = load_run(path)
    write_run_dir(run, run.slurm.run_dir)
    assert run_task(run.slurm.run_dir) == "done"
    return run.slurm.run_dir


def merge_process(run_dir: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "ROLLOUTS_RAISE"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "rollouts.cli", "slurm", "merge", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def one_line_error(*args: str) -> str:
    result = CliRunner().invoke(main, ["slurm", *args])
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_merges_at_the_same_time_all_succeed_with_the_same_files(finished_run: Path) -> None:
    out = finished_run.parent
    # The merge job and a user's merge, started together while a third merge holds the run:
    # they wait their turn (a merge seeing another's half-recorded output would refuse it).
    with open(finished_run / ".merge.lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        merges = [merge_process(finished_run) for _ in range(2)]
        time.sleep(HELD_S)
        assert all(merge.poll() is None for merge in merges)
        assert not (out / "a.parquet").exists()
    for merge in merges:
        _, err = merge.communicate(timeout=120)
        assert merge.returncode == 0, err
    again = [merge_process(finished_run) for _ in range(2)]  # and once more, on their own
    for merge in again:
        _, err = merge.communicate(timeout=120)
        assert merge.returncode == 0, err
    for name in ("a", "b", "c"):
        rows = pd.read_parquet(out / f"{name}.parquet")
        assert len(rows) == 12 and not rows.duplicated(["prompt_id", "sample_idx"]).any()
    assert json.loads((finished_run / "merge.json").read_text())["state"] == "merged"
    assert not list(out.glob(".*.tmp-*"))  # no temp file left behind


def test_what_is_broken_is_one_line(
    finished_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROLLOUTS_RAISE", raising=False)
    out = finished_run.parent
    # status (or merge) on the output folder instead of the run directory: names the right one
    message = one_line_error("status", str(out))
    assert "not a SLURM run directory" in message and f"the run directory is {finished_run}" in message
    # a unit marked done whose rows are gone: which unit, and how to redo it
    uid = sorted(done_ids(finished_run))[0]
    unit_output(finished_run, uid).unlink()
    message = one_line_error("merge", str(finished_run))
    assert f"unit {uid} is marked done but its rows" in message
    assert f"delete {finished_run / 'done' / (uid + '.json')} and submit again" in message
    status = CliRunner().invoke(main, ["slurm", "status", str(finished_run)])
    assert "merge failed: unit" in status.output


FLAKY_REWARD = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    if ground_truth == "2":
        raise RuntimeError("the grader cannot read this answer")
    return 1.0
'''


@pytest.mark.parametrize("on_error", [None, "skip"])
def test_the_score_step_fails_when_rows_errored_unless_the_config_accepts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_error: str | None
) -> None:
    """The score job exits 3, as `score` does, when a row's reward failed (on_error: fail, the
    default), with its scored files written; status says the step failed and why."""
    monkeypatch.setenv("ROLLOUTS_VLLM", FAKE_VLLM_COMMAND)
    monkeypatch.setenv("ROLLOUTS_SCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ROLLOUTS_RAISE", raising=False)
    (tmp_path / "reward.py").write_text(FLAKY_REWARD, encoding="utf-8")
    write_jsonl(tmp_path / "a.jsonl", verl_rows(4, tag="a"))  # ground truth "2": prompt 1
    section: dict[str, object] = {"reward": f"{tmp_path / 'reward.py'}:compute_score", "workers": 1}
    if on_error:
        section["on_error"] = on_error
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "model": "tiny-model", "max_concurrent": 4, "output_dir": "out",
        "defaults": {"n": 2, "max_tokens": 8}, "datasets": [{"path": "a.jsonl"}],
        "slurm": {"array_size": 1, "unit_prompts": 4, "heartbeat": 1, "lease_timeout": 10},
        "score": section,
    }), encoding="utf-8")
    run = load_run(path)
    run_dir = run.slurm.run_dir
    write_run_dir(run, run_dir)
    assert run_task(run_dir) == "done"
    assert CliRunner().invoke(main, ["slurm", "merge", str(run_dir)]).exit_code == 0
    result = CliRunner().invoke(main, ["slurm", "score", str(run_dir)])
    scored = pd.read_parquet(tmp_path / "out" / "a.scored.parquet")
    assert (scored["score_status"] == "error").sum() == 2  # written either way
    status = CliRunner().invoke(main, ["slurm", "status", str(run_dir)]).output
    if on_error is None:
        assert result.exit_code == 3, result.output
        assert "2 rows failed in the reward function (openai/gsm8k=2)" in result.output
        assert "score failed: 2 rows failed in the reward function" in status
        assert "scored: " not in status
    else:
        assert result.exit_code == 0, result.output
        assert f"scored: {tmp_path / 'out' / 'a.scored.parquet'}" in status
