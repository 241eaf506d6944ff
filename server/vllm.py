"""A vLLM OpenAI-compatible server as an async context manager: build the command, start it in its
own process session, wait until it really serves, stop the whole process tree.

    config = ServerConfig(model="Qwen/Qwen2.5-7B-Instruct", tensor_parallel_size=2)
    async with ManagedServer(config) as server:
        ...  # requests to server.base_url with model=server.model

Readiness: `/health` answering 200 is not enough (it can answer while the engine is hung), so a
server is ready only once a 1-token completion also succeeds. The wait ends at once when the process
exits or its log shows a fatal line (FATAL_LOG_PATTERNS); at the deadline the group is killed.
Errors: ServerStartError (with the log's tail) when a start fails; UserInputError for bad options or
a missing vLLM install.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import importlib.metadata
import importlib.util
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from rollouts.errors import ServerStartError, ServerUnavailable, UserInputError
from server.info import ServerInfo, remove_server_info, write_server_info
from server.process import pick_free_port, port_in_use, stop_group

logger = logging.getLogger(__name__)

VLLM_ENV = "ROLLOUTS_VLLM"
INSTALL_HINT = "vLLM is not installed: pip install 'rollouts[vllm]'"
# Tokens per streamed chunk, set on servers we start (see build_vllm_command); the vLLM release
# that has the flag.
STREAM_INTERVAL = 16
STREAM_INTERVAL_SINCE = (0, 12)
# The batch of the servers we start, unless given (see build_vllm_command): the largest that
# vLLM runs as a CUDA graph by default (graphs up to min(2 x max_num_seqs, 512) sequences).
MAX_NUM_SEQS = 512

# Lines after which a starting vLLM never becomes ready, though with tensor parallelism the process
# may hang instead of exiting. vLLM itself logs "Address already in use. Retrying with a new port."
# for its internal ports: that one is not fatal.
FATAL_LOG_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"CUDA out of memory|OutOfMemoryError"),
    re.compile(r"No available memory for the cache blocks"),
    re.compile(r"less than desired GPU memory utilization"),
    re.compile(r"larger than the maximum number of tokens that can be stored in KV cache"),
    re.compile(r"address already in use(?!\. Retrying)", re.IGNORECASE),
    re.compile(r"NCCL error|ncclInternalError|ncclSystemError|ncclUnhandledCudaError"),
    re.compile(r"CUDA error: "),
    re.compile(r"Engine core initialization failed"),
)

# Flags this module sets itself; passing them again through extra_args would make base_url or the
# served name wrong, so they are refused there with the option to use instead.
_OWN_FLAGS = {
    "--host": "host",
    "--port": "port",
    "--model": "model",
    "--served-model-name": "served_model_name",
    "--tensor-parallel-size": "tensor_parallel_size",
    "-tp": "tensor_parallel_size",
    "--data-parallel-size": "data_parallel_size",
    "-dp": "data_parallel_size",
}

HEALTH_TIMEOUT_S = 5.0
PROBE_TIMEOUT_S = 30.0  # one attempt of the 1-token completion; retried until the deadline
READY_POLL_S = 0.25
FAILED_START_GRACE_S = 5.0  # SIGTERM grace for a server stopped before it was ready
WATCH_POLL_S = 0.5  # how often a serving server is checked for an exit
LOG_TAIL_BYTES = 256 * 1024


def _default_vllm_command() -> str:
    return os.environ.get(VLLM_ENV) or "vllm"


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """How to start one vLLM server. port=None picks a free port when the server starts.

    vllm_command is the launcher, split like a shell line ("vllm", or "python3 fake_vllm.py" in
    tests); it defaults to $ROLLOUTS_VLLM, else `vllm`. extra_args go after the flags set here, so
    they can override seed and the other defaults (argparse keeps the last value).
    """

    model: str
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    host: str = "127.0.0.1"
    port: int | None = None
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    served_model_name: str | None = None
    seed: int = 0
    extra_args: tuple[str, ...] = ()
    log_file: Path | None = None
    info_file: Path | None = None
    ready_timeout: float = 1800.0
    stop_timeout: float = 30.0
    vllm_command: str = field(default_factory=_default_vllm_command)
    # Extra environment for the server process, e.g. CUDA_VISIBLE_DEVICES when a node runs
    # several servers side by side.
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Accept str paths too; frozen, so through object.__setattr__.
        for name in ("log_file", "info_file"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        if not self.model:
            raise UserInputError("a model is required: a local directory or a hub id")
        for name in ("tensor_parallel_size", "data_parallel_size"):
            if getattr(self, name) < 1:
                raise UserInputError(f"{name} must be >= 1")
        if self.port is not None and not 0 < self.port < 65536:
            raise UserInputError(f"port must be in 1..65535 (or auto), got {self.port}")
        gmu = self.gpu_memory_utilization
        if gmu is not None and not 0 < gmu <= 1:
            raise UserInputError(f"gpu_memory_utilization must be in (0, 1], got {gmu}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise UserInputError("max_model_len must be >= 1")
        if self.ready_timeout <= 0 or self.stop_timeout <= 0:
            raise UserInputError("ready_timeout and stop_timeout must be > 0 seconds")
        if not shlex.split(self.vllm_command):
            raise UserInputError(f"{VLLM_ENV} / vllm_command is empty")
        _check_extra_args(self.extra_args)
        batch = flag_value(self.extra_args, "--max-num-seqs")
        if batch is not None and not (batch.isdigit() and int(batch) > 0):
            raise UserInputError(f"--max-num-seqs must be a whole number >= 1, not {batch!r}")

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model

    @property
    def max_num_seqs(self) -> int:
        """The batch of each vLLM engine: --max-num-seqs among extra_args, else ours."""
        given = flag_value(self.extra_args, "--max-num-seqs")
        return int(given) if given is not None else MAX_NUM_SEQS

    @property
    def max_sequences(self) -> int:
        """Sequences the server runs at once at most: each data-parallel engine its batch."""
        return self.max_num_seqs * self.data_parallel_size


def flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of `flag` among command-line args (`--flag V` or `--flag=V`; the last wins, as
    argparse does), or None."""
    value = None
    for index, arg in enumerate(args):
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        elif arg == flag and index + 1 < len(args):
            value = args[index + 1]
    return value


def _check_extra_args(extra_args: tuple[str, ...]) -> None:
    for arg in extra_args:
        flag = arg.split("=", 1)[0]
        if flag in _OWN_FLAGS:
            raise UserInputError(
                f"{flag} cannot be passed through to vllm serve; use the {_OWN_FLAGS[flag]} option"
            )


def build_vllm_command(config: ServerConfig, port: int | None = None) -> list[str]:
    """The `vllm serve` command line for config (on port, when config.port is auto), launcher first.

    Defaults added beyond the user's options, each for a reason:
    - `--served-model-name` = the model name given, so clients always know what to send.
    - `--seed` (0 unless set): the same server config samples the same way across restarts and
      vLLM versions (older ones had no fixed default).
    - `--generation-config vllm`: vLLM otherwise applies the model's generation_config.json
      (e.g. top_k=20, repetition_penalty=1.05 for some chat models) to every request that does not
      set them, so rollouts would not be samples of the distribution the trainer scores.
    - `--disable-uvicorn-access-log`: one log line per HTTP request, written on the API server's
      event loop, which is the server's bottleneck at thousands of requests per second. On one
      H100 (0.39B model, one request per sample, 1,024 in flight) the cost was within run-to-run
      noise (12.9k tok/s on vs 13.1k and 15.4k off), so it is off for a readable log at no cost.
    - `--stream-interval 16` (when the vLLM installed here is 0.12 or later and the flag is not
      given): vLLM sends a streamed answer every 16 tokens instead of every token. rollouts
      streams every answer, and at one chunk per token the API server's single core is the
      limit: on one H200 (0.39B model, every other setting on its default) it doubled `rollouts
      generate` with n=1 from 12.8k to 24.0k tokens/s and n=8 at 64 requests from 20.8k to 43.4k
      (benchmarks/gpu/RESULTS.md).
      Chunks still arrive every fraction of a second, which is all the stall watchdog needs.
    - `--max-num-seqs 512` (unless given): the batch of vLLM's offline engine at its best.
      vLLM's default (1,024 sequences on H100/H200) lets a batch grow past the largest CUDA
      graph (512), where each step of a small model runs several times slower; capped at 512,
      the server keeps a few requests queued (`--max-concurrent auto` sends them) and starts one
      the step another ends, as the offline engine does (benchmarks/gpu/RESULTS.md). The
      prefill budget (--max-num-batched-tokens) stays vLLM's, which it sizes by GPU.
    Request logging (`--enable-log-requests`) is already off by default in vLLM >= 0.10.
    """
    port = port if port is not None else config.port
    if port is None:
        raise ValueError("config.port is auto: pass the chosen port")
    command = shlex.split(config.vllm_command)
    command += ["serve", config.model, "--host", config.host, "--port", str(port)]
    command += ["--served-model-name", config.served_name]
    if config.tensor_parallel_size != 1:
        command += ["--tensor-parallel-size", str(config.tensor_parallel_size)]
    if config.data_parallel_size != 1:
        command += ["--data-parallel-size", str(config.data_parallel_size)]
    if config.gpu_memory_utilization is not None:
        command += ["--gpu-memory-utilization", str(config.gpu_memory_utilization)]
    if config.max_model_len is not None:
        command += ["--max-model-len", str(config.max_model_len)]
    command += ["--seed", str(config.seed), "--generation-config", "vllm"]
    command += ["--disable-uvicorn-access-log"]
    if not _given(config.extra_args, "--stream-interval") and supports_stream_interval():
        command += ["--stream-interval", str(STREAM_INTERVAL)]
    if not _given(config.extra_args, "--max-num-seqs"):
        command += ["--max-num-seqs", str(MAX_NUM_SEQS)]
    command += list(config.extra_args)
    return command


def _given(args: tuple[str, ...], flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in args)


def supports_stream_interval() -> bool:
    """Whether the vLLM installed here has --stream-interval (0.12 and later). Unknown (no vLLM
    in this environment, say a server run through ROLLOUTS_VLLM elsewhere): False, vLLM's own
    default then applies."""
    try:
        version = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return False
    numbers = [int(part) for part in re.findall(r"\d+", version)[:2]]
    return len(numbers) == 2 and tuple(numbers) >= STREAM_INTERVAL_SINCE


def resolve_launcher(command: list[str]) -> list[str]:
    """command with its executable checked: found on PATH as given, or, for a bare `vllm` not on
    PATH but importable, run as `python -m vllm.entrypoints.cli.main`. Else UserInputError."""
    executable = command[0]
    if shutil.which(executable) or (os.sep in executable and os.access(executable, os.X_OK)):
        return command
    if executable == "vllm" and importlib.util.find_spec("vllm") is not None:
        return [sys.executable, "-m", "vllm.entrypoints.cli.main", *command[1:]]
    if executable == "vllm":
        raise UserInputError(INSTALL_HINT)
    raise UserInputError(f"{executable}: no such executable (from {VLLM_ENV} or vllm_command)")


def _default_log_file(config: ServerConfig, port: int) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.served_name.strip("/"))[-60:]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.gettempdir()) / "rollouts-logs" / f"vllm-{name}-{port}-{stamp}.log"


def _parent_death_signal() -> Any:
    """A preexec function asking Linux to SIGTERM the server when this process dies (even by
    SIGKILL), so a crashed client does not leave GPUs held by an orphaned server; None elsewhere.
    The libc function is looked up here, in the parent, so the child only makes one call."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl
    pr_set_pdeathsig = 1

    def set_pdeathsig() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return set_pdeathsig


class _LogWatcher:
    """Reads what a log file gained since the last call and reports the first fatal line."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.offset = offset
        self._partial = ""

    def fatal_line(self) -> str | None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return None
        self.offset += len(chunk)
        lines = (self._partial + chunk.decode("utf-8", "replace")).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if any(p.search(line) for p in FATAL_LOG_PATTERNS):
                return line.strip()
        return None


def read_log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file ('' when there is none)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


async def probe_completion(
    session: aiohttp.ClientSession,
    root_url: str,
    model: str,
    timeout_s: float = PROBE_TIMEOUT_S,
    api_key: str | None = None,
) -> bool:
    """One token through the whole engine: proves the scheduler and workers run, where /health
    only proves the API process answers. False on any failure, a timeout included. A server that
    refuses plain completions (4xx: a chat-only server) is asked through chat completions."""
    base = {"model": model, "max_tokens": 1, "temperature": 0}
    status = await _probe(session, f"{root_url}/v1/completions", {**base, "prompt": "Hello"},
                          timeout_s, api_key)
    if status is not None and 400 <= status < 500:
        messages = [{"role": "user", "content": "Hello"}]
        status = await _probe(session, f"{root_url}/v1/chat/completions",
                              {**base, "messages": messages}, timeout_s, api_key)
    return status == 200


async def _probe(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    timeout_s: float,
    api_key: str | None,
) -> int | None:
    """The status of one probe request (200 only with choices in the answer); None when it
    could not be made or read."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    try:
        async with session.post(
            url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            if resp.status != 200:
                return resp.status
            data = await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ConnectionError, ValueError):
        return None
    return 200 if isinstance(data, dict) and data.get("choices") else None


class ManagedServer:
    """One vLLM server process tree, owned by this object.

    `async with ManagedServer(config) as server` starts it and waits until ready (stopping it again
    if that fails) and always stops it on exit. start/wait_ready/stop/restart can also be called
    one by one; restart reuses the port, so clients keep their base_url.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._port = config.port
        self._log_file = config.log_file
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = False
        self._log_offset = 0
        self.started_at: float | None = None
        self.leftover_pids: list[int] = []

    # -- properties -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the port is chosen when the server starts")
        return self._port

    @property
    def base_url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}"

    @property
    def model(self) -> str:
        """The name to send as `model` in requests."""
        return self.config.served_name

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    @property
    def log_file(self) -> Path | None:
        return self._log_file

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return read_log_tail(self._log_file, lines) if self._log_file else ""

    def command(self) -> list[str]:
        return build_vllm_command(self.config, self.port)

    def info(self) -> ServerInfo:
        """What the server-info file says of this (started) server."""
        if self.pid is None or self.started_at is None:
            raise RuntimeError("the server has not been started")
        started = datetime.fromtimestamp(self.started_at, tz=UTC)
        return ServerInfo(
            base_url=self.base_url,
            model=self.model,
            pid=self.pid,
            tp=self.config.tensor_parallel_size,
            dp=self.config.data_parallel_size,
            started_at=started.isoformat(timespec="seconds"),
            log_file=str(self.log_file or ""),
            hostname=socket.gethostname(),
            max_num_seqs=self.config.max_sequences,
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Launch the server in its own session with its output appended to the log file."""
        if self.is_running():
            raise RuntimeError(f"server already running (pid {self.pid})")
        if self._port is None:
            self._port = pick_free_port(self.config.host)
        elif port_in_use(self.config.host, self._port):
            raise ServerStartError(
                f"port {self._port} on {self.config.host} is already in use; "
                "choose another port or --port auto"
            )
        argv = resolve_launcher(self.command())
        if self._log_file is None:
            self._log_file = _default_log_file(self.config, self._port)
        self._log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self._log_file, "ab") as log:
            log.write(f"=== rollouts: starting: {shlex.join(argv)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", **self.config.env}  # nodes are often offline
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_parent_death_signal(),
                env=env,
            )
        self._stopped = False
        self.started_at = time.time()
        logger.info("started vLLM (pid %s) on %s, log %s", self.pid, self.base_url, self._log_file)

    async def wait_ready(self) -> None:
        """Return once /health is 200 and a 1-token completion succeeds; on early exit, a fatal
        log line or the deadline, stop the whole group and raise ServerStartError."""
        if self._proc is None or self._log_file is None:
            raise RuntimeError("start() the server before waiting for it")
        # A server that is not ready has no requests to finish, and vLLM 0.24 ignored SIGTERM for
        # 30 s early in its start on our H100: so a short grace before SIGKILL.
        grace = min(FAILED_START_GRACE_S, self.config.stop_timeout)
        try:
            await self._poll_until_ready()
        except ServerStartError as exc:
            await self.stop(grace=grace)
            if self.leftover_pids:
                raise ServerStartError(
                    f"{exc}\nProcesses {self.leftover_pids} of it survived SIGKILL."
                ) from exc
            raise
        except BaseException:  # cancelled (Ctrl-C while starting)
            await self.stop(grace=grace)
            raise
        if self.config.info_file is not None:
            write_server_info(self.config.info_file, self.info())

    async def _poll_until_ready(self) -> None:
        assert self._log_file is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.ready_timeout
        watcher = _LogWatcher(self._log_file, self._log_offset)
        async with aiohttp.ClientSession() as session:
            while True:
                self._raise_if_failed(watcher)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ServerStartError(
                        f"vLLM was not ready after {self.config.ready_timeout:g}s; killed it. "
                        f"Log {self._log_file} ends with:\n{self.log_tail()}"
                    )
                if await self._is_ready(session, remaining):
                    return
                await asyncio.sleep(min(READY_POLL_S, max(0.0, deadline - loop.time())))

    def _raise_if_failed(self, watcher: _LogWatcher) -> None:
        code = self.returncode
        fatal = watcher.fatal_line()
        if code is not None:
            raise ServerStartError(
                f"vLLM exited with status {code} while starting. "
                f"Log {self._log_file} ends with:\n{self.log_tail()}"
            )
        if fatal is not None:
            raise ServerStartError(
                f"vLLM failed while starting: {fatal}\nLog {self._log_file} ends with:\n"
                f"{self.log_tail()}"
            )

    async def _is_ready(self, session: aiohttp.ClientSession, remaining: float) -> bool:
        try:
            timeout = aiohttp.ClientTimeout(total=min(HEALTH_TIMEOUT_S, remaining))
            async with session.get(f"{self.base_url}/health", timeout=timeout) as resp:
                if resp.status != 200:
                    return False
            return await self._probe_completion(session, min(PROBE_TIMEOUT_S, remaining))
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def _probe_completion(self, session: aiohttp.ClientSession, timeout_s: float) -> bool:
        return await probe_completion(session, self.base_url, self.model, timeout_s)

    async def stop(self, *, grace: float | None = None) -> None:
        """TERM the whole process group, wait `grace` (default stop_timeout), KILL what is left,
        and check that no process of it remains. Removes the info file. Safe to call twice: a
        group already confirmed gone is not signalled again."""
        if self.config.info_file is not None:
            remove_server_info(self.config.info_file)
        if self._proc is None or self._stopped:
            return
        term_timeout = self.config.stop_timeout if grace is None else grace
        left = await stop_group(self._proc, term_timeout=term_timeout)
        self.leftover_pids = left
        self._stopped = not left
        if left:
            logger.error("processes of the vLLM server survived SIGKILL: %s", left)

    async def restart(self, *, grace: float | None = None) -> None:
        """Stop (if needed; SIGTERM grace as for `stop`), start again on the same port and wait
        until ready."""
        await self.stop(grace=grace)
        await self.start()
        await self.wait_ready()

    async def __aenter__(self) -> ManagedServer:
        await self.start()
        await self.wait_ready()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A Ctrl-C that cancels the caller must not cut the stop short and leave GPUs held.
        stopping = asyncio.ensure_future(self.stop())
        try:
            await asyncio.shield(stopping)
        except asyncio.CancelledError:
            await stopping
            raise

    def __repr__(self) -> str:
        state = "running" if self.is_running() else f"returncode={self.returncode}"
        return f"ManagedServer(model={self.model!r}, port={self._port}, pid={self.pid}, {state})"


async def serve_until_stopped(
    configs: Sequence[ServerConfig],
    on_ready: Callable[[list[ManagedServer]], None],
    *,
    info_file: Path | None = None,
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
) -> list[ManagedServer]:
    """Start the servers one after another (each once the one before serves: replicas that
    share a GPU must not measure its free memory while another loads), write info_file and call
    on_ready once all serve, then keep them until one of signals arrives (a clean stop) or one
    dies (ServerUnavailable with its log tail). Every process group is stopped either way, also
    when a signal comes while they are still starting."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in signals:
        loop.add_signal_handler(sig, stop_requested.set)
    servers = [ManagedServer(config) for config in configs]
    try:
        for server in servers:
            await server.start()
            if not await _first_of(server.wait_ready(), stop_requested):
                return servers
        if info_file is not None:
            write_server_info(info_file, group_info(servers))
        on_ready(servers)
        while not stop_requested.is_set() and all(s.is_running() for s in servers):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop_requested.wait(), timeout=WATCH_POLL_S)
        if not stop_requested.is_set():
            dead = next(s for s in servers if not s.is_running())
            raise ServerUnavailable(
                f"vLLM exited with status {dead.returncode} while serving. "
                f"Log {dead.log_file} ends with:\n{dead.log_tail()}"
            )
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if info_file is not None:
            remove_server_info(info_file)
        await asyncio.gather(*(server.stop() for server in servers))
    return servers


def group_info(servers: Sequence[ManagedServer]) -> ServerInfo:
    """The info of one server, or of replicas: the first's, listing every base URL and pid."""
    first = servers[0].info()
    if len(servers) == 1:
        return first
    return dataclasses.replace(
        first,
        base_urls=tuple(s.base_url for s in servers),
        pids=tuple(s.pid for s in servers if s.pid is not None),
    )


async def _first_of(work: Awaitable[None], stop_requested: asyncio.Event) -> bool:
    """Run work unless stop_requested is set first (then cancel it): True when work finished."""
    work_task = asyncio.ensure_future(work)
    stop_task = asyncio.ensure_future(stop_requested.wait())
    done, _ = await asyncio.wait({work_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    for task in (work_task, stop_task):
        if task not in done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if work_task in done:
        work_task.result()  # raise the start error, if any
        return True
    return False
