"""`rollouts serve`: start a vLLM server, print its base URL, keep it until SIGINT/SIGTERM.

Registered as a subcommand of `rollouts`; also runs alone as `python -m server.cli`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from rollouts.clitools import echo_err, handle_errors
from server.replicas import expand, parse_replicas
from server.vllm import ManagedServer, ServerConfig, serve_until_stopped


class PortType(click.ParamType):
    """A port number, or `auto` for a free one chosen at start."""

    name = "port|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, int):
            return value
        if str(value).lower() == "auto":
            return None
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is not a port number or 'auto'", param, ctx)


def _announce(servers: list[ManagedServer], info_file: Path | None) -> None:
    for server in servers:
        echo_err(
            f"vLLM ready: model {server.model!r} at {server.base_url} (pid {server.pid}, "
            f"log {server.log_file})"
        )
    if info_file:
        echo_err(f"info file {info_file}")
    for server in servers:  # the result, on stdout, for scripts: URL=$(rollouts serve ...)
        click.echo(server.base_url)


@click.command(
    "serve",
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.option("--model", required=True, envvar="ROLLOUTS_MODEL", help="Local path or hub id.")
@click.option("--tensor-parallel-size", "-tp", type=click.IntRange(min=1), default=1)
@click.option("--data-parallel-size", "-dp", type=click.IntRange(min=1), default=1)
@click.option("--host", default="127.0.0.1", help="Address to bind; 0.0.0.0 for other nodes.")
@click.option("--port", type=PortType(), default="auto", help="Port number or 'auto'.")
@click.option("--gpu-memory-utilization", type=float, default=None, help="vLLM's default: 0.9.")
@click.option("--max-model-len", type=click.IntRange(min=1), default=None)
@click.option("--served-model-name", default=None, help="Name clients send (default: --model).")
@click.option("--seed", type=int, default=0)
@click.option(
    "--info-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write base_url, model, pid... here once ready (for generate --server-info).",
)
@click.option(
    "--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="vLLM's output (default: a new file under $TMPDIR/rollouts-logs).",
)
@click.option("--ready-timeout", type=click.FloatRange(min=0, min_open=True), default=1800.0,
              help="Seconds to wait for readiness before killing the server.")
@click.option("--replicas", default="auto",
              help="vLLM servers of the model on one GPU, each with its share of the memory, "
                   "on its own port. auto: 2 when the weights are at most 5% of the GPU's "
                   "memory (a small model leaves the GPU waiting on one engine's CPU), else 1.")
@click.argument("extra_args", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def serve(
    model: str,
    tensor_parallel_size: int,
    data_parallel_size: int,
    host: str,
    port: int | None,
    gpu_memory_utilization: float | None,
    max_model_len: int | None,
    served_model_name: str | None,
    seed: int,
    info_file: Path | None,
    log_file: Path | None,
    ready_timeout: float,
    replicas: str,
    extra_args: tuple[str, ...],
) -> None:
    """Serve MODEL with vLLM until Ctrl-C / SIGTERM, or exit non-zero if the server dies.

    Ready means /health answers 200 and a 1-token completion succeeds; the base URL is then
    printed on stdout (one line per replica). Flags after `--` go to `vllm serve` unchanged:

    \b
      rollouts serve --model Qwen/Qwen2.5-7B-Instruct -tp 2 --info-file server.json \\
          -- --max-num-seqs 512 --enable-prefix-caching
    """
    config = ServerConfig(
        model=model,
        tensor_parallel_size=tensor_parallel_size,
        data_parallel_size=data_parallel_size,
        host=host,
        port=port,
        gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len,
        served_model_name=served_model_name,
        seed=seed,
        extra_args=extra_args,
        log_file=log_file,
        ready_timeout=ready_timeout,
    )
    configs, why = expand([config], parse_replicas(replicas))
    if len(configs) > 1:
        echo_err(f"starting {why}")
    servers = asyncio.run(
        serve_until_stopped(configs, lambda s: _announce(s, info_file), info_file=info_file)
    )
    left = [pid for server in servers for pid in server.leftover_pids]
    if left:
        raise click.ClickException(f"stopped vLLM, but processes {left} survived SIGKILL")
    pids = ", ".join(str(server.pid) for server in servers if server.pid is not None)
    echo_err(f"stopped vLLM (pid {pids}); no process of it is left")


if __name__ == "__main__":
    serve(prog_name="rollouts serve")
