"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_vllm import FAKE_VLLM_COMMAND

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SLURM_SCRIPTS = Path(__file__).parent / "slurm"


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[None]:
    """A real slurmctld + slurmd on this machine (installed by the script when missing)."""
    started = subprocess.run(
        ["bash", str(SLURM_SCRIPTS / "start-local-slurm.sh")],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    yield
    if "slurm already up" not in started.stdout:  # stop only what this session started
        subprocess.run(["bash", str(SLURM_SCRIPTS / "stop-local-slurm.sh")], check=False)


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The stand-in vllm for the jobs (sbatch passes this environment on), recording requests."""
    requests = tmp_path / "requests.jsonl"
    monkeypatch.setenv("ROLLOUTS_VLLM", FAKE_VLLM_COMMAND)
    monkeypatch.setenv("FAKE_VLLM_REQUESTS_FILE", str(requests))
    monkeypatch.setenv("FAKE_VLLM_DELAY", "1.0")
    monkeypatch.delenv("FAKE_VLLM_PIDS_FILE", raising=False)
    return requests


@pytest.fixture
def jobs() -> Iterator[list[str]]:
    """Job ids to cancel at the end, whatever happened."""
    ids: list[str] = []
    yield ids
    for job_id in ids:
        subprocess.run(["scancel", job_id], check=False)


