"""ManagedServer against the stand-in `vllm` (tests/fake_vllm.py): real processes, real signals,
real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollouts.errors import ServerStartError
from server import vllm as server_vllm
from server.info import read_server_info
from server.process import group_members
from server.vllm import ManagedServer, ServerConfig
from tests.fake_vllm import FAKE_VLLM_COMMAND, live_pids, recorded_pids


@pytest.fixture
def pids_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "pids"
    monkeypatch.setenv("FAKE_VLLM_PIDS_FILE", str(path))
    return path


def make_config(tmp_path: Path, **overrides: Any) -> ServerConfig:
    values: dict[str, Any] = {
        "model": "tiny-model",
        "vllm_command": FAKE_VLLM_COMMAND,
        "log_file": tmp_path / "vllm.log",
        "ready_timeout": 30.0,
        "stop_timeout": 5.0,
    }
    values.update(overrides)
    return ServerConfig(**values)


async def complete(base_url: str, model: str, n: int = 1) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        body = {"model": model, "prompt": "2+2=", "n": n, "max_tokens": 4, "seed": 1}
        async with session.post(f"{base_url}/v1/completions", json=body) as resp:
            assert resp.status == 200
            data: dict[str, Any] = await resp.json()
            return data


def assert_all_gone(pids_file: Path) -> None:
    pids = recorded_pids(pids_file)
    assert len(pids) == 2  # the server and its engine worker
    assert live_pids(pids) == []
    assert group_members(pids[0]) == []


def test_context_manager_serves_then_leaves_no_process(tmp_path: Path, pids_file: Path) -> None:
    async def scenario() -> ManagedServer:
        async with ManagedServer(make_config(tmp_path)) as server:
            assert server.is_running()
            assert server.model == "tiny-model"
            assert server.base_url == f"http://127.0.0.1:{server.port}"
            data = await complete(server.base_url, server.model, n=3)
            assert len(data["choices"]) == 3
            assert live_pids(recorded_pids(pids_file)) == recorded_pids(pids_file)
        return server

    server = asyncio.run(scenario())
    assert not server.is_running()
    assert server.returncode is not None
    assert server.leftover_pids == []
    assert_all_gone(pids_file)
    asyncio.run(server.stop())  # a second stop is a no-op
    # vLLM's own "Address already in use. Retrying with a new port." warning is not fatal.
    assert "Retrying with a new port" in server.log_tail()


def test_slow_start_is_waited_for(
    tmp_path: Path, pids_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_START_DELAY", "1.5")

    async def scenario() -> None:
        async with ManagedServer(make_config(tmp_path)) as server:
            await complete(server.base_url, server.model)
            assert "loading weights" in server.log_tail()

    asyncio.run(scenario())
    assert_all_gone(pids_file)


@pytest.mark.parametrize("engine", ["500", "hang"])
def test_health_alone_is_not_ready(
    tmp_path: Path, pids_file: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    """/health answers 200 but completions fail or hang: a hung engine is never called ready,
    and at the deadline the whole group is killed."""
    monkeypatch.setenv("FAKE_VLLM_ENGINE", engine)
    server = ManagedServer(make_config(tmp_path, ready_timeout=2.0, stop_timeout=1.0))

    async def scenario() -> None:
        async with server:
            pytest.fail("a server whose completions fail must not be ready")

    with pytest.raises(ServerStartError, match=r"not ready after 2s") as excinfo:
        asyncio.run(scenario())
    assert "Starting vLLM API server" in str(excinfo.value)  # the log tail is in the message
    assert not server.is_running()
    assert_all_gone(pids_file)


def test_hanging_health_hits_the_deadline(
    tmp_path: Path, pids_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_HEALTH", "hang")
    server = ManagedServer(make_config(tmp_path, ready_timeout=1.5, stop_timeout=1.0))
    with pytest.raises(ServerStartError, match="not ready after 1.5s"):
        asyncio.run(server.__aenter__())
    assert_all_gone(pids_file)


def test_exit_during_start_ends_the_wait_at_once(
    tmp_path: Path, pids_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_EXIT_DURING_START", "3")
    # A deadline far away: only early-exit detection can produce this message.
    server = ManagedServer(make_config(tmp_path, ready_timeout=600.0))
    with pytest.raises(ServerStartError, match="exited with status 3 while starting") as excinfo:
        asyncio.run(server.__aenter__())
    assert "Engine process failed to start" in str(excinfo.value)
    assert server.returncode == 3
    assert_all_gone(pids_file)  # the worker it left behind is gone too


@pytest.mark.parametrize(
    ("fatal", "line"),
    [
        ("oom", "CUDA out of memory"),
        ("addr", "address already in use"),
        ("nccl", "NCCL error"),
    ],
)
def test_fatal_log_line_ends_the_wait_while_the_server_hangs(
    tmp_path: Path, pids_file: Path, monkeypatch: pytest.MonkeyPatch, fatal: str, line: str
) -> None:
    monkeypatch.setenv("FAKE_VLLM_FATAL", fatal)
    monkeypatch.setenv("FAKE_VLLM_AFTER_FATAL", "hang")
    server = ManagedServer(make_config(tmp_path, ready_timeout=600.0))
    with pytest.raises(ServerStartError, match="failed while starting") as excinfo:
        asyncio.run(server.__aenter__())
    assert line in str(excinfo.value)
    assert_all_gone(pids_file)


def test_failed_start_is_killed_without_the_full_stop_grace(
    tmp_path: Path, pids_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that printed a fatal line and ignores SIGTERM is killed after a short grace, not
    after stop_timeout (600 s here): a failed start has nothing to shut down gracefully."""
    monkeypatch.setenv("FAKE_VLLM_FATAL", "oom")
    monkeypatch.setenv("FAKE_VLLM_AFTER_FATAL", "hang")
    monkeypatch.setenv("FAKE_VLLM_IGNORE_TERM", "1")
    monkeypatch.setattr(server_vllm, "FAILED_START_GRACE_S", 0.5)
    server = ManagedServer(make_config(tmp_path, ready_timeout=600.0, stop_timeout=600.0))
    with pytest.raises(ServerStartError, match="CUDA out of memory"):
        asyncio.run(server.__aenter__())
    assert server.returncode == -signal.SIGKILL
    assert_all_gone(pids_file)


def test_cancel_while_starting_kills_after_the_short_grace(
    tmp_path: Path, pids_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the model loads: a server that ignores SIGTERM then (as vLLM 0.24 did early in
    its start) is killed after the short grace, not after stop_timeout."""
    monkeypatch.setenv("FAKE_VLLM_START_DELAY", "600")
    monkeypatch.setenv("FAKE_VLLM_IGNORE_TERM", "1")
    monkeypatch.setattr(server_vllm, "FAILED_START_GRACE_S", 0.5)
    server = ManagedServer(make_config(tmp_path, ready_timeout=600.0, stop_timeout=600.0))

    async def scenario() -> None:
        task = asyncio.create_task(server.__aenter__())
        while "loading weights" not in _text(tmp_path / "vllm.log"):
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert server.returncode == -signal.SIGKILL
    assert_all_gone(pids_file)


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize(
    ("main_ignores_term", "worker"),
    [(True, "term"), (False, "ignore-term"), (True, "setsid")],
)
def test_stop_kills_what_ignores_sigterm(
    tmp_path: Path,
    pids_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    main_ignores_term: bool,
    worker: str,
) -> None:
    """TERM, wait, KILL: a server or worker that ignores SIGTERM, or a worker that left the process
    group, is still gone after stop()."""
    if main_ignores_term:
        monkeypatch.setenv("FAKE_VLLM_IGNORE_TERM", "1")
    monkeypatch.setenv("FAKE_VLLM_WORKER", worker)
    server = ManagedServer(make_config(tmp_path, stop_timeout=1.0))

    async def scenario() -> None:
        async with server:
            await complete(server.base_url, server.model)

    asyncio.run(scenario())
    assert server.leftover_pids == []
    assert_all_gone(pids_file)
    if main_ignores_term:
        assert server.returncode == -signal.SIGKILL


def test_restart_brings_a_dead_server_back_on_the_same_port(
    tmp_path: Path, pids_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The readiness probe is request 1, so the server dies on the second real request.
    monkeypatch.setenv("FAKE_VLLM_DIE_AFTER", "2")
    info_file = tmp_path / "server.json"
    server = ManagedServer(make_config(tmp_path, info_file=info_file))

    async def scenario() -> tuple[int, int]:
        async with server:
            first_pid, port = server.pid, server.port
            await complete(server.base_url, server.model)
            with pytest.raises(aiohttp.ClientError):
                await complete(server.base_url, server.model)
            await asyncio.to_thread(server._proc.wait)  # type: ignore[union-attr]
            assert not server.is_running()
            assert server.returncode == 1
            assert "engine core died" in server.log_tail()
            await server.restart()
            assert server.port == port
            assert server.pid != first_pid
            assert read_server_info(info_file).pid == server.pid
            assert len((await complete(server.base_url, server.model, n=2))["choices"]) == 2
            assert first_pid is not None
            return first_pid, port

    first_pid, _ = asyncio.run(scenario())
    assert live_pids([first_pid]) == []
    assert_all_gone(pids_file)  # the restarted server's processes
    assert not info_file.exists()
    # Both runs are in the same log file.
    assert server.log_tail(500).count("=== rollouts: starting") == 2


def test_info_file_written_when_ready_and_removed_on_stop(
    tmp_path: Path, pids_file: Path
) -> None:
    info_file = tmp_path / "info" / "server.json"

    async def scenario() -> None:
        config = make_config(
            tmp_path, info_file=info_file, served_model_name="policy", tensor_parallel_size=2
        )
        async with ManagedServer(config) as server:
            info = read_server_info(info_file)
            assert info.base_url == server.base_url
            assert info.model == "policy"
            assert info.pid == server.pid
            assert (info.tp, info.dp) == (2, 1)
            assert info.log_file == str(tmp_path / "vllm.log")
            assert info.started_at.endswith("+00:00")
            raw = json.loads(info_file.read_text())
            assert set(raw) >= {"base_url", "model", "pid", "tp", "dp", "started_at", "log_file"}
            await complete(info.base_url, info.model)

    asyncio.run(scenario())
    assert not info_file.exists()
    assert_all_gone(pids_file)


def test_info_file_not_written_when_start_fails(
    tmp_path: Path, pids_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_EXIT_DURING_START", "1")
    info_file = tmp_path / "server.json"
    server = ManagedServer(make_config(tmp_path, info_file=info_file))
    with pytest.raises(ServerStartError):
        asyncio.run(server.__aenter__())
    assert not info_file.exists()


def test_port_taken_is_refused_before_launch(tmp_path: Path, pids_file: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ManagedServer(make_config(tmp_path, port=port))
        with pytest.raises(ServerStartError, match=f"port {port} on 127.0.0.1 is already in use"):
            asyncio.run(server.__aenter__())
    assert server.pid is None
    assert not pids_file.exists()


def test_fixed_port_is_used(tmp_path: Path, pids_file: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> None:
        async with ManagedServer(make_config(tmp_path, port=port)) as server:
            assert server.base_url == f"http://127.0.0.1:{port}"
            await complete(server.base_url, server.model)

    asyncio.run(scenario())


def test_cancelled_caller_still_stops_the_server(tmp_path: Path, pids_file: Path) -> None:
    """Ctrl-C in a program using the server cancels its task; __aexit__ must finish the stop."""

    async def use_forever() -> None:
        async with ManagedServer(make_config(tmp_path)):
            await asyncio.sleep(3600)

    async def scenario() -> None:
        task = asyncio.create_task(use_forever())
        while not pids_file.exists() or not (tmp_path / "vllm.log").exists():
            await asyncio.sleep(0.05)
        while "Starting vLLM API server" not in (tmp_path / "vllm.log").read_text():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # inside the async with by now, or still in wait_ready: both fine
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert_all_gone(pids_file)


def test_default_log_file_is_made_under_tmp(pids_file: Path, tmp_path: Path) -> None:
    async def scenario() -> Path:
        config = make_config(tmp_path, log_file=None, served_model_name="org/My Model")
        async with ManagedServer(config) as server:
            assert server.log_file is not None
            return server.log_file

    log_file = asyncio.run(scenario())
    assert log_file.parent.name == "rollouts-logs"
    assert log_file.name.startswith("vllm-org_My_Model-")
    assert "Starting vLLM API server" in log_file.read_text()
    log_file.unlink()


CLIENT_DIES = """
import asyncio, sys
from server import vllm as server_vllm
from server.vllm import ManagedServer, ServerConfig
async def main():
    config = ServerConfig(model="m", vllm_command=sys.argv[1], log_file=sys.argv[2])
    async with ManagedServer(config):
        print("ready", flush=True)
        await asyncio.sleep(3600)
asyncio.run(main())
"""


def test_server_goes_when_its_client_is_killed(tmp_path: Path, pids_file: Path) -> None:
    """A client killed with SIGKILL cannot stop its server; the parent-death signal does."""
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT_DIES, FAKE_VLLM_COMMAND, str(tmp_path / "vllm.log")],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert client.stdout is not None
    assert client.stdout.readline().strip() == b"ready"
    pids = recorded_pids(pids_file)
    assert live_pids(pids) == pids
    client.kill()
    client.wait()
    client.stdout.close()
    deadline = time.monotonic() + 30
    while live_pids(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_pids(pids) == []


def test_log_tail_gives_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "vllm.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    server = ManagedServer(make_config(tmp_path))
    assert server.log_tail(3) == "line 97\nline 98\nline 99"
    assert ManagedServer(make_config(tmp_path, log_file=tmp_path / "none.log")).log_tail() == ""

