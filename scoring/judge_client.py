"""Asking a judge model (an OpenAI-compatible server) for one verdict, through rollouts' client.

Each question goes to one of the judge servers (chosen by the prompt, so a retry of the same
question can move to the next server), at temperature 0, with rollouts.client's retry policy:
connection errors, timeouts, 408/409/429 and 5xx are retried with backoff (Retry-After honoured);
other failures are final. A question that cannot be answered raises JudgeError with the failure's
kind (`connection`, `http_404`, `timeout`, `garbage`, ...): the row becomes an error row, never
a silent 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import tenacity

from rollouts.client import DEFAULT_MAX_ATTEMPTS, OpenAIEndpoint, RequestError, backoff_delay
from rollouts.errors import UserInputError
from rollouts.types import SamplingParams

JUDGE_MAX_TOKENS = 2048
JUDGE_READ_TIMEOUT_S = 300.0


class JudgeError(Exception):
    """The judge gave no usable verdict; `kind` names why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"judge {kind}: {message}")
        self.kind = kind


@dataclass(frozen=True, kw_only=True)
class JudgeSettings:
    """Where the judge is and how it is asked (the same in every worker)."""

    base_urls: tuple[str, ...]
    model: str
    api_key: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_tokens: int = JUDGE_MAX_TOKENS

    def __post_init__(self) -> None:
        if not self.base_urls:
            raise UserInputError("a judge needs at least one server: pass --judge-base-url URL")
        if self.max_attempts < 1:
            raise UserInputError(f"--judge-max-attempts {self.max_attempts}: must be at least 1")


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, RequestError) and exc.retryable


def _wait(state: tenacity.RetryCallState) -> float:
    failure = state.outcome.exception() if state.outcome is not None else None
    return backoff_delay(state.attempt_number, getattr(failure, "retry_after", None))


async def _ask(settings: JudgeSettings, prompt: str, extra_body: dict[str, Any]) -> str:
    first = zlib.crc32(prompt.encode()) % len(settings.base_urls)
    params = SamplingParams(temperature=0.0, max_tokens=settings.max_tokens, extra_body=extra_body)
    messages = [{"role": "user", "content": prompt}]
    tries = 0
    async with aiohttp.ClientSession(trust_env=False) as session:
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(settings.max_attempts),
            wait=_wait,
            retry=tenacity.retry_if_exception(_retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                url = settings.base_urls[(first + tries) % len(settings.base_urls)]
                tries += 1
                endpoint = OpenAIEndpoint(
                    url, settings.model, session, settings.api_key,
                    read_timeout_s=JUDGE_READ_TIMEOUT_S, stream=False,
                )
                batch = await endpoint.complete(messages, n=1, params=params, seed=None)
                return batch.completions[0].text
    raise AssertionError("tenacity ends in a return or an exception")


def ask_judge(settings: JudgeSettings, prompt: str, extra_body: dict[str, Any] | None = None) -> str:
    """The judge's answer to one prompt; JudgeError when none could be had."""
    try:
        return asyncio.run(_ask(settings, prompt, extra_body or {}))
    except RequestError as exc:
        raise JudgeError(exc.kind, exc.message) from exc


def served_model_name(base_url: str, api_key: str | None = None) -> str:
    """The first model a judge server lists (when only its URL was given)."""
    from rollouts.errors import ServerUnavailable
    from rollouts.launch import http_session, served_model

    async def ask() -> str:
        async with http_session(1) as session:
            return await served_model(session, base_url, api_key, wait_s=0.0)

    try:
        return asyncio.run(ask())
    except ServerUnavailable as exc:
        reason = str(exc).split(" (", 1)[-1].rsplit(")", 1)[0]
        raise ServerUnavailable(
            f"judge server {base_url} does not say which model it serves ({reason}); check that "
            f"it is up, or name the model with --judge-model NAME"
        ) from exc


@contextlib.contextmanager
def managed_judge(model_path: str, vllm_args: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """(base_url, served model name) of a vLLM server started for this run and stopped after it,
    Ctrl-C and errors included (the lifecycle of `generate --model`)."""
    from server.vllm import ManagedServer, ServerConfig

    server = ManagedServer(ServerConfig(model=model_path, extra_args=vllm_args))
    with asyncio.Runner() as runner:
        runner.run(server.__aenter__())
        try:
            yield server.base_url, server.model
        finally:
            runner.run(server.__aexit__(None, None, None))


@contextlib.contextmanager
def judge_settings(
    base_urls: Sequence[str],
    server_infos: Sequence[Path],
    model: str | None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    vllm_args: tuple[str, ...] = (),
) -> Iterator[JudgeSettings | None]:
    """The judge of a `score` run: running servers (URLs, server-info files; the model is the
    one named, else the first a server lists), or a server started from `model` when no server is
    given; None when no judge was asked for."""
    from server.info import read_server_info

    infos = [read_server_info(path) for path in server_infos]
    urls = [*base_urls, *(url for info in infos for url in info.urls())]  # replicas included
    if urls:
        name = model or (infos[0].model if infos else served_model_name(urls[0]))
        yield JudgeSettings(base_urls=tuple(urls), model=name, max_attempts=max_attempts)
    elif model:
        with managed_judge(model, vllm_args) as (url, name):
            yield JudgeSettings(base_urls=(url,), model=name, max_attempts=max_attempts)
    else:
        yield None
