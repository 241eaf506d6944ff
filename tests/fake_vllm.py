"""A stand-in for the `vllm` executable: `python3 fake_vllm.py serve MODEL --port P ...`.

It parses the flags `vllm serve` gets, serves /health, /v1/models, /v1/completions,
/v1/chat/completions with instant deterministic text (n honoured, usage reported) and /metrics
(vLLM's request gauges and generation-token counter, Prometheus text), and runs one
"engine worker" child process in its own process group, as vLLM's engine core does. Environment
variables make it misbehave the ways a real server does:

FAKE_VLLM_START_DELAY=S     sleep S seconds before binding the port (a slow model load)
FAKE_VLLM_EXIT_DURING_START=C  exit with status C before binding
FAKE_VLLM_FATAL=oom|addr|nccl  print that fatal line before binding, then
FAKE_VLLM_AFTER_FATAL=exit|hang  exit 1 (default) or hang without ever serving
FAKE_VLLM_HEALTH=hang       /health never answers
FAKE_VLLM_ENGINE=hang|500   /health answers 200 but completions hang or fail (engine hung)
FAKE_VLLM_DIE_AFTER=K       exit abruptly (status 1) on the K+1-th completion request
FAKE_VLLM_HANG_AFTER=K      completions after the K-th hang while /health still says 200
FAKE_VLLM_CRASH_ON=TEXT     exit abruptly (status 1) on a completion whose prompt contains TEXT
FAKE_VLLM_FAULT_ONCE=PATH   DIE_AFTER and HANG_AFTER strike in one server process only: the first
                            to strike creates PATH, and a server started while PATH exists is sound
FAKE_VLLM_TOKEN_DELAY=S     generate one token every S seconds (the /metrics counter moves as it goes)
FAKE_VLLM_METRICS=off       no /metrics (404), like OpenAI servers other than vLLM
FAKE_VLLM_IGNORE_TERM=1     the main process ignores SIGTERM, from the start (only SIGKILL stops it)
FAKE_VLLM_WORKER=term|ignore-term|setsid  the worker stops on SIGTERM (default), ignores it, or
                            also leaves the process group (setsid) and ignores SIGTERM
FAKE_VLLM_PIDS_FILE=PATH    write "MAIN_PID WORKER_PID" there once the worker runs
FAKE_VLLM_ARGV_FILE=PATH    write the argv received there as JSON
FAKE_VLLM_REQUESTS_FILE=PATH  append {prompt, n, seed} per completion request as it arrives
FAKE_VLLM_DELAY=S           answer each completion request after S seconds
FAKE_VLLM_PEAK_FILE=PATH    write to PATH.PID the most sequences (n per request) ever in flight
FAKE_VLLM_SWAP=fail|ignore  reload_weights answers 500, or answers 200 and keeps the old weights

With VLLM_SERVER_DEV_MODE=1 it serves vLLM's development endpoints as vLLM 0.24 does: POST
/pause?mode=wait (requests wait until /resume), /resume, /reset_prefix_cache and /collective_rpc
with {"method": "reload_weights", "kwargs": {"weights_path": DIR}}; without it they are 404. What
it generates depends on the weights loaded: the loaded folder's weight files (their bytes) are
mixed into every sample, and a greedy request (temperature 0) on a folder transformers can load
is answered by transformers itself, so a swap changes the answers exactly as new weights would.

GURU's judge prompts are answered with a verdict (tests/judge_answers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from aiohttp import web

# Run as a script (`python3 fake_vllm.py serve ...`): the repository root makes `tests` importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.judge_answers import judge_reply  # noqa: E402

try:
    from tests.openai_server import sse_body
except ImportError:  # run as a script: its folder is on the path, not the repository
    from openai_server import sse_body  # type: ignore[no-redef]

FATAL_LINES = {
    "oom": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
    "addr": "ERROR: [Errno 98] error while attempting to bind on address: address already in use",
    "nccl": "RuntimeError: NCCL error: unhandled system error (run with NCCL_DEBUG=INFO)",
}
WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa"]
NATURAL_TOKENS = 6  # a sample "ends" (finish_reason stop) after this many tokens

WORKER_CODE = """
import os, signal, sys, time
mode = sys.argv[1]
if mode == "setsid":
    os.setsid()
if mode in ("ignore-term", "setsid"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("worker ready", flush=True)
while True:
    time.sleep(1)
"""


def log(message: str) -> None:
    print(f"INFO {time.strftime('%H:%M:%S')} {message}", flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vllm")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("model")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--served-model-name", default=None)
    serve.add_argument("--tensor-parallel-size", type=int, default=1)
    serve.add_argument("--data-parallel-size", type=int, default=1)
    serve.add_argument("--seed", type=int, default=0)
    args, unknown = parser.parse_known_args(argv)
    args.unknown = unknown
    return args


def weights_tag(model: str) -> str:
    """A digest of the weights a folder holds ('' for a name that is no folder)."""
    folder = os.path.abspath(model)
    if not os.path.isdir(folder):
        return ""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        if name.endswith((".safetensors", ".bin")) or name == "config.json":
            with open(os.path.join(folder, name), "rb") as handle:
                digest.update(name.encode() + handle.read())
    return digest.hexdigest()[:12]


def sample_text(prompt: str, seed: int, max_tokens: int, weights: str = "") -> tuple[str, str, int]:
    """Deterministic words from (weights, prompt, seed); 'length' when max_tokens cuts it short."""
    digest = hashlib.sha256(f"{weights}\x00{seed}\x00{prompt}".encode()).digest()
    count = min(max_tokens, NATURAL_TOKENS)
    words = [WORDS[digest[i] % len(WORDS)] for i in range(count)]
    finish = "length" if max_tokens < NATURAL_TOKENS else "stop"
    return " ".join(words), finish, count


class FakeEngine:
    def __init__(self, served_name: str, default_seed: int, model: str = "") -> None:
        self.served_name = served_name
        self.default_seed = default_seed
        self.model = model
        self.weights = weights_tag(model)
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.swap_mode = os.environ.get("FAKE_VLLM_SWAP", "")
        self.requests = 0
        self.die_after = int(os.environ.get("FAKE_VLLM_DIE_AFTER", "-1"))
        self.engine_mode = os.environ.get("FAKE_VLLM_ENGINE", "")
        self.health_mode = os.environ.get("FAKE_VLLM_HEALTH", "")
        self.hang_after = int(os.environ.get("FAKE_VLLM_HANG_AFTER", "-1"))
        self.crash_on = os.environ.get("FAKE_VLLM_CRASH_ON") or None
        self.token_delay = float(os.environ.get("FAKE_VLLM_TOKEN_DELAY", "0"))
        self.metrics_on = os.environ.get("FAKE_VLLM_METRICS", "on") != "off"
        once = os.environ.get("FAKE_VLLM_FAULT_ONCE")
        self.once_marker = once
        if once and os.path.exists(once):  # an earlier process already had its fault
            self.die_after = self.hang_after = -1
        self.running = 0
        self.generation_tokens = 0
        self.sequences_in_flight = 0
        self.peak_sequences = 0

    def _strike(self, what: str) -> None:
        """A one-time fault fires: leave the marker so the next server process is sound."""
        log(what)
        if self.once_marker:
            with open(self.once_marker, "w") as handle:
                handle.write(what)

    async def metrics(self, request: web.Request) -> web.Response:
        if not self.metrics_on:
            return web.Response(status=404, text="Not Found")
        labels = f'{{engine="0",model_name="{self.served_name}"}}'
        text = (
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{labels} {float(self.running)}\n"
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{labels} 0.0\n"
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n"
            "# TYPE vllm:generation_tokens_total counter\n"
            f"vllm:generation_tokens_total{labels} {float(self.generation_tokens)}\n"
        )
        return web.Response(text=text, content_type="text/plain")

    async def health(self, request: web.Request) -> web.Response:
        if self.health_mode == "hang":
            await asyncio.sleep(3600)
        return web.Response(status=200)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": self.served_name, "object": "model"}]}
        )

    async def _generate(self, body: dict[str, Any], prompt: str, chat: bool) -> web.Response:
        sequences = int(body.get("n", 1)) if max_tokens_of(body) > 1 else 0  # not readiness probes
        self.sequences_in_flight += sequences
        try:
            self._record_peak()
            return await self._answer(body, prompt, chat)
        finally:
            self.sequences_in_flight -= sequences

    def _record_peak(self) -> None:
        peak_file = os.environ.get("FAKE_VLLM_PEAK_FILE")
        if peak_file and self.sequences_in_flight > self.peak_sequences:
            self.peak_sequences = self.sequences_in_flight
            with open(f"{peak_file}.{os.getpid()}", "w") as handle:
                handle.write(str(self.peak_sequences))

    async def _answer(self, body: dict[str, Any], prompt: str, chat: bool) -> web.Response:
        await self.resumed.wait()  # paused for a weight swap
        self.requests += 1
        if 0 <= self.die_after < self.requests:
            self._strike("engine core died")
            os._exit(1)
        if self.crash_on is not None and self.crash_on in prompt:
            log(f"engine core died on a prompt containing {self.crash_on!r}")
            os._exit(1)
        if 0 <= self.hang_after < self.requests:
            self._strike("engine hung")
            self.hang_after = 0  # from now on every completion hangs
            await asyncio.sleep(3600)
        if self.engine_mode == "hang":
            await asyncio.sleep(3600)
        if self.engine_mode == "500":
            return web.json_response({"error": {"message": "EngineDeadError"}}, status=500)
        requests_file = os.environ.get("FAKE_VLLM_REQUESTS_FILE")
        if requests_file and max_tokens_of(body) > 1:  # not the server's 1-token readiness probe
            with open(requests_file, "a") as handle:  # one short append: whole lines
                handle.write(json.dumps({"prompt": prompt, "n": body.get("n", 1),
                                         "seed": body.get("seed")}) + "\n")
        await asyncio.sleep(float(os.environ.get("FAKE_VLLM_DELAY", "0")))
        if body.get("model") != self.served_name:
            message = f"The model `{body.get('model')}` does not exist."
            return web.json_response({"error": {"message": message}}, status=404)
        n = int(body.get("n", 1))
        seed = int(body.get("seed", self.default_seed))
        max_tokens = int(body.get("max_tokens") or 16)
        choices = []
        total = 0
        self.running += 1
        try:
            await self._decode(n, min(max_tokens, NATURAL_TOKENS))
        finally:
            self.running -= 1
        judged = judge_reply(prompt)  # GURU's judge prompts get a verdict
        greedy = None if chat or float(body.get("temperature", 1.0)) else greedy_text(
            self.model, prompt, max_tokens)
        for i in range(n):
            text, finish, count = sample_text(prompt, seed + i, max_tokens, self.weights)
            if judged is not None:
                text, finish = judged, "stop"
            elif greedy is not None:
                text, finish, count = greedy, "length", max_tokens
            total += count
            if chat:
                choice: dict[str, Any] = {"message": {"role": "assistant", "content": text}}
            else:
                choice = {"text": text}
            choices.append({"index": i, "finish_reason": finish, **choice})
        usage = {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": total,
            "total_tokens": len(prompt.split()) + total,
        }
        kind = "chat.completion" if chat else "text_completion"
        answer = {"id": f"cmpl-{self.requests}", "object": kind, "model": self.served_name,
                  "choices": choices, "usage": usage}
        if body.get("stream"):
            return web.Response(body=sse_body(answer, chat), content_type="text/event-stream")
        return web.json_response(answer)

    async def _decode(self, n: int, tokens: int) -> None:
        """Count the generated tokens, one step at a time when FAKE_VLLM_TOKEN_DELAY is set."""
        for _ in range(tokens):
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            self.generation_tokens += n

    async def completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        return await self._generate(body, str(body.get("prompt", "")), chat=False)

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = "\n".join(f"{m['role']}: {m['content']}" for m in body.get("messages", []))
        return await self._generate(body, prompt, chat=True)


    # -- vLLM's development endpoints (VLLM_SERVER_DEV_MODE=1) ------------------------------

    async def pause(self, request: web.Request) -> web.Response:
        self.resumed.clear()
        log(f"paused (mode={request.query.get('mode')})")
        return web.json_response({})

    async def resume(self, request: web.Request) -> web.Response:
        self.resumed.set()
        return web.json_response({})

    async def reset_prefix_cache(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def collective_rpc(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("method") != "reload_weights":
            return web.json_response({"error": f"no method {body.get('method')}"}, status=400)
        if self.swap_mode == "fail":
            return web.json_response({"error": "reload failed"}, status=500)
        path = str((body.get("kwargs") or {}).get("weights_path") or self.model)
        if self.swap_mode != "ignore":
            self.model, self.weights = path, weights_tag(path)
        log(f"reloaded weights from {path}")
        return web.json_response({"results": [None]})


_GREEDY_MODELS: dict[str, Any] = {}


def greedy_text(model: str, prompt: str, max_tokens: int) -> str | None:
    """What transformers answers greedily on the folder `model` (None if it cannot load it)."""
    if model not in _GREEDY_MODELS:
        if not os.path.isdir(model) or not any(
                name.endswith(".safetensors") for name in os.listdir(model)):
            return None
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            loaded = (AutoTokenizer.from_pretrained(model),
                      AutoModelForCausalLM.from_pretrained(model))
        except Exception:  # no weights there: the hash-based text answers instead
            loaded = None
        _GREEDY_MODELS[model] = loaded
    loaded = _GREEDY_MODELS[model]
    if loaded is None:
        return None
    import torch

    tokenizer, network = loaded
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = network.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
    return str(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:]))


def max_tokens_of(body: dict[str, Any]) -> int:
    return int(body.get("max_tokens") or 16)


def start_worker() -> subprocess.Popen[bytes]:
    mode = os.environ.get("FAKE_VLLM_WORKER", "term")
    return subprocess.Popen([sys.executable, "-c", WORKER_CODE, mode])


def before_serving() -> None:
    """The model load: where a real server is slow, runs out of memory or exits."""
    log("Address already in use. Retrying with a new port.")  # vLLM's harmless internal warning
    delay = float(os.environ.get("FAKE_VLLM_START_DELAY", "0"))
    if delay:
        log(f"loading weights ({delay}s)")
        time.sleep(delay)
    fatal = os.environ.get("FAKE_VLLM_FATAL")
    if fatal:
        print(FATAL_LINES[fatal], flush=True)
        if os.environ.get("FAKE_VLLM_AFTER_FATAL", "exit") == "hang":
            while True:
                time.sleep(1)
        sys.exit(1)
    code = os.environ.get("FAKE_VLLM_EXIT_DURING_START")
    if code:
        print("RuntimeError: Engine process failed to start", flush=True)
        sys.exit(int(code))


async def serve(args: argparse.Namespace, worker: subprocess.Popen[bytes]) -> None:
    engine = FakeEngine(args.served_model_name or args.model, args.seed, args.model)
    app = web.Application()
    app.router.add_get("/health", engine.health)
    app.router.add_get("/v1/models", engine.models)
    app.router.add_get("/metrics", engine.metrics)
    app.router.add_post("/v1/completions", engine.completions)
    app.router.add_post("/v1/chat/completions", engine.chat)
    if os.environ.get("VLLM_SERVER_DEV_MODE") == "1":
        app.router.add_post("/pause", engine.pause)
        app.router.add_post("/resume", engine.resume)
        app.router.add_post("/reset_prefix_cache", engine.reset_prefix_cache)
        app.router.add_post("/collective_rpc", engine.collective_rpc)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.port).start()
    except OSError as exc:
        print(f"ERROR: [Errno {exc.errno}] error while attempting to bind on address "
              f"({args.host!r}, {args.port}): {exc.strerror.lower()}", flush=True)
        worker.terminate()
        sys.exit(1)
    log(f"Starting vLLM API server on http://{args.host}:{args.port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if os.environ.get("FAKE_VLLM_IGNORE_TERM") == "1":
        loop.add_signal_handler(signal.SIGTERM, lambda: log("ignoring SIGTERM"))
    else:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    log("Shutting down")
    worker.terminate()  # vLLM's API server stops its engine core on shutdown
    await runner.cleanup()


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if os.environ.get("FAKE_VLLM_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # also while "loading"
    if os.environ.get("FAKE_VLLM_ARGV_FILE"):
        with open(os.environ["FAKE_VLLM_ARGV_FILE"], "w") as handle:
            json.dump(argv, handle)
    worker = start_worker()
    if os.environ.get("FAKE_VLLM_PIDS_FILE"):
        with open(os.environ["FAKE_VLLM_PIDS_FILE"], "w") as handle:
            handle.write(f"{os.getpid()} {worker.pid}\n")
    before_serving()
    asyncio.run(serve(args, worker))



# -- helpers for the tests that run this stand-in ---------------------------------------------

FAKE_VLLM_COMMAND = f"{sys.executable} {os.path.abspath(__file__)}"


def recorded_pids(pids_file: str | os.PathLike[str]) -> list[int]:
    """The main and worker pids a run of the stand-in wrote to FAKE_VLLM_PIDS_FILE."""
    with open(pids_file) as handle:
        return [int(p) for p in handle.read().split()]


def live_pids(pids: list[int]) -> list[int]:
    """Those of pids that still run (zombies count as gone: they hold nothing)."""
    import psutil

    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


if __name__ == "__main__":
    main(sys.argv[1:])
