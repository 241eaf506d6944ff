"""Several vLLM servers of one model on one GPU (`--replicas N`), and how many `auto` starts.

A small model on a large GPU leaves the GPU waiting on its engine core: one Python process that
schedules every step (measured at 100 % of a core in every served run on an H100). Two engines
on the same GPU, each with half its memory, overlap one's CPU work with the other's GPU work.
Each replica is its own `vllm serve` process on its own port, with its share of
gpu_memory_utilization (vLLM's limit is per instance); clients spread requests over them with
the least-outstanding router (rollouts.router), which keeps a prompt's samples on one replica.

`auto` starts AUTO_REPLICAS when the model's weights are at most AUTO_WEIGHT_SHARE of the GPU's
memory and the server uses one GPU (no tensor or data parallelism), else one. Weights are the
size of the model folder's weight files; the GPU's memory is what `nvidia-smi` reports for the
first visible GPU. When either is unknown (a hub id not yet downloaded, no nvidia-smi), one.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from rollouts.errors import UserInputError
from rollouts.types import parse_auto_or_count
from server.vllm import ServerConfig

AUTO: Literal["auto"] = "auto"
Replicas = int | Literal["auto"]
AUTO_REPLICAS = 2
AUTO_WEIGHT_SHARE = 0.05
VLLM_DEFAULT_MEMORY = 0.9  # vLLM's own default gpu_memory_utilization
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def parse_replicas(value: object, where: str = "--replicas") -> Replicas:
    """'auto' or a whole number >= 1; a clear error otherwise."""
    return parse_auto_or_count(value, where)


def weights_bytes(model: str) -> int | None:
    """Bytes of a local model folder's weight files; None for a hub id or a folder without any."""
    folder = Path(model)
    if not folder.is_dir():
        return None
    total = sum(p.stat().st_size for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    return total or None


def gpu_memory_bytes(env: dict[str, str] | None = None) -> int | None:
    """Total memory of the first GPU visible to a server started with env, from nvidia-smi;
    None when there is no nvidia-smi or it does not answer."""
    env = {**os.environ, **(env or {})}
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    visible = [g for g in env.get("CUDA_VISIBLE_DEVICES", "0").split(",") if g] or ["0"]
    try:
        out = subprocess.run(
            [smi, "-i", visible[0], "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
        return int(float(out.split()[0]) * 2**20)  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def auto_replicas(
    config: ServerConfig, weights: int | None, gpu_memory: int | None
) -> tuple[int, str]:
    """How many replicas `auto` starts for config, and why (one line for the log)."""
    if config.tensor_parallel_size != 1 or config.data_parallel_size != 1:
        return 1, "one replica: the server spans several GPUs"
    if weights is None or gpu_memory is None:
        missing = "the model's weights" if weights is None else "the GPU's memory"
        return 1, f"one replica: {missing} unknown"
    share = weights / gpu_memory
    if share <= AUTO_WEIGHT_SHARE:
        return AUTO_REPLICAS, (
            f"{AUTO_REPLICAS} replicas: weights are {share:.1%} of the GPU's memory "
            f"(at most {AUTO_WEIGHT_SHARE:.0%})"
        )
    return 1, f"one replica: weights are {share:.1%} of the GPU's memory"


def resolve_replicas(replicas: Replicas, config: ServerConfig) -> tuple[int, str]:
    """The number of replicas to start for config, and why."""
    if replicas != AUTO:
        return int(replicas), f"{replicas} replica(s) as asked"
    return auto_replicas(config, weights_bytes(config.model), gpu_memory_bytes(config.env))


def replica_configs(config: ServerConfig, replicas: int) -> list[ServerConfig]:
    """One config per replica: memory split evenly (vLLM's default 0.9 when not set), ports
    from config.port up (or each its own free one), log files `NAME-rI.log` beside config's.
    The info file is the group's (serve_until_stopped), never a replica's."""
    if replicas < 1:
        raise UserInputError(f"replicas must be >= 1, not {replicas}")
    if replicas == 1:
        return [config]
    if config.tensor_parallel_size != 1 or config.data_parallel_size != 1:
        raise UserInputError(
            "replicas share one GPU: they need tensor_parallel_size and data_parallel_size 1"
        )
    memory = config.gpu_memory_utilization or VLLM_DEFAULT_MEMORY
    share = int(memory / replicas * 1000) / 1000  # rounded down: the sum never exceeds memory
    return [
        dataclasses.replace(
            config,
            gpu_memory_utilization=share,
            port=None if config.port is None else config.port + index,
            log_file=_replica_log(config.log_file, index),
            info_file=None,
        )
        for index in range(replicas)
    ]


def _replica_log(log_file: Path | None, index: int) -> Path | None:
    if log_file is None:
        return None
    return log_file.with_name(f"{log_file.stem}-r{index}{log_file.suffix}")


def expand(configs: Sequence[ServerConfig], replicas: Replicas) -> tuple[list[ServerConfig], str]:
    """Every server's replicas, in order, and why that many (the first server's reason)."""
    expanded: list[ServerConfig] = []
    reason = ""
    for config in configs:
        count, why = resolve_replicas(replicas, config)
        reason = reason or why
        expanded += replica_configs(config, count)
    return expanded, reason
