"""The `rollouts` command: a thin click layer over rollouts.engine and rollouts.launch."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from rollouts import __version__
from rollouts.checkpoint_cli import convert_checkpoint_command
from rollouts.clitools import EXIT_WITH_ERROR_ROWS, echo_err, handle_errors
from rollouts.concurrency import parse_max_concurrent
from rollouts.engine import GenerateConfig, GenerateResult, describe_run, unseeded_notice
from rollouts.errors import UserInputError
from rollouts.inspect_cli import show_command, status_command
from rollouts.model_ref import check_model_reference
from rollouts.sweep_cli import sweep_command
from rollouts.tiny_model import DEFAULT_TRAIN_STEPS
from rollouts.types import SamplingParams
from scoring.prepare_cli import prepare_group
from scoring.report_cli import report as report_command
from server.cli import serve
from server.info import ServerInfo
from server.replicas import parse_replicas
from server.vllm import ServerConfig
from slurm.cli import slurm as slurm_command

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
EXIT_INTERRUPTED = 130


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="rollouts")
def main() -> None:
    """Sample many responses per prompt from vLLM servers, durably and resumably.

    \b
    Three tools, joined by files:
      rollouts generate in.jsonl -o out.parquet --n 8  N samples per prompt
      score out.parquet -o scored.parquet              rewards, pass@k report
      filter-difficulty scored.parquet -o buckets/     prompts by pass rate
    \b
    Look at samples: rollouts show FILE; watch a run: rollouts status OUT.
    First time? bash scripts/demo.sh runs all three on a CPU in minutes.
    Help on each: rollouts COMMAND -h, score -h, filter-difficulty -h.
    """


def parse_extra_body(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserInputError(f"--extra-body is not valid JSON ({exc.msg}); pass a JSON object") from exc
    if not isinstance(value, dict):
        raise UserInputError("--extra-body must be a JSON object, e.g. '{\"ignore_eos\": true}'")
    return value


def sampling_params(
    temperature: float, top_p: float, max_tokens: int, stop: tuple[str, ...], extra_body: str | None
) -> SamplingParams:
    try:
        return SamplingParams(
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=tuple(stop),
            extra_body=parse_extra_body(extra_body),
        )
    except ValueError as exc:
        raise UserInputError(f"bad sampling option: {exc}") from exc


def managed_server_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options of the vLLM server that generate starts itself when given --model alone.

    They arrive in the command as one `managed` dict of ServerConfig fields."""
    options = [
        click.option("--tensor-parallel-size", "-tp", type=int, default=1, show_default=True,
                     help="Managed server: GPUs per model replica."),
        click.option("--data-parallel-size", "-dp", type=int, default=1, show_default=True,
                     help="Managed server: model replicas."),
        click.option("--gpu-memory-utilization", type=float, default=None,
                     help="Managed server: fraction of GPU memory for vLLM."),
        click.option("--max-model-len", type=int, default=None, help="Managed server: context length."),
        click.option("--vllm-arg", "vllm_args", multiple=True,
                     help="Managed server: extra `vllm serve` flags, e.g. --vllm-arg='--max-num-seqs 512'."),
        click.option("--server-log", type=click.Path(path_type=Path), default=None,
                     help="Managed server: log file."),
        click.option("--ready-timeout", type=float, default=1800.0, show_default=True,
                     help="Managed server: seconds to wait for it to be ready."),
        click.option("--max-restarts", type=int, default=3, show_default=True,
                     help="Managed server: restarts after it dies mid-run."),
        click.option("--replicas", default="auto", show_default=True,
                     help="Managed server: vLLM servers of the model on one GPU, each with its "
                          "share of the memory (auto: 2 when the weights are at most 5% of the "
                          "GPU's memory, else 1)."),
    ]
    names = ("tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization",
             "max_model_len", "vllm_args", "server_log", "ready_timeout", "max_restarts",
             "replicas")

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        managed = {name: kwargs.pop(name) for name in names}
        return func(*args, managed=managed, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def server_config_from(model: str, managed: dict[str, Any], seed: int) -> ServerConfig:
    extra = tuple(arg for text in managed["vllm_args"] for arg in shlex.split(text))
    return ServerConfig(
        model=model,
        tensor_parallel_size=managed["tensor_parallel_size"],
        data_parallel_size=managed["data_parallel_size"],
        gpu_memory_utilization=managed["gpu_memory_utilization"],
        max_model_len=managed["max_model_len"],
        extra_args=extra,
        log_file=managed["server_log"],
        ready_timeout=managed["ready_timeout"],
        seed=seed,
    )


def report(result: GenerateResult) -> None:
    """Print the output path (stdout) and a one-line summary (stderr); exit 3 on error rows."""
    summary = result.summary
    run = summary["this_run"]
    echo_err(
        f"wrote {summary['output']['rows']} rows to {result.output} "
        f"({run['samples']} new samples in {run['elapsed_s']:.1f}s, "
        f"{run['completion_tokens_per_s']:.0f} tok/s); summary: {result.summary_path}"
    )
    click.echo(str(result.output))
    quarantined = run.get("quarantined_prompts") or []
    if quarantined:
        where = ", ".join(f"{q['dataset']}#{q['data_idx']}" for q in quarantined[:10])
        echo_err(f"quarantined {len(quarantined)} prompts that brought the server down: {where}")
    if result.error_rows:
        kinds = ", ".join(f"{k}={v}" for k, v in summary["output"]["errors_by_kind"].items())
        echo_err(
            f"{result.error_rows} samples failed ({kinds}); rerun with --retry-errors to retry them"
        )
        sys.exit(EXIT_WITH_ERROR_ROWS)


def exit_interrupted(outputs: list[Path]) -> NoReturn:
    """Ctrl-C: say what is kept and how to go on, then exit 130 (128 + SIGINT) as shells do."""
    from rollouts.store import saved_rows, state_dir_for

    saved = ", ".join(f"{saved_rows(out)} samples saved in {state_dir_for(out)}" for out in outputs)
    echo_err(f"interrupted: {saved}; rerun the same command to resume")
    sys.stdout.flush()
    sys.stderr.flush()
    # Every row is on disk and every server stopped by now; the interpreter's own teardown takes
    # seconds once torch is loaded, and Ctrl-C must be prompt.
    os._exit(EXIT_INTERRUPTED)


def seed_was_given() -> bool:
    source = click.get_current_context().get_parameter_source("seed")
    return source is not click.core.ParameterSource.DEFAULT


@main.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output file: .parquet or .jsonl. State for resuming lives in OUTPUT.rollouts/.")
@click.option("--model", envvar="ROLLOUTS_MODEL", default="",
              help="Model name to request (default: the server's first model). With no --base-url "
                   "or --server-info, a local path or hub id to serve.")
@click.option("--base-url", "base_urls", multiple=True, envvar="ROLLOUTS_BASE_URL",
              help="OpenAI-compatible server, e.g. http://node1:8000/v1. Repeat for several.")
@click.option("--server-info", "server_infos", multiple=True, type=click.Path(path_type=Path),
              help="Info file written by `rollouts serve`. Repeat for several servers.")
@click.option("--backend", type=click.Choice(["openai", "hf"]), default="openai", show_default=True,
              help="openai: HTTP servers (vLLM). hf: transformers in this process, no server.")
@click.option("--api-key", envvar="OPENAI_API_KEY", default=None, help="Bearer token for the servers.")
@click.option("--n", "n", type=int, default=1, show_default=True, help="Samples per prompt.")
@click.option("--samples-per-request", type=click.Choice(["n", "1"]), default="n", show_default=True,
              help="n: one request with n=N, unseeded (one prefill, fastest). 1: one request per "
                   "sample with its own seed (each sample reproducible alone).")
@click.option("--max-concurrent", default="auto", show_default=True,
              help="auto: per server, as many sequences as its vLLM /metrics show it can take "
                   "(64 requests where it has none). A number: requests in flight at most.")
@click.option("--max-rps", type=float, default=None, help="Requests started per second at most.")
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--max-tokens", type=int, default=1024, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True,
              help="Run seed; with --samples-per-request 1 each sample's seed derives from it.")
@click.option("--stop", multiple=True, help="Stop string. Repeat for several.")
@click.option("--extra-body", default=None,
              help="JSON merged into each request, e.g. '{\"ignore_eos\": true}'.")
@click.option("--prompt-key", default="prompt", show_default=True, help="Column holding the prompt.")
@click.option("--system-prompt", default=None, help="System message put before each prompt.")
@click.option("--format", "output_format", type=click.Choice(["long", "wide"]), default="long",
              show_default=True, help="long: a row per sample. wide: a row per prompt (verl `responses`).")
@click.option("--resume/--overwrite", default=True, show_default=True,
              help="Resume the run in OUTPUT, or discard it and start over.")
@click.option("--retry-errors", is_flag=True, help="On resume, request failed samples again.")
@click.option("--max-attempts", type=int, default=6, show_default=True, help="Tries per request.")
@click.option("--server-wait", type=float, default=600.0, show_default=True,
              help="Seconds to wait for an unreachable server before stopping the run.")
@click.option("--request-timeout", type=float, default=None,
              help="Seconds of silence before a request is retried (default: 120 + 0.1 x max-tokens).")
@click.option("--stall-timeout", type=float, default=120.0, show_default=True,
              help="Seconds a server may make no progress with requests in flight before a "
                   "managed one is restarted or an external one ejected; 0: never.")
@click.option("--limit", type=int, default=None,
              help="Only the first N prompts of each input (a quick try; the full run resumes it).")
@click.option("--dry-run", is_flag=True,
              help="Check the inputs and print what would run; start nothing, write nothing.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@managed_server_options
@handle_errors
def generate(
    inputs: tuple[str, ...],
    output: Path,
    model: str,
    base_urls: tuple[str, ...],
    server_infos: tuple[Path, ...],
    backend: str,
    api_key: str | None,
    n: int,
    samples_per_request: str,
    max_concurrent: str,
    max_rps: float | None,
    temperature: float,
    top_p: float,
    max_tokens: int,
    seed: int,
    stop: tuple[str, ...],
    extra_body: str | None,
    prompt_key: str,
    system_prompt: str | None,
    output_format: str,
    resume: bool,
    retry_errors: bool,
    max_attempts: int,
    server_wait: float,
    request_timeout: float | None,
    stall_timeout: float,
    limit: int | None,
    dry_run: bool,
    progress: bool,
    managed: dict[str, Any],
) -> None:
    """Sample N responses per prompt of INPUTS (parquet, jsonl, json or globs) into OUTPUT.

    \b
    Examples:
      rollouts generate data/*.parquet -o out.parquet --base-url http://localhost:8000/v1 --n 8
      rollouts generate gsm8k.jsonl -o out.jsonl --model Qwen/Qwen2.5-7B-Instruct --n 16
      rollouts generate demo.jsonl -o out.parquet --backend hf --model ./tiny-model --n 4
      rollouts generate buckets/kept.parquet -o again.parquet --model M --n 16 --limit 20 --dry-run

    Rerunning the same command resumes: finished samples are never requested again.
    """
    config = GenerateConfig(
        inputs=inputs,
        output=output,
        model=model,
        n=n,
        params=sampling_params(temperature, top_p, max_tokens, stop, extra_body),
        seed=seed,
        samples_per_request=samples_per_request,  # type: ignore[arg-type]
        max_concurrent=parse_max_concurrent(max_concurrent),
        max_rps=max_rps,
        prompt_key=prompt_key,
        system_prompt=system_prompt,
        output_format=output_format,  # type: ignore[arg-type]
        overwrite=not resume,
        retry_errors=retry_errors,
        max_attempts=max_attempts,
        server_wait_s=server_wait,
        request_timeout_s=request_timeout,
        stall_timeout_s=stall_timeout,
        progress=progress,
        limit=limit,
    )
    if seed_was_given() and (notice := unseeded_notice(config)):
        echo_err(f"note: {notice}")
    if dry_run:
        where = backend_description(backend, base_urls, server_infos)
        if backend == "hf" or not (base_urls or server_infos):
            check_model_reference(config.model, in_process=backend == "hf")
        for line in describe_run(config, where):
            click.echo(line)
        return
    try:
        result = asyncio.run(_dispatch(config, backend, base_urls, server_infos, api_key, managed))
    except KeyboardInterrupt:
        exit_interrupted([config.output])
    report(result)


async def _dispatch(
    config: GenerateConfig,
    backend: str,
    base_urls: tuple[str, ...],
    server_infos: tuple[Path, ...],
    api_key: str | None,
    managed: dict[str, Any],
) -> GenerateResult:
    from rollouts import launch

    if backend == "hf" or not (base_urls or server_infos):  # --model is what loads, not a served name
        check_model_reference(config.model, in_process=backend == "hf")
    if backend == "hf":
        if not config.model:
            raise UserInputError("--backend hf needs --model (a local directory or hub id)")
        return await launch.generate_in_process(config, config.model)
    infos = [_read_info(path) for path in server_infos]
    urls = list(base_urls) + [url for info in infos for url in info.urls()]
    if infos and not config.model:
        config = dataclasses.replace(config, model=infos[0].model)
    if not urls:
        if not config.model:
            raise UserInputError("pass --base-url URL, --server-info FILE, or --model to start a server")
        server_config = server_config_from(config.model, managed, config.seed)
        return await launch.generate_with_managed_server(
            config, server_config, max_restarts=managed["max_restarts"],
            replicas=parse_replicas(managed["replicas"]),
        )
    # The servers' batch, when every one of them comes from an info file that says the same.
    batches = {info.max_num_seqs for info in infos}
    max_num_seqs = batches.pop() if infos and not base_urls and len(batches) == 1 else None
    return await launch.generate_from_servers(config, urls, api_key, max_num_seqs)


def backend_description(backend: str, base_urls: tuple[str, ...], server_infos: tuple[Path, ...]) -> str:
    if backend == "hf":
        return "in process, transformers"
    if base_urls or server_infos:
        return "servers " + ", ".join([*base_urls, *map(str, server_infos)])
    return "a managed vLLM server"


def _read_info(path: Path) -> ServerInfo:
    from server.info import read_server_info

    return read_server_info(path)


@main.command("run", context_settings=CONTEXT)
@click.argument("config_file", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Discard earlier outputs of these datasets.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@handle_errors
def run_command(config_file: Path, overwrite: bool, progress: bool) -> None:
    """Generate for many datasets with one model load, as CONFIG_FILE (YAML) describes.

    \b
    model: Qwen/Qwen2.5-7B-Instruct          # or base_urls: [http://node1:8000/v1]
    server: {tensor_parallel_size: 2, extra_args: ["--max-num-seqs", "512"]}
    max_concurrent: 256
    output_dir: runs/{model_name}
    defaults: {n: 8, max_tokens: 2048}
    datasets:
      - {path: data/gsm8k.parquet, temperature: 0.6}
      - {path: data/math.parquet, n: 16, output: "{output_dir}/{name}_n{n}.parquet"}

    Datasets already complete are skipped; rerunning resumes the rest.
    """
    from rollouts.launch import run_plan
    from rollouts.runconfig import load_plan, plan_unseeded_notice

    plan = load_plan(config_file, overwrite=overwrite, progress=progress)
    if plan.seed_given and (notice := plan_unseeded_notice(plan)):
        echo_err(f"note: {notice}")
    try:
        summary = asyncio.run(run_plan(plan))
    except KeyboardInterrupt:
        exit_interrupted([job.output for job in plan.jobs])
    failed = 0
    for entry in summary["datasets"]:
        echo_err(f"{entry['name']}: {entry['status']} -> {entry['output']}")
        failed += entry.get("error_rows", 0)
        click.echo(entry["output"])
    echo_err(f"run summary: {plan.summary_path}")
    if failed:
        echo_err(f"{failed} samples failed; set retry_errors: true and rerun to retry them")
        sys.exit(EXIT_WITH_ERROR_ROWS)


@main.command("make-tiny-model", context_settings=CONTEXT)
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--train-steps", type=click.IntRange(min=0), default=DEFAULT_TRAIN_STEPS, show_default=True,
              help="Steps of training on additions (the demo's task; about a minute on 2 CPU "
                   "cores). 0: random weights.")
@handle_errors
def make_tiny_model(out_dir: Path, train_steps: int) -> None:
    """Build a tiny chat model in OUT_DIR (no download) for demos and tests, trained on CPU to
    add numbers: sums of one to three digits, some of the time."""
    import sys
    import time

    from rollouts.tiny_model import TrainingProgress, build_tiny_model

    started = time.monotonic()
    progress = TrainingProgress(sys.stderr, interactive=sys.stderr.isatty())
    click.echo(str(build_tiny_model(out_dir, train_steps=train_steps, on_step=progress)))
    echo_err(f"built in {time.monotonic() - started:.0f}s ({train_steps} training steps)")


main.add_command(serve)
main.add_command(show_command)
main.add_command(status_command)
main.add_command(convert_checkpoint_command)
main.add_command(sweep_command)
main.add_command(slurm_command)
main.add_command(prepare_group)
main.add_command(report_command)

if __name__ == "__main__":
    main()
