"""Ctrl-C (SIGINT to a real `rollouts` process) on every backend: it stops promptly, says how many
samples are saved and that rerunning resumes, and exits 130; the rerun does only what is missing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rollouts.store import saved_rows, state_dir_for
from rollouts.tiny_model import build_tiny_model
from tests.fake_vllm import FAKE_VLLM_COMMAND, live_pids, recorded_pids
from tests.generate_helpers import read_rows, verl_rows, write_jsonl
from tests.openai_server import FakeOpenAIServer, Fault

# The requirement is 2 s; the bound leaves room for a loaded machine while a regression (a
# generation finished up to max_tokens, a model load, a slow teardown) still takes far longer.
STOP_WITHIN_S = 5.0
PROMPTS = 100


class Command:
    """A `rollouts` subprocess whose stderr is read as it comes."""

    started: list[Command] = []  # killed after each test (`no_command_left`), failed ones too

    def __init__(self, *args: str | Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rollouts.cli", *map(str, args)],
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        Command.started.append(self)
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for line in self.process.stderr:
                self.stderr += line

    def wait_for(self, ready: Callable[[], bool], what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.process.poll() is None, f"ended before {what}: {self.stderr}"
            assert time.monotonic() < deadline, f"no {what} after {timeout}s: {self.stderr}"
            time.sleep(0.05)

    def interrupt(self) -> float:
        """SIGINT, as Ctrl-C sends; returns the seconds until the process was gone."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=120)
        elapsed = time.monotonic() - started
        self._reader.join(10)
        return elapsed


@pytest.fixture(autouse=True)
def no_command_left() -> Iterator[None]:
    """A test that fails before its command ends must not leave it running into the next test."""
    yield
    while Command.started:
        process = Command.started.pop().process
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)


def assert_interrupted(command: Command, elapsed: float, outputs: list[Path]) -> list[int]:
    """Exit 130 in time, one message per output naming its saved rows; no traceback."""
    assert command.process.returncode == 130, command.stderr
    assert elapsed < STOP_WITHIN_S, (elapsed, command.stderr)
    assert "Traceback" not in command.stderr and "Aborted!" not in command.stderr
    [line] = [ln for ln in command.stderr.splitlines() if ln.startswith("interrupted:")]
    counts = [int(n) for n in re.findall(r"(\d+) samples saved in", line)]
    folders = re.findall(r"samples saved in ([^,;]+)", line)
    assert folders == [str(state_dir_for(out)) for out in outputs]
    assert line.endswith("; rerun the same command to resume")
    assert counts == [saved_rows(out) for out in outputs]  # what is really on disk
    return counts


@pytest.fixture
def slow_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        srv.add_fault(Fault("slow", delay=0.1, times=None))
        yield srv


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_ctrl_c_with_an_http_server_then_resume(tmp_path: Path, slow_server: FakeOpenAIServer) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(PROMPTS))
    out = tmp_path / "o.parquet"
    args = ("generate", source, "-o", out, "--base-url", slow_server.url,
            "--max-concurrent", "4", "--no-progress")
    command = Command(*args)
    command.wait_for(lambda: saved_rows(out) >= 10, "10 saved samples")
    [saved] = assert_interrupted(command, command.interrupt(), [out])
    assert 10 <= saved < PROMPTS
    requests = len(slow_server.requests)

    rerun = Command(*args)
    assert rerun.process.wait(timeout=300) == 0, rerun.stderr
    assert len(slow_server.requests) - requests == PROMPTS - saved  # only what was missing
    assert len(read_rows(out)) == PROMPTS


def test_ctrl_c_of_a_run_config_names_every_output(
    tmp_path: Path, slow_server: FakeOpenAIServer
) -> None:
    for name in ("a", "b"):
        write_jsonl(tmp_path / f"{name}.jsonl", verl_rows(200, tag=name))
    config = tmp_path / "run.yaml"
    config.write_text(
        f"base_urls: [{slow_server.url}]\nmax_concurrent: 4\noutput_dir: out\n"
        "datasets:\n  - {path: a.jsonl}\n  - {path: b.jsonl}\n"
    )
    outputs = [tmp_path / "out" / "a.parquet", tmp_path / "out" / "b.parquet"]
    command = Command("run", config, "--no-progress")
    command.wait_for(lambda: sum(saved_rows(o) for o in outputs) >= 10, "10 saved samples")
    assert_interrupted(command, command.interrupt(), outputs)


def test_ctrl_c_with_a_managed_server_stops_it(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    env = {"ROLLOUTS_VLLM": FAKE_VLLM_COMMAND, "FAKE_VLLM_PIDS_FILE": str(pids),
           "FAKE_VLLM_DELAY": "0.1"}
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(300))
    out = tmp_path / "o.parquet"
    command = Command("generate", source, "-o", out, "--model", "tiny-model",
                      "--max-concurrent", "4", "--no-progress", env=env)
    command.wait_for(lambda: saved_rows(out) >= 5, "5 saved samples")
    assert_interrupted(command, command.interrupt(), [out])
    assert live_pids(recorded_pids(pids)) == []


def test_ctrl_c_during_a_long_in_process_generation(tmp_path: Path, model: Path) -> None:
    """The hf backend: a long generation is cut at its next token. Greedy, so the text is the
    same every time (this model never ends it early), and 3,500 tokens take the tiny model far
    longer than the second waited here (1,024 took 1.4 s on a quiet machine: too close)."""
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(8, chat=False))
    out = tmp_path / "o.parquet"
    command = Command("generate", source, "-o", out, "--backend", "hf", "--model", model,
                      "--n", "2", "--temperature", "0", "--max-tokens", "3500", "--no-progress")
    command.wait_for(lambda: "Loading weights: 100%" in command.stderr, "a loaded model")
    time.sleep(1.0)  # well into the first generation
    assert saved_rows(out) == 0
    elapsed = command.interrupt()
    assert_interrupted(command, elapsed, [out])
    # Cut, not finished: the generation had at least 2.8 s to go (0.06 s to stop, measured).
    assert elapsed < 1.5, elapsed


def test_ctrl_c_while_the_model_loads(tmp_path: Path, model: Path) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", verl_rows(2, chat=False))
    out = tmp_path / "o.parquet"
    command = Command("generate", source, "-o", out, "--backend", "hf", "--model", model,
                      "--no-progress")
    command.wait_for(lambda: (state_dir_for(out) / "run.json").exists(), "a claimed output")
    assert_interrupted(command, command.interrupt(), [out])
