"""The generation engine: prompts × N samples through backends into a durable store.

Flow: a producer streams prompts, skips samples already on disk, and feeds a bounded queue; a fixed
pool of workers takes work units from it (`max_concurrent` of them, or with `auto` enough for the
servers' adaptive limits, rollouts.concurrency), so requests in flight never exceed that
bound and memory does not grow with the dataset. Each worker routes its request (rollouts.router),
retries what may succeed later (rollouts.client's policy, through tenacity), and appends the
finished samples to the store's write-ahead log before they count. A request out of retries
becomes error rows and the run goes on; every server gone for good stops the run
(ServerUnavailable), and rerunning the same command resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import tenacity
from asyncio_throttle import Throttler
from tqdm import tqdm

from rollouts.client import DEFAULT_MAX_ATTEMPTS, RequestError, backoff_delay
from rollouts.concurrency import (
    AUTO,
    FALLBACK_REQUESTS,
    AdaptiveLimits,
    MaxConcurrent,
    auto_workers,
)
from rollouts.dataset import (
    Dataset,
    PromptRecord,
    input_identity,
    iter_prompts,
    load_datasets,
    reuse_note,
)
from rollouts.errors import UserInputError
from rollouts.io import json_columns, write_json_atomic
from rollouts.router import HealthCheck, Router
from rollouts.store import DoneIndex, RolloutStore, output_schema, state_dir_for, storage_errors
from rollouts.types import Backend, CompletionBatch, SamplingParams

SamplesPerRequest = Literal["n", "1"]
OutputFormat = Literal["long", "wide"]
MAX_SAMPLES_PER_PROMPT = 4096
PROGRESS_INTERVAL_S = 0.5
LOG_PROGRESS_INTERVAL_S = 30.0
# The summary file is rewritten this often while running, with the last PROGRESS_HISTORY counts.
SUMMARY_REFRESH_S = float(os.environ.get("ROLLOUTS_SUMMARY_REFRESH_S", "10"))
PROGRESS_HISTORY = 13


@dataclass(frozen=True, kw_only=True)
class GenerateConfig:
    """Everything one `rollouts generate` run needs, validated before any work."""

    inputs: tuple[str, ...]
    output: Path
    model: str
    n: int = 1
    params: SamplingParams = field(default_factory=SamplingParams)
    seed: int = 0
    samples_per_request: SamplesPerRequest = "n"
    max_concurrent: MaxConcurrent = AUTO  # a fixed number of requests, or per-server adaptive
    max_rps: float | None = None
    prompt_key: str = "prompt"
    system_prompt: str | None = None
    output_format: OutputFormat = "long"
    overwrite: bool = False
    retry_errors: bool = False
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    server_wait_s: float = 600.0
    request_timeout_s: float | None = None  # silence limit per request; None: from max_tokens
    stall_timeout_s: float = 120.0  # no progress this long with requests in flight: restart/eject
    progress: bool = True
    dataset_name: str | None = None  # a run config's `name:` for its one input file
    limit: int | None = None  # the first N prompts of each input (a quick try); resumable later

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise UserInputError(f"--limit must be at least 1, got {self.limit}")
        if not 1 <= self.n <= MAX_SAMPLES_PER_PROMPT:
            raise UserInputError(f"--n must be between 1 and {MAX_SAMPLES_PER_PROMPT}, got {self.n}")
        if self.max_concurrent != AUTO and self.max_concurrent < 1:
            raise UserInputError("--max-concurrent must be at least 1")
        if self.max_rps is not None and self.max_rps <= 0:
            raise UserInputError("--max-rps must be positive")
        if self.max_attempts < 1:
            raise UserInputError("--max-attempts must be at least 1")
        if self.stall_timeout_s < 0:
            raise UserInputError("--stall-timeout must be >= 0 seconds (0 turns the watchdog off)")
        if self.samples_per_request not in ("n", "1"):
            raise UserInputError("--samples-per-request must be 'n' or '1'")

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same run: resuming with anything else here is refused."""
        return {
            "model": self.model,
            "n": self.n,
            "seed": self.seed,
            "samples_per_request": self.samples_per_request,
            "prompt_key": self.prompt_key,
            "system_prompt": self.system_prompt,
            "sampling": {**asdict(self.params), "stop": list(self.params.stop)},
        }

    def config_hash(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def sample_seed(run_seed: int, prompt_id: str, sample_idx: int) -> int:
    """Per-sample seed: reproducible for one sample alone, different across samples."""
    digest = hashlib.sha256(f"{run_seed}:{prompt_id}:{sample_idx}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class WorkUnit:
    """One request: some samples of one prompt."""

    record: PromptRecord
    sample_indices: list[int]
    seed: int | None


def work_units(
    record: PromptRecord, missing: list[int], config: GenerateConfig
) -> list[WorkUnit]:
    if config.samples_per_request == "1":
        return [
            WorkUnit(record, [i], sample_seed(config.seed, record.prompt_id, i)) for i in missing
        ]
    # N samples in one request go unseeded: vLLM samples every seeded sequence with its own
    # generator, one sequence at a time, which cost 20-30% of throughput in our H100 runs.
    return [WorkUnit(record, missing, None)]


def unseeded_notice(config: GenerateConfig, option: str = "--samples-per-request 1") -> str | None:
    """What to say at start when a seed was asked for but samples go unseeded (n per request)."""
    if config.samples_per_request != "n" or config.params.temperature == 0:
        return None
    return (
        f"seed {config.seed} is not sent: samples go {config.n} per request, unseeded (faster), "
        f"so they are not reproducible one by one; pass {option} to give each sample its own seed"
    )


@dataclass
class RunStats:
    """Counters of this invocation (not of earlier, resumed ones)."""

    started: float = field(default_factory=time.monotonic)
    samples: int = 0
    requests: int = 0
    retries: int = 0
    error_samples: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors_by_kind: Counter[str] = field(default_factory=Counter)
    quarantined_prompts: dict[str, dict[str, Any]] = field(default_factory=dict)  # poison

    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def as_dict(self) -> dict[str, Any]:
        elapsed = self.elapsed()
        return {
            "elapsed_s": round(elapsed, 3),
            "samples": self.samples,
            "requests": self.requests,
            "retries": self.retries,
            "error_samples": self.error_samples,
            "errors_by_kind": dict(self.errors_by_kind),
            "quarantined_prompts": list(self.quarantined_prompts.values()),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "samples_per_s": round(self.samples / elapsed, 3),
            "requests_per_s": round(self.requests / elapsed, 3),
            "completion_tokens_per_s": round(self.completion_tokens / elapsed, 3),
        }


@dataclass(frozen=True)
class GenerateResult:
    output: Path
    summary_path: Path
    summary: dict[str, Any]

    @property
    def error_rows(self) -> int:
        return int(self.summary["output"]["error_rows"])


def summary_path_for(output: Path) -> Path:
    return output.with_name(output.name + ".summary.json")


class Generator:
    """Runs one GenerateConfig against a list of backends (see `generate`)."""

    def __init__(
        self,
        config: GenerateConfig,
        datasets: list[Dataset],
        store: RolloutStore,
        router: Router,
        model_label: str,
        slots: asyncio.Semaphore | None = None,
        progress_position: int = 0,
    ) -> None:
        self.config = config
        self.slots = slots
        self.progress_position = progress_position
        self.datasets = datasets
        self.store = store
        self.router = router
        self.model_label = model_label
        self.stats = RunStats()
        self.throttler = _throttler(config.max_rps)
        # Never more workers than requests: idle ones cost memory, many units share a server.
        self.workers = min(worker_count(config, router), max(1, requests_in(config, datasets)))
        self.queue: asyncio.Queue[WorkUnit | None] = asyncio.Queue(maxsize=2 * self.workers)
        self._uncommitted: list[dict[str, Any]] = []
        self._commit_scheduled = False
        self._commit_error: Exception | None = None

    async def run(self, done: DoneIndex) -> None:
        total = sum(d.num_prompts for d in self.datasets) * self.config.n
        already = done.count()
        label = self.datasets[0].name if len(self.datasets) == 1 else None
        with _progress_bar(
            total, already, self.config.progress, label, self.progress_position
        ) as bar:
            ticker = asyncio.create_task(self._tick(bar, already))
            refresher = asyncio.create_task(self._keep_summary_fresh(already))
            try:
                await self._run_workers(done)
            finally:
                for task in (ticker, refresher):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                self._refresh(bar, already)

    async def _run_workers(self, done: DoneIndex) -> None:
        tasks = [asyncio.create_task(self._producer(done))]
        tasks += [asyncio.create_task(self._worker()) for _ in range(self.workers)]
        try:
            finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in finished:
                task.result()  # re-raise the first fatal error
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._commit()  # finished rows still waiting for their group commit
        if self._commit_error is not None:
            raise self._commit_error  # a group commit that failed after the last worker ended

    async def _producer(self, done: DoneIndex) -> None:
        for dataset in self.datasets:
            for record in iter_prompts(dataset, self.config.system_prompt):
                missing = done.missing(record.prompt_id, self.config.n)
                for unit in work_units(record, missing, self.config) if missing else ():
                    await self.queue.put(unit)
        for _ in range(self.workers):
            await self.queue.put(None)

    async def _worker(self) -> None:
        while (unit := await self.queue.get()) is not None:
            self._commit_later(await self._sample(unit))

    def _commit_later(self, rows: list[dict[str, Any]]) -> None:
        """Group commit: rows finished in one event-loop turn share one write and flush, so the
        write-ahead log costs one syscall per turn instead of one per request."""
        if self._commit_error is not None:
            raise self._commit_error  # the log could not be written (disk full?): stop the run
        self._uncommitted.extend(rows)
        if not self._commit_scheduled:
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_commit)

    def _scheduled_commit(self) -> None:
        # Runs as a loop callback, where an exception would only be logged: keep it for the
        # workers to raise instead.
        try:
            self._commit()
        except Exception as exc:
            self._commit_error = exc

    def _commit(self) -> None:
        self._commit_scheduled = False
        rows, self._uncommitted = self._uncommitted, []
        if rows:
            self.store.append(rows)
            self.stats.samples += len(rows)

    async def _sample(self, unit: WorkUnit) -> list[dict[str, Any]]:
        """One work unit to rows: success rows, or error rows once retries are spent."""
        started = time.monotonic()
        try:
            # The first attempt runs outside tenacity: most requests succeed, and the retry
            # machinery costs more than the request itself against a fast server.
            batch, endpoint = await self._attempt(unit)
            attempts = 1
        except RequestError as first:
            if not first.retryable or self.config.max_attempts == 1:
                return self._error_rows(unit, first, 1, time.monotonic() - started)
            try:
                batch, endpoint, attempts = await self._retry(unit, first)
            except _RetriesExhausted as spent:
                return self._error_rows(unit, spent.error, spent.attempts, time.monotonic() - started)
        self.stats.requests += 1
        return self._rows(unit, batch, endpoint, attempts, time.monotonic() - started)

    async def _retry(
        self, unit: WorkUnit, first: RequestError
    ) -> tuple[CompletionBatch, str, int]:
        """Attempts 2..max_attempts through tenacity, after the backoff the first failure asks."""
        attempts = 1
        await asyncio.sleep(backoff_delay(1, first.retry_after))
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.config.max_attempts - 1),
            wait=_wait_for_retry,
            retry=tenacity.retry_if_exception(_is_retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    self.stats.retries += 1
                    batch, endpoint = await self._attempt(unit)
        except RequestError as exc:
            raise _RetriesExhausted(exc, attempts) from exc
        return batch, endpoint, attempts

    async def _attempt(self, unit: WorkUnit) -> tuple[CompletionBatch, str]:
        async with self.slots or contextlib.nullcontext():
            return await self._attempt_in_slot(unit)

    async def _attempt_in_slot(self, unit: WorkUnit) -> tuple[CompletionBatch, str]:
        if self.throttler is not None:
            await self.throttler.acquire()
        sequences = len(unit.sample_indices)
        endpoint = await self.router.acquire(unit.record.prompt_id, sequences)
        try:
            batch = await endpoint.backend.complete(
                unit.record.prompt,
                n=len(unit.sample_indices),
                params=self.config.params,
                seed=unit.seed,
            )
        except RequestError as exc:
            self.router.record_failure(endpoint, unreachable=exc.endpoint_down)
            raise
        finally:
            self.router.release(endpoint, sequences)
        self.router.record_success(endpoint)
        return batch, endpoint.name

    def _base_row(self, unit: WorkUnit, sample_idx: int) -> dict[str, Any]:
        params = self.config.params
        record = unit.record
        return {
            **record.row,
            "dataset": record.dataset,
            "data_idx": record.data_idx,
            "prompt_id": record.prompt_id,
            "sample_idx": sample_idx,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "seed": unit.seed,
            "model": self.model_label,
            "config_hash": self.store.config_hash,
        }

    def _rows(
        self, unit: WorkUnit, batch: CompletionBatch, endpoint: str, attempts: int, latency: float
    ) -> list[dict[str, Any]]:
        self.stats.prompt_tokens += batch.prompt_tokens or 0
        known = [c.completion_tokens for c in batch.completions]
        self.stats.completion_tokens += (
            batch.completion_tokens_total
            if batch.completion_tokens_total is not None
            else sum(t or 0 for t in known)
        )
        rows = []
        for sample_idx, completion in zip(unit.sample_indices, batch.completions, strict=True):
            row = self._base_row(unit, sample_idx)
            row.update(
                response=completion.text,
                finish_reason=completion.finish_reason,
                prompt_tokens=batch.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                latency_s=round(latency, 4),
                endpoint=endpoint,
                attempts=attempts,
                error=None,
                error_kind=None,
            )
            rows.append(row)
        return rows

    def _error_rows(
        self, unit: WorkUnit, exc: RequestError, attempts: int, latency: float
    ) -> list[dict[str, Any]]:
        self.stats.error_samples += len(unit.sample_indices)
        self.stats.errors_by_kind[exc.kind] += len(unit.sample_indices)
        if exc.kind == "poison":  # rollouts.quarantine: the prompt crashed the server each time
            record = unit.record
            self.stats.quarantined_prompts[record.prompt_id] = {
                "prompt_id": record.prompt_id, "dataset": record.dataset, "data_idx": record.data_idx
            }
        rows = []
        for sample_idx in unit.sample_indices:
            row = self._base_row(unit, sample_idx)
            row.update(
                response=None,
                finish_reason=None,
                latency_s=round(latency, 4),
                attempts=attempts,
                error=f"{exc.kind}: {exc.message}",
                error_kind=exc.kind,
            )
            rows.append(row)
        return rows

    async def _keep_summary_fresh(self, already: int) -> None:
        """Rewrite the summary beside the output while running, so that `rollouts status` can
        tell progress, rate and liveness from another shell (rollouts.status)."""
        history: list[tuple[float, int]] = []
        while True:
            done = already + self.stats.samples
            history = [*history, (round(time.time(), 3), done)][-PROGRESS_HISTORY:]
            summary = _summary(self.config, self.datasets, self, self.router, done,
                               dict(self.stats.errors_by_kind))
            del summary["finished_at"]
            summary.update(state="running", progress={
                "pid": os.getpid(), "host": socket.gethostname(), "history": history})
            with contextlib.suppress(OSError):  # a progress report never stops the run
                write_json_atomic(summary, summary_path_for(self.config.output))
            await asyncio.sleep(SUMMARY_REFRESH_S)

    async def _tick(self, bar: tqdm, already: int) -> None:
        # A terminal gets a live bar; a log file (SLURM, nohup) a line every so often.
        interval = PROGRESS_INTERVAL_S if sys.stderr.isatty() else LOG_PROGRESS_INTERVAL_S
        while True:
            await asyncio.sleep(interval)
            self._refresh(bar, already)

    def _refresh(self, bar: tqdm, already: int) -> None:
        elapsed = self.stats.elapsed()
        bar.n = already + self.stats.samples
        bar.set_postfix_str(
            f"req/s={self.stats.requests / elapsed:.1f} "
            f"tok/s={self.stats.completion_tokens / elapsed:.0f} "
            f"in_flight={self.router.in_flight}{self._limits_postfix()} retries={self.stats.retries} "
            f"errors={self.stats.error_samples}",
            refresh=True,
        )


    def _limits_postfix(self) -> str:
        limits = self.router.limits
        if not limits:
            return ""
        return " limit_seqs=" + ",".join(str(limit.limit) for limit in limits.values())


def requests_in(config: GenerateConfig, datasets: list[Dataset]) -> int:
    """The most requests a job sends (every sample missing): one per prompt with n per
    request, else one per sample."""
    prompts = sum(d.num_prompts for d in datasets)
    return prompts if config.samples_per_request == "n" else prompts * config.n


def worker_count(config: GenerateConfig, router: Router) -> int:
    """A fixed --max-concurrent is the pool; `auto` fills the servers' adaptive limits, or runs
    the fallback number of requests where there are none (the in-process backend)."""
    if config.max_concurrent != AUTO:
        return config.max_concurrent
    per_request = config.n if config.samples_per_request == "n" else 1
    if router.limits is None:
        return FALLBACK_REQUESTS
    return auto_workers(len(router.limits), per_request)


class _RetriesExhausted(Exception):
    def __init__(self, error: RequestError, attempts: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.attempts = attempts


def _is_retryable(exc: BaseException) -> bool:
    # Only our own request errors: never CancelledError or a programming error.
    return isinstance(exc, RequestError) and exc.retryable


def _wait_for_retry(state: tenacity.RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    retry_after = exc.retry_after if isinstance(exc, RequestError) else None
    # Tenacity counts from the second attempt (the first ran outside it).
    return backoff_delay(state.attempt_number + 1, retry_after)


def _throttler(max_rps: float | None) -> Throttler | None:
    if max_rps is None:
        return None
    burst = max(1, int(max_rps))
    return Throttler(rate_limit=burst, period=burst / max_rps)


@contextlib.contextmanager
def _progress_bar(
    total: int, initial: int, enabled: bool, label: str | None, position: int
) -> Any:
    bar = tqdm(
        total=total, initial=initial, unit="sample", disable=not enabled, dynamic_ncols=True,
        mininterval=PROGRESS_INTERVAL_S if sys.stderr.isatty() else LOG_PROGRESS_INTERVAL_S,
        smoothing=0.1, desc=label, position=position,
    )
    try:
        yield bar
    finally:
        bar.close()


@dataclass
class PreparedRun:
    """A run whose inputs are validated and whose output is locked, before any backend starts."""

    config: GenerateConfig
    datasets: list[Dataset]
    store: RolloutStore


def load_run_datasets(config: GenerateConfig) -> list[Dataset]:
    """The run's inputs, validated whole, then cut to the first `limit` prompts of each. The
    inputs' identity stays the whole files', so the same command without --limit resumes."""
    datasets = load_datasets(config.inputs, config.prompt_key, config.system_prompt, config.dataset_name)
    if config.limit is None:
        return datasets
    return [d.slice(0, min(config.limit, d.num_prompts)) for d in datasets]


def describe_run(config: GenerateConfig, where: str) -> list[str]:
    """What `generate` would do (--dry-run): inputs, samples, requests, what is on disk already.
    Reads the inputs and the output's files only: claims nothing, starts nothing."""
    from rollouts.status import read_status

    datasets = load_run_datasets(config)
    lines = [f"would sample {config.n} per prompt with {config.model or 'the served model'} "
             f"({where}), temperature {config.params.temperature}, top_p {config.params.top_p}, "
             f"max_tokens {config.params.max_tokens}"]
    for d in datasets:
        note = f"; {reuse_note(d)}" if d.set_aside else ""
        lines.append(f"  {d.name}: {d.num_prompts} prompt(s) -> {d.num_prompts * config.n} "
                     f"sample(s) [{d.path}]{note}")
    samples = sum(d.num_prompts for d in datasets) * config.n
    lines.append(f"total: {samples} sample(s) in at most {requests_in(config, datasets)} "
                 f"request(s) -> {config.output}")
    if state_dir_for(config.output).is_dir():
        done = read_status(config.output).done
        lines.append(f"{done} sample(s) already on disk: the run resumes"
                     + (" (--overwrite discards them)" if not config.overwrite else
                        "; --overwrite would discard them"))
    return lines


@contextlib.contextmanager
def prepared_run(
    config: GenerateConfig, datasets: list[Dataset] | None = None
) -> Iterator[PreparedRun]:
    """Validate every input and claim the output (lock, config check, crash recovery).

    Everything that can be wrong with the user's input fails here, before a model loads.
    `datasets` already validated (a SLURM work unit's slice of them) are not read again."""
    if datasets is None:
        datasets = load_run_datasets(config)
    for note in filter(None, map(reuse_note, datasets)):
        print(f"rollouts: {note}", file=sys.stderr)
    schema = output_schema(d.schema for d in datasets)
    as_text = json_columns(schema)
    if as_text:
        print(f"rollouts: column(s) {', '.join(as_text)} hold {{}} (an empty object), which "
              f"parquet cannot store; written as JSON text (json.loads gives the values back)",
              file=sys.stderr)
    store = RolloutStore(
        config.output,
        schema=schema,
        config=config.identity(),
        config_hash=config.config_hash(),
        inputs=[input_identity(d) for d in datasets],
        overwrite=config.overwrite,
    )
    fresh = not store.state_dir.exists()
    try:
        with store:
            yield PreparedRun(config, datasets, store)
    except BaseException:
        # A run that failed before its first sample (a model that would not load) leaves no
        # claim behind: the corrected command, with another model, is not refused as a resume.
        if fresh and store.state_dir.is_dir() and store.holds_no_rows():
            shutil.rmtree(store.state_dir, ignore_errors=True)
        raise


async def generate(
    run: PreparedRun,
    backends: list[Backend],
    health_check: HealthCheck,
    *,
    model_label: str | None = None,
    slots: asyncio.Semaphore | None = None,
    progress_position: int = 0,
    limits: AdaptiveLimits | None = None,
) -> GenerateResult:
    """Run one prepared job to completion (or resume it); write OUT and its summary.

    `slots` bounds requests in flight across several jobs sharing one server."""
    config, store = run.config, run.store
    done = store.done_index(retry_errors=config.retry_errors)
    router = Router(
        backends, health_check, server_wait_s=config.server_wait_s,
        limits=limits.limits if limits else None,
    )
    async with router:
        await router.wait_until_reachable()
        generator = Generator(
            config, run.datasets, store, router, model_label or config.model,
            slots=slots, progress_position=progress_position,
        )
        await generator.run(done)
    rows, errors_by_kind = store.finalize(wide=config.output_format == "wide")
    summary = _summary(config, run.datasets, generator, router, rows, errors_by_kind)
    summary["concurrency"] = {
        "max_concurrent": config.max_concurrent,
        "workers": generator.workers,
        "servers": limits.summary() if limits else [],
    }
    path = summary_path_for(config.output)
    with storage_errors(path.parent):
        write_json_atomic(summary, path)
    return GenerateResult(output=config.output, summary_path=path, summary=summary)


def _summary(
    config: GenerateConfig,
    datasets: list[Dataset],
    generator: Generator,
    router: Router,
    rows: int,
    errors_by_kind: dict[str, int],
) -> dict[str, Any]:
    return {
        "output": {
            "path": str(config.output),
            "format": config.output_format,
            "rows": rows,
            "error_rows": sum(errors_by_kind.values()),
            "errors_by_kind": errors_by_kind,
        },
        "datasets": [
            {"name": d.name, "path": str(d.path), "prompts": d.num_prompts} for d in datasets
        ],
        "expected_rows": sum(d.num_prompts for d in datasets) * config.n,
        "config": config.identity(),
        "config_hash": config.config_hash(),
        "this_run": generator.stats.as_dict(),
        "endpoints": [
            {
                "name": e.name,
                "requests": e.requests,
                "failures": e.failures,
                "ejections": e.ejections,
                "readmissions": e.readmissions,
            }
            for e in router.endpoints
        ],
        "state": "finished",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
