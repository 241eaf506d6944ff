"""The sandbox runner: limits, command lines, cgroups, modes, wall-clock steps, failure reasons."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from scoring import sandbox
from scoring.sandbox import Backend, CgroupLayout, RunResult, SandboxLimits

LIMITS = SandboxLimits(wall_s=2.0, cpu_s=2, memory_mb=256, max_procs=12, file_size_mb=8,
                       tmp_size_mb=16, output_bytes=1 << 16)
FORK_COUNT = ("import os, time\nn = 0\ntry:\n    while n < 200:\n        if os.fork() == 0:\n"
              "            time.sleep(30)\n            os._exit(0)\n        n += 1\n"
              "except OSError:\n    pass\nprint(n)\n")


@pytest.fixture(scope="module")
def backend() -> Backend:
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is not installed: apt-get install bubblewrap (the sandbox tests need it)")
    sandbox.reset_probe()
    return sandbox.probe()


def run(backend: Backend, source: str, limits: SandboxLimits = LIMITS) -> RunResult:
    return sandbox.execute(backend, {"main.py": source}, "main.py", limits=limits)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="wall_s"):
        SandboxLimits(wall_s=0)
    with pytest.raises(ValueError, match="max_procs"):
        SandboxLimits(max_procs=-1)


@pytest.mark.parametrize(("result", "reason"), [
    (RunResult(returncode=0, stdout=b"", stderr=b""), None),
    (RunResult(returncode=None, stdout=b"", stderr=b"", timed_out=True), "timed out after 2s"),
    (RunResult(returncode=None, stdout=b"", stderr=b"", output_exceeded=True), "output over 65536 bytes"),
    (RunResult(returncode=137, stdout=b"", stderr=b"", memory_exceeded=True), "memory limit of 256 MiB exceeded"),
    (RunResult(returncode=139, stdout=b"", stderr=b""), "killed by SIGSEGV"),
    (RunResult(returncode=-9, stdout=b"", stderr=b""), "killed by SIGKILL"),
    (RunResult(returncode=1, stdout=b"", stderr=b"Traceback\nValueError: x\n"), "exit status 1: ValueError: x"),
    (RunResult(returncode=1, stdout=b"", stderr=b"bwrap: no\n", sandbox_failed=True), "sandbox failed: bwrap: no"),
])
def test_failure_reasons(result: RunResult, reason: str | None) -> None:
    assert result.failure_reason(LIMITS) == reason


def test_bwrap_command_isolates(tmp_path: Path) -> None:
    interpreter = sandbox.box_interpreter(sandbox.sandbox_python(), tmp_path)
    argv = sandbox.bwrap_argv(tmp_path, LIMITS, interpreter, drop_uid_inside=True)
    for flag in ("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
                 "--new-session", "--clearenv"):
        assert flag in argv
    assert argv[argv.index("--uid") + 1] == "65534"
    assert ["--ro-bind", str(tmp_path), "/box"] == argv[argv.index(str(tmp_path)) - 1:][:3]
    prlimit = sandbox.prlimit_argv(LIMITS, memory_by_rlimit=True)
    assert "--nproc=12" in prlimit and f"--as={256 << 20}" in prlimit and prlimit[-1] == "--"
    assert not any(a.startswith("--as") for a in sandbox.prlimit_argv(LIMITS, memory_by_rlimit=False))


def test_program_sees_only_the_sandbox(backend: Backend) -> None:
    # LD_LIBRARY_PATH, only when the interpreter's libpython sits in its mounted base.
    source = ("import os\nlibs = os.environ.pop('LD_LIBRARY_PATH', '/opt/rollouts-python/base/lib')\n"
              "print(os.getuid(), os.getgid(), os.getpid(), sorted(os.environ), libs)\n"
              "print(sorted(os.listdir('/box')), os.getcwd())\n")
    result = run(backend, source)
    first, second = result.stdout.decode().splitlines()
    assert first.startswith("65534 65534 ")
    assert int(first.split()[2]) < 10  # a fresh pid namespace
    assert first.endswith("['HOME', 'LANG', 'PATH', 'PWD'] /opt/rollouts-python/base/lib")
    assert second == "['main.py'] /tmp"


def test_stdin_is_delivered(backend: Backend) -> None:
    result = sandbox.execute(backend, {"main.py": "import sys\nprint(sys.stdin.read()[::-1])\n"},
                             "main.py", stdin=b"abc", limits=LIMITS)
    assert result.stdout == b"cba\n" and result.returncode == 0


def test_large_stdin_is_delivered_whole(backend: Backend) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB: more than a pipe holds, so it goes through a file
    result = sandbox.execute(backend, {"main.py": "import sys\nprint(len(sys.stdin.buffer.read()))\n"},
                             "main.py", stdin=data, limits=LIMITS)
    assert result.stdout == b"1048576\n"


def test_cgroups_are_removed_after_each_run(backend: Backend) -> None:
    run(backend, FORK_COUNT)
    if backend.cgroups is not None:
        for parent in backend.cgroups.parents:
            assert not list(parent.glob("rollouts-sbx-*"))


def test_process_bound_holds(backend: Backend) -> None:
    result = run(backend, FORK_COUNT)
    assert 0 < int(result.stdout) < LIMITS.max_procs


def _reachable_python() -> str:
    """An interpreter uid 65534 can reach (bwrap then runs as that uid)."""
    for candidate in (sandbox.sandbox_python(), "/usr/bin/python3", "/usr/local/bin/python3"):
        path = Path(os.path.realpath(candidate))
        if path.exists() and all(p.stat().st_mode & stat.S_IXOTH for p in path.parents):
            return str(path)
    raise AssertionError("no Python interpreter reachable by uid 65534 on this machine")


@pytest.mark.parametrize("with_cgroups", [True, False])
def test_nobody_mode_bounds_processes_and_memory(backend: Backend, with_cgroups: bool) -> None:
    """bwrap launched as uid 65534: RLIMIT_NPROC binds even without a pids cgroup."""
    cgroups = sandbox.find_cgroup_layout() if with_cgroups else None
    nobody = Backend("bwrap-nobody", cgroups, _reachable_python())
    assert run(nobody, "import os\nprint(os.getuid())\n").stdout == b"65534\n"
    assert 0 < int(run(nobody, FORK_COUNT).stdout) < LIMITS.max_procs
    memory = run(nobody, "x = bytearray(1 << 30)\n").failure_reason(LIMITS) or ""
    assert "memory" in memory.lower() or "MemoryError" in memory


def test_wall_clock_restarts_on_progress_markers(backend: Backend) -> None:
    # Each step takes 0.6 s, under the 1.5 s per step; all four (2.4 s) exceed one step's limit.
    source = "import time\nfor i in range(4):\n    time.sleep(0.6)\n    print('STEP', flush=True)\n"
    short = SandboxLimits(wall_s=1.5, cpu_s=2, memory_mb=256)
    stepped = sandbox.execute(backend, {"main.py": source}, "main.py", limits=short,
                              progress_marker=b"STEP", max_wall_s=10.0)
    assert not stepped.timed_out and stepped.stdout.count(b"STEP") == 4
    capped = sandbox.execute(backend, {"main.py": source}, "main.py", limits=short,
                             progress_marker=b"STEP", max_wall_s=1.5)
    assert capped.timed_out


def test_missing_interpreter_is_a_sandbox_failure(backend: Backend) -> None:
    broken = Backend(backend.mode, backend.cgroups, "/nonexistent/python3")
    result = run(broken, "print(1)\n")
    assert result.sandbox_failed
    assert (result.failure_reason(LIMITS) or "").startswith("sandbox failed")


def test_unsandboxed_backend_still_applies_rlimits() -> None:
    plain = sandbox.unsandboxed_backend()
    assert run(plain, "print(6 * 7)\n").stdout == b"42\n"
    memory = run(plain, "x = bytearray(1 << 30)\n").failure_reason(LIMITS) or ""
    assert "MemoryError" in memory
    assert run(plain, "while True:\n    pass\n").timed_out


def test_unsandboxed_daemons_die_with_the_cgroup() -> None:
    plain = sandbox.unsandboxed_backend()
    canary = "rollouts-daemon"  # the daemon renames itself so that only it is looked for
    daemon = ("import ctypes, os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
              f"        ctypes.CDLL(None).prctl(15, {canary.encode()!r}, 0, 0, 0)\n"
              "        time.sleep(600)\n    os._exit(0)\nprint('parent done')\n")
    result = run(plain, daemon)
    assert result.stdout == b"parent done\n"
    survivors = [p for p in psutil.process_iter(["name", "status"])
                 if p.info["name"] == canary and p.info["status"] != psutil.STATUS_ZOMBIE]
    if plain.cgroups is not None:
        assert survivors == []
    else:  # without a cgroup nothing can find a re-parented daemon: documented, cleaned here
        for proc in survivors:
            proc.kill()


def test_cgroup_v2_layout_and_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A v2 hierarchy (as a plain directory tree) gets pids.max and memory.max written."""
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("memory pids\n")
    monkeypatch.setattr(sandbox, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(sandbox, "_own_cgroup_paths", lambda: {"": "/"})
    layout = sandbox.find_cgroup_layout()
    assert layout == CgroupLayout(version=2, parents=(tmp_path,))
    cgroup = sandbox.open_cgroup(layout, LIMITS)
    assert (cgroup.dirs[0] / "pids.max").read_text() == "12"
    assert (cgroup.dirs[0] / "memory.max").read_text() == str(256 << 20)
    (cgroup.dirs[0] / "memory.events").write_text("low 0\noom_kill 1\n")
    assert cgroup.memory_exceeded()
    (tmp_path / "cgroup.subtree_control").write_text("cpu\n")
    assert sandbox.find_cgroup_layout() is None


def test_unprivileged_user_gets_the_bwrap_user_mode(backend: Backend) -> None:
    """The scorer run by an ordinary user: bwrap as that user, RLIMIT_NPROC bounds processes."""
    repo = str(Path(sandbox.__file__).resolve().parents[1])
    script = ("import sys\nsys.path.insert(0, sys.argv[1])\nfrom scoring import sandbox\n"
              "backend = sandbox.probe()\n"
              "limits = sandbox.SandboxLimits(wall_s=5.0, cpu_s=2, memory_mb=256, max_procs=12)\n"
              "uid = sandbox.execute(backend, {'m.py': 'import os\\nprint(os.getuid())'}, 'm.py',"
              " limits=limits)\n"
              "forks = sandbox.execute(backend, {'m.py': sys.argv[2]}, 'm.py', limits=limits)\n"
              "print(backend.mode, uid.stdout.decode().strip(), forks.stdout.decode().strip())\n")
    as_nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    done = subprocess.run([*(as_nobody if os.geteuid() == 0 else []),
                           _reachable_python(), "-I", "-c", script, repo, FORK_COUNT],
                          capture_output=True, text=True, timeout=60, cwd="/")
    mode, uid, forks = done.stdout.split()
    assert (mode, uid) == ("bwrap-user", "65534"), done.stderr
    assert 0 < int(forks) < 12


def test_stale_cgroups_of_dead_scorers_are_removed(tmp_path: Path) -> None:
    layout = CgroupLayout(version=1, parents=(tmp_path / "pids", tmp_path / "memory"))
    stale = [parent / f"rollouts-sbx-{_dead_pid()}-0-abcdef" for parent in layout.parents]
    alive = [parent / f"rollouts-sbx-{os.getpid()}-999-abcdef" for parent in layout.parents]
    for path in stale + alive:
        path.mkdir(parents=True)
    sandbox.remove_stale_cgroups(layout)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in alive)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def tmp_venv() -> Iterator[Path]:
    """A venv under /tmp (where the box has its own private /tmp) with a package of its own, and
    this environment's packages (pytest, ...) on its path through a .pth file."""
    venv = Path(tempfile.mkdtemp(prefix="rollouts-venv-", dir="/tmp"))
    try:
        venv.chmod(0o755)  # reachable when bwrap runs as uid 65534
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        site = Path(subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True).stdout.strip())
        (site / "venv_marker.py").write_text("WHERE = 'the venv'\n")
        (site / "outer.pth").write_text(sysconfig.get_path("purelib") + "\n")
        yield venv
    finally:
        shutil.rmtree(venv)


def test_a_venv_scorer_runs_programs_with_its_venv(tmp_venv: Path) -> None:
    """Programs see the scorer's packages, from a venv mounted at a path of its own: nothing of
    the host shows in the box's /tmp, and no home directory is exposed."""
    repo = str(Path(sandbox.__file__).resolve().parents[1])
    program = ("import os, sys, venv_marker\nprint(sys.prefix, venv_marker.WHERE)\n"
               "print(sorted(os.listdir('/tmp')), os.path.exists('/root'), "
               f"os.path.exists({str(tmp_venv)!r}), sorted(os.listdir('/opt')))\n")
    script = ("import sys\nsys.path.insert(0, sys.argv[1])\nfrom scoring import sandbox\n"
              f"result = sandbox.execute(sandbox.probe(), {{'m.py': {program!r}}}, 'm.py', "
              "limits=sandbox.SandboxLimits())\n"
              "print(result.stdout.decode().strip())\nprint(result.stderr.decode()[-500:])\n")
    done = subprocess.run([str(tmp_venv / "bin" / "python"), "-c", script, repo],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split("\n")[:2] == [
        f"{sandbox.BOX_PYTHON_DIR}/venv the venv", "[] False False ['rollouts-python']"]


def test_attack_suite_passes_with_the_venv_under_tmp(tmp_venv: Path) -> None:
    """The box's private /tmp stays empty and bounded when the scorer's venv lives under /tmp."""
    repo = Path(sandbox.__file__).resolve().parents[1]
    tests = [f"tests/test_sandbox_attacks.py::{name}" for name in (
        "test_filling_tmp_and_dev_shm_is_bounded", "test_rm_rf_home_and_scorer_files_leaves_host_intact")]
    done = subprocess.run([str(tmp_venv / "bin" / "python"), "-m", "pytest", "-q", "-p",
                           "no:cacheprovider", *tests], cwd=repo, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout
