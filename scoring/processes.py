"""Keeping the processes that reward functions start on a leash.

Reward code may start processes (multiprocessing, concurrent.futures, subprocess, a child in its own
session). None of them may outlive its item's timeout or the run, and no worker may outlive the
`score` process, whatever signal ends it (SIGKILL included), sent to it alone or to its whole
process group (a closed terminal, `kill -- -PGID`, a job's end). On Linux:

  - each worker and the reaper live in sessions of their own: a signal to the group of `score`
    ends `score` but never reaches what must clean up after it;
  - each worker is a child subreaper (PR_SET_CHILD_SUBREAPER): a process orphaned anywhere below it
    (a double fork, a daemon) is re-parented to the worker, so the worker's tree holds every process
    its reward code started;
  - each worker gets SIGSTOP when its parent dies (PR_SET_PDEATHSIG): it freezes at once, even
    inside a C extension, and its tree stays intact;
  - one small reaper process watches the parent through a pidfd (the kernel wakes it when the
    parent is gone; a getppid poll where there is no pidfd), kills every worker's whole tree
    (see `kill_tree`) and exits. It is idle otherwise.

`kill_tree` freezes a tree with SIGSTOP until no new process appears, then SIGKILLs all of it, so
nothing forks its way out while the tree is being collected. Elsewhere (no prctl) only the tree
kill applies.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing.connection
import os
import signal
import sys
import time
from typing import Any

import psutil

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
# Rounds of "stop what is new" before giving up on a tree that keeps growing.
_FREEZE_ROUNDS = 20
_REAP_WAIT_S = 5.0
# How often the reaper checks that its parent is alive.
REAPER_POLL_S = 0.2


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(option, value, 0, 0, 0)) == 0


def _leave_the_group() -> None:
    """A session of its own: a signal to the parent's process group does not reach it."""
    with contextlib.suppress(OSError):
        os.setsid()


def leash_worker(parent_pid: int) -> None:
    """Called first thing in a worker: out of the parent's process group, adopt orphans below it,
    freeze when its parent dies."""
    _leave_the_group()
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGSTOP)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)


def _process(pid: int, create_time: float | None = None) -> psutil.Process | None:
    """The process `pid`, if it is still the one started at `create_time`."""
    try:
        process = psutil.Process(pid)
        if create_time is not None and abs(process.create_time() - create_time) > 0.01:
            return None
        return process
    except psutil.Error:
        return None


def _signal(process: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.Error):
        process.send_signal(sig)


def kill_tree(pid: int, *, include_root: bool = True, create_time: float | None = None) -> list[int]:
    """SIGKILL `pid`'s whole process tree (or only its descendants); returns the pids killed.

    Everything is stopped first, round after round until no new descendant appears, so a process
    cannot escape by forking while the tree is collected.
    """
    root = _process(pid, create_time)
    if root is None:
        return []
    return _kill_all([root], include_roots=include_root)


def kill_trees(pids: list[int], *, wait: bool = True) -> list[int]:
    """kill_tree for several roots at once: they die (and their memory is torn down) together
    rather than one after the other. Without `wait`, returns once every process has its SIGKILL,
    before the kernel has finished tearing them down."""
    roots = [root for root in map(_process, pids) if root is not None]
    return _kill_all(roots, include_roots=True, wait=wait) if roots else []


def _kill_all(roots: list[psutil.Process], include_roots: bool, wait: bool = True) -> list[int]:
    if include_roots:
        for root in roots:
            _signal(root, signal.SIGSTOP)
    seen: dict[int, psutil.Process] = {}
    for _ in range(_FREEZE_ROUNDS):
        found = []
        for root in roots:
            with contextlib.suppress(psutil.Error):
                found += root.children(recursive=True)
        new = [p for p in found if p.pid not in seen]
        if not new:
            break
        for process in new:
            seen[process.pid] = process
            _signal(process, signal.SIGSTOP)
    victims = list(seen.values()) + (roots if include_roots else [])
    for process in victims:
        _signal(process, signal.SIGKILL)
    if wait:
        _wait_dead(victims)
    return [p.pid for p in victims]


def _wait_dead(processes: list[psutil.Process]) -> None:
    """Until each is gone or a zombie (its parent, not us, may be the one to reap it)."""
    deadline = time.monotonic() + _REAP_WAIT_S
    alive = processes
    pause = 0.0002  # a killed process is usually gone within a millisecond or two
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if is_alive(p)]
        if alive:
            time.sleep(pause)
            pause = min(0.005, pause * 2)


def is_alive(process: psutil.Process) -> bool:
    """Running, stopped or sleeping; a zombie has finished and only waits to be reaped."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# ---------------------------------------------------------------- the reaper


def _parent_watch(parent_pid: int) -> int | None:
    """A pidfd of the parent (readable once it has exited), or None where there is none."""
    try:
        pidfd = os.pidfd_open(parent_pid)
    except (AttributeError, OSError):
        return None
    if os.getppid() != parent_pid:  # gone before the pidfd was opened: it may name another process
        os.close(pidfd)
        return None
    return pidfd


def _reaper_main(conn: multiprocessing.connection.Connection, parent_pid: int) -> None:
    """Learns worker pids from the pool; kills their trees when the parent dies, then exits."""
    _leave_the_group()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # multiprocessing's exit-time terminate
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    pidfd = _parent_watch(parent_pid)
    watched: list[Any] = [conn] if pidfd is None else [conn, pidfd]
    workers: dict[int, float] = {}
    while os.getppid() == parent_pid:
        try:
            ready = multiprocessing.connection.wait(watched, timeout=REAPER_POLL_S)
            if pidfd in ready:
                break
            if not ready:
                continue
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message is None:  # the pool closed normally and stopped its own workers
            return
        kind, pid, started = message
        if kind == "add":
            workers[pid] = started
        else:
            workers.pop(pid, None)
    for pid, started in workers.items():
        kill_tree(pid, create_time=started)


class Reaper:
    """The watcher process of one pool; tell it about every worker with `watch`."""

    def __init__(self, context: Any) -> None:
        self.owner = os.getpid()
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_reaper_main, args=(child, os.getpid()), daemon=True, name="score-reaper"
        )
        self.process.start()
        child.close()

    def watch(self, pid: int) -> None:
        self._send(("add", pid, _create_time(pid)))

    def forget(self, pid: int) -> None:
        self._send(("remove", pid, 0.0))

    def close(self) -> None:
        """Tell it to exit. It is not waited for (its exit tears down a copy of the parent's
        memory map, milliseconds); multiprocessing reaps it with the next process it starts."""
        self._send(None)
        self.conn.close()

    def _send(self, message: Any) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(message)


def _create_time(pid: int) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0
