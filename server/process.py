"""Process-group helpers for servers started in their own session: ports, stopping, reaping.

A server such as vLLM is a tree (API server, engine cores, tensor-parallel workers). It is started
with start_new_session=True, so its process group id is the leader's pid and one signal reaches the
whole tree; processes that left the group (a child calling setsid) are found as descendants.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess

import psutil

POLL_S = 0.05


def pick_free_port(host: str) -> int:
    """A port the OS says is free on host now (bind to port 0). Another program may take it before
    the server binds; the server then fails with 'address already in use', which is detected."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True when nothing could bind host:port (with SO_REUSEADDR, as uvicorn binds, so a port left
    in TIME_WAIT by a stopped server counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes whose process group is pgid."""
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
            if os.getpgid(proc.pid) == pgid and _alive(proc):
                members.append(proc)
    return members


def descendants(pid: int) -> list[psutil.Process]:
    """Every live descendant of pid, also those that moved to another session."""
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if _alive(p)]
    except psutil.NoSuchProcess:
        return []


def _survivors(pgid: int, extra: list[psutil.Process]) -> list[psutil.Process]:
    found = {p.pid: p for p in group_members(pgid)}
    for proc in extra:
        if proc.pid not in found and _alive(proc):
            found[proc.pid] = proc
    return list(found.values())


def _signal_all(pgid: int, procs: list[psutil.Process], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


async def _wait_gone(
    leader: subprocess.Popen[bytes], pgid: int, extra: list[psutil.Process], timeout: float
) -> list[psutil.Process]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        leader.poll()  # reap our own child, or it stays a zombie
        left = _survivors(pgid, extra)
        if not left or loop.time() >= deadline:
            return left
        await asyncio.sleep(POLL_S)


async def stop_group(
    leader: subprocess.Popen[bytes], *, term_timeout: float, kill_timeout: float = 10.0
) -> list[int]:
    """SIGTERM the leader's whole group (and descendants that left it), wait up to term_timeout,
    then SIGKILL what is left and wait again. Returns the pids still alive after that (empty when
    the whole tree is gone), so the caller can report them."""
    pgid = leader.pid  # start_new_session=True: the leader's pid is the group id
    extra = descendants(leader.pid)
    _signal_all(pgid, extra, signal.SIGTERM)
    left = await _wait_gone(leader, pgid, extra, term_timeout)
    if left:
        _signal_all(pgid, left, signal.SIGKILL)
        left = await _wait_gone(leader, pgid, extra + left, kill_timeout)
    if not left:
        await _reap(leader)
    return sorted(p.pid for p in left)


async def _reap(leader: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Collect the leader's exit status: psutil already counts a process that is exiting as
    gone, a moment before the kernel makes it a zombie that waitpid can collect."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while leader.poll() is None and loop.time() < deadline:
        await asyncio.sleep(POLL_S / 5)
