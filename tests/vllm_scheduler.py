"""A test server that behaves like a vLLM scheduler under load, as far as its /metrics tell.

It has a capacity in sequences (max_num_seqs, or what the KV cache holds): a request of n samples
runs when its n sequences fit, else waits first come, first served. Running sequences advance
together one token per engine step, as in vLLM; a step takes `step_time(running)` =
`service_s / TOKENS` plus `per_sequence_s` per running sequence, plus `eager_s` once more than
`graph_limit` run (a batch past vLLM's largest CUDA graph), so the tokens generated per second
can peak below the capacity. A request finishes after TOKENS tokens and answers a stream with
usage. `/metrics` reports running and waiting sequences, KV usage (running / capacity), the
generated-token counter, and a preemption counter that grows on every reading while the sequences
held are more than `preempt_over` × capacity. `metrics` selects "vllm", "missing" (404),
"malformed" text or "no-tokens" (no token counter). The capacity may be changed while it runs
(`set_capacity`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.openai_server import sse_body

TOKENS = 20  # generated per sequence
TICK_S = 0.002


@dataclass
class SchedulerServer:
    capacity: int
    service_s: float = 0.1  # a request's time at light load
    preempt_over: float = 1.5
    metrics: str = "vllm"
    per_sequence_s: float = 0.0
    graph_limit: int | None = None
    eager_s: float = 0.0
    port: int = 0
    running: int = 0
    waiting: int = 0
    preemptions: int = 0
    generated: float = 0.0
    _loop: asyncio.AbstractEventLoop = field(init=False)
    _queue: deque[tuple[int, asyncio.Future[None]]] = field(default_factory=deque)
    _clock: float = 0.0  # tokens each running sequence has made since the start
    _finishing: list[tuple[float, int, asyncio.Event]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def step_time(self, running: int) -> float:
        eager = self.graph_limit is not None and running > self.graph_limit
        return self.service_s / TOKENS + self.per_sequence_s * running + (self.eager_s if eager else 0)

    def tokens_per_s(self, running: int) -> float:
        return running / self.step_time(running)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> SchedulerServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._runner = self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("scheduler test server did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._engine.cancel)
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> SchedulerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_capacity(self, capacity: int) -> None:
        async def change() -> None:
            self.capacity = capacity
            self._admit()

        asyncio.run_coroutine_threadsafe(change(), self._loop).result(10)

    async def _serve(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
        await runner.setup()
        self._engine = asyncio.create_task(self._steps())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner

    async def _steps(self) -> None:
        """Advance every running sequence by the tokens of the steps that fit in each tick."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            tokens = (now - last) / self.step_time(self.running) if self.running else 0.0
            last = now
            self._clock += tokens
            self.generated += tokens * self.running
            while self._finishing and self._finishing[0][0] <= self._clock:
                heapq.heappop(self._finishing)[2].set()

    def _admit(self) -> None:
        """Run waiting requests first come, first served while their sequences fit."""
        while self._queue and (self.running == 0 or
                               self.running + self._queue[0][0] <= self.capacity):
            n, admitted = self._queue.popleft()
            self.waiting -= n
            if admitted.cancelled():  # its client went away while it waited
                continue
            self.running += n
            admitted.set_result(None)

    def _finish(self, n: int) -> None:
        self.running -= n
        self._admit()

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "sched"}]})

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.metrics == "missing":
            return web.Response(status=404, text="Not Found")
        if self.metrics == "malformed":
            return web.Response(text="vllm:num_requests_running{engine= 3 oops\n")
        if self.running + self.waiting > self.preempt_over * self.capacity:
            self.preemptions += 1
        labels = '{engine="0",model_name="sched"}'
        tokens = "" if self.metrics == "no-tokens" else (
            f"vllm:generation_tokens_total{labels} {int(self.generated)}\n")
        return web.Response(text=(
            f"vllm:num_requests_running{labels} {self.running}\n"
            f"vllm:num_requests_waiting{labels} {self.waiting}\n"
            f"vllm:kv_cache_usage_perc{labels} {0.9 * min(1.0, self.running / self.capacity)}\n"
            f"vllm:num_preemptions_total{labels} {self.preemptions}\n"
            + tokens
        ))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        n = int(payload.get("n", 1))
        admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((n, admitted))
        self.waiting += n
        self._admit()
        try:
            await admitted
        except asyncio.CancelledError:
            if admitted.done() and not admitted.cancelled():
                self._finish(n)
            elif (n, admitted) in self._queue:
                self._queue.remove((n, admitted))
                self.waiting -= n
            raise
        done = asyncio.Event()
        heapq.heappush(self._finishing, (self._clock + TOKENS, next(self._order), done))
        try:
            await done.wait()
        finally:
            self._finish(n)
        return web.Response(body=sse_body(self._answer(n), chat=True),
                            content_type="text/event-stream")

    def _answer(self, n: int) -> dict[str, Any]:
        choices = [{"index": i, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": f"sample {i}"}} for i in range(n)]
        usage = {"prompt_tokens": 3, "completion_tokens": TOKENS * n,
                 "total_tokens": 3 + TOKENS * n}
        return {"id": "sched", "model": "sched", "choices": choices, "usage": usage}
