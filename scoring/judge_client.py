"""Asking a judge model (an OpenAI-compatible server) for verdicts, through rollouts' client.

`score` asks a file's questions all at once before its workers judge the rows (`ask_all`, see
scoring.scorer): the distinct (judge model, prompt) questions whose verdict is not known yet go out
together from the main process, each server holding as many as generate's adaptive concurrency
(rollouts.concurrency: its vLLM /metrics, or a fixed number without them) lets it, each question to
the least loaded server. The answers are kept in this process (`remember_answers`) for the workers
forked after it, whose reward functions read them through `ask_judge`; a question not asked that
way (a reward used outside `score`) is asked there, one at a time.

Every question is asked at temperature 0, with rollouts.client's retry policy: connection errors,
timeouts, 408/409/429 and 5xx are retried with backoff (Retry-After honoured), on another server
when there is one; other failures are final. A question that cannot be answered raises JudgeError
with the failure's kind (`connection`, `http_404`, `timeout`, `garbage`, ...): the row becomes an
error row, never a silent 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import tenacity

from rollouts.client import DEFAULT_MAX_ATTEMPTS, OpenAIEndpoint, RequestError, backoff_delay
from rollouts.concurrency import AUTO, AdaptiveLimits, MetricsReader, ServerLimit
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


# A question: its prompt and the request's extra body (None: none).
Question = tuple[str, dict[str, Any] | None]

# The answers `ask_all` got in this process, by question_key: the answer, or why there is none.
_ANSWERS: dict[str, str | JudgeError] = {}


def question_key(model: str, prompt: str, extra_body: Mapping[str, Any] | None) -> str:
    """A question's identity: the judge model, the prompt and how it is asked."""
    text = json.dumps([model, prompt, extra_body or {}], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def remember_answers(answers: Mapping[str, str | JudgeError]) -> None:
    """Answers for ask_judge in this process and the workers forked from it from now on."""
    _ANSWERS.update(answers)


def forget_answers() -> None:
    _ANSWERS.clear()


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
    """The judge's answer to one prompt (asked already by ask_all, else now); JudgeError when
    none could be had."""
    known = _ANSWERS.get(question_key(settings.model, prompt, extra_body)) if _ANSWERS else None
    if isinstance(known, JudgeError):
        raise known
    if known is not None:
        return known
    try:
        return asyncio.run(_ask(settings, prompt, extra_body or {}))
    except RequestError as exc:
        raise JudgeError(exc.kind, exc.message) from exc


class _Servers:
    """The judge servers of one ask_all: an endpoint, a limit and a failure count each."""

    def __init__(self, settings: JudgeSettings, session: aiohttp.ClientSession, warn: Callable[[str], None]) -> None:
        from rollouts.vllm_metrics import fetch_metrics

        endpoints = [
            OpenAIEndpoint(url, settings.model, session, settings.api_key,
                           read_timeout_s=JUDGE_READ_TIMEOUT_S, stream=False)
            for url in settings.base_urls
        ]
        self.endpoints = {endpoint.name: endpoint for endpoint in endpoints}
        readers: dict[str, MetricsReader | None] = {
            url: functools.partial(fetch_metrics, session, endpoint.root_url)
            for url, endpoint in self.endpoints.items()
        }
        self.limits = AdaptiveLimits(readers, sequences_per_request=1, warn=warn,
                                     fallback_hint="judge questions")
        self.failing = dict.fromkeys(self.endpoints, 0)  # failures in a row, per server

    def pick(self) -> tuple[OpenAIEndpoint, ServerLimit]:
        """The least loaded server (relative to its limit) among those failing least."""
        url = min(self.endpoints, key=lambda u: (self.failing[u], self.limits.limits[u].load()))
        return self.endpoints[url], self.limits.limits[url]


async def _ask_one(servers: _Servers, settings: JudgeSettings, question: Question) -> str:
    prompt, extra_body = question
    params = SamplingParams(temperature=0.0, max_tokens=settings.max_tokens, extra_body=extra_body or {})
    messages = [{"role": "user", "content": prompt}]
    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(settings.max_attempts),
        wait=_wait,
        retry=tenacity.retry_if_exception(_retryable),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            endpoint, limit = servers.pick()
            await limit.acquire(1)
            try:
                batch = await endpoint.complete(messages, n=1, params=params, seed=None)
            except RequestError:
                servers.failing[endpoint.name] += 1
                raise
            finally:
                limit.release(1)
            servers.failing[endpoint.name] = 0
            return batch.completions[0].text
    raise AssertionError("tenacity ends in a return or an exception")


async def _ask_all(
    settings: JudgeSettings, questions: Mapping[str, Question], warn: Callable[[str], None]
) -> dict[str, str | JudgeError]:
    from rollouts.launch import http_session

    async def answer(key: str, question: Question) -> tuple[str, str | JudgeError]:
        try:
            return key, await _ask_one(servers, settings, question)
        except RequestError as exc:
            return key, JudgeError(exc.kind, exc.message)

    async with http_session(AUTO) as session:
        servers = _Servers(settings, session, warn)
        watcher = asyncio.create_task(servers.limits.watch())
        try:
            return dict(await asyncio.gather(*(answer(k, q) for k, q in questions.items())))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def ask_all(
    settings: JudgeSettings, questions: Sequence[Question], warn: Callable[[str], None] = print
) -> dict[str, str | JudgeError]:
    """The judge's answer (or JudgeError) to each distinct question, by question_key, asked
    together under each server's adaptive limit."""
    distinct = {question_key(settings.model, prompt, extra): (prompt, extra) for prompt, extra in questions}
    return asyncio.run(_ask_all(settings, distinct, warn)) if distinct else {}


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
