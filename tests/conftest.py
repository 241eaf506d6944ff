"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_vllm import FAKE_VLLM_COMMAND

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
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


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight chat model built locally: the base model of trainer checkpoints."""
    from rollouts.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-base") / "model")


@pytest.fixture(scope="session")
def trainer_checkpoints(
    tmp_path_factory: pytest.TempPathFactory, tiny_base_model: Path
) -> dict[str, Path]:
    """verl FSDP checkpoints (global_step_1, global_step_2) and a NeMo-RL one (step_3), each saved
    by a real 2-process gloo group (tests/checkpoint_writers.py), by kind."""
    root = tmp_path_factory.mktemp("trainer-checkpoints")
    steps = {"verl": ["1", "2"], "nemo-rl": ["3"]}
    for kind, numbers in steps.items():
        subprocess.run(
            [sys.executable, "-m", "tests.checkpoint_writers", kind, str(tiny_base_model),
             str(root / kind), *numbers],
            check=True, cwd=ROOT, capture_output=True, timeout=600,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    return {kind: root / kind for kind in steps}
