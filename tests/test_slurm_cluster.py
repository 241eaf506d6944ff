"""`rollouts slurm` on a real one-node SLURM (slurm-wlm + munge, started by the session fixture),
with the stand-in `vllm`: tasks that are requeued, SIGKILLed and preempted still give one complete
output, and no finished sample is requested twice (counted by the servers themselves)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from rollouts.cli import main
from rollouts.tiny_model import build_tiny_model
from slurm.merge import merge_run
from slurm.submit import submit_run
from slurm.task import has_work, run_task
from slurm.units import done_ids
from tests.slurm_helpers import (
    assert_complete,
    cli_error,
    release_requeued,
    requested_samples,
    squeue_state,
    task_file,
    wait_for,
    write_run,
)


def test_array_survives_a_requeue_and_a_sigkill_and_merges_complete(
    slurm_cluster: None, stand_in: Path, jobs: list[str], tmp_path: Path
) -> None:
    config = write_run(tmp_path, {"alpha": (12, 3), "beta": (8, 2)}, array_size=3)
    result = submit_run(config)
    assert result.array_job_id and result.merge_job_id
    jobs += [result.array_job_id, result.merge_job_id]
    run_dir, array = result.run_dir, result.array_job_id
    assert result.units_total == 5 and result.tasks == 3
    # Interrupt two tasks mid-unit, once they serve and samples are being written.
    wait_for(lambda: all(task_file(run_dir, f"{array}_{i}").get("state") == "running"
                         for i in (1, 2)), "tasks 1 and 2 to run")
    wait_for(lambda: stand_in.exists() and len(stand_in.read_text().splitlines()) >= 8,
             "samples to be requested")
    subprocess.run(["scontrol", "requeue", f"{array}_1"], check=True)
    os.kill(task_file(run_dir, f"{array}_2")["pid"], signal.SIGKILL)
    release_requeued(f"{array}_1")
    wait_for(lambda: len(done_ids(run_dir)) == 5, "every unit to be done")

    merged = merge_run(run_dir)
    assert [m.rows for m in merged] == [36, 16]
    assert_complete(result, {"alpha": 36, "beta": 16})
    counts = requested_samples(stand_in)
    assert len(counts) == 36 + 16  # every sample requested
    repeats = sum(c - 1 for c in counts.values())
    # Only requests in flight at an interruption are sent again: max_concurrent (2) per task.
    assert repeats <= 2 * 2, counts.most_common(5)
    log = (run_dir / "logs" / f"rollouts-run-{array}_1.log").read_text()
    assert "(restart 1)" in log
    assert merge_run(run_dir) == merged  # idempotent
    status = CliRunner().invoke(main, ["slurm", "status", str(run_dir)])
    assert "units: 5 done, 0 leased, 0 pending of 5" in status.output
    assert ("samples: 52 of 52 done (100.0%: 52 in finished units, 0 in units under way), "
            "0 error rows") in status.output
    assert all(f"  {array}_{i} " in status.output for i in range(3))  # a line per task
    assert "samples/s" in status.output and "tokens/s" in status.output
    again = submit_run(config)  # nothing left: nothing submitted
    assert again.tasks == 0 and again.array_job_id is None
    # A task started now finds nothing to claim and ends before starting any server.
    assert not has_work(run_dir)
    served = len(stand_in.read_text().splitlines())
    assert run_task(run_dir) == "idle"
    assert len(stand_in.read_text().splitlines()) == served
    assert not list((run_dir / "logs").glob("server-local-*"))


def test_preemption_signal_requeues_and_the_merge_job_completes_the_run(
    slurm_cluster: None, stand_in: Path, jobs: list[str], tmp_path: Path
) -> None:
    config = write_run(tmp_path, {"gamma": (8, 2)}, array_size=1, unit_prompts=2)
    result = submit_run(config)
    assert result.array_job_id and result.merge_job_id
    jobs += [result.array_job_id, result.merge_job_id]
    task = f"{result.array_job_id}_0"
    with pytest.raises(Exception, match="still queued or running"):
        submit_run(config)  # a second submit while the first runs is refused
    wait_for(lambda: done_ids(result.run_dir), "a first unit to be done")
    subprocess.run(["scancel", "--signal=USR1", "--batch", task], check=True)
    wait_for(lambda: "requeueing" in (result.run_dir / "logs" /
                                       f"rollouts-run-{task}.log").read_text(), "the requeue")
    release_requeued(task)
    wait_for(lambda: squeue_state(result.merge_job_id or "") == "" and
             (tmp_path / "out" / "gamma.parquet").exists(), "the merge job")
    assert_complete(result, {"gamma": 16})
    counts = requested_samples(stand_in)
    assert len(counts) == 16 and sum(c - 1 for c in counts.values()) <= 2
    log = (result.run_dir / "logs" / f"rollouts-run-{task}.log").read_text()
    assert "USR1: stopping to requeue" in log and "(restart 1)" in log


def test_bad_input_is_one_line_before_anything_is_submitted(
    slurm_cluster: None, stand_in: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ROLLOUTS_RAISE", raising=False)
    config = write_run(tmp_path, {"delta": (4, 1)}, array_size=2, partition="no-such-partition")
    text = config.read_text()

    config.write_text(text.replace("array_size: 2", "array_size: 2\n  gpu_per_node: 8"))
    assert "unknown key(s) ['gpu_per_node']" in cli_error("submit", str(config))
    config.write_text(text.replace("array_size: 2", "array_size: 2\n  gpus_per_node: 2")
                      .replace("max_concurrent: 2", "max_concurrent: 2\nserver: "
                               "{tensor_parallel_size: 4}"))
    assert "needs 4 GPUs" in cli_error("submit", str(config))
    config.write_text(text)
    dry = CliRunner().invoke(main, ["slurm", "submit", str(config), "--dry-run"])
    assert dry.exit_code == 0 and "#SBATCH --array=0-0" in dry.output  # 1 unit: 1 task
    assert "delta: 4 prompts x 1 = 4 samples, units 0/1 done" in dry.output
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    with monkeypatch.context() as patched:
        patched.setenv("PATH", str(tmp_path))
        assert "SLURM is needed: no `sbatch` on PATH" in cli_error("submit", str(config))
    message = cli_error("submit", str(config))
    assert "sbatch refused" in message and "invalid partition" in message.lower()
    config.write_text(text.replace("tiny-model", "other-model"))
    message = cli_error("submit", str(config))
    assert "holds another run (" in message and "model: 'tiny-model' -> 'other-model'" in message
    config.write_text(text.replace("unit_prompts: 4", "unit_prompts: 2"))
    assert "holds another run (unit_prompts: 4 -> 2)" in cli_error("submit", str(config))
    run_dir = tmp_path / "out" / "slurm-run"
    assert json.loads((run_dir / "jobs.json").read_text() if (run_dir / "jobs.json").exists()
                      else "[]") == []
    assert "1 of 1 units are not done" in cli_error("merge", str(run_dir))

    config.write_text(text.replace("array_size: 2", "array_size: 2.5"))
    assert "slurm: array_size must be an integer, not 2.5" in cli_error("submit", str(config))
    config.write_text(text.replace("array_size: 2", "array_size: 2\n  time: '00:01:00'"))
    assert ("signal_seconds (120) must be shorter than time (00:01:00 = 60 s)"
            in cli_error("submit", str(config)))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config.write_text(text.replace("array_size: 2", f"array_size: 2\n  run_dir: {blocker}/run"))
    message = cli_error("submit", str(config))
    assert f"cannot write the run directory {blocker / 'run'}" in message
    assert "set slurm.run_dir to a writable folder" in message
    checkpoint = tmp_path / "global_step_5"
    checkpoint.mkdir()
    (checkpoint / ".metadata").write_bytes(b"\x80\x04truncated")  # a copy cut short
    base = build_tiny_model(tmp_path / "base")
    config.write_text(text.replace("model: tiny-model", f"model: {checkpoint}\n"
                                   f"base_model: {base}"))
    message = cli_error("submit", str(config))
    assert str(checkpoint) in message and "UnpicklingError" in message
