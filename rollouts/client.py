"""The HTTP side: one OpenAI-compatible endpoint over a shared aiohttp session, and the retry policy.

Failures of one request are `RequestError`s carrying a kind and whether a retry may help. The retry
policy lives here in one place: named constants and one predicate (`is_retryable_status`).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from rollouts.types import DEFAULT_MAX_ATTEMPTS as DEFAULT_MAX_ATTEMPTS  # part of the policy below
from rollouts.types import Completion, CompletionBatch, PromptInput, SamplingParams

# Retry policy. Delays grow as INITIAL * 2**attempt, capped, with full jitter.
INITIAL_RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 30.0
MAX_RETRY_AFTER_S = 60.0
RETRYABLE_STATUSES = frozenset({408, 409, 429})

# Timeouts. There is no short total timeout: a long reasoning generation may legitimately take
# half an hour, and timing it out would regenerate it from scratch. The read limit is derived from
# max_tokens instead (a slow but alive server still fits), and connecting must be quick. The read
# limit is silence: before the first byte, it does not run out while the server says requests
# wait in its queue (`OpenAIEndpoint.queued_on_server`); a queued request cut and sent again only
# joins the back of the queue.
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_BASE_S = 120.0
READ_TIMEOUT_PER_TOKEN_S = 0.1
SWEEP_S = 1.0  # how often requests in flight are checked against their read limit
MIN_SWEEP_S = 0.05


def is_retryable_status(status: int) -> bool:
    """408/409/429 and every 5xx may succeed later; other 4xx (a 400 for a prompt over the
    context length, say) will fail the same way every time."""
    return status in RETRYABLE_STATUSES or status >= 500


def read_timeout_for(max_tokens: int) -> float:
    return READ_TIMEOUT_BASE_S + READ_TIMEOUT_PER_TOKEN_S * max_tokens


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1-based): Retry-After when the server gave
    one (capped), else exponential backoff with full jitter."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_RETRY_AFTER_S)
    ceiling = min(MAX_RETRY_DELAY_S, INITIAL_RETRY_DELAY_S * 2 ** (attempt - 1))
    return random.uniform(0, ceiling)


class RequestError(Exception):
    """One request failed. `kind` names the failure for error rows and summaries."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        endpoint_down: bool = False,
    ) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        # The server could not be reached at all: take it out of rotation until it is healthy.
        self.endpoint_down = endpoint_down


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: rare from inference servers, fall back to backoff


@dataclass
class OpenAIEndpoint:
    """One OpenAI-compatible server (vLLM, SGLang, ...). Implements rollouts.types.Backend."""

    base_url: str
    model: str
    session: aiohttp.ClientSession
    api_key: str | None = None
    read_timeout_s: float | None = None
    # Stream the answer (SSE): the read limit is then real silence between chunks, so a long
    # generation the server is still working on is never cut and resubmitted.
    stream: bool = True
    # Called on each piece of a streamed answer: the progress watchdog counts it as progress.
    on_stream_data: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.name = self.base_url
        self._headers = self._make_headers()
        self._silences: set[Silence] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._tick = SWEEP_S
        self._checks: set[asyncio.Task[None]] = set()

    @property
    def root_url(self) -> str:
        return self.base_url[: -len("/v1")]

    def _make_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def read_limit_s(self, max_tokens: int) -> float:
        return self.read_timeout_s or read_timeout_for(max_tokens)

    async def queued_on_server(self) -> bool:
        """Whether the server says requests wait in its queue (vLLM's /metrics: see
        rollouts.watchdog). A plain endpoint cannot tell: silence counts from the start."""
        return False

    async def complete(
        self, prompt: PromptInput, *, n: int, params: SamplingParams, seed: int | None
    ) -> CompletionBatch:
        limit_s = self.read_limit_s(params.max_tokens)
        silence = Silence(limit_s, self.on_stream_data)
        self._watch(silence)
        try:
            return await self._post(prompt, n=n, params=params, seed=seed, silence=silence)
        except asyncio.CancelledError:
            if silence.expired and silence.task.uncancel() == 0:  # ours, not the caller's
                raise RequestError("timeout", f"no data for {limit_s:.0f}s", retryable=True) from None
            raise
        finally:
            self._silences.discard(silence)

    # One sweep over the requests in flight every SWEEP_S (or a quarter of the shortest limit)
    # rather than a timer per request: the hot path only adds and removes a small object.
    def _watch(self, silence: Silence) -> None:
        self._silences.add(silence)
        tick = max(MIN_SWEEP_S, min(SWEEP_S, silence.limit_s / 4))
        if self._sweeper is None or tick < self._tick:
            if self._sweeper is not None:
                self._sweeper.cancel()
            self._tick = tick
            self._sweeper = asyncio.get_running_loop().call_later(tick, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        for silence in list(self._silences):
            if silence.expired or silence.checking or now - silence.last_data < silence.limit_s:
                continue
            if silence.answered:
                silence.expire()
            else:  # nothing yet: it may be waiting in the server's queue
                silence.checking = True
                task = asyncio.get_running_loop().create_task(self._unless_queued(silence))
                self._checks.add(task)
                task.add_done_callback(self._checks.discard)
        if self._silences:
            self._sweeper = asyncio.get_running_loop().call_later(self._tick, self._sweep)

    async def _unless_queued(self, silence: Silence) -> None:
        try:
            queued = await self.queued_on_server()
        finally:
            silence.checking = False
        if silence not in self._silences:
            return
        if queued:
            silence.last_data = time.monotonic()
        else:
            silence.expire()

    async def _post(
        self, prompt: PromptInput, *, n: int, params: SamplingParams, seed: int | None,
        silence: Silence,
    ) -> CompletionBatch:
        chat = not isinstance(prompt, str)
        url = f"{self.base_url}/chat/completions" if chat else f"{self.base_url}/completions"
        payload = build_payload(self.model, prompt, n=n, params=params, seed=seed)
        if self.stream:
            payload.update(stream=True, stream_options={"include_usage": True})
        on_data = silence.saw_data
        try:
            async with self.session.post(
                url, data=orjson.dumps(payload), headers=self._headers, timeout=_NO_READ_LIMIT
            ) as response:
                silence.saw_headers()
                status = response.status
                # A server that ignores `stream` answers whole JSON: read it as such.
                if status == 200 and response.content_type == "text/event-stream":
                    return await read_stream(response.content, n=n, chat=chat, on_data=on_data)
                body = await response.read()
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except aiohttp.ClientConnectorError as exc:
            raise RequestError("connection", str(exc), retryable=True, endpoint_down=True) from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise RequestError("connection", f"{type(exc).__name__}: {exc}", retryable=True) from exc
        if status != 200:
            raise RequestError(
                f"http_{status}",
                _error_message(body),
                retryable=is_retryable_status(status),
                retry_after=retry_after,
            )
        return parse_response(body, n=n, chat=chat)


# The read limit is the request's Silence; aiohttp's own would also count time in the server's queue.
_NO_READ_LIMIT = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=None)


class Silence:
    """The read limit of one request: `limit_s` without data cuts it (its task is cancelled and
    the cancellation becomes a `timeout`), unless nothing came yet and the endpoint says requests
    wait in the server's queue; then the clock starts again. Its endpoint sweeps them."""

    __slots__ = ("limit_s", "notify", "last_data", "answered", "expired", "checking", "task")

    def __init__(self, limit_s: float, notify: Callable[[], None] | None) -> None:
        self.limit_s = limit_s
        self.notify = notify  # the endpoint's on_stream_data (the progress watchdog)
        self.last_data = time.monotonic()
        self.answered = False
        self.expired = False
        self.checking = False
        task = asyncio.current_task()
        assert task is not None
        self.task = task

    def saw_data(self) -> None:
        self.last_data = time.monotonic()
        self.answered = True
        if self.notify is not None:
            self.notify()

    def saw_headers(self) -> None:
        """vLLM sends a stream's headers at once, queued or not: the clock starts again, but
        the request is still waiting for its first token (and the engine showed no progress)."""
        self.last_data = time.monotonic()

    def expire(self) -> None:
        self.expired = True
        self.task.cancel()


def build_payload(
    model: str, prompt: PromptInput, *, n: int, params: SamplingParams, seed: int | None
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": model,
        "n": n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
    }
    if isinstance(prompt, str):
        payload["prompt"] = prompt
    else:
        payload["messages"] = prompt
    if params.stop:
        payload["stop"] = list(params.stop)
    if seed is not None:
        payload["seed"] = seed
    payload.update(params.extra_body)
    return payload


def _error_message(body: bytes | bytearray) -> str:
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text[:500]
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        return str(error.get("message", error))[:500]
    return str(error)[:500]


def parse_response(body: bytes, *, n: int, chat: bool) -> CompletionBatch:
    """Read an OpenAI (chat) completion; a malformed or short answer is a retryable error."""
    try:
        data = orjson.loads(body)
        choices = data["choices"]
        if len(choices) != n:
            raise RequestError(
                "incomplete_response", f"{len(choices)} choices for n={n}", retryable=True
            )
        ordered = sorted(choices, key=lambda c: c.get("index", 0))
        completions = [_parse_choice(c, chat) for c in ordered]
        usage = data.get("usage") or {}
    except RequestError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RequestError("bad_response", f"malformed response: {exc}", retryable=True) from exc
    if len(completions) == 1 and completions[0].completion_tokens is None:
        tokens = usage.get("completion_tokens")
        completions = [Completion(completions[0].text, completions[0].finish_reason, tokens)]
    return CompletionBatch(
        completions=completions,
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens_total=usage.get("completion_tokens"),
    )


async def read_stream(
    content: aiohttp.StreamReader, *, n: int, chat: bool,
    on_data: Callable[[], None] | None = None,
) -> CompletionBatch:
    """Read an OpenAI server-sent-event stream (`stream: true` with usage) into one batch.

    Events are read in whatever pieces the socket delivers and split on blank lines, which costs
    less per token than reading line by line. A piece that ends no event is only appended (an
    event of 50 MB arrives in hundreds of pieces: rescanning them all each time is quadratic).
    A stream that ends before `[DONE]`, or with fewer choices than n, is a retryable error."""
    pieces: list[list[str]] = [[] for _ in range(n)]
    finish: list[str | None] = [None] * n
    usage: dict[str, Any] = {}
    pending = bytearray()
    async for data in content.iter_any():
        if on_data is not None:
            on_data()
        scan_from = max(len(pending) - 1, 0)  # a blank line may straddle two pieces
        pending += data
        if pending.find(b"\n\n", scan_from) < 0:
            continue
        events = pending.split(b"\n\n")
        pending = events.pop()
        for event in events:
            if not event.startswith(b"data:"):
                continue  # comments and keep-alives
            body = event[5:].strip()
            if body == b"[DONE]":
                return _streamed_batch(pieces, finish, usage, n)
            usage = _read_event(body, pieces, finish, chat) or usage
    raise RequestError("incomplete_response", "the stream ended before [DONE]", retryable=True)


def _read_event(
    body: bytes | bytearray, pieces: list[list[str]], finish: list[str | None], chat: bool
) -> dict[str, Any] | None:
    """Add one event's text to `pieces`; return its usage when it carries one."""
    try:
        event = orjson.loads(body)
        if "error" in event:
            raise RequestError("stream_error", _error_message(body), retryable=True)
        for choice in event["choices"]:
            index = choice["index"]
            text = choice["delta"].get("content") if chat else choice["text"]
            if text:
                pieces[index].append(text)
            if choice.get("finish_reason") is not None:
                finish[index] = choice["finish_reason"]
        usage: dict[str, Any] | None = event.get("usage")
        return usage
    except RequestError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise RequestError("bad_response", f"malformed stream event: {exc!r}", retryable=True) from exc


def _streamed_batch(
    pieces: list[list[str]], finish: list[str | None], usage: dict[str, Any], n: int
) -> CompletionBatch:
    unfinished = sum(reason is None for reason in finish)
    if unfinished:
        raise RequestError(
            "incomplete_response", f"{n - unfinished} finished choices for n={n}", retryable=True
        )
    tokens = usage.get("completion_tokens")
    completions = [
        Completion("".join(text), reason, tokens if n == 1 else None)
        for text, reason in zip(pieces, finish, strict=True)
    ]
    return CompletionBatch(completions, usage.get("prompt_tokens"), tokens)


def _parse_choice(choice: dict[str, Any], chat: bool) -> Completion:
    text = choice["message"]["content"] if chat else choice["text"]
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise TypeError("choice text is not a string")
    # vLLM reports per-choice token counts only in some versions; keep them when present.
    tokens = choice.get("completion_tokens") or (choice.get("usage") or {}).get("completion_tokens")
    return Completion(text=text, finish_reason=choice.get("finish_reason"), completion_tokens=tokens)


async def check_health(session: aiohttp.ClientSession, root_url: str, timeout_s: float = 5.0) -> bool:
    """True when the server answers /health (vLLM) or /v1/models (other OpenAI servers)."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    for path in ("/health", "/v1/models"):
        try:
            async with session.get(root_url + path, timeout=timeout) as response:
                if response.status == 200:
                    return True
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            continue
    return False
