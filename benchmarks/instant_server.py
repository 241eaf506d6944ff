"""An instant OpenAI-compatible server for client benchmarks: canned answers, no model.

python benchmarks/instant_server.py PORT
Answers /v1/completions and /v1/chat/completions with n choices and usage, /health and
/v1/models. Bodies are prebuilt per (endpoint, n, tokens) so the server spends as little as
possible. Each choice has max_tokens tokens (at most MAX_TOKENS; 16 when not asked). With
`stream: true` it answers server-sent events as vLLM does: one event per choice per token, the n
events of one step written together, then a usage event and `[DONE]`.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache

from aiohttp import web

MODEL = "instant"
TOKENS_PER_CHOICE = 16
MAX_TOKENS = 4096
TOKEN = " tok"


@lru_cache(maxsize=64)
def body(chat: bool, n: int, tokens: int = TOKENS_PER_CHOICE) -> bytes:
    text = "The answer is \\boxed{42}." if tokens == TOKENS_PER_CHOICE else TOKEN * tokens
    choices = []
    for index in range(n):
        choice: dict[str, object] = {"index": index, "finish_reason": "stop"}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choices.append(choice)
    usage = {"prompt_tokens": 20, "completion_tokens": tokens * n, "total_tokens": 20 + tokens * n}
    return json.dumps({"id": "x", "object": "completion", "model": MODEL, "choices": choices,
                       "usage": usage}).encode()


def event(data: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


@lru_cache(maxsize=64)
def step_events(chat: bool, n: int, finish: str | None) -> bytes:
    """The n events of one decoding step (one token for every choice)."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    out = b""
    for index in range(n):
        choice: dict[str, object] = {"index": index, "finish_reason": finish}
        if chat:
            choice["delta"] = {"content": TOKEN}
        else:
            choice["text"] = TOKEN
        out += event({"id": "x", "object": kind, "model": MODEL, "choices": [choice]})
    return out


async def stream(request: web.Request, chat: bool, n: int, tokens: int) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    middle = step_events(chat, n, None)
    for _ in range(tokens - 1):
        await response.write(middle)
    usage = {"prompt_tokens": 20, "completion_tokens": tokens * n, "total_tokens": 20 + tokens * n}
    await response.write(step_events(chat, n, "length")
                         + event({"id": "x", "choices": [], "usage": usage}) + b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def completions(request: web.Request) -> web.StreamResponse:
    payload = await request.json()
    chat = request.path.endswith("/chat/completions")
    n = int(payload.get("n", 1))
    tokens = min(int(payload.get("max_tokens", TOKENS_PER_CHOICE)), MAX_TOKENS)
    if payload.get("stream"):
        return await stream(request, chat, n, tokens)
    return web.Response(body=body(chat, n, tokens), content_type="application/json")


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def models(request: web.Request) -> web.Response:
    return web.json_response({"data": [{"id": MODEL}]})


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
                backlog=4096)


if __name__ == "__main__":
    main()
