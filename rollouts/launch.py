"""Wiring a GenerateConfig to its backends: running servers, a managed server, or in-process hf."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import aiohttp

from rollouts.client import OpenAIEndpoint, check_health
from rollouts.engine import GenerateConfig, GenerateResult, generate, prepared_run
from rollouts.errors import ServerUnavailable, UserInputError
from rollouts.types import Backend

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
