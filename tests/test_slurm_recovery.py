"""Runs that recover by themselves, on the real one-node SLURM (tests/slurm/) with the stand-in
`vllm`: killed tasks, a merge after a failed array, a resubmit right after a crash, tasks that
cannot start, inputs and configs changed after submit, retries, cancel, orphaned merges, and the
score step after the merge. Each test reads `rollouts slurm status` as a user would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from rollouts.cli import main
from slurm.merge import read_merge_marker
from slurm.status import run_status
from slurm.submit import read_jobs, submit_run
from tests.generate_helpers import verl_rows, write_jsonl
from tests.slurm_helpers import (
    assert_complete,
    exit_marker,
    release_requeued,
    squeue_state,
    status_text,
    task_file,
    task_log,
    wait_for,
    write_run,
)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def plain_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """The jobs print one-line errors, as for a user (sbatch passes the environment on)."""
    monkeypatch.delenv("ROLLOUTS_RAISE", raising=False)


def merge_state(run_dir: Path) -> str | None:
    state = read_merge_marker(run_dir).get("state")
    return str(state) if state else None


def test_killed_tasks_end_in_an_honest_merge_and_a_resubmit_takes_their_units_over_at_once(
    slurm_cluster: None, stand_in: Path, jobs: list[str], tmp_path: Path
) -> None:
    # lease_timeout 300 s: the new tasks must not wait for the dead tasks' leases to go stale.
    config = write_run(tmp_path, {"alpha": (8, 2)}, array_size=2, unit_prompts=2,
                       lease_timeout=300)
    first = submit_run(config)
    assert first.array_job_id and first.merge_job_id
    jobs += [first.array_job_id, first.merge_job_id]
    run_dir, array = first.run_dir, first.array_job_id
    wait_for(lambda: all(task_file(run_dir, f"{array}_{i}").get("state") == "running"
                         for i in (0, 1)), "both tasks to run")
    wait_for(lambda: run_status(run_dir).samples_under_way > 0, "samples in units under way")
    for index in (0, 1):
        os.kill(task_file(run_dir, f"{array}_{index}")["pid"], signal.SIGKILL)

    # afterany: the merge job runs after the failed array and says what is missing.
    assert wait_for(lambda: merge_state(run_dir), "the merge job") == "incomplete"
    text = status_text(run_dir)
    for index in (0, 1):
        assert f"{array}_{index} failed" in text and "exit 137, SIGKILL while working" in text
    assert "rate: 0.0 samples/s, 0 tokens/s (0 running task(s)); ETA -" in text
    under_way = int(re.search(r"(\d+) in units under way", text).group(1))  # type: ignore[union-attr]
    assert under_way > 0
    assert "leases of tasks gone" in text  # seen dead at once, not after 300 s
    assert f"merge incomplete (job {first.merge_job_id}): " in text
    assert "units are not done" in text and f"rollouts slurm submit {config}" in text

    started = time.monotonic()
    again = submit_run(config)
    assert again.array_job_id and again.merge_job_id
    jobs += [again.array_job_id, again.merge_job_id]
    wait_for(lambda: merge_state(run_dir) == "merged", "the second merge", timeout=120)
    assert time.monotonic() - started < 120  # well within the 300 s lease timeout
    assert_complete(again, {"alpha": 16})
    text = status_text(run_dir)
    assert f"merged: {tmp_path / 'out' / 'alpha.parquet'} (16 rows)" in text
    assert "samples: 16 of 16 done (100.0%: 16 in finished units" in text
    new_log = task_log(run_dir, f"{again.array_job_id}_0") + task_log(
        run_dir, f"{again.array_job_id}_1")
    assert "unit" in new_log and "done" in new_log


def test_a_task_that_cannot_check_for_work_fails_and_status_shows_its_log_line(
    slurm_cluster: None, stand_in: Path, jobs: list[str], tmp_path: Path
) -> None:
    missing = tmp_path / "no-venv" / "bin" / "python"
    config = write_run(tmp_path, {"beta": (4, 1)}, array_size=1, python=str(missing))
    result = submit_run(config)
    assert result.array_job_id and result.merge_job_id
    jobs += [result.array_job_id, result.merge_job_id]
    task = f"{result.array_job_id}_0"
    marker = wait_for(lambda: exit_marker(result.run_dir, task), "the task's exit marker")
    assert marker["exit"] == 127 and marker["stage"] == "check"  # not "nothing left", exit 0
    merge_exit = result.run_dir / "steps" / f"merge-{result.merge_job_id}.exit"
    wait_for(merge_exit.exists, "the merge job to fail as well")
    text = status_text(result.run_dir)
    assert f"{task} failed - exit 127 at start: could not check for work: " in text
    assert f"{missing}: No such file or directory" in text
    assert f"merge job {result.merge_job_id} failed (exit 127): " in text
    assert "units: 0 done, 0 leased, 1 pending of 1" in text


def test_tasks_run_the_submitted_config_and_refuse_a_changed_input_then_retry(
    slurm_cluster: None, stand_in: Path, jobs: list[str], tmp_path: Path
) -> None:
    config = write_run(tmp_path, {"gamma": (4, 2)}, array_size=1, unit_prompts=2,
                       max_retries=1, sbatch_extra=["--hold"])
    result = submit_run(config)
    assert result.array_job_id and result.merge_job_id
    jobs += [result.array_job_id, result.merge_job_id]
    task = f"{result.array_job_id}_0"
    # While the job waits: the YAML is edited and the input regenerated with more prompts.
    config.write_text(config.read_text().replace("n: 2", "n: 5").replace("tiny-model", "other"))
    data = tmp_path / "gamma.jsonl"
    original = data.read_bytes()
    write_jsonl(data, verl_rows(14, tag="gamma"))
    subprocess.run(["scontrol", "release", result.array_job_id], check=True)
    wait_for(lambda: "requeue 1 of 1" in task_log(result.run_dir, task), "the first retry")
    log = task_log(result.run_dir, task)
    assert f"input {data} changed since the run was submitted to {result.run_dir}" in log
    assert "size" in log and "restore it" in log

    data.write_bytes(original)  # restored: the retry runs the config as submitted (n=2)
    release_requeued(task)
    wait_for(lambda: merge_state(result.run_dir) == "merged", "the merge job")
    assert_complete(result, {"gamma": 8})
    rows = pd.read_parquet(tmp_path / "out" / "gamma.parquet")
    assert set(rows["model"]) == {"tiny-model"}
    assert "(restart 1)" in task_log(result.run_dir, task)


def test_an_orphaned_merge_is_named_and_replaced_and_cancel_stops_a_run(
    slurm_cluster: None, stand_in: Path, jobs: list[str], tmp_path: Path
) -> None:
    config = write_run(tmp_path, {"delta": (8, 2)}, array_size=2, unit_prompts=2,
                       max_retries=1)
    first = submit_run(config)
    assert first.array_job_id and first.merge_job_id
    jobs += [first.array_job_id, first.merge_job_id]
    run_dir, merge = first.run_dir, first.merge_job_id
    # A merge queued with afterok (as submits did before afterany) waits forever once its
    # array is cancelled by hand.
    subprocess.run(["scontrol", "update", f"JobId={merge}",
                    f"Dependency=afterok:{first.array_job_id}"], check=True)
    wait_for(lambda: task_file(run_dir, f"{first.array_job_id}_0").get("state") == "running",
             "a task to run")
    subprocess.run(["scancel", first.array_job_id], check=True)
    wait_for(lambda: "DependencyNeverSatisfied" in " ".join(
        j.reason for j in run_status(run_dir).orphans), "the merge to be orphaned")
    text = status_text(run_dir)
    assert f"orphaned: job {merge} waits for tasks that ended (DependencyNeverSatisfied)" in text
    assert f"`rollouts slurm submit {config}` cancels and replaces it" in text
    assert f"{first.array_job_id}_0 cancelled" in text  # scancel: no retry
    assert "requeue" not in task_log(run_dir, f"{first.array_job_id}_0")

    again = submit_run(config)
    assert again.array_job_id and again.merge_job_id
    jobs += [again.array_job_id, again.merge_job_id]
    assert again.replaced == [merge]
    wait_for(lambda: squeue_state(merge) == "", "the orphaned merge to be cancelled")
    wait_for(lambda: task_file(run_dir, f"{again.array_job_id}_0").get("state") == "running",
             "a task of the second submit to run")

    result = CliRunner().invoke(main, ["slurm", "cancel", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [again.array_job_id, again.merge_job_id]
    wait_for(lambda: all(squeue_state(j) == "" for j in (again.array_job_id,
                                                          again.merge_job_id)),
             "every job of the run to end")
    wait_for(lambda: exit_marker(run_dir, f"{again.array_job_id}_0"), "the exit marker")
    text = status_text(run_dir)
    assert "SLURM: no job of this run is queued or running" in text
    assert f"{again.array_job_id}_0 cancelled" in text and "(0 running task(s))" in text
    assert not re.search(r"^  \S+ running", text, re.MULTILINE)
    assert run_status(run_dir).units_leased == 0  # the stopped tasks gave their units back


def test_a_score_section_scores_the_merged_outputs_in_a_job_after_the_merge(
    slurm_cluster: None, stand_in: Path, jobs: list[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_VLLM_DELAY", "0.1")
    monkeypatch.setenv("ROLLOUTS_SCORE_CACHE", str(tmp_path / "cache"))
    config = write_run(tmp_path, {"eps": (4, 2)}, array_size=1,
                       top={"score": {"reward": "auto", "workers": 1}})
    result = submit_run(config)
    assert result.array_job_id and result.merge_job_id and result.score_job_id
    jobs += [result.array_job_id, result.merge_job_id, result.score_job_id]
    scored = tmp_path / "out" / "eps.scored.parquet"
    wait_for(lambda: squeue_state(result.score_job_id or "") == "" and scored.exists(),
             "the score job")
    rows = pd.read_parquet(scored)
    assert len(rows) == 8 and {"score", "acc", "score_status"} <= set(rows.columns)
    assert rows["score_status"].isin(["ok", "no_answer"]).all()
    text = status_text(result.run_dir)
    assert f"merged: {tmp_path / 'out' / 'eps.parquet'} (8 rows)" in text
    assert f"scored: {scored}" in text


def test_a_slurm_sweep_shows_done_in_sweep_parquet_once_its_merge_ran(
    slurm_cluster: None, stand_in: Path, jobs: list[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_VLLM_DELAY", "0.1")
    write_jsonl(tmp_path / "zeta.jsonl", verl_rows(3, tag="zeta"))
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "model": "tiny-model", "output_dir": "out", "max_concurrent": 2,
        "defaults": {"n": 2, "max_tokens": 8}, "datasets": ["zeta.jsonl"],
        "grid": {"temperature": [0.6, 1.0]},
        "slurm": {"array_size": 1, "unit_prompts": 4, "heartbeat": 1, "lease_timeout": 6},
    }))
    result = CliRunner().invoke(main, ["sweep", str(sweep_file), "--slurm"])
    assert result.exit_code == 0, (result.output, result.exception)
    [run_dir] = [p.parent for p in (tmp_path / "out").rglob("jobs.json")]
    jobs += [entry[key] for entry in read_jobs(run_dir) for key in ("array", "merge")]
    manifest = tmp_path / "out" / "sweep.parquet"
    assert set(pd.read_parquet(manifest)["status"]) == {"pending"}
    wait_for(lambda: merge_state(run_dir) == "merged", "the group's merge job")
    rows = pd.read_parquet(manifest)
    assert list(rows["status"]) == ["done", "done"] and list(rows["rows"]) == [6, 6]


def test_a_forced_submit_merges_after_every_array_still_running(
    slurm_cluster: None, stand_in: Path, jobs: list[str], tmp_path: Path
) -> None:
    config = write_run(tmp_path, {"eta": (8, 1)}, array_size=1, sbatch_extra=["--hold"])
    first = submit_run(config)
    second = submit_run(config, force=True)  # the first array still waits: its merge is replaced
    ids = [first.array_job_id, first.merge_job_id, second.array_job_id, second.merge_job_id]
    jobs += [job for job in ids if job]
    assert second.replaced == [first.merge_job_id]
    shown = subprocess.run(["scontrol", "show", "job", "-o", str(second.merge_job_id)],
                           capture_output=True, text=True, check=True).stdout
    assert f"afterany:{first.array_job_id}" in shown and f"afterany:{second.array_job_id}" in shown
    result = CliRunner().invoke(main, ["slurm", "cancel", str(first.run_dir)])
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.split()) == sorted([first.array_job_id or "",
                                                    second.array_job_id or "",
                                                    second.merge_job_id or ""])
