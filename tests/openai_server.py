"""An OpenAI-compatible test server on 127.0.0.1 that can inject faults per request.

It runs on its own event loop in a background thread, so tests may drive it from synchronous code,
from `asyncio.run`, or from a subprocess. Responses are deterministic functions of the prompt,
the seed and the choice index. Faults are rules matched against each request, in order:

    Fault("status", status=500, times=2)                    first 2 requests answer 500
    Fault("status", status=429, retry_after=0.1, match="x") requests whose prompt holds "x"
    Fault("reset")   close the connection in the middle of the response
    Fault("hang")    never answer
    Fault("slow", delay=0.5)
    Fault("malformed")  an invalid JSON body
    Fault("short")      fewer choices than n
    Fault("trickle", delay=0.3)  stream (when asked) one event every `delay` seconds
    Fault("stall")      stream (when asked) the first event, then nothing

A prompt longer than `max_prompt_chars` gets a 400 (the context-length error of vLLM). GURU's
judge prompts are answered with a verdict (tests/judge_answers.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.judge_answers import judge_reply


@dataclass
class Fault:
    kind: str
    times: int | None = 1  # None: every matching request
    match: str | None = None  # substring of the prompt text
    status: int = 500
    retry_after: float | None = None
    delay: float = 0.0
    after: int = 0  # skip this many matching requests first

    def __post_init__(self) -> None:
        self.seen = 0
        self.applied = 0

    def applies(self, prompt_text: str) -> bool:
        if self.match is not None and self.match not in prompt_text:
            return False
        self.seen += 1
        if self.seen <= self.after:
            return False
        if self.times is not None and self.applied >= self.times:
            return False
        self.applied += 1
        return True


def prompt_text(payload: dict[str, Any]) -> str:
    if "messages" in payload:
        return "\n".join(str(m.get("content", "")) for m in payload["messages"])
    return str(payload.get("prompt", ""))


def sse_body(body: dict[str, Any], chat: bool) -> bytes:
    """A finished OpenAI answer as the server-sent events of `stream: true` (with usage): one
    event per choice, then the usage event and `[DONE]`."""
    events = []
    for choice in body["choices"]:
        text = choice["message"]["content"] if chat else choice["text"]
        part = {"delta": {"content": text}} if chat else {"text": text}
        chunk = {"index": choice["index"], "finish_reason": choice["finish_reason"], **part}
        events.append({"id": body["id"], "model": body["model"], "choices": [chunk]})
    events.append({"id": body["id"], "model": body["model"], "choices": [], "usage": body["usage"]})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def response_text(text: str, seed: Any, index: int) -> str:
    digest = hashlib.sha256(f"{text}|{seed}|{index}".encode()).hexdigest()[:12]
    return f"answer-{digest} \\boxed{{{len(text) % 10}}}"


@dataclass
class FakeOpenAIServer:
    model: str = "test-model"
    max_prompt_chars: int = 100_000
    faults: list[Fault] = field(default_factory=list)
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    completion_tokens: int = 5
    arrivals: list[float] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    streams: bool = True  # False: whole JSON answers even when a stream is asked for

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("test server did not start")
        return self

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        """Stop answering (connections refused afterwards); `start()` brings it back."""
        if self._loop is None:
            return
        loop = self._loop
        runner = self._runner
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        loop.close()
        self._loop = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    # -- handlers -------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, chat=True)

    def _fault_for(self, text: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.applies(text):
                    return fault
        return None

    async def _answer(self, request: web.Request, chat: bool) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer_counted(request, chat)
        finally:
            self.in_flight -= 1

    async def _answer_counted(self, request: web.Request, chat: bool) -> web.StreamResponse:
        payload = await request.json()
        text = prompt_text(payload)
        with self._lock:
            self.requests.append(payload)
            self.arrivals.append(time.monotonic())
        fault = self._fault_for(text)
        n = int(payload.get("n", 1))
        if fault is not None:
            faulty = await self._apply_fault(fault, request)
            if faulty is not None:
                return faulty
            if fault.kind == "short":
                n = max(0, n - 1)
        if len(text) > self.max_prompt_chars:
            return web.json_response(
                {"error": {"message": "This model's maximum context length is exceeded",
                           "type": "BadRequestError", "code": 400}},
                status=400,
            )
        body = self._body(payload, text, n, chat)
        if payload.get("stream") and fault is not None and fault.kind in ("trickle", "stall"):
            return await self._slow_stream(request, sse_body(body, chat), fault)
        if payload.get("stream") and self.streams:
            return web.Response(body=sse_body(body, chat), content_type="text/event-stream")
        return web.json_response(body)

    async def _apply_fault(self, fault: Fault, request: web.Request) -> web.StreamResponse | None:
        if fault.kind == "status":
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            return web.json_response(
                {"error": {"message": f"injected {fault.status}"}}, status=fault.status, headers=headers
            )
        if fault.kind == "hang":
            await asyncio.sleep(3600)
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay)
        if fault.kind == "malformed":
            return web.Response(text='{"choices": [', content_type="application/json")
        if fault.kind == "reset":
            response = web.StreamResponse(headers={"Content-Length": "1000"})
            await response.prepare(request)
            await response.write(b'{"choices": [{"te')
            assert request.transport is not None
            request.transport.close()
            return response
        return None

    async def _slow_stream(
        self, request: web.Request, events: bytes, fault: Fault
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in events.split(b"\n\n")[:-1]:
            await response.write(event + b"\n\n")
            await asyncio.sleep(3600 if fault.kind == "stall" else fault.delay)
        await response.write_eof()
        return response

    def _body(self, payload: dict[str, Any], text: str, n: int, chat: bool) -> dict[str, Any]:
        seed = payload.get("seed")
        max_tokens = int(payload.get("max_tokens", 16))
        tokens = min(self.completion_tokens, max_tokens)
        finish = "length" if max_tokens <= self.completion_tokens else "stop"
        choices = []
        judged = judge_reply(text)  # GURU's judge prompts get a verdict
        for index in range(n):
            content = judged if judged is not None else response_text(text, seed, index)
            choice: dict[str, Any] = {"index": index, "finish_reason": finish}
            if chat:
                choice["message"] = {"role": "assistant", "content": content}
            else:
                choice["text"] = content
            choices.append(choice)
        return {
            "id": "cmpl-test",
            "object": "chat.completion" if chat else "text_completion",
            "model": payload.get("model", self.model),
            "choices": choices,
            "usage": {
                "prompt_tokens": len(text.split()),
                "completion_tokens": tokens * n,
                "total_tokens": len(text.split()) + tokens * n,
            },
        }


def main() -> None:
    """Run the server in the foreground: python -m tests.openai_server PORT [FAULTS_JSON]."""
    import sys

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    faults = [Fault(**f) for f in json.loads(sys.argv[2])] if len(sys.argv) > 2 else []
    server = FakeOpenAIServer(port=port, faults=faults).start()
    print(server.url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
