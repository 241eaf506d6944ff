"""Wiring generation jobs to their backends: running servers, a managed server, or in-process hf.

Each `connect_*` is an async context manager yielding a `Connection`: the backends, how to check
their health, and watchers that must keep running beside the jobs (a managed server's supervisor).
Inputs are always validated and outputs claimed (`prepared_run`) before a model loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from rollouts.checkpoint import resolve_plan_model
from rollouts.client import OpenAIEndpoint, check_health
from rollouts.engine import GenerateConfig, GenerateResult, PreparedRun, generate, prepared_run
from rollouts.errors import ServerStartError, ServerUnavailable, UserInputError
from rollouts.io import write_json_atomic
from rollouts.router import HealthCheck
from rollouts.runconfig import RunPlan, server_extra_args
from rollouts.types import Backend
from server.vllm import ManagedServer, ServerConfig

T = TypeVar("T")

# Keep-alive connections beyond the concurrency bound, for health checks and retries.
CONNECTION_SLACK = 16
MODEL_QUERY_INTERVAL_S = 1.0


@dataclass
class Connection:
    backends: list[Backend]
    health: HealthCheck
    watchers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    model_label: str | None = None


@asynccontextmanager
async def http_session(max_concurrent: int) -> AsyncIterator[aiohttp.ClientSession]:
    """The run's one aiohttp session: a connection limit at or above the concurrency."""
    connector = aiohttp.TCPConnector(
        limit=max_concurrent + CONNECTION_SLACK, limit_per_host=0, ttl_dns_cache=300
    )
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


def _http_health(session: aiohttp.ClientSession) -> HealthCheck:
    async def health(backend: Backend) -> bool:
        assert isinstance(backend, OpenAIEndpoint)
        return await check_health(session, backend.root_url)

    return health


@asynccontextmanager
async def connect_servers(
    session: aiohttp.ClientSession,
    base_urls: Sequence[str],
    model: str,
    api_key: str | None,
    request_timeout_s: float | None,
) -> AsyncIterator[Connection]:
    """Running OpenAI-compatible servers (one or several)."""
    backends: list[Backend] = [
        OpenAIEndpoint(url, model, session, api_key, request_timeout_s) for url in base_urls
    ]
    yield Connection(backends, _http_health(session))


@asynccontextmanager
async def connect_managed(
    server_config: ServerConfig,
    session: aiohttp.ClientSession,
    max_restarts: int,
    request_timeout_s: float | None,
) -> AsyncIterator[Connection]:
    """Start a vLLM server (stopped again on any exit, Ctrl-C included) and supervise it."""
    async with ManagedServer(server_config) as server:
        endpoint = OpenAIEndpoint(server.base_url, server.model, session, None, request_timeout_s)
        supervisor = Supervisor(server, max_restarts)
        http_health = _http_health(session)

        async def health(backend: Backend) -> bool:
            return supervisor.ready and await http_health(backend)

        yield Connection([endpoint], health, [supervisor.watch])


@asynccontextmanager
async def connect_in_process(model_path: str) -> AsyncIterator[Connection]:
    """transformers in this process: no server (CPU demos, small jobs)."""
    from rollouts.hf_backend import HFBackend

    async def always_healthy(_: Backend) -> bool:
        return True

    yield Connection([HFBackend(model_path)], always_healthy, model_label=model_path)


class Supervisor:
    """Brings a managed server back when it dies mid-run, a bounded number of times.

    While it is down or restarting, `ready` is False: the router holds requests (they wait, they
    are not failed) and requests in flight when it died are retried, so nothing is lost or
    duplicated. A restart that itself fails counts as one more death."""

    def __init__(self, server: ManagedServer, max_restarts: int, poll_s: float = 1.0) -> None:
        self.server = server
        self.max_restarts = max_restarts
        self.poll_s = poll_s
        self.restarts = 0
        self.ready = True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            if not self.server.is_running():
                self.ready = False
                await self._bring_back()
                self.ready = True

    async def _bring_back(self) -> None:
        while True:
            tail = self.server.log_tail(20)
            if self.restarts >= self.max_restarts:
                raise ServerStartError(
                    f"the managed vLLM server died {self.restarts + 1} times "
                    f"(status {self.server.returncode}); giving up. Rerun to resume. "
                    f"Log tail:\n{tail}"
                )
            self.restarts += 1
            echo_warning(
                f"managed server died (status {self.server.returncode}); restart "
                f"{self.restarts}/{self.max_restarts}. Log tail:\n{tail}"
            )
            try:
                await self.server.restart()
                return
            except ServerStartError as exc:
                echo_warning(f"restart failed: {str(exc).splitlines()[0]}")


def echo_warning(message: str) -> None:
    print(f"rollouts: {message}", file=sys.stderr, flush=True)


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
    runs: list[PreparedRun], connection: Connection, max_concurrent: int | None = None
) -> list[GenerateResult]:
    """Run prepared jobs side by side on one connection; with max_concurrent, requests in
    flight are bounded across all of them, so the server never idles between datasets."""
    slots = asyncio.Semaphore(max_concurrent) if max_concurrent else None
    jobs = asyncio.gather(
        *(
            generate(run, connection.backends, connection.health,
                     model_label=connection.model_label, slots=slots, progress_position=index)
            for index, run in enumerate(runs)
        )
    )
    return await run_until_first_failure(jobs, *(watch() for watch in connection.watchers))


# -- the three ways `rollouts generate` runs ---------------------------------------------------


async def generate_from_servers(
    config: GenerateConfig, base_urls: Sequence[str], api_key: str | None = None
) -> GenerateResult:
    """Generate against running OpenAI-compatible servers (one or several)."""
    if not base_urls:
        raise UserInputError("no server given; pass --base-url URL, --server-info FILE or --model")
    async with http_session(config.max_concurrent) as session:
        if not config.model:
            model = await served_model(session, base_urls[0], api_key, config.server_wait_s)
            config = dataclasses.replace(config, model=model)
        with prepared_run(config) as run:
            async with connect_servers(
                session, base_urls, config.model, api_key, config.request_timeout_s
            ) as connection:
                return (await run_jobs([run], connection))[0]


async def generate_with_managed_server(
    config: GenerateConfig, server_config: ServerConfig, max_restarts: int = 3
) -> GenerateResult:
    """Start a server for config.model, generate, stop it: also on error and on Ctrl-C."""
    with prepared_run(config) as run:
        async with http_session(config.max_concurrent) as session, connect_managed(
            server_config, session, max_restarts, config.request_timeout_s
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


async def run_plan(plan: RunPlan) -> dict[str, Any]:
    """Run every dataset of a plan on one model load; datasets already complete are skipped."""
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        runs = [stack.enter_context(prepared_run(job)) for job in plan.jobs]
        pending = [run for run in runs if not is_complete(run)]
        results: list[GenerateResult] = []
        if pending:
            async with _plan_connection(plan) as connection:
                results = await run_jobs(pending, connection, plan.max_concurrent)
    by_output = {r.output: r for r in results}
    summary = {
        "model": plan.model,
        "elapsed_s": round(time.monotonic() - started, 3),
        "datasets": [_dataset_entry(run, by_output.get(run.config.output)) for run in runs],
    }
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
    async with http_session(plan.max_concurrent) as session:
        if plan.base_urls:
            async with connect_servers(
                session, plan.base_urls, plan.jobs[0].model, plan.api_key, request_timeout
            ) as connection:
                yield connection
            return
        server_config = ServerConfig(
            model=plan.model,
            seed=plan.jobs[0].seed,
            **{k: v for k, v in plan.server.items() if k != "extra_args"},
            extra_args=server_extra_args(plan.server),
        )
        async with connect_managed(
            server_config, session, plan.max_restarts, request_timeout
        ) as connection:
            yield connection


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
