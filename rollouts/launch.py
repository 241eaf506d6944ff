"""Wiring generation jobs to their backends: running servers, a managed server, or in-process hf.

Each `connect_*` is an async context manager yielding a `Connection`: the backends, how to check
their health, and watchers that must keep running beside the jobs (a managed server's supervisor).
Inputs are always validated and outputs claimed (`prepared_run`) before a model loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from rollouts.checkpoint import resolve_plan_model
from rollouts.client import OpenAIEndpoint
from rollouts.concurrency import AUTO, AdaptiveLimits, MaxConcurrent, MetricsReader
from rollouts.engine import GenerateConfig, GenerateResult, PreparedRun, generate, prepared_run
from rollouts.errors import ServerStartError, ServerUnavailable, UserInputError
from rollouts.io import write_json_atomic
from rollouts.quarantine import PromptGuard
from rollouts.router import HealthCheck
from rollouts.runconfig import RunPlan, server_extra_args
from rollouts.store import storage_errors
from rollouts.types import Backend
from rollouts.vllm_metrics import fetch_metrics
from rollouts.watchdog import (
    DEFAULT_STALL_TIMEOUT_S,
    ProgressWatch,
    WatchedEndpoint,
    echo_warning,
    watched_endpoints,
)
from server import replicas as replica_sets
from server.replicas import Replicas
from server.vllm import ManagedServer, ServerConfig

T = TypeVar("T")

# Keep-alive connections beyond the concurrency bound, for health checks and retries.
CONNECTION_SLACK = 16
MODEL_QUERY_INTERVAL_S = 1.0
HUNG_STOP_GRACE_S = 5.0


Watcher = Callable[[], Awaitable[None]]


@dataclass
class Connection:
    backends: list[Backend]
    health: HealthCheck
    watchers: list[Watcher] = field(default_factory=list)
    model_label: str | None = None
    max_num_seqs: int | None = None  # the server's, when known: where `auto` concurrency starts
    servers: list[ManagedServer] = field(default_factory=list)  # managed ones (weights swaps)


@asynccontextmanager
async def http_session(max_concurrent: MaxConcurrent) -> AsyncIterator[aiohttp.ClientSession]:
    """The run's one aiohttp session: a connection limit at or above the concurrency (none for
    `auto`, whose per-server limits bound the connections)."""
    limit = 0 if max_concurrent == AUTO else max_concurrent + CONNECTION_SLACK
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300)
    # trust_env=False: inference servers sit on cluster-internal addresses that an HTTP proxy
    # from the environment would only break, and reading netrc per request costs a thread hop.
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        yield session


async def served_model(
    session: aiohttp.ClientSession, base_url: str, api_key: str | None, wait_s: float
) -> str:
    """The first model a server lists under /v1/models (used when --model is not given).

    A server that does not answer yet (still loading, not started) is asked again until wait_s
    has passed, like every other path that waits for --server-wait."""
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        try:
            return await _ask_model(session, base_url, api_key)
        except _NotAnswering as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerUnavailable(
                    f"cannot ask {base_url} for its model: no answer after waiting {wait_s:g}s "
                    f"({exc}); check the server, raise --server-wait, or pass --model NAME"
                ) from exc
            if not announced:
                echo_warning(f"waiting up to {wait_s:g}s for {base_url} to answer ({exc})")
                announced = True
            await asyncio.sleep(min(MODEL_QUERY_INTERVAL_S, remaining))


class _NotAnswering(Exception):
    """The server did not answer /v1/models (yet): worth asking again."""


async def _ask_model(session: aiohttp.ClientSession, base_url: str, api_key: str | None) -> str:
    endpoint = OpenAIEndpoint(base_url, "", session, api_key)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with session.get(
            f"{endpoint.base_url}/models", headers=headers, timeout=aiohttp.ClientTimeout(total=30)
        ) as response:
            if response.status != 200:
                raise _NotAnswering(f"/v1/models answered {response.status}")
            data = await response.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
        raise _NotAnswering(f"{type(exc).__name__}: {exc}") from exc
    except ValueError as exc:
        raise ServerUnavailable(f"{base_url} answered /v1/models with no JSON; pass --model NAME") from exc
    try:
        return str(data["data"][0]["id"])
    except (KeyError, IndexError, TypeError) as exc:
        raise ServerUnavailable(
            f"{base_url} lists no model under /v1/models ({exc!r}); pass --model NAME"
        ) from exc


def _watched_health(backend: Backend) -> Awaitable[bool]:
    assert isinstance(backend, WatchedEndpoint)
    return backend.healthy()


def _eject(endpoint: WatchedEndpoint, reason: str) -> None:
    endpoint.eject(reason)


@asynccontextmanager
async def connect_servers(
    session: aiohttp.ClientSession,
    base_urls: Sequence[str],
    model: str,
    api_key: str | None,
    request_timeout_s: float | None,
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
    max_num_seqs: int | None = None,
) -> AsyncIterator[Connection]:
    """Running OpenAI-compatible servers (one or several); one that stalls is ejected.
    max_num_seqs: the servers' batch, when known (their info files say it)."""
    endpoints = watched_endpoints(base_urls, model, session, api_key, request_timeout_s)
    watchers: list[Watcher] = []
    if stall_timeout_s:
        watchers.append(ProgressWatch(endpoints, stall_timeout_s, _eject).run)
    yield Connection(list(endpoints), _watched_health, watchers, max_num_seqs=max_num_seqs)


@asynccontextmanager
async def connect_managed(
    server_config: ServerConfig,
    session: aiohttp.ClientSession,
    max_restarts: int,
    request_timeout_s: float | None,
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
) -> AsyncIterator[Connection]:
    """Start a vLLM server (stopped again on any exit, Ctrl-C included) and supervise it: it is
    restarted when it dies or stalls, and prompts that bring it down are quarantined."""
    async with ManagedServer(server_config) as server:
        guard = PromptGuard()
        [endpoint] = watched_endpoints(
            [server.base_url], server.model, session, None, request_timeout_s, guard
        )
        endpoint.hold_on_connection_error = True
        supervisor = Supervisor(server, endpoint, guard, max_restarts)
        watchers: list[Watcher] = [supervisor.watch]
        if stall_timeout_s:
            watchers.append(ProgressWatch([endpoint], stall_timeout_s, supervisor.note_stall).run)

        async def health(backend: Backend) -> bool:
            return supervisor.ready and await _watched_health(backend)

        yield Connection([endpoint], health, watchers, max_num_seqs=server_config.max_sequences,
                         servers=[server])


@asynccontextmanager
async def connect_managed_replicas(
    server_configs: Sequence[ServerConfig],
    replicas: Replicas,
    session: aiohttp.ClientSession,
    max_restarts: int,
    request_timeout_s: float | None,
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
) -> AsyncIterator[Connection]:
    """Each config's server as `replicas` managed servers (server.replicas), started one after
    another and each supervised on its own, as one connection."""
    configs, why = replica_sets.expand(server_configs, replicas)
    if len(configs) > len(server_configs):
        echo_warning(f"starting {why}")
    async with contextlib.AsyncExitStack() as stack:
        connections = [
            await stack.enter_async_context(connect_managed(
                config, session, max_restarts, request_timeout_s, stall_timeout_s,
            ))
            for config in configs
        ]
        yield combined(connections)


def combined(connections: list[Connection]) -> Connection:
    """Several connections as one: all backends, each health check, all watchers."""
    if len(connections) == 1:
        return connections[0]
    owner = {id(b): c for c in connections for b in c.backends}

    async def health(backend: Backend) -> bool:
        return await owner[id(backend)].health(backend)

    seqs = {c.max_num_seqs for c in connections}
    return Connection(
        backends=[b for c in connections for b in c.backends],
        health=health,
        watchers=[w for c in connections for w in c.watchers],
        max_num_seqs=seqs.pop() if len(seqs) == 1 else None,
        servers=[s for c in connections for s in c.servers],
    )


@asynccontextmanager
async def connect_in_process(model_path: str) -> AsyncIterator[Connection]:
    """transformers in this process: no server (CPU demos, small jobs)."""
    from rollouts.hf_backend import load_hf_backend

    async def always_healthy(_: Backend) -> bool:
        return True

    backend = await load_hf_backend(model_path)
    yield Connection([backend], always_healthy, model_label=model_path)


class Supervisor:
    """Brings a managed server back when it dies or hangs mid-run, a bounded number of times.

    While it is down or restarting, its requests wait (they are not failed); requests in flight
    when it went down are retried, so nothing is lost or duplicated. A restart that itself fails
    counts as one more death. At each incident the prompts involved are noted (rollouts.quarantine);
    a death while a suspect prompt ran alone quarantines that prompt and costs no restart."""

    def __init__(
        self,
        server: ManagedServer,
        endpoint: WatchedEndpoint,
        guard: PromptGuard,
        max_restarts: int,
        poll_s: float = 1.0,
    ) -> None:
        self.server = server
        self.endpoint = endpoint
        self.guard = guard
        self.max_restarts = max_restarts
        self.poll_s = poll_s
        self.restarts = 0
        self.ready = True
        self._stall: str | None = None
        self._hangs = 0

    def note_stall(self, endpoint: WatchedEndpoint, reason: str) -> None:
        """From the progress watch: restart at the next poll."""
        self._stall = reason

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            trouble = self._trouble()
            if trouble is None:
                self.guard.release_hold_if_stale()
                self.endpoint.release_hold(min_age_s=self.poll_s)
                continue
            self.ready = False
            self.endpoint.pause()
            await self._bring_back(trouble)
            self.endpoint.resume()
            self.ready = True

    def _trouble(self) -> str | None:
        if not self.server.is_running():
            return f"died (status {self.server.returncode})"
        if self._stall is not None:
            return f"hung: {self._stall}"
        return None

    async def _bring_back(self, trouble: str) -> None:
        hung = self._stall is not None and self.server.is_running()
        self._hangs += hung
        self._stall = None
        # A hung engine has no requests to finish: a short SIGTERM grace, then SIGKILL.
        grace = min(HUNG_STOP_GRACE_S, self.server.config.stop_timeout) if hung else None
        poison = self.guard.record_incident()
        if poison is not None:
            echo_warning(
                f"managed server {trouble} while this prompt ran alone: quarantined, its samples "
                f"become error rows (error_kind poison): {self.guard.label(poison)!r}. "
                "Restarting it (not counted against --max-restarts)."
            )
        else:
            self._count_restart(trouble)
            if self.guard.suspects:
                echo_warning(
                    f"{len(self.guard.suspects)} prompt(s) were in flight at this incident and the "
                    "one before: each runs alone next, to find one that brings the server down"
                )
        while True:
            try:
                await self.server.restart(grace=grace)
                return
            except ServerStartError as exc:
                echo_warning(f"restart failed: {str(exc).splitlines()[0]}")
                self._count_restart(f"failed to restart (status {self.server.returncode})")

    def _count_restart(self, trouble: str) -> None:
        tail = self.server.log_tail(20)
        if self.restarts >= self.max_restarts:
            how = "died" if not self._hangs else "died or hung"
            raise ServerStartError(
                f"the managed vLLM server {how} {self.restarts + 1} times (last: {trouble}); "
                f"giving up. Rerun to resume. Log tail:\n{tail}"
            )
        self.restarts += 1
        echo_warning(
            f"managed server {trouble}; restart {self.restarts}/{self.max_restarts}. "
            f"Log tail:\n{tail}"
        )


async def run_until_first_failure(main: Awaitable[T], *watchers: Awaitable[None]) -> T:
    """Await `main`; if a watcher fails first, cancel `main` and raise the watcher's error."""
    main_task = asyncio.ensure_future(main)
    watcher_tasks = [asyncio.ensure_future(w) for w in watchers]
    try:
        await asyncio.wait([main_task, *watcher_tasks], return_when=asyncio.FIRST_COMPLETED)
        for watcher in watcher_tasks:
            if watcher.done():
                watcher.result()
        return await main_task
    finally:
        main_task.cancel()
        for watcher in watcher_tasks:
            watcher.cancel()
        await asyncio.gather(main_task, *watcher_tasks, return_exceptions=True)


async def run_jobs(
    runs: list[PreparedRun], connection: Connection, max_concurrent: MaxConcurrent | None = None
) -> list[GenerateResult]:
    """Run prepared jobs side by side on one connection; with max_concurrent, requests in
    flight are bounded across all of them, so the server never idles between datasets."""
    auto = runs[0].config.max_concurrent == AUTO
    slots = asyncio.Semaphore(max_concurrent) if isinstance(max_concurrent, int) else None
    limits = adaptive_limits([run.config for run in runs], connection) if auto else None
    jobs = asyncio.gather(
        *(
            generate(run, connection.backends, connection.health,
                     model_label=connection.model_label, slots=slots, progress_position=index,
                     limits=limits)
            for index, run in enumerate(runs)
        )
    )
    watchers = [watch() for watch in connection.watchers]
    if limits is not None:
        watchers.append(limits.watch())
    return await run_until_first_failure(jobs, *watchers)


def adaptive_limits(
    configs: Sequence[GenerateConfig], connection: Connection
) -> AdaptiveLimits | None:
    """Per-server adaptive limits for HTTP servers, shared by every job (config) that runs on
    the connection; None for the in-process backend."""
    if not all(isinstance(b, OpenAIEndpoint) for b in connection.backends):
        return None
    per_request = max(c.n if c.samples_per_request == "n" else 1 for c in configs)
    readers: dict[str, MetricsReader | None] = {
        b.name: functools.partial(fetch_metrics, b.session, b.root_url)
        for b in connection.backends
        if isinstance(b, OpenAIEndpoint)
    }
    return AdaptiveLimits(readers, per_request, connection.max_num_seqs, warn=echo_warning)


# -- the three ways `rollouts generate` runs ---------------------------------------------------


async def generate_from_servers(
    config: GenerateConfig, base_urls: Sequence[str], api_key: str | None = None,
    max_num_seqs: int | None = None,
) -> GenerateResult:
    """Generate against running OpenAI-compatible servers (one or several); max_num_seqs: their
    batch, when known."""
    if not base_urls:
        raise UserInputError("no server given; pass --base-url URL, --server-info FILE or --model")
    async with http_session(config.max_concurrent) as session:
        if not config.model:
            model = await served_model(session, base_urls[0], api_key, config.server_wait_s)
            config = dataclasses.replace(config, model=model)
        with prepared_run(config) as run:
            async with connect_servers(
                session, base_urls, config.model, api_key, config.request_timeout_s,
                config.stall_timeout_s, max_num_seqs,
            ) as connection:
                return (await run_jobs([run], connection))[0]


async def generate_with_managed_server(
    config: GenerateConfig, server_config: ServerConfig, max_restarts: int = 3,
    replicas: Replicas = replica_sets.AUTO,
) -> GenerateResult:
    """Start a server (or replicas of it) for config.model, generate, stop it: also on error and
    on Ctrl-C."""
    with prepared_run(config) as run:
        async with http_session(config.max_concurrent) as session, connect_managed_replicas(
            [server_config], replicas, session, max_restarts, config.request_timeout_s,
            config.stall_timeout_s,
        ) as connection:
            return (await run_jobs([run], connection))[0]


async def generate_in_process(config: GenerateConfig, model_path: str) -> GenerateResult:
    """Generate with transformers in this process: no server."""
    with prepared_run(config) as run:
        async with connect_in_process(model_path) as connection:
            return (await run_jobs([run], connection))[0]


# -- `rollouts run CONFIG.yaml` ---------------------------------------------------------------


def is_complete(run: PreparedRun) -> bool:
    """Every sample of the job is on disk and its output was written."""
    expected = sum(d.num_prompts for d in run.datasets) * run.config.n
    done = run.store.done_index(retry_errors=run.config.retry_errors)
    return done.count() == expected and run.config.output.exists()


async def run_plan(plan: RunPlan, connection: Connection | None = None) -> dict[str, Any]:
    """Run every dataset of a plan on one model load; datasets already complete are skipped.
    With `connection`, on that (a sweep's servers, already serving the plan's model)."""
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        runs = [stack.enter_context(prepared_run(job)) for job in plan.jobs]
        pending = [run for run in runs if not is_complete(run)]
        results: list[GenerateResult] = []
        if pending and connection is not None:
            results = await run_jobs(pending, connection, plan.max_concurrent)
        elif pending:
            async with _plan_connection(plan) as opened:
                results = await run_jobs(pending, opened, plan.max_concurrent)
    by_output = {r.output: r for r in results}
    summary = {
        "model": plan.model,
        "elapsed_s": round(time.monotonic() - started, 3),
        "datasets": [_dataset_entry(run, by_output.get(run.config.output)) for run in runs],
    }
    with storage_errors(plan.summary_path.parent):
        write_json_atomic(summary, plan.summary_path)
    return summary


@asynccontextmanager
async def _plan_connection(plan: RunPlan) -> AsyncIterator[Connection]:
    plan = resolve_plan_model(plan)  # a DCP checkpoint is converted (once, cached) before loading
    if plan.backend == "hf":
        async with connect_in_process(plan.model) as connection:
            yield connection
        return
    request_timeout = plan.jobs[0].request_timeout_s
    stall_timeout = plan.jobs[0].stall_timeout_s
    async with http_session(plan.max_concurrent) as session:
        if plan.base_urls:
            async with connect_servers(
                session, plan.base_urls, plan.jobs[0].model, plan.api_key, request_timeout,
                stall_timeout,
            ) as connection:
                yield connection
            return
        async with connect_plan_servers(plan, session) as connection:
            yield connection


def managed_server_config(plan: RunPlan, env: dict[str, str] | None = None) -> ServerConfig:
    """The managed server a plan starts (its model already servable: see resolve_plan_model)."""
    return ServerConfig(
        model=plan.model,
        seed=plan.jobs[0].seed,
        **{k: v for k, v in plan.server.items() if k not in ("extra_args", "replicas")},
        extra_args=server_extra_args(plan.server),
        env=dict(env or {}),
    )


@asynccontextmanager
async def connect_plan_servers(
    plan: RunPlan, session: aiohttp.ClientSession, env: dict[str, str] | None = None
) -> AsyncIterator[Connection]:
    """The managed server(s) of a plan whose model is servable, supervised, as one connection."""
    async with connect_managed_replicas(
        [managed_server_config(plan, env)], plan_replicas(plan), session, plan.max_restarts,
        plan.jobs[0].request_timeout_s, plan.jobs[0].stall_timeout_s,
    ) as connection:
        yield connection


def plan_replicas(plan: RunPlan) -> Replicas:
    """`server: {replicas: N}` of a run config (`auto` when not set)."""
    return replica_sets.parse_replicas(
        plan.server.get("replicas", replica_sets.AUTO), "server: replicas"
    )


def _dataset_entry(run: PreparedRun, result: GenerateResult | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": run.datasets[0].name,
        "input": str(run.datasets[0].path),
        "output": str(run.config.output),
        "status": "generated" if result else "skipped (complete)",
    }
    if result:
        entry["rows"] = result.summary["output"]["rows"]
        entry["error_rows"] = result.error_rows
        entry["summary"] = str(result.summary_path)
        entry["completion_tokens_per_s"] = result.summary["this_run"]["completion_tokens_per_s"]
    return entry
