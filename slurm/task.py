"""What one array task runs: claim units, serve the model, generate each unit, mark it done.

    rollouts slurm task RUN_DIR --check   exit 0 when there is a unit to claim (before any server),
                                          3 when there is none, anything else: could not check
    rollouts slurm task RUN_DIR           the task itself

The task runs the run as submitted: the config's snapshot in the run directory, and only while
every input file still has the fingerprint recorded at submit (a changed one is refused, named).
Its leases name its SLURM job and restart count, so a task that finds a unit held by a job that
no longer runs takes it over at once instead of waiting lease_timeout.

The task claims a first unit before it starts any server, so a task with nothing to do never loads
a model. It then starts its managed vLLM server(s): gpus_per_node / (tensor x data parallel) of
them, each on its own GPUs, behind the client's router. Several units run side by side so the
servers stay busy between units; each is a run of the existing engine over the unit's slice of
prompts into the unit's own durable store, and ends with a done marker.

Signals (forwarded by the batch script): USR1 (time limit or preemption) stops claiming, cancels
the units in flight (every finished sample is already in their write-ahead logs), releases the
leases and requeues this task with `scontrol requeue`; TERM (scancel) does the same but does not
requeue. The requeued task resumes each unit by key, so no finished sample is requested again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from rollouts.checkpoint import resolve_plan_model
from rollouts.concurrency import AUTO, AdaptiveLimits, fixed_requests
from rollouts.engine import GenerateResult, generate, prepared_run
from rollouts.errors import OutputConflictError, UserInputError
from rollouts.io import write_json_atomic
from rollouts.launch import (
    Connection,
    adaptive_limits,
    connect_managed_replicas,
    connect_servers,
    http_session,
    plan_replicas,
    run_until_first_failure,
)
from rollouts.runconfig import RunPlan, server_extra_args
from rollouts.store import saved_rows, state_dir_for
from rollouts.types import Backend
from server.vllm import ServerConfig
from slurm import scheduler
from slurm.config import server_gpus, servers_per_node
from slurm.submit import LoadedRun, check_fingerprints, load_run, read_run
from slurm.units import Leases, Unit, WorkTable, leased_ids, pending_units, unit_output

MAX_UNITS_IN_FLIGHT = 64
IDLE_POLL_S = 5.0
DEFAULT_LEASE_TIMEOUT_S = 300.0


def log(message: str) -> None:
    print(f"rollouts-slurm {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def load_task_run(run_dir: Path) -> LoadedRun:
    """The run as submitted: the config's snapshot, its inputs checked against their fingerprints,
    and the result checked against the run directory."""
    recorded = read_run(run_dir)
    check_fingerprints(run_dir, recorded.get("inputs", {}))
    snapshot = Path(recorded.get("snapshot") or recorded["config"])
    base = recorded.get("base_dir")
    run = load_run(snapshot, base_dir=Path(base) if base else None)
    if run.identity != recorded["identity"] or run.slurm.run_dir.resolve() != run_dir.resolve():
        raise UserInputError(
            f"{snapshot} changed since it was submitted to {run_dir}; "
            "restore it, or submit the config again"
        )
    return run


def check_for_work(run_dir: Path) -> bool:
    """`slurm task --check`: the run's inputs unchanged (else UserInputError naming one), and a
    unit left to claim."""
    check_fingerprints(run_dir, read_run(run_dir).get("inputs", {}))
    return has_work(run_dir)


def has_work(run_dir: Path) -> bool:
    """Is any unit neither done nor held under a live lease? (Cheap: two directory listings, and
    a look at the jobs holding leases.)"""
    table = WorkTable.load(run_dir)
    pending = pending_units(table, run_dir)
    if not pending:
        return False
    leases = leased_ids(run_dir, timeout=lease_timeout(run_dir),
                        holder_alive=scheduler.holder_alive)
    return any(not leases.get(u.id, False) for u in pending)


def lease_timeout(run_dir: Path) -> float:
    """The run's lease timeout, as submitted."""
    return float(read_run(run_dir).get("lease_timeout", DEFAULT_LEASE_TIMEOUT_S))


def resolve_model(plan: RunPlan) -> RunPlan:
    """The plan with the weights this task serves: the one place a task decides them. A DCP
    checkpoint is converted here, on the compute node (once, through the cache), before any
    server starts, and served under its own name so the rows and resume keys keep it."""
    return resolve_plan_model(plan)


@dataclasses.dataclass
class TaskStats:
    task: str
    host: str = dataclasses.field(default_factory=socket.gethostname)
    pid: int = dataclasses.field(default_factory=os.getpid)
    started: float = dataclasses.field(default_factory=time.time)
    units_done: int = 0
    samples: int = 0  # in units this task finished
    samples_in_flight: int = 0  # written so far by its units under way (counted at heartbeats)
    completion_tokens: int = 0
    error_samples: int = 0
    state: str = "starting"
    # per server with `auto`: the limit in force, the search's state, every change (concurrency.py)
    concurrency: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        elapsed = max(time.time() - self.started, 1e-9)
        return {
            **dataclasses.asdict(self),
            "updated": time.time(),
            "elapsed_s": round(elapsed, 3),
            "samples_per_s": round((self.samples + self.samples_in_flight) / elapsed, 3),
            "completion_tokens_per_s": round(self.completion_tokens / elapsed, 3),
        }


class Task:
    def __init__(self, run: LoadedRun, run_dir: Path) -> None:
        self.run = run
        self.run_dir = run_dir
        job = scheduler.current_task_id()
        self.task_id = job or f"local-{os.getpid()}"
        self.leases = Leases(
            run_dir, timeout=run.slurm.lease_timeout, owner=self.task_id, job=job,
            restart=scheduler.restart_count(), holder_alive=scheduler.holder_alive,
        )
        self.stats = TaskStats(self.task_id)
        self.stopping = asyncio.Event()
        self.changed = asyncio.Event()  # a unit of this task ended, or a stop was asked
        self.requeue = False
        self.running: dict[str, asyncio.Task[None]] = {}
        self.rows_before: dict[str, int] = {}  # unit -> rows its store held when this task began it
        self.first: Unit | None = None
        self._body: asyncio.Task[None] | None = None
        self.limits: AdaptiveLimits | None = None  # the servers' adaptive limits, with `auto`

    # -- the task's life --------------------------------------------------------------------

    async def run_all(self) -> str:
        """Returns how it ended: 'done', 'idle' (nothing to claim), 'stopped' or 'requeued'."""
        self.leases.offer(pending_units(self.run.table, self.run_dir))
        self.first = self.leases.claim()
        if self.first is None:
            log("no unit left to claim; exiting before starting any server")
            return "idle"
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self._stop, True)
        loop.add_signal_handler(signal.SIGTERM, self._stop, False)
        heartbeat = asyncio.create_task(self._heartbeat())
        self._body = asyncio.create_task(self._serve_and_work())
        try:
            await self._body
        except asyncio.CancelledError:
            if not self.stopping.is_set():
                raise  # not our own stop (a signal while the servers were starting)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            self.leases.release_all()
            loop.remove_signal_handler(signal.SIGUSR1)
            loop.remove_signal_handler(signal.SIGTERM)
        return self._finish()

    async def _serve_and_work(self) -> None:
        async with self._connection() as connection:
            self.stats.state = "running"
            await run_until_first_failure(
                self._work(connection), *(watch() for watch in connection.watchers)
            )

    def _finish(self) -> str:
        if self.requeue:
            self._write_stats("requeued")
            log(f"requeueing {self.task_id}")
            scheduler.requeue(self.task_id)
            return "requeued"
        ended = "stopped" if self.stopping.is_set() else "done"
        self._write_stats(ended)
        return ended

    def _stop(self, requeue: bool) -> None:
        log("USR1: stopping to requeue" if requeue else "TERM: stopping")
        self.requeue = self.requeue or requeue
        self.stopping.set()
        self.changed.set()
        if self.stats.state != "running" and self._body is not None:
            self._body.cancel()  # still starting the servers: stop that now
        for unit_task in self.running.values():
            unit_task.cancel()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.run.slurm.heartbeat)
            for uid in self.leases.heartbeat():
                log(f"lost the lease of unit {uid} to another task; leaving it")
                if uid in self.running:
                    self.running[uid].cancel()
            self._write_stats(self.stats.state)

    def _write_stats(self, state: str) -> None:
        self.stats.state = state
        self.stats.samples_in_flight = sum(
            _saved_rows(self.run_dir, uid) - before for uid, before in self.rows_before.items()
        )
        if self.limits is not None:
            self.stats.concurrency = self.limits.summary()
        path = self.run_dir / "tasks" / f"{self.task_id}.json"
        with contextlib.suppress(OSError):  # progress reporting must never stop the work
            write_json_atomic(self.stats.as_dict(), path)

    # -- servers ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        plan = self.run.plan
        count = 1 if plan.base_urls else servers_per_node(self.run.slurm, plan.server)
        bound = plan.max_concurrent if plan.max_concurrent == AUTO else plan.max_concurrent * count
        async with http_session(bound) as session:
            if plan.base_urls:
                async with connect_servers(
                    session, plan.base_urls, plan.jobs[0].model, plan.api_key,
                    plan.jobs[0].request_timeout_s, plan.jobs[0].stall_timeout_s,
                ) as connection:
                    yield connection
                return
            # Each server may be several replicas on its GPU (`server: {replicas: N}`).
            async with connect_managed_replicas(
                self._server_configs(count), plan_replicas(plan), session, plan.max_restarts,
                plan.jobs[0].request_timeout_s, plan.jobs[0].stall_timeout_s,
            ) as connection:
                log(f"{len(connection.backends)} server(s) ready")
                yield connection

    def _server_configs(self, count: int) -> list[ServerConfig]:
        plan = resolve_model(self.run.plan)
        options = {k: v for k, v in plan.server.items()
                   if k not in ("extra_args", "log_file", "replicas")}
        extra = server_extra_args(plan.server)
        if os.environ.get("ROLLOUTS_RAY"):
            extra += ("--distributed-executor-backend", "ray")
        gpus = _visible_gpus(self.run.slurm.gpus_per_node)
        per_server = server_gpus(plan.server)
        configs = []
        for index in range(count):
            env = {}
            if gpus and self.run.slurm.nodes_per_task == 1:
                mine = gpus[index * per_server:(index + 1) * per_server]
                env["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
            log_file = self.run.slurm.logs / f"server-{self.task_id}-{index}.log"
            configs.append(ServerConfig(
                model=plan.model, seed=plan.jobs[0].seed, extra_args=extra,
                log_file=log_file, env=env, **options,
            ))
        return configs

    # -- units ------------------------------------------------------------------------------

    async def _work(self, connection: Connection) -> None:
        """Units side by side over the servers, under one bound shared by all of them: each
        server's adaptive limit (`auto`, rollouts.concurrency) or a fixed number of requests
        per server."""
        plan = self.run.plan
        servers = len(connection.backends)
        limits = adaptive_limits(plan.jobs, connection) if plan.max_concurrent == AUTO else None
        self.limits = limits
        if limits is not None:
            slots = None
            requests = sum(math.ceil(limit.limit / limits.sequences_per_request)
                           for limit in limits.limits.values())
        else:
            requests = fixed_requests(plan.max_concurrent) * servers
            slots = asyncio.Semaphore(requests)
        workers = self._units_in_flight(requests)
        log(f"{self.task_id}: {workers} unit(s) in flight over {servers} server(s)")
        units = asyncio.gather(*(
            self._unit_worker(index, connection, slots, limits) for index in range(workers)
        ))
        await run_until_first_failure(units, *([limits.watch()] if limits else []))

    def _units_in_flight(self, concurrency: int) -> int:
        """Enough units at once to keep twice the request bound queued."""
        table = self.run.table
        unit = self.first
        assert unit is not None
        entry = table.datasets[unit.dataset]
        job = self.run.plan.jobs[entry.job]
        per_request = entry.n if job.samples_per_request == "n" else 1
        requests_per_unit = max(1, table.samples(unit) // per_request)
        return max(1, min(MAX_UNITS_IN_FLIGHT, math.ceil(2 * concurrency / requests_per_unit)))

    async def _unit_worker(
        self, index: int, connection: Connection, slots: asyncio.Semaphore | None,
        limits: AdaptiveLimits | None,
    ) -> None:
        while not self.stopping.is_set():
            unit = self._next_unit()
            if unit is None:
                if not await self._wait_for_more():
                    return
                continue
            unit_task = asyncio.create_task(
                self._run_unit(unit, index, connection, slots, limits)
            )
            self.running[unit.id] = unit_task
            try:
                await unit_task
            except asyncio.CancelledError:
                if not unit_task.cancelled():
                    raise  # this worker itself was cancelled
                self.leases.release(unit.id)
            finally:
                self.running.pop(unit.id, None)
                self.changed.set()

    def _next_unit(self) -> Unit | None:
        if self.first is not None:
            unit, self.first = self.first, None
            return unit
        return self.leases.claim()

    async def _wait_for_more(self) -> bool:
        """Nothing to claim now: wait while other tasks hold units (a holder that dies leaves a
        stale lease to take over); False once every unit is done."""
        while not self.stopping.is_set():
            pending = pending_units(self.run.table, self.run_dir)
            if not pending:
                return False
            if any(not live for live in self._leases_of(pending).values()):
                self.leases.offer(pending)
                return True
            # Look again when one of our units ends, on a stop, or after a while (other tasks).
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), IDLE_POLL_S)
        return False

    def _leases_of(self, pending: list[Unit]) -> dict[str, bool]:
        live = leased_ids(self.run_dir, timeout=self.run.slurm.lease_timeout,
                          holder_alive=self.leases.holder_alive)
        return {u.id: live.get(u.id, False) for u in pending}

    async def _run_unit(
        self, unit: Unit, index: int, connection: Connection, slots: asyncio.Semaphore | None,
        limits: AdaptiveLimits | None,
    ) -> None:
        entry = self.run.table.datasets[unit.dataset]
        job = self.run.plan.jobs[entry.job]
        dataset = self.run.datasets[unit.dataset].slice(unit.start, unit.stop)
        config = dataclasses.replace(
            job, inputs=(entry.path,), output=unit_output(self.run_dir, unit.id),
            output_format="long", progress=False, overwrite=False,
        )
        started = time.monotonic()
        self.rows_before[unit.id] = _saved_rows(self.run_dir, unit.id)
        try:
            with prepared_run(config, [dataset]) as prepared:
                result = await generate(
                    prepared, _rotated(connection.backends, index), connection.health,
                    model_label=connection.model_label, slots=slots, limits=limits,
                )
        except OutputConflictError as exc:  # another task still writes it (its lease looked stale)
            log(f"unit {unit.id}: {exc}; leaving it")
            self.leases.release(unit.id)
            return
        finally:
            self.rows_before.pop(unit.id, None)
        self._record(unit, entry.config_hash, result, time.monotonic() - started)

    def _record(self, unit: Unit, config_hash: str, result: GenerateResult, elapsed: float) -> None:
        this_run = result.summary["this_run"]
        rows = int(result.summary["output"]["rows"])
        expected = self.run.table.samples(unit)
        if rows != expected:
            raise UserInputError(f"unit {unit.id} holds {rows} rows, expected {expected}")
        self.leases.finish(unit.id, {
            "dataset": unit.dataset, "start": unit.start, "stop": unit.stop, "rows": rows,
            "error_rows": result.error_rows, "config_hash": config_hash,
            "samples_this_run": this_run["samples"],
            "completion_tokens": this_run["completion_tokens"],
            "elapsed_s": round(elapsed, 3), "task": self.task_id,
            "host": socket.gethostname(), "finished_at": time.time(),
        })
        self.stats.units_done += 1
        self.stats.samples += int(this_run["samples"])
        self.stats.completion_tokens += int(this_run["completion_tokens"])
        self.stats.error_samples += result.error_rows
        log(f"unit {unit.id} done ({rows} rows, {elapsed:.1f}s)")


def _saved_rows(run_dir: Path, uid: str) -> int:
    """Rows a unit's store holds (0 before it exists); progress only, so never an error."""
    output = unit_output(run_dir, uid)
    if not state_dir_for(output).is_dir():
        return 0
    try:
        return saved_rows(output)
    except (OSError, ValueError):
        return 0


def _rotated(backends: list[Backend], index: int) -> list[Backend]:
    """Each unit lists the servers from another start, so units in flight spread over them."""
    shift = index % len(backends)
    return backends[shift:] + backends[:shift]


def _visible_gpus(gpus_per_node: int) -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g for g in visible.split(",") if g]
    return [str(i) for i in range(gpus_per_node)]


def run_task(run_dir: Path) -> str:
    """Run this array task to its end; see the module docstring."""
    run = load_task_run(run_dir)
    task = Task(run, run_dir)
    log(f"{task.task_id} on {socket.gethostname()} (restart {scheduler.restart_count()})")
    outcome = asyncio.run(task.run_all())
    log(f"{task.task_id}: {outcome}")
    return outcome
