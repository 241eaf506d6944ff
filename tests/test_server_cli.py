"""`rollouts serve` as a real process (`python -m server.cli`) around the stand-in vLLM: stdout,
info file, signals, a server that dies, a start that fails, flags passed through."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.cli import serve
from tests.fake_vllm import FAKE_VLLM_COMMAND, live_pids, recorded_pids

ROOT = Path(__file__).resolve().parents[1]


class Serve:
    """One `rollouts serve` subprocess and the files it is pointed at."""

    def __init__(self, tmp_path: Path, *args: str, **fake_env: str) -> None:
        self.info_file = tmp_path / "server.json"
        self.log_file = tmp_path / "vllm.log"
        self.pids_file = tmp_path / "pids"
        env = {k: v for k, v in os.environ.items() if k != "ROLLOUTS_RAISE"}
        env.update(ROLLOUTS_VLLM=FAKE_VLLM_COMMAND, FAKE_VLLM_PIDS_FILE=str(self.pids_file))
        env.update(fake_env)
        command = [
            sys.executable, "-m", "server.cli", "--model", "tiny", "--port", "auto",
            "--info-file", str(self.info_file), "--log-file", str(self.log_file),
            "--ready-timeout", "30", *args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def base_url(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def finish(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err

    def server_pids(self) -> list[int]:
        return recorded_pids(self.pids_file)


@pytest.fixture
def cleanup() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for run in started:  # only when a test failed half-way
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.communicate()


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as response:
        data: dict[str, object] = json.load(response)
        return data


def post_completion(base_url: str) -> None:
    body = json.dumps({"model": "tiny", "prompt": "hi", "max_tokens": 2}).encode()
    request = urllib.request.Request(
        f"{base_url}/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_until_signal_then_leaves_nothing(
    tmp_path: Path, cleanup: list[Serve], sig: signal.Signals
) -> None:
    run = Serve(tmp_path)
    cleanup.append(run)
    base_url = run.base_url()
    assert base_url.startswith("http://127.0.0.1:")
    info = json.loads(run.info_file.read_text())
    assert info["base_url"] == base_url
    assert info["model"] == "tiny"
    models = get_json(f"{base_url}/v1/models")
    assert models["data"] == [{"id": "tiny", "object": "model"}]
    pids = run.server_pids()
    assert info["pid"] == pids[0]

    run.proc.send_signal(sig)
    code, out, err = run.finish()
    assert code == 0, err
    assert out.strip() == ""  # the URL was the only line on stdout
    assert "no process of it is left" in err
    assert live_pids(pids) == []
    assert not run.info_file.exists()


def test_server_death_exits_non_zero_with_the_log_tail(
    tmp_path: Path, cleanup: list[Serve]
) -> None:
    run = Serve(tmp_path, FAKE_VLLM_DIE_AFTER="1")  # the readiness probe is request 1
    cleanup.append(run)
    base_url = run.base_url()
    pids = run.server_pids()
    with pytest.raises(OSError):
        post_completion(base_url)
    code, _, err = run.finish()
    assert code == 1
    assert "vLLM exited with status 1 while serving" in err
    assert "engine core died" in err  # from the log tail
    assert live_pids(pids) == []
    assert not run.info_file.exists()


def test_failed_start_exits_non_zero_with_the_fatal_line(
    tmp_path: Path, cleanup: list[Serve]
) -> None:
    run = Serve(tmp_path, FAKE_VLLM_FATAL="oom", FAKE_VLLM_AFTER_FATAL="hang")
    cleanup.append(run)
    code, out, err = run.finish()
    assert code == 1
    assert out == ""
    assert "CUDA out of memory" in err
    assert live_pids(run.server_pids()) == []
    assert not run.info_file.exists()


def test_signal_while_starting_stops_the_group(tmp_path: Path, cleanup: list[Serve]) -> None:
    run = Serve(tmp_path, FAKE_VLLM_START_DELAY="60")
    cleanup.append(run)
    deadline = time.monotonic() + 30
    while not run.pids_file.exists() or "loading weights" not in _text(run.log_file):
        assert time.monotonic() < deadline and run.proc.poll() is None
        time.sleep(0.05)
    pids = run.server_pids()
    run.proc.send_signal(signal.SIGTERM)
    code, out, err = run.finish()
    assert code == 0, err
    assert out == ""
    assert live_pids(pids) == []
    assert not run.info_file.exists()


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_flags_after_double_dash_reach_vllm(tmp_path: Path, cleanup: list[Serve]) -> None:
    argv_file = tmp_path / "argv.json"
    run = Serve(
        tmp_path, "-tp", "2", "--max-model-len", "2048", "--", "--max-num-seqs", "512",
        FAKE_VLLM_ARGV_FILE=str(argv_file),
    )  # fmt: skip
    cleanup.append(run)
    run.base_url()
    argv = json.loads(argv_file.read_text())
    assert argv[:2] == ["serve", "tiny"]
    assert argv[-2:] == ["--max-num-seqs", "512"]
    assert argv[argv.index("--tensor-parallel-size"):][:2] == ["--tensor-parallel-size", "2"]
    assert argv[argv.index("--max-model-len"):][:2] == ["--max-model-len", "2048"]
    assert json.loads(run.info_file.read_text())["tp"] == 2
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish()[0] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "m", "--port", "eighty"], "'eighty' is not a port number or 'auto'"),
        (["--port", "auto"], "Missing option '--model'"),
        (["--model", "m", "--", "--port", "1"], "--port cannot be passed through"),
        (["--model", "m", "--unknown-flag"], "No such option '--unknown-flag'"),
    ],
)
def test_bad_options_fail_before_starting(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROLLOUTS_RAISE", raising=False)
    monkeypatch.setenv("ROLLOUTS_VLLM", "/nonexistent/vllm")
    result = CliRunner().invoke(serve, args)
    assert result.exit_code in (1, 2)
    assert message in result.output


def test_missing_vllm_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ROLLOUTS_RAISE", raising=False)
    monkeypatch.delenv("ROLLOUTS_VLLM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(serve, ["--model", "m", "--log-file", str(tmp_path / "l")])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: vLLM is not installed: pip install 'rollouts[vllm]'"
