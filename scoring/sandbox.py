"""Run an untrusted Python program under bubblewrap with bounded resources.

Isolation (see DESIGN.md, "Code sandbox"): new pid, net, ipc, uts, cgroup and user namespaces, no
nested user namespaces, uid 65534 inside, an empty environment, read-only system directories, the
program's files read-only under /box, and one private size-bounded tmpfs at /tmp (the working
directory) and at /dev/shm. Nothing of the host's home, work tree or /etc is visible.

Limits: processes and memory through a pids and memory cgroup created per execution when the cgroup
hierarchy is writable; otherwise processes through RLIMIT_NPROC, which only binds when bwrap itself
runs as a non-root uid (it never binds a kernel uid of 0), and memory through RLIMIT_AS. CPU time, file
size, open files and core dumps always through rlimits (`prlimit` inside the sandbox, so they bind
the program and not bwrap). The wall clock is enforced from outside: the whole tree is killed
(bwrap's session, the cgroup's processes, and the pid namespace dies with its init).

`probe()` picks the strongest mode that works on this machine, once per process:
  - as root, first "bwrap-nobody": bwrap launched as uid 65534, so the program's kernel uid is
    65534 (needs an interpreter that uid can reach); then "bwrap-userns": bwrap launched as root
    with `--uid 65534`, inside uid 65534 without capabilities but kernel uid 0, so it is accepted
    only with a pids cgroup;
  - as any other user, "bwrap-user": bwrap as that user with `--uid 65534` inside.
If none works, `probe` raises SandboxUnavailable; callers may then use `unsandboxed_backend()`,
a plain subprocess with rlimits (and a cgroup when writable) and no isolation at all.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SANDBOX_UID = 65534
BOX_DIR = "/box"
WORK_DIR = "/tmp"
BOX_PYTHON_DIR = "/opt/rollouts-python"  # the interpreter's own place in the box: shadows nothing
CGROUP_ROOT = Path("/sys/fs/cgroup")
_READ_CHUNK = 65536
_KILL_ROUNDS = 50
_REAP_WAIT_S = 1.0

Mode = Literal["bwrap-nobody", "bwrap-userns", "bwrap-user", "unsandboxed"]


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run on this machine (the message says why)."""


@dataclass(frozen=True, kw_only=True)
class SandboxLimits:
    """Bounds of one execution. Sizes in MiB except output_bytes (per stream)."""

    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 512
    max_procs: int = 32
    file_size_mb: int = 16
    tmp_size_mb: int = 64
    output_bytes: int = 1 << 20
    open_files: int = 256

    def __post_init__(self) -> None:
        for name in ("wall_s", "cpu_s", "memory_mb", "max_procs", "file_size_mb", "tmp_size_mb",
                     "output_bytes", "open_files"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What one execution did. returncode is None when it was killed from outside."""

    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    output_exceeded: bool = False
    memory_exceeded: bool = False
    sandbox_failed: bool = False
    wall_s: float = 0.0

    @property
    def signal(self) -> int | None:
        """The signal that ended the program (bwrap reports it as 128 + signo)."""
        if self.returncode is None:
            return None
        if self.returncode < 0:
            return -self.returncode
        return self.returncode - 128 if self.returncode > 128 else None

    def failure_reason(self, limits: SandboxLimits) -> str | None:
        """A short human reason when the run did not end normally with status 0."""
        if self.sandbox_failed:
            return f"sandbox failed: {_last_line(self.stderr)}"
        if self.timed_out:
            return f"timed out after {limits.wall_s:g}s"
        if self.output_exceeded:
            return f"output over {limits.output_bytes} bytes"
        if self.memory_exceeded:
            return f"memory limit of {limits.memory_mb} MiB exceeded"
        sig = self.signal
        if sig is not None:
            return f"killed by {_signal_name(sig)}"
        if self.returncode:
            tail = _last_line(self.stderr)
            return f"exit status {self.returncode}" + (f": {tail}" if tail else "")
        return None


def _last_line(data: bytes) -> str:
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:200] if lines else ""


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


# --------------------------------------------------------------------------------------- cgroups


@dataclass(frozen=True)
class CgroupLayout:
    """Where per-execution cgroups can be created: v1 (one parent per controller) or v2."""

    version: Literal[1, 2]
    parents: tuple[Path, ...]


@dataclass
class Cgroup:
    """One execution's cgroup(s); processes join by writing their pid to `procs_files`."""

    version: Literal[1, 2]
    dirs: list[Path]
    memory_dir: Path | None

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        return found

    def kill_all(self, *, spare: int | None = None) -> None:
        """SIGKILL every process in the cgroup but `spare`, repeating while a fork races the kill."""
        kill_file = self.dirs[0] / "cgroup.kill"
        if spare is None and self.version == 2 and kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        for _ in range(_KILL_ROUNDS):
            pids = self.pids() - {spare}
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    def memory_exceeded(self) -> bool:
        if self.memory_dir is None:
            return False
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        with contextlib.suppress(OSError):
            for line in (self.memory_dir / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        return False

    def remove(self) -> None:
        for d in self.dirs:
            for _ in range(_KILL_ROUNDS):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


def _own_cgroup_paths() -> dict[str, str]:
    """Controller name ('' for the v2 hierarchy) -> this process's cgroup path."""
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(","):
                paths[name] = path
    return paths


def _writable_parent(path: Path) -> bool:
    probe = path / f"rollouts-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return False
    probe.rmdir()
    return True


def find_cgroup_layout() -> CgroupLayout | None:
    """The cgroup hierarchy where this process may create children with pids and memory limits."""
    own = _own_cgroup_paths()
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        parent = CGROUP_ROOT / own.get("", "/").lstrip("/")
        controllers = (parent / "cgroup.subtree_control").read_text().split() if (
            parent / "cgroup.subtree_control").exists() else []
        if {"pids", "memory"} <= set(controllers) and _writable_parent(parent):
            return CgroupLayout(version=2, parents=(parent,))
        return None
    parents = []
    for name in ("pids", "memory"):
        parent = CGROUP_ROOT / name / own.get(name, "/").lstrip("/")
        if not (parent / "cgroup.procs").exists() or not _writable_parent(parent):
            return None
        parents.append(parent)
    return CgroupLayout(version=1, parents=tuple(parents))


_cgroup_counter = itertools.count()
_CGROUP_PREFIX = "rollouts-sbx-"


def remove_stale_cgroups(layout: CgroupLayout) -> None:
    """Remove the cgroups of scorer processes that died before cleaning up after themselves."""
    for parent in layout.parents:
        for path in parent.glob(f"{_CGROUP_PREFIX}*"):
            owner = path.name[len(_CGROUP_PREFIX):].split("-", 1)[0]
            if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                stale = Cgroup(layout.version, [path], None)
                stale.kill_all()
                stale.remove()


def open_cgroup(layout: CgroupLayout, limits: SandboxLimits) -> Cgroup:
    """Create this execution's cgroup(s) with the process and memory bounds written."""
    name = f"{_CGROUP_PREFIX}{os.getpid()}-{next(_cgroup_counter)}-{os.urandom(3).hex()}"
    dirs = [parent / name for parent in layout.parents]
    for d in dirs:
        d.mkdir()
    memory = limits.memory_mb << 20
    if layout.version == 2:
        cg = Cgroup(2, dirs, dirs[0])
        _write(dirs[0] / "pids.max", str(limits.max_procs))
        _write(dirs[0] / "memory.max", str(memory))
        _write(dirs[0] / "memory.swap.max", "0", optional=True)
        return cg
    pids_dir, memory_dir = dirs
    _write(pids_dir / "pids.max", str(limits.max_procs))
    _write(memory_dir / "memory.limit_in_bytes", str(memory))
    # Without swap accounting this file is absent; memory.limit_in_bytes then bounds RAM alone.
    _write(memory_dir / "memory.memsw.limit_in_bytes", str(memory), optional=True)
    return Cgroup(1, dirs, memory_dir)


def _write(path: Path, value: str, *, optional: bool = False) -> None:
    try:
        path.write_text(value)
    except OSError:
        if not optional:
            raise


# ------------------------------------------------------------------------------------ backends


@dataclass(frozen=True)
class Backend:
    """How executions are isolated on this machine."""

    mode: Mode
    cgroups: CgroupLayout | None
    python: str

    def describe(self) -> str:
        if self.mode == "unsandboxed":
            bound = f" and a cgroup v{self.cgroups.version}" if self.cgroups else ""
            return f"unsandboxed subprocess with rlimits{bound} (no isolation)"
        limits = (f"pids+memory via cgroup v{self.cgroups.version}" if self.cgroups
                  else "processes via RLIMIT_NPROC, memory via RLIMIT_AS")
        uid = {"bwrap-nobody": "kernel uid 65534",
               "bwrap-userns": "uid 65534 in a user namespace (kernel uid 0)",
               "bwrap-user": f"uid 65534 in a user namespace (kernel uid {os.geteuid()})"}[self.mode]
        return (f"bubblewrap ({self.mode}): pid/net/ipc/uts/cgroup/user namespaces, {uid}, "
                f"{limits}, CPU/file size/open files via rlimits")


def sandbox_python() -> str:
    """The interpreter that runs programs: the scorer's own, so the same packages are importable.

    Not resolved through symlinks: a venv's python is a link whose location selects the venv.
    """
    return os.path.abspath(sys.executable)


@dataclass(frozen=True)
class BoxInterpreter:
    """The host interpreter as the box sees it: read-only under BOX_PYTHON_DIR, never at its host
    path (a venv under /tmp would show inside the box's private /tmp, a pyenv under /root would
    expose a home directory). A venv becomes a skeleton there: its pyvenv.cfg (rewritten to point
    at the mounted base) and its lib/ (the scorer's packages), nothing else of it."""

    args: tuple[str, ...]  # bwrap arguments that build the layout
    executable: str  # the interpreter's path inside the box
    env: tuple[tuple[str, str], ...] = ()


def _venv_of(python: str) -> Path | None:
    """The venv whose pyvenv.cfg Python itself would find for this executable, if any."""
    bin_dir = Path(os.path.abspath(python)).parent
    return next((d for d in (bin_dir, bin_dir.parent) if (d / "pyvenv.cfg").is_file()), None)


def _read_pyvenv_cfg(venv: Path) -> dict[str, str]:
    pairs = (line.partition("=") for line in (venv / "pyvenv.cfg").read_text().splitlines())
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}


def box_interpreter(python: str, scratch: Path) -> BoxInterpreter:
    """Mounts that make `python` (a base install or a venv's) run in the box; scratch holds the
    rewritten pyvenv.cfg for the duration of the run."""
    venv = _venv_of(python)
    real = Path(os.path.realpath(python))
    if venv is not None and not real.is_relative_to(venv):
        base_bin = real.parent
    elif venv is not None:  # a venv made with --copies: its cfg names the base
        base_bin = Path(os.path.realpath(_read_pyvenv_cfg(venv).get("home", real.parent)))
        real = base_bin / real.name
    else:
        base_bin = real.parent
    base = base_bin.parent
    args: list[str] = []
    env: list[tuple[str, str]] = []
    base_in_box = str(base)
    # /usr (and /bin, /lib: symlinks into it or binds) is in the box already, at its own path.
    mounted_already = base == Path("/") or base.is_relative_to("/usr")
    if real.is_file() and not mounted_already:
        base_in_box = f"{BOX_PYTHON_DIR}/base"
        args += ["--ro-bind", str(base), base_in_box]
        if list(base.glob("lib/libpython*.so*")):  # found through an absolute runpath otherwise
            env.append(("LD_LIBRARY_PATH", f"{base_in_box}/lib"))
    executable = str(Path(base_in_box) / real.relative_to(base))
    if venv is None:
        return BoxInterpreter(tuple(args), executable, tuple(env))
    cfg = dict(_read_pyvenv_cfg(venv), home=str(Path(executable).parent))
    cfg_file = scratch / "pyvenv.cfg"
    cfg_file.write_text("".join(f"{k} = {v}\n" for k, v in cfg.items() if k != "executable"))
    cfg_file.chmod(0o644)
    venv_in_box = f"{BOX_PYTHON_DIR}/venv"
    args += ["--dir", f"{venv_in_box}/bin", "--symlink", executable, f"{venv_in_box}/bin/python3",
             "--ro-bind", str(cfg_file), f"{venv_in_box}/pyvenv.cfg",
             "--ro-bind", str(venv / "lib"), f"{venv_in_box}/lib"]
    return BoxInterpreter(tuple(args), f"{venv_in_box}/bin/python3", tuple(env))


def _system_binds() -> list[str]:
    """Read-only /usr plus /bin, /lib, ... as the host has them (symlinks into /usr or dirs)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    return args


def bwrap_argv(box: Path, limits: SandboxLimits, interpreter: BoxInterpreter, *,
               drop_uid_inside: bool) -> list[str]:
    """The bwrap command line (without the program) for one execution."""
    argv = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", "--hostname", "sandbox", *_system_binds(),
            "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", str(limits.tmp_size_mb << 20), "--tmpfs", WORK_DIR,
            "--perms", "1777", "--size", str(limits.tmp_size_mb << 20), "--tmpfs", "/dev/shm",
            "--ro-bind", str(box), BOX_DIR]
    argv += [*interpreter.args, "--remount-ro", "/", "--clearenv", "--setenv", "PATH",
             "/usr/bin:/bin", "--setenv", "HOME", WORK_DIR, "--setenv", "LANG", "C.UTF-8",
             "--chdir", WORK_DIR]
    for name, value in interpreter.env:
        argv += ["--setenv", name, value]
    if drop_uid_inside:
        argv += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
    return argv


def prlimit_argv(limits: SandboxLimits, *, memory_by_rlimit: bool) -> list[str]:
    """rlimits applied inside the sandbox, so they bind the program and not bwrap."""
    # Soft CPU limit first (SIGXCPU, reported as a timeout), SIGKILL a second later.
    argv = ["prlimit", f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}", f"--fsize={limits.file_size_mb << 20}",
            f"--nofile={limits.open_files}", "--core=0", f"--nproc={limits.max_procs}"]
    if memory_by_rlimit:
        argv.append(f"--as={limits.memory_mb << 20}")
    return [*argv, "--"]


def _preexec(procs_files: Sequence[str], drop_uid: bool) -> Callable[[], None]:
    """Runs in the child before exec: join the cgroups, then give up root if asked."""

    def run() -> None:
        pid = str(os.getpid()).encode()
        for path in procs_files:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        if drop_uid:
            os.setgroups([])
            os.setresgid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
            os.setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)

    return run


def _rlimit_preexec(limits: SandboxLimits, procs_files: Sequence[str]) -> Callable[[], None]:
    """The unsandboxed fallback: the cgroups when writable, and the bounds as rlimits."""
    join = _preexec(procs_files, drop_uid=False)

    def run() -> None:
        join()
        mem = limits.memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        size = limits.file_size_mb << 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_procs, limits.max_procs))

    return run


# --------------------------------------------------------------------------------------- probing

_PROBE_LIMITS = SandboxLimits(wall_s=20.0, cpu_s=10, memory_mb=256, max_procs=16)
_PROBE_SOURCE = "import os\nprint(6 * 7, os.getuid())\n"
_probed: dict[str, Backend | str] = {}


def probe() -> Backend:
    """The strongest working sandbox on this machine (cached per process).

    Raises SandboxUnavailable naming why no mode works.
    """
    if "backend" not in _probed:
        _probed["backend"] = _probe_uncached()
    found = _probed["backend"]
    if isinstance(found, str):
        raise SandboxUnavailable(found)
    return found


def _probe_uncached() -> Backend | str:
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    if shutil.which("prlimit") is None:
        return "prlimit (util-linux) is not installed"
    cgroups = find_cgroup_layout()
    if cgroups is not None:
        remove_stale_cgroups(cgroups)
    python = sandbox_python()
    reasons = []
    candidates: list[Mode] = ["bwrap-nobody", "bwrap-userns"] if os.geteuid() == 0 else ["bwrap-user"]
    for mode in candidates:
        if mode == "bwrap-userns" and cgroups is None:
            reasons.append("bwrap-userns: the kernel uid would be 0, so processes can only be "
                           "bounded by a pids cgroup, and /sys/fs/cgroup is not writable")
            continue
        backend = Backend(mode, cgroups, python)
        result = execute(backend, {"probe.py": _PROBE_SOURCE}, "probe.py", limits=_PROBE_LIMITS)
        if result.stdout.split() == [b"42", str(SANDBOX_UID).encode()]:
            return backend
        reasons.append(f"{mode}: {result.failure_reason(_PROBE_LIMITS) or _last_line(result.stderr)}")
    return "; ".join(reasons)


def reset_probe() -> None:
    """Forget the cached probe (tests, or after installing bubblewrap)."""
    _probed.clear()


# -------------------------------------------------------------------------------------- running


def unsandboxed_backend() -> Backend:
    """No isolation; a cgroup still bounds the tree and lets a timeout kill daemons, if writable."""
    return Backend("unsandboxed", find_cgroup_layout(), sandbox_python())


def execute(backend: Backend, files: Mapping[str, str | bytes], entry: str, *,
            args: Sequence[str] = (), stdin: bytes = b"", limits: SandboxLimits,
            progress_marker: bytes | None = None, max_wall_s: float | None = None) -> RunResult:
    """Run `python -I /box/<entry> args...` with `files` under /box, stdin from `stdin`.

    The wall clock is limits.wall_s; with progress_marker, it restarts each time the marker
    appears on stdout (one wall_s per step), never beyond max_wall_s in total.
    """
    with _private_dir() as tmp:
        box = tmp / "box"
        box.mkdir(mode=0o755)
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            (box / name).write_bytes(data)
            (box / name).chmod(0o644)
        stdin_fd = _stdin_fd(stdin, tmp / "stdin")
        try:
            return _run(backend, tmp, box, entry, args, stdin_fd, limits,
                        progress_marker, max_wall_s or limits.wall_s)
        finally:
            os.close(stdin_fd)


def _stdin_fd(data: bytes, spill: Path) -> int:
    """A pipe already holding `data`, or a file when the pipe cannot take it all at once.

    A pipe once read is empty for everyone: the harness's nonce cannot be read back through
    /proc/1/fd/0 (bwrap's init holds the same stdin). A file could be.
    """
    read_end, write_end = os.pipe()
    try:
        os.set_blocking(write_end, False)
        written = os.write(write_end, data) if data else 0
    except BlockingIOError:
        written = -1
    finally:
        os.close(write_end)
    if written == len(data):
        return read_end
    os.close(read_end)
    spill.write_bytes(data)
    return os.open(spill, os.O_RDONLY)


@contextlib.contextmanager
def _private_dir() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="rollouts-sbx-"))
    # bwrap may run as uid 65534 and must traverse to the box; nothing here is writable to it.
    tmp.chmod(0o711)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(backend: Backend, tmp: Path, box: Path, entry: str, args: Sequence[str], stdin_fd: int,
         limits: SandboxLimits, marker: bytes | None, max_wall_s: float) -> RunResult:
    cgroup = open_cgroup(backend.cgroups, limits) if backend.cgroups else None
    try:
        if backend.mode == "unsandboxed":
            work = tmp / "work"
            work.mkdir()
            argv = [backend.python, "-I", str(box / entry), *args]
            proc = subprocess.Popen(argv, stdin=stdin_fd, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, cwd=work, start_new_session=True,
                                    env={"PATH": "/usr/bin:/bin", "HOME": str(work)},
                                    preexec_fn=_rlimit_preexec(
                                        limits, cgroup.procs_files if cgroup else []))
        else:
            interpreter = box_interpreter(backend.python, tmp)
            argv = [*bwrap_argv(box, limits, interpreter,
                                drop_uid_inside=backend.mode != "bwrap-nobody"),
                    *prlimit_argv(limits, memory_by_rlimit=cgroup is None),
                    interpreter.executable, "-I", f"{BOX_DIR}/{entry}", *args]
            proc = subprocess.Popen(argv, stdin=stdin_fd, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True,
                                    env={"PATH": "/usr/bin:/bin"},
                                    preexec_fn=_preexec(cgroup.procs_files if cgroup else [],
                                                        backend.mode == "bwrap-nobody"))
        return _supervise(proc, backend, cgroup, limits, marker, max_wall_s)
    finally:
        if cgroup is not None:
            cgroup.kill_all()
            cgroup.remove()


def _supervise(proc: subprocess.Popen[bytes], backend: Backend, cgroup: Cgroup | None,
               limits: SandboxLimits, marker: bytes | None, max_wall_s: float) -> RunResult:
    start = time.monotonic()
    drain = _Drain(proc, limits.output_bytes, marker)
    hard_deadline = start + max(max_wall_s, limits.wall_s)
    deadline = start + limits.wall_s
    steps_seen = 0
    timed_out = False
    while drain.open_streams():
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            break
        drain.step(deadline - now)
        if drain.exceeded:
            break
        if drain.steps > steps_seen:
            steps_seen = drain.steps
            deadline = min(time.monotonic() + limits.wall_s, hard_deadline)
    returncode: int | None = None
    if not timed_out and not drain.exceeded:
        try:
            returncode = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    if returncode is None:
        _kill_tree(proc, cgroup)
    # Out of CPU time is a timeout too: which limit fires first is a race when they are equal.
    timed_out = timed_out or returncode == -signal.SIGXCPU
    drain.close()
    stderr = bytes(drain.buffers[1])
    sandbox_failed = (backend.mode != "unsandboxed" and returncode is not None and returncode != 0
                      and not drain.buffers[0]
                      and (stderr.startswith(b"bwrap: ") or stderr.startswith(b"prlimit: ")))
    return RunResult(returncode=returncode, stdout=bytes(drain.buffers[0]), stderr=stderr,
                     timed_out=timed_out, output_exceeded=drain.exceeded,
                     memory_exceeded=cgroup.memory_exceeded() if cgroup else False,
                     sandbox_failed=sandbox_failed, wall_s=time.monotonic() - start)


def _kill_tree(proc: subprocess.Popen[bytes], cgroup: Cgroup | None) -> None:
    """Kill everything the execution started, from the inside out.

    The launched process (bwrap) is spared until its descendants are dead, so that it reaps
    them: killed first, it would leave its child to an init that may never reap it (a zombie).
    """
    import psutil  # only this path needs it; the sandbox itself runs on the standard library

    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()
    if cgroup is not None:
        cgroup.kill_all(spare=proc.pid)
    try:
        proc.wait(timeout=_REAP_WAIT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


class _Drain:
    """Reads stdout and stderr as they come, keeping at most `cap` bytes of each."""

    def __init__(self, proc: subprocess.Popen[bytes], cap: int, marker: bytes | None) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.cap = cap
        self.marker = marker
        self.steps = 0
        self._scan_from = 0
        self.exceeded = False
        self.buffers = (bytearray(), bytearray())
        self._selector = selectors.DefaultSelector()
        for index, stream in enumerate((proc.stdout, proc.stderr)):
            os.set_blocking(stream.fileno(), False)
            self._selector.register(stream, selectors.EVENT_READ, index)
        self._streams = [proc.stdout, proc.stderr]

    def open_streams(self) -> bool:
        return bool(self._selector.get_map())

    def step(self, timeout: float) -> None:
        for key, _ in self._selector.select(timeout):
            try:
                data = os.read(key.fd, _READ_CHUNK)
            except BlockingIOError:
                continue
            if not data:
                self._selector.unregister(key.fileobj)
                continue
            buffer = self.buffers[key.data]
            if len(buffer) + len(data) > self.cap:
                buffer += data[: self.cap - len(buffer)]
                self.exceeded = True
                return
            buffer += data
            if key.data == 0 and self.marker:
                self._count_markers(buffer)

    def _count_markers(self, buffer: bytearray) -> None:
        assert self.marker is not None
        found = buffer.count(self.marker, self._scan_from)
        if found:
            self.steps += found
            self._scan_from = buffer.rfind(self.marker) + len(self.marker)

    def close(self) -> None:
        self._selector.close()
        for stream in self._streams:
            stream.close()
