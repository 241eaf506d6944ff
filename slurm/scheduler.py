"""The one place that talks to SLURM: sbatch, squeue, scontrol and scancel, and their parsing.

Accounting (sacct) is often disabled, so states come from squeue while SLURM knows a job; the run
directory's own markers say what finished.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rollouts.errors import UserInputError

COMMAND_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class JobState:
    job_id: str  # ARRAY_TASK (e.g. 123_4) or a plain job id
    state: str  # PENDING, RUNNING, ...
    reason: str  # why pending, or the node list while running


def require_slurm() -> None:
    """Fail with one line when this machine cannot submit jobs."""
    if shutil.which("sbatch") is None:
        raise UserInputError(
            "SLURM is needed: no `sbatch` on PATH; run this on a login node of a SLURM cluster "
            "(or use `rollouts run` on one machine)"
        )


def submit(script: Path, *, dependency: str | None = None) -> str:
    """sbatch --parsable SCRIPT; the job id. sbatch's own message when it refuses the job."""
    command = ["sbatch", "--parsable"]
    if dependency:
        command.append(f"--dependency={dependency}")
    result = _run([*command, str(script)])
    if result.returncode != 0:
        message = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
        raise UserInputError(f"sbatch refused {script.name}: {message}")
    # --parsable prints "JOBID" or "JOBID;CLUSTER".
    return result.stdout.strip().split(";")[0]


def slurm_available() -> bool:
    """Can this machine ask SLURM about jobs?"""
    return shutil.which("squeue") is not None


def job_states(job_ids: list[str]) -> list[JobState]:
    """What squeue knows of these jobs (array tasks one per line); ended jobs are absent."""
    if not job_ids or shutil.which("squeue") is None:
        return []
    states = []
    for job_id in job_ids:  # one call per job: an unknown id fails the whole call
        result = _run(["squeue", "-h", "-r", "-j", job_id, "-o", "%i|%T|%R"])
        if result.returncode != 0:
            continue
        for line in result.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3:
                states.append(JobState(*parts))
    return states


LIVE_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STAGE_OUT", "SIGNALING"}


@dataclass(frozen=True)
class JobInfo:
    """What `scontrol show job` says of one job (or array task)."""

    job_id: str
    state: str
    restarts: int
    reason: str
    dependency: str


def job_info(job_id: str) -> JobInfo | None:
    """scontrol show job JOB, or None when SLURM no longer knows the job."""
    result = _run(["scontrol", "show", "job", "-o", job_id])
    if result.returncode != 0 or not result.stdout.strip():
        return None
    fields = dict(
        item.split("=", 1) for item in result.stdout.split() if "=" in item
    )
    return JobInfo(
        job_id=job_id,
        state=fields.get("JobState", "UNKNOWN"),
        restarts=int(fields.get("Restarts", "0") or 0),
        reason=fields.get("Reason", ""),
        dependency=fields.get("Dependency", "(null)"),
    )


def holder_alive(job_id: str, restart: int) -> bool:
    """Is this run of the job (its restart count) still going? False once the job ended, was
    requeued (another restart count) or is unknown to SLURM; True when SLURM cannot be asked, so
    that the caller falls back to the lease's heartbeat."""
    if shutil.which("scontrol") is None:
        return True
    try:
        info = job_info(job_id)
    except UserInputError:  # slurmctld did not answer
        return True
    return info is not None and info.state in LIVE_STATES and info.restarts == restart


def requeue(job_id: str) -> None:
    """scontrol requeue JOB: the task goes back to the queue (SLURM ends the running one)."""
    result = _run(["scontrol", "requeue", job_id])
    if result.returncode != 0:
        raise UserInputError(f"scontrol requeue {job_id} failed: {result.stderr.strip()}")


def cancel(job_id: str) -> None:
    """scancel JOB (the batch shell and the task get TERM and stop)."""
    result = _run(["scancel", job_id])
    if result.returncode != 0:
        raise UserInputError(f"scancel {job_id} failed: {' '.join(result.stderr.split())}")


def current_task_id() -> str | None:
    """This process's array task as ARRAY_TASK, a plain job id, or None outside SLURM."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def restart_count() -> int:
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise UserInputError(
            f"{command[0]} did not answer in {COMMAND_TIMEOUT_S:.0f} s; is slurmctld up?"
        ) from exc
