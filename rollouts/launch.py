"""Wiring a GenerateConfig to its backends: running servers, a managed server, or in-process hf."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import aiohttp

from rollouts.client import OpenAIEndpoint, check_health
from rollouts.engine import GenerateConfig, GenerateResult, generate, prepared_run
from rollouts.errors import ServerStartError, ServerUnavailable, UserInputError
from rollouts.types import Backend
from server.vllm import ManagedServer, ServerConfig

T = TypeVar("T")

# Keep-alive connections beyond the concurrency bound, for health checks and retries.
CONNECTION_SLACK = 16


@asynccontextmanager
async def http_session(max_concurrent: int) -> AsyncIterator[aiohttp.ClientSession]:
    """The run's one aiohttp session: a connection limit at or above the concurrency."""
    connector = aiohttp.TCPConnector(
        limit=max_concurrent + CONNECTION_SLACK, limit_per_host=0, ttl_dns_cache=300
    )
    async with aiohttp.ClientSession(connector=connector, trust_env=True) as session:
        yield session


async def served_model(session: aiohttp.ClientSession, base_url: str, api_key: str | None) -> str:
    """The first model a server lists under /v1/models (used when --model is not given)."""
    endpoint = OpenAIEndpoint(base_url, "", session, api_key)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with session.get(
            f"{endpoint.base_url}/models", headers=headers, timeout=aiohttp.ClientTimeout(total=30)
        ) as response:
            data = await response.json(content_type=None)
        return str(data["data"][0]["id"])
    except (TimeoutError, aiohttp.ClientError, KeyError, IndexError, ValueError) as exc:
        raise ServerUnavailable(
            f"cannot ask {base_url} for its model ({exc}); pass --model NAME"
        ) from exc


async def generate_from_servers(
    config: GenerateConfig, base_urls: Sequence[str], api_key: str | None = None
) -> GenerateResult:
    """Generate against running OpenAI-compatible servers (one or several)."""
    if not base_urls:
        raise UserInputError("no server given; pass --base-url URL, --server-info FILE or --model")
    async with http_session(config.max_concurrent) as session:
        if not config.model:
            model = await served_model(session, base_urls[0], api_key)
            config = dataclasses.replace(config, model=model)
        with prepared_run(config) as run:
            backends: list[Backend] = [
                OpenAIEndpoint(url, config.model, session, api_key, config.request_timeout_s)
                for url in base_urls
            ]

            async def health(backend: Backend) -> bool:
                assert isinstance(backend, OpenAIEndpoint)
                return await check_health(session, backend.root_url)

            return await generate(run, backends, health)


async def generate_in_process(config: GenerateConfig, model_path: str) -> GenerateResult:
    """Generate with transformers in this process: no server (CPU demos, small jobs)."""
    from rollouts.hf_backend import HFBackend

    with prepared_run(config) as run:
        backend = HFBackend(model_path)

        async def always_healthy(_: Backend) -> bool:
            return True

        return await generate(run, [backend], always_healthy)


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


@asynccontextmanager
async def managed_endpoint(
    server_config: ServerConfig, max_concurrent: int, request_timeout_s: float | None
) -> AsyncIterator[tuple[ManagedServer, OpenAIEndpoint, aiohttp.ClientSession]]:
    """Start a vLLM server (stopped again on any exit, Ctrl-C included) and a client for it."""
    async with ManagedServer(server_config) as server, http_session(max_concurrent) as session:
        endpoint = OpenAIEndpoint(server.base_url, server.model, session, None, request_timeout_s)
        yield server, endpoint, session


async def generate_with_managed_server(
    config: GenerateConfig, server_config: ServerConfig, max_restarts: int = 3
) -> GenerateResult:
    """Start a server for config.model, generate, stop it: also on error and on Ctrl-C.

    Inputs are validated and the output claimed before the model loads."""
    with prepared_run(config) as run:
        async with managed_endpoint(
            server_config, config.max_concurrent, config.request_timeout_s
        ) as (server, endpoint, session):

            supervisor = Supervisor(server, max_restarts)

            async def health(backend: Backend) -> bool:
                return supervisor.ready and await check_health(session, endpoint.root_url)

            return await run_until_first_failure(
                generate(run, [endpoint], health), supervisor.watch()
            )
