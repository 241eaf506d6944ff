"""Work units of a SLURM run and the files through which tasks share them.

A run is split into many fixed units, each a range of one input file's prompts × their N samples.
A unit's id is a content hash (the dataset job's config hash, the file and the prompt ids in its
range), so a changed input or config never matches finished work. In the run directory:

    units.json          the work table: datasets and units (written once by submit)
    leases/UNIT         held by one task: created with O_EXCL (one winner), its mtime refreshed by
                        a heartbeat. It names its holder's SLURM job and restart count: a lease
                        whose holder's job no longer runs (ended, requeued) is dead at once; one
                        older than lease_timeout is stale. Another task takes either over (rename
                        the dead file away, then O_EXCL again)
    done/UNIT.json      the unit is finished: rows, error rows, config hash (written atomically)
    units/UNIT.parquet  the unit's rows, and beside it the engine's durable store of the unit

A claim checks for a done marker before and after taking the lease, so a unit finished between the
two is never run again; two tasks that both believe they hold a unit still cannot write it twice:
the unit's store takes an exclusive lock, and its write-ahead log means a second runner resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rollouts.errors import UserInputError
from rollouts.io import write_json_atomic

WORK_TABLE = "units.json"
HOLDER_CHECK_TTL_S = 5.0  # how long a holder's liveness (one scontrol call) is trusted

# (job, restart) -> is that run of the job still going? (slurm.scheduler.holder_alive)
HolderAlive = Callable[[str, int], bool]


@dataclass(frozen=True)
class DatasetEntry:
    """One input file of one dataset job, as the work table records it."""

    job: int  # index into the plan's jobs (the config's datasets)
    path: str
    name: str
    output: str
    config_hash: str
    prompts: int
    n: int
    output_format: str = "long"
    config: dict[str, Any] = field(default_factory=dict)  # the job's identity (for summaries)


@dataclass(frozen=True)
class Unit:
    id: str
    dataset: int  # index into WorkTable.datasets
    start: int
    stop: int


@dataclass(frozen=True)
class WorkTable:
    datasets: tuple[DatasetEntry, ...]
    units: tuple[Unit, ...]

    def samples(self, unit: Unit) -> int:
        return (unit.stop - unit.start) * self.datasets[unit.dataset].n

    def total_samples(self) -> int:
        return sum(d.prompts * d.n for d in self.datasets)

    def save(self, run_dir: Path) -> None:
        data = {
            "datasets": [asdict(d) for d in self.datasets],
            "units": [[u.id, u.dataset, u.start, u.stop] for u in self.units],
        }
        write_json_atomic(data, run_dir / WORK_TABLE)

    @classmethod
    def load(cls, run_dir: Path) -> WorkTable:
        path = run_dir / WORK_TABLE
        if not path.is_file():
            runs = sorted(p.parent for p in run_dir.glob(f"*/{WORK_TABLE}"))
            hint = (f"; the run directory is {runs[0]}" if len(runs) == 1 else
                    f"; run directories in it: {', '.join(str(r) for r in runs[:5])}" if runs
                    else "; pass slurm.run_dir (default OUTPUT_DIR/slurm-<config stem>)")
            raise UserInputError(
                f"{run_dir}: not a SLURM run directory (no {WORK_TABLE}){hint}"
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            datasets=tuple(DatasetEntry(**d) for d in data["datasets"]),
            units=tuple(Unit(str(i), int(d), int(a), int(b)) for i, d, a, b in data["units"]),
        )


def unit_id(config_hash: str, name: str, prompt_digests: bytes) -> str:
    """Content address of a unit: what it samples and how."""
    hasher = hashlib.sha256(f"{config_hash}\0{name}\0".encode())
    hasher.update(prompt_digests)
    return hasher.hexdigest()[:20]


def split_units(
    dataset_index: int, entry: DatasetEntry, digests: Any, unit_prompts: int
) -> list[Unit]:
    """Fixed ranges of unit_prompts prompts (the last one shorter) of one input file.

    digests is the file's array of 64-bit prompt ids; the ranges never depend on the number of
    tasks, so resubmitting with another array_size finds the same units."""
    units = []
    for start in range(0, entry.prompts, unit_prompts):
        stop = min(start + unit_prompts, entry.prompts)
        uid = unit_id(entry.config_hash, entry.name, digests[start:stop].tobytes())
        units.append(Unit(uid, dataset_index, start, stop))
    return units


# -- done markers -----------------------------------------------------------------------------


def done_dir(run_dir: Path) -> Path:
    return run_dir / "done"


def done_ids(run_dir: Path) -> set[str]:
    """Ids of finished units: one directory listing."""
    try:
        names = os.listdir(done_dir(run_dir))
    except (FileNotFoundError, NotADirectoryError):  # a new run (or no folder can be made there)
        return set()
    return {name[:-5] for name in names if name.endswith(".json")}


def read_done(run_dir: Path, uid: str) -> dict[str, Any]:
    marker: dict[str, Any] = json.loads(
        (done_dir(run_dir) / f"{uid}.json").read_text(encoding="utf-8")
    )
    return marker


def unit_output(run_dir: Path, uid: str) -> Path:
    return run_dir / "units" / f"{uid}.parquet"


# -- leases -----------------------------------------------------------------------------------


def leases_dir(run_dir: Path) -> Path:
    return run_dir / "leases"


@dataclass(frozen=True)
class LeaseFile:
    """A lease as read from disk."""

    token: str | None
    job: str | None  # the holder's SLURM job (ARRAY_TASK), None outside SLURM
    restart: int
    age_s: float  # since the last heartbeat

    def live(self, timeout: float, holder_alive: HolderAlive | None) -> bool:
        """Heartbeat within timeout and, when it names a job, that run of the job still going."""
        if self.age_s >= timeout:
            return False
        if self.job is None or holder_alive is None:
            return True
        return holder_alive(self.job, self.restart)


def read_lease(path: Path, *, holder: bool = True) -> LeaseFile:
    """Raises FileNotFoundError when the lease is gone. holder=False reads only its age (one
    stat, the common case of a claim pass outside SLURM)."""
    age = time.time() - path.stat().st_mtime
    if not holder:
        return LeaseFile(None, None, 0, age)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:  # being written this instant: the holder is alive
        data = {}
    job = data.get("job")
    return LeaseFile(data.get("token"), str(job) if job else None, int(data.get("restart", 0)),
                     age)


def cached(holder_alive: HolderAlive | None) -> HolderAlive | None:
    """holder_alive asked once per (job, restart) every HOLDER_CHECK_TTL_S."""
    if holder_alive is None:
        return None
    answers: dict[tuple[str, int], tuple[bool, float]] = {}

    def alive(job: str, restart: int) -> bool:
        known = answers.get((job, restart))
        if known is None or time.monotonic() - known[1] > HOLDER_CHECK_TTL_S:
            known = (holder_alive(job, restart), time.monotonic())
            answers[(job, restart)] = known
        return known[0]
    return alive


def leased_ids(
    run_dir: Path, *, timeout: float, holder_alive: HolderAlive | None = None
) -> dict[str, bool]:
    """Unit id -> whether its lease is live (heartbeat within timeout, holder's job running)."""
    alive = cached(holder_alive)
    result = {}
    try:
        entries = list(os.scandir(leases_dir(run_dir)))
    except FileNotFoundError:
        return {}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            lease = read_lease(Path(entry.path), holder=alive is not None)
            result[entry.name] = lease.live(timeout, alive)
        except FileNotFoundError:
            continue
    return result


class Leases:
    """The units this process holds, and how it claims, keeps and gives them back.

    Candidates are visited in an order of this holder's own (shuffled by its token), so concurrent
    tasks rarely race for the same unit; units seen leased by a live holder are visited again at
    the end of the pass, in case their holder died."""

    def __init__(
        self, run_dir: Path, *, timeout: float, owner: str = "", job: str | None = None,
        restart: int = 0, holder_alive: HolderAlive | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.timeout = timeout
        self.token = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(6).hex()}"
        self.owner = owner
        self.job = job  # this holder's SLURM job and restart count, written in each lease
        self.restart = restart
        self.holder_alive = cached(holder_alive)
        self.held: set[str] = set()
        self.takeovers = 0
        self._pending: deque[Unit] = deque()
        self._busy: list[Unit] = []
        leases_dir(run_dir).mkdir(parents=True, exist_ok=True)
        done_dir(run_dir).mkdir(parents=True, exist_ok=True)

    def offer(self, units: Sequence[Unit]) -> None:
        """The units this holder may claim from (done ones are skipped when visited)."""
        order = list(units)
        random.Random(self.token).shuffle(order)
        self._pending = deque(order)
        self._busy = []

    def claim(self) -> Unit | None:
        """Take one unfinished, unleased (or stale) unit; None when a full pass finds none."""
        for _ in range(2):  # this pass, then the units seen busy in it
            while self._pending:
                unit = self._pending.popleft()
                if self._is_done(unit.id):
                    continue
                if not self._acquire(unit.id):
                    self._busy.append(unit)
                    continue
                if self._is_done(unit.id):  # finished between the check and the lease
                    self.release(unit.id)
                    continue
                return unit
            self._pending, self._busy = deque(self._busy), []
        return None

    def heartbeat(self) -> list[str]:
        """Refresh every held lease; returns the ids lost to another holder (stop working them)."""
        lost = []
        for uid in list(self.held):
            path = self._path(uid)
            if self._holder(path) == self.token:
                try:
                    os.utime(path)
                    continue
                except FileNotFoundError:
                    pass
            lost.append(uid)
            self.held.discard(uid)
        return lost

    def release(self, uid: str) -> None:
        """Give a unit back unfinished (only our own lease is removed)."""
        path = self._path(uid)
        if self._holder(path) == self.token:
            path.unlink(missing_ok=True)
        self.held.discard(uid)

    def release_all(self) -> None:
        for uid in list(self.held):
            self.release(uid)

    def finish(self, uid: str, marker: dict[str, Any]) -> None:
        """Mark a unit done (atomically, before the lease goes) and drop its lease."""
        write_json_atomic({"unit": uid, **marker}, done_dir(self.run_dir) / f"{uid}.json")
        self.release(uid)

    # -- internals ------------------------------------------------------------------------

    def _path(self, uid: str) -> Path:
        return leases_dir(self.run_dir) / uid

    def _is_done(self, uid: str) -> bool:
        return (done_dir(self.run_dir) / f"{uid}.json").exists()

    def _acquire(self, uid: str) -> bool:
        if self._create(uid):
            return True
        return self._take_over_if_stale(uid)

    def _create(self, uid: str) -> bool:
        try:
            fd = os.open(self._path(uid), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps({"token": self.token, "owner": self.owner, "job": self.job,
                                     "restart": self.restart, "claimed_at": time.time()}))
        self.held.add(uid)
        return True

    def _take_over_if_stale(self, uid: str) -> bool:
        path = self._path(uid)
        try:
            lease = read_lease(path, holder=self.holder_alive is not None)
            if lease.live(self.timeout, self.holder_alive):
                return False
            if lease.token is None:  # dead by its age alone: its token, to move only that lease
                lease = read_lease(path)
        except FileNotFoundError:
            return self._create(uid)
        # Rename is atomic: of several tasks that saw the same dead lease, one moves it.
        tomb = path.with_name(f".{uid}.stale-{self.token}")
        try:
            os.rename(path, tomb)
        except FileNotFoundError:
            return False
        try:
            if self._holder(tomb) != lease.token:
                # Between our look and the rename, another task had already taken it over:
                # put its fresh lease back (link never overwrites).
                with contextlib.suppress(FileExistsError):
                    os.link(tomb, path)
                return False
        finally:
            tomb.unlink(missing_ok=True)
        self.takeovers += 1
        return self._create(uid)

    @staticmethod
    def _holder(path: Path) -> str | None:
        try:
            return str(json.loads(path.read_text(encoding="utf-8")).get("token"))
        except (FileNotFoundError, ValueError):
            return None


def pending_units(table: WorkTable, run_dir: Path) -> list[Unit]:
    """Units without a done marker."""
    done = done_ids(run_dir)
    return [u for u in table.units if u.id not in done]


def iter_done_markers(run_dir: Path, ids: Iterable[str]) -> Iterable[dict[str, Any]]:
    for uid in ids:
        try:
            yield read_done(run_dir, uid)
        except (FileNotFoundError, ValueError):
            continue
