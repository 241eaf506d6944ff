"""Helpers of the tests on a real one-node SLURM (tests/slurm/; fixtures in conftest.py)."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from click.testing import CliRunner

from rollouts.cli import main
from slurm.submit import SubmitResult
from tests.generate_helpers import verl_rows, write_jsonl

WAIT_S = 240.0
CREDENTIAL_REVOKE_S = 2.0


def write_run(
    tmp_path: Path, datasets: dict[str, tuple[int, int]], *, top: dict[str, Any] | None = None,
    **slurm: Any,
) -> Path:
    """A run config over datasets {name: (prompts, n)}; `top` adds top-level keys."""
    entries = []
    for name, (prompts, n) in datasets.items():
        write_jsonl(tmp_path / f"{name}.jsonl", verl_rows(prompts, tag=name))
        entries.append({"path": f"{name}.jsonl", "n": n})
    config = {
        "model": "tiny-model", "max_concurrent": 2, "samples_per_request": "1",
        "output_dir": "out", "defaults": {"max_tokens": 8}, "datasets": entries,
        "slurm": {"unit_prompts": 4, "lease_timeout": 6, "heartbeat": 1, **slurm},
        **(top or {}),
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def squeue_state(job_id: str) -> str:
    result = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"],
                            capture_output=True, text=True, check=False)
    return result.stdout.strip()


def release_requeued(job_id: str) -> None:
    """A requeued job waits ~120 s (BeginTime); make it eligible now. Not within the second of
    the requeue: slurmd revokes the old run's credential by the second, and a start in that same
    second is killed ("Job credential revoked")."""
    wait_for(lambda: squeue_state(job_id) == "PENDING", f"{job_id} to be requeued")
    time.sleep(CREDENTIAL_REVOKE_S)

    def running_again() -> bool:
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"],
                       capture_output=True, check=False)
        return squeue_state(job_id) in ("RUNNING", "")
    wait_for(running_again, f"{job_id} to run again")


def task_file(run_dir: Path, task: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((run_dir / "tasks" / f"{task}.json").read_text())
        return data
    except (OSError, ValueError):
        return {}


def requested_samples(requests: Path) -> Counter[tuple[str, int]]:
    lines = requests.read_text().splitlines()
    return Counter((r["prompt"], r["seed"]) for r in map(json.loads, lines))


def assert_complete(result: SubmitResult, expected: dict[str, int]) -> None:
    for name, rows in expected.items():
        frame = pd.read_parquet(result.run_dir.parent / f"{name}.parquet")
        assert len(frame) == rows
        assert not frame.duplicated(["prompt_id", "sample_idx"]).any()
        assert frame["error"].isna().all()
        assert frame["dataset"].eq(name).all()
        summary = json.loads((result.run_dir.parent / f"{name}.parquet.summary.json").read_text())
        assert summary["output"]["rows"] == rows == summary["expected_rows"]


def cli_error(*args: str) -> str:
    result = CliRunner().invoke(main, ["slurm", *args])
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]




def status_text(run_dir: Path) -> str:
    """What `rollouts slurm status RUN_DIR` prints."""
    result = CliRunner().invoke(main, ["slurm", "status", str(run_dir)])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def task_log(run_dir: Path, task: str, job_name: str = "rollouts-run") -> str:
    path = run_dir / "logs" / f"{job_name}-{task}.log"
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def exit_marker(run_dir: Path, task: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((run_dir / "tasks" / f"{task}.exit").read_text())
        return data
    except (OSError, ValueError):
        return {}
