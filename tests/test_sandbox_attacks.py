"""Hostile programs under the real sandbox: each is contained and the scorer records a verdict."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import scoring
from scoring import sandbox
from scoring.code_reward import score_code
from scoring.sandbox import Backend, RunResult, SandboxLimits

LIMITS = SandboxLimits(wall_s=2.0, cpu_s=2, memory_mb=256, max_procs=16, file_size_mb=8,
                       tmp_size_mb=16, output_bytes=1 << 20)
# One stdin/stdout test: an attack that also prints "2" passes it; the verdict is what matters.
ADD_ONE = {"inputs": ["1\n"], "outputs": ["2\n"]}
SMALL = {"time_limit_s": 2, "memory_limit_mb": 256}
CANARY_NAME = "rollouts-canary"


@pytest.fixture(scope="module")
def backend() -> Backend:
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is not installed: apt-get install bubblewrap (the sandbox tests need it)")
    sandbox.reset_probe()
    return sandbox.probe()


@pytest.fixture(autouse=True)
def no_survivors() -> Iterator[None]:
    """After every attack, nothing started by the sandbox may still run."""
    yield
    assert _sandbox_processes() == []


def _sandbox_processes() -> list[str]:
    """Processes of this suite's programs: entry /box/main.py, or renamed to the canary name.

    (Other suites may be scoring code on this machine at the same time: their programs are
    /box/solution.py under their own bwrap, so they are not counted here.)
    """
    found = []
    for proc in psutil.process_iter(["cmdline", "name", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        alive = proc.info["status"] != psutil.STATUS_ZOMBIE  # killed, not yet reaped by init
        if alive and ("/box/main.py" in cmdline or proc.info["name"] == CANARY_NAME):
            found.append(f"{proc.pid}: {cmdline[:100]}")
    return found


def run(backend: Backend, source: str) -> RunResult:
    return sandbox.execute(backend, {"main.py": source}, "main.py", limits=LIMITS)


def test_the_probe_picks_a_bwrap_mode(backend: Backend) -> None:
    assert backend.mode in ("bwrap-nobody", "bwrap-userns")
    assert "bubblewrap" in backend.describe()


def test_fork_bomb_is_bounded_and_killed(backend: Backend) -> None:
    source = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = run(backend, source)
    assert result.timed_out
    verdict = score_code(source, ADD_ONE, SMALL)
    assert verdict.score == 0.0 and verdict.status == "timeout"


def test_fork_fails_beyond_the_process_bound(backend: Backend) -> None:
    source = ("import os, time\nn = 0\ntry:\n    while n < 1000:\n        if os.fork() == 0:\n"
              "            time.sleep(30)\n            os._exit(0)\n        n += 1\n"
              "except OSError:\n    pass\nprint(n)\n")
    result = run(backend, source)
    assert result.returncode == 0
    assert int(result.stdout) < LIMITS.max_procs


def test_memory_bomb_is_stopped(backend: Backend) -> None:
    source = "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))\n"
    result = run(backend, source)
    reason = result.failure_reason(LIMITS) or ""
    assert "memory" in reason.lower() or "MemoryError" in reason
    verdict = score_code(source, ADD_ONE, SMALL)
    assert verdict.score == 0.0 and verdict.status == "ok"


def test_loop_ignoring_alarm_and_term_is_killed_on_wall_clock(backend: Backend) -> None:
    source = ("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nsignal.alarm(1)\nwhile True:\n    pass\n")
    assert run(backend, source).timed_out
    verdict = score_code(source, ADD_ONE, SMALL)
    assert (verdict.score, verdict.status) == (0.0, "timeout")
    assert "timed out" in verdict.extra["first_failure"]


def test_sleeping_forever_times_out(backend: Backend) -> None:
    verdict = score_code("import time\ntime.sleep(10**6)\n", ADD_ONE, SMALL)
    assert (verdict.score, verdict.status) == (0.0, "timeout")


def test_detached_child_dies_with_the_tree(backend: Backend) -> None:
    # The grandchild renames itself so the autouse fixture can find it if it survived.
    source = ("import ctypes, os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
              f"        ctypes.CDLL(None).prctl(15, {CANARY_NAME.encode()!r}, 0, 0, 0)\n"
              "        time.sleep(600)\n    os._exit(0)\nprint(int(input()) + 1)\n")
    verdict = score_code(source, ADD_ONE, SMALL)
    assert verdict.score == 1.0
    result = sandbox.execute(backend, {"main.py": source}, "main.py", stdin=b"1\n", limits=LIMITS)
    assert result.stdout == b"2\n"
    # The autouse fixture asserts the sleeping grandchildren are gone.


def test_rm_rf_home_and_scorer_files_leaves_host_intact(backend: Backend, tmp_path: Path) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text("still here")
    scorer_dir = Path(scoring.__file__).parent
    source = ("import os, shutil, subprocess\n"
              f"for path in [os.path.expanduser('~'), {str(scorer_dir)!r}, {str(tmp_path)!r},"
              " '/root', '/home', '/work', '/box', '/usr']:\n"
              "    shutil.rmtree(path, ignore_errors=True)\n"
              "    subprocess.run(['rm', '-rf', path], capture_output=True)\n")
    run(backend, source)  # may run out of wall clock walking read-only trees: no matter
    assert canary.read_text() == "still here"
    assert (scorer_dir / "sandbox.py").exists() and (scorer_dir / "code_reward.py").exists()
    assert score_code(source, ADD_ONE, SMALL).score == 0.0


def test_writes_outside_the_temp_dir_fail(backend: Backend, tmp_path: Path) -> None:
    targets = [str(tmp_path / "escaped.txt"), "/box/x", "/usr/x", "/x", "/root/x",
               "/etc/passwd", "/sys/fs/cgroup/x"]
    source = (f"import os\nfor path in {targets!r}:\n    try:\n"
              "        with open(path, 'w') as f:\n            f.write('owned')\n"
              "        print('WROTE', path)\n    except OSError:\n        pass\n"
              "open('/tmp/inside.txt', 'w').write('fine')\nprint('tmp ok')\n")
    result = run(backend, source)
    assert result.stdout.decode().split() == ["tmp", "ok"]
    assert not (tmp_path / "escaped.txt").exists()


def test_secret_env_and_host_file_are_unreadable(backend: Backend, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOUTS_TEST_SECRET", "env-secret-7731")
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("file-secret-4412")
    source = ("import os, glob\nprint(dict(os.environ))\n"
              "for path in [" + repr(str(secret_file)) + "] + glob.glob('/proc/*/environ'):\n"
              "    try:\n        print(open(path, 'rb').read())\n    except OSError as e:\n"
              "        print('denied', path)\n")
    result = run(backend, source)
    output = result.stdout + result.stderr
    assert b"denied " + str(secret_file).encode() in result.stdout
    assert b"env-secret-7731" not in output and b"file-secret-4412" not in output


def test_no_connection_reaches_a_host_listener(backend: Backend) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        source = ("import socket\ntry:\n"
                  f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n"
                  "    print('connected')\nexcept OSError as e:\n    print('refused', e)\n")
        result = run(backend, source)
        assert result.stdout.startswith(b"refused")
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_killing_the_parent_leaves_the_scorer_alive(backend: Backend) -> None:
    me = os.getpid()
    source = ("import ctypes, os, signal\nlibc = ctypes.CDLL(None)\n"
              f"for pid in [os.getppid(), 1, -1, {me}, {os.getppid()}]:\n"
              "    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
              "    libc.kill(pid, signal.SIGKILL)\n")
    result = run(backend, source)
    assert not result.timed_out  # the program itself survived its own kills and finished
    verdict = score_code(source, ADD_ONE, SMALL)
    assert verdict.score == 0.0
    assert psutil.pid_exists(me) and psutil.Process(os.getppid()).is_running()


def test_a_gigabyte_to_stdout_is_capped(backend: Backend) -> None:
    before = psutil.Process().memory_info().rss
    source = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n"
    result = run(backend, source)
    assert result.output_exceeded and len(result.stdout) == LIMITS.output_bytes
    assert psutil.Process().memory_info().rss - before < 64 << 20
    verdict = score_code(source, ADD_ONE, SMALL)
    assert verdict.score == 0.0 and "output over" in verdict.extra["first_failure"]


def test_fast_os_exit_passes_nothing(backend: Backend) -> None:
    verdict = score_code("import os\nos._exit(0)\n", ADD_ONE, SMALL)
    assert verdict.score == 0.0 and "wrong answer" in verdict.extra["first_failure"]


def test_deep_recursion_crash_is_recorded(backend: Backend) -> None:
    source = ("import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1) + 1\n"
              "f(0)\n")
    result = run(backend, source)
    assert result.failure_reason(LIMITS) is not None
    verdict = score_code(source, ADD_ONE, SMALL)
    assert verdict.score == 0.0 and verdict.extra["first_failure"]


def test_filling_tmp_and_dev_shm_is_bounded(backend: Backend) -> None:
    source = ("import os\nmb = b'x' * (1 << 20)\nfor root in ['/tmp', '/dev/shm']:\n"
              "    written = 0\n    try:\n        for i in range(1000):\n"
              "            with open(f'{root}/f{i}', 'wb') as f:\n"
              "                for _ in range(4):\n                    f.write(mb)\n"
              "                    written += 1\n    except OSError as e:\n        pass\n"
              "    print(root, written)\n"
              "for name in os.listdir('/tmp'):\n    os.remove('/tmp/' + name)\n"
              "try:\n    with open('/tmp/big', 'wb') as f:\n        for _ in range(64):\n"
              "            f.write(mb)\nexcept OSError as e:\n    print('big', e.errno)\n")
    result = run(backend, source)
    lines = dict(line.split(" ", 1) for line in result.stdout.decode().splitlines())
    assert int(lines["/tmp"]) <= LIMITS.tmp_size_mb
    assert int(lines["/dev/shm"]) <= LIMITS.tmp_size_mb
    assert lines["big"] == "27"  # EFBIG: one file stops at the file-size bound
