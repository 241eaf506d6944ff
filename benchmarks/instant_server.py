"""An instant OpenAI-compatible server for client benchmarks: canned answers, no model.

python benchmarks/instant_server.py PORT
Answers /v1/completions and /v1/chat/completions with n short choices and usage, /health and
/v1/models. Bodies are prebuilt per (endpoint, n) so the server spends as little as possible.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache

from aiohttp import web

MODEL = "instant"
TOKENS_PER_CHOICE = 16


@lru_cache(maxsize=64)
def body(chat: bool, n: int) -> bytes:
    text = "The answer is \\boxed{42}."
    choices = []
    for index in range(n):
        choice: dict[str, object] = {"index": index, "finish_reason": "stop"}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choices.append(choice)
    usage = {"prompt_tokens": 20, "completion_tokens": TOKENS_PER_CHOICE * n,
             "total_tokens": 20 + TOKENS_PER_CHOICE * n}
    return json.dumps({"id": "x", "object": "completion", "model": MODEL, "choices": choices,
                       "usage": usage}).encode()


async def completions(request: web.Request) -> web.Response:
    payload = await request.json()
    chat = request.path.endswith("/chat/completions")
    return web.Response(body=body(chat, int(payload.get("n", 1))), content_type="application/json")


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
