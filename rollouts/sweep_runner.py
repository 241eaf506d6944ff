"""Running a sweep's groups on managed servers kept between checkpoints (hot swap).

Groups run in order. When the next group needs the same server settings and its checkpoint the
same architecture and tokenizer (rollouts.hotswap.swap_identity), the running server's weights are
swapped in place instead of a restart; the swap is checked (rollouts.hotswap) and falls back to a
restart, saying so. While one group generates, the next group's checkpoint is converted (and its
probe reference computed) in a separate process, so the GPU does not wait for the CPU.

Each group's load is recorded in `groups/GROUP.load.json` (how: start, swap or restart; seconds;
why a swap was not used), read into the sweep's manifest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollouts.errors import RolloutsError
from rollouts.hotswap import (
    DEV_MODE_ENV,
    ProbeReference,
    SwapFailed,
    dev_mode_allowed,
    probe_answers,
    probe_reference,
    swap_identity,
    swap_weights,
    verify_answers,
)

if TYPE_CHECKING:
    import aiohttp

    from rollouts.launch import Connection
    from rollouts.runconfig import RunPlan

LOAD_SUFFIX = ".load.json"


def echo(message: str) -> None:
    import sys

    print(f"rollouts sweep: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class GroupRun:
    """One group's pending work: its name and its `rollouts run` config."""

    name: str
    config_path: Path


@dataclass(frozen=True)
class Load:
    """How a group's model came to be served."""

    how: str  # start | swap | restart | own (servers it does not manage) | failed
    seconds: float | None = None
    note: str | None = None
    weights: str | None = None

    def label(self) -> str:
        text = self.how if self.seconds is None else f"{self.how} {self.seconds:.2f}s"
        return f"{text} ({self.note})" if self.note else text


def load_path(groups_dir: Path, name: str) -> Path:
    return groups_dir / f"{name}{LOAD_SUFFIX}"


def read_load(groups_dir: Path, name: str) -> str | None:
    path = load_path(groups_dir, name)
    if not path.is_file():
        return None
    return str(json.loads(path.read_text(encoding="utf-8")).get("label"))


def _write_load(groups_dir: Path, name: str, load: Load) -> None:
    from rollouts.io import write_json_atomic

    write_json_atomic({**dataclasses.asdict(load), "label": load.label()},
                      load_path(groups_dir, name))


# -- converting ahead ---------------------------------------------------------------------------


def prepare_model(
    model: str, base_model: str | None, with_reference: bool
) -> tuple[str, ProbeReference | None]:
    """The servable folder of `model` (converted through the cache when needed) and, for a
    swap, its probe reference."""
    from rollouts.checkpoint import resolve_model

    served = resolve_model(model, base_model)
    return served, probe_reference(served) if with_reference else None


class Prefetcher:
    """Conversions run in a child process (`python -m rollouts.sweep_runner MODEL BASE REF`),
    started ahead of need, so the CPU work neither waits for nor slows the generating loop. A
    child dies with this process (PR_SET_PDEATHSIG), so nothing outlives a killed sweep."""

    def __init__(self, with_reference: bool) -> None:
        self.with_reference = with_reference
        self._tasks: dict[tuple[str, str | None], asyncio.Task[tuple[str, ProbeReference | None]]] = {}

    def start(self, model: str, base_model: str | None) -> None:
        key = (model, base_model)
        if key not in self._tasks:
            self._tasks[key] = asyncio.ensure_future(self._prepare(model, base_model))

    async def result(self, model: str, base_model: str | None) -> tuple[str, ProbeReference | None]:
        self.start(model, base_model)
        return await self._tasks.pop((model, base_model))

    async def _prepare(self, model: str, base_model: str | None) -> tuple[str, ProbeReference | None]:
        import os
        import sys

        from server.vllm import _parent_death_signal

        here = str(Path(__file__).resolve().parents[1])  # this checkout, first on the child's path
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rollouts.sweep_runner", model, base_model or "",
            "1" if self.with_reference else "0",
            stdout=asyncio.subprocess.PIPE, preexec_fn=_parent_death_signal(),
            env={**os.environ, "PYTHONPATH": path},
        )
        try:
            out, _ = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        try:
            answer = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise RolloutsError(
                f"preparing {model} failed (status {process.returncode}; see the lines above)"
            ) from exc
        if "error" in answer:
            raise RolloutsError(answer["error"])
        reference = answer.get("reference")
        return str(answer["served"]), ProbeReference(
            tuple(reference["texts"]), tuple(reference["decisive"])) if reference else None

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()


def _prepare_main(argv: list[str]) -> int:
    """The child's side: one JSON line on stdout, the served folder and reference, or an error."""
    model, base_model, with_reference = argv[0], argv[1] or None, argv[2] == "1"
    try:
        served, reference = prepare_model(model, base_model, with_reference)
    except RolloutsError as exc:
        print(json.dumps({"error": str(exc).splitlines()[0]}), flush=True)
        return 1
    shown = dataclasses.asdict(reference) if reference else None
    print(json.dumps({"served": served, "reference": shown}), flush=True)
    return 0


# -- one server kept across groups --------------------------------------------------------------


class SweepServers:
    """The managed server(s) of consecutive groups: started once, swapped between checkpoints."""

    def __init__(self, session: aiohttp.ClientSession, hot_swap: bool) -> None:
        self.session = session
        self.hot_swap = hot_swap
        self._stack: contextlib.AsyncExitStack | None = None
        self.connection: Connection | None = None
        self._identity: str | None = None

    async def serve(self, plan: RunPlan, reference: ProbeReference | None) -> Load:
        """Make the servers serve `plan.model` (a servable folder), by a swap when possible."""
        identity = self._identity_of(plan)
        note = None
        if self.connection is not None and self.hot_swap and identity == self._identity:
            try:
                return await self._swap(plan, reference)
            except SwapFailed as exc:
                note = f"swap failed: {exc}; restarted the server"
                echo(f"{note}")
        elif self.connection is not None:
            note = "new server settings or architecture" if self.hot_swap else None
        started = time.monotonic()
        await self.close()
        await self._start(plan, identity)
        return Load("restart" if note and "swap failed" in note else "start",
                    time.monotonic() - started, note, plan.model)

    def _identity_of(self, plan: RunPlan) -> str:
        server = {k: v for k, v in plan.server.items() if k != "served_model_name"}
        settings = json.dumps({"server": server, "seed": plan.jobs[0].seed}, sort_keys=True,
                              default=str)
        return f"{settings}|{swap_identity(plan.model)}"

    async def _start(self, plan: RunPlan, identity: str) -> None:
        from rollouts.launch import connect_plan_servers

        self._stack = contextlib.AsyncExitStack()
        env = DEV_MODE_ENV if self.hot_swap else None
        self.connection = await self._stack.enter_async_context(
            connect_plan_servers(plan, self.session, env)
        )
        self._identity = identity

    async def _probe(self) -> list[str]:
        assert self.connection is not None
        server = self.connection.servers[0]
        return await probe_answers(self.session, server.base_url, server.model)

    async def _swap(self, plan: RunPlan, reference: ProbeReference | None) -> Load:
        assert self.connection is not None
        before = await self._probe()  # what the old weights answer
        started = time.monotonic()
        for server in self.connection.servers:
            await swap_weights(self.session, server.base_url, plan.model)
        seconds = time.monotonic() - started
        for server in self.connection.servers:
            # A restart by the supervisor from now on loads these weights.
            server.config = dataclasses.replace(server.config, model=plan.model)
        answers = await self._probe()
        why = verify_answers(answers, reference, before)
        if why is not None:
            raise SwapFailed(why)
        return Load("swap", seconds, None, plan.model)

    async def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self.connection = self._stack, None, None
            await stack.aclose()


# -- running the groups -------------------------------------------------------------------------


Batches = Callable[[], Awaitable[list[GroupRun]]]


def batches_of(runs: list[GroupRun]) -> Batches:
    """A batch source giving `runs` once, then nothing."""
    remaining = [list(runs)]

    async def next_batch() -> list[GroupRun]:
        return remaining.pop() if remaining else []

    return next_batch


async def run_groups(
    next_batch: Batches,
    groups_dir: Path,
    *,
    progress: bool,
    hot_swap: bool,
    on_done: Callable[[str, str | None], None],
) -> None:
    """The groups of every batch, in order, until a batch is empty; the managed server(s) stay
    up between batches (`rollouts sweep --watch` waits for checkpoints with them up).
    `on_done(name, error)` after each group (error: one line, or None)."""
    from rollouts.launch import http_session

    prefetch: Prefetcher | None = None
    session_stack = contextlib.AsyncExitStack()
    servers: SweepServers | None = None
    try:
        while runs := await next_batch():
            plans = {run.name: load_plan_quietly(run.config_path, progress) for run in runs}
            if servers is None:
                managed = [plans[r.name] for r in runs if _is_managed(plans[r.name])]
                swap = hot_swap and _swap_allowed(managed)
                prefetch = Prefetcher(with_reference=swap)
                concurrency = max((p.max_concurrent for p in plans.values()), key=_as_number)
                session = await session_stack.enter_async_context(http_session(concurrency))
                servers = SweepServers(session, swap)
            assert prefetch is not None
            await _run_batch(runs, plans, groups_dir, servers, prefetch, on_done)
    finally:
        if servers is not None:
            await servers.close()
        await session_stack.aclose()
        if prefetch is not None:
            await prefetch.close()


def load_plan_quietly(config_path: Path, progress: bool) -> RunPlan:
    from rollouts.runconfig import load_plan

    return load_plan(config_path, progress=progress)


def _is_managed(plan: RunPlan) -> bool:
    return not plan.base_urls and plan.backend != "hf"


def _swap_allowed(plans: list[RunPlan]) -> bool:
    hosts = {str(p.server.get("host") or "127.0.0.1") for p in plans}
    exposed = sorted(h for h in hosts if not dev_mode_allowed(h))
    if exposed:
        echo(f"hot swap off: the managed server listens on {', '.join(exposed)}, and vLLM's "
             "weight-swap endpoints are enabled only on loopback; each checkpoint restarts it")
        return False
    return True


async def _run_batch(
    runs: list[GroupRun],
    plans: dict[str, RunPlan],
    groups_dir: Path,
    servers: SweepServers,
    prefetch: Prefetcher,
    on_done: Callable[[str, str | None], None],
) -> None:
    from rollouts.launch import run_plan

    for index, run in enumerate(runs):
        plan = plans[run.name]
        for later in runs[index:index + 2]:  # this one, then the next one meanwhile
            if _is_managed(plans[later.name]):
                prefetch.start(plans[later.name].model, plans[later.name].base_model)
        try:
            if not _is_managed(plan):
                await run_plan(plan)
                _write_load(groups_dir, run.name, Load("own"))
            else:
                servable, load = await _serve(plan, servers, prefetch)
                _write_load(groups_dir, run.name, load)
                echo(f"{run.name}: {load.label()}")
                await run_plan(servable, servers.connection)
        except RolloutsError as exc:
            message = str(exc).splitlines()[0]
            echo(f"{run.name} failed: {message}")
            on_done(run.name, message)
            continue
        on_done(run.name, None)


async def _serve(
    plan: RunPlan, servers: SweepServers, prefetch: Prefetcher
) -> tuple[RunPlan, Load]:
    from rollouts.checkpoint import resolve_plan_model

    served, reference = await prefetch.result(plan.model, plan.base_model)
    servable = resolve_plan_model(plan)  # the finished conversion, from the cache
    assert servable.model == served, (servable.model, served)
    # After a swap, requests keep the first checkpoint's served name (vLLM keeps it); rows and
    # resume keys name this plan's checkpoint (its jobs' model), as after a start.
    load = await servers.serve(servable, reference)
    return servable, load


def _as_number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("inf")


if __name__ == "__main__":
    import sys

    sys.exit(_prepare_main(sys.argv[1:]))
