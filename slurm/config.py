"""The `slurm:` section of a run config: validated before anything is submitted.

    slurm:
      array_size: 16             # array tasks (each: one node, or nodes_per_task nodes)
      gpus_per_node: 8           # servers per node = gpus_per_node / (tensor x data parallel)
      time: "04:00:00"
      partition: gpu
      setup: ["module load cuda/12.4", "source /shared/venv/bin/activate"]

Every key is listed in SLURM_KEYS with its help text (shown by `rollouts slurm submit --help` and
docs/slurm.md); an unknown key is a one-line error naming the known ones.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rollouts.errors import UserInputError

# key -> help text. The order is the order of `--help` and of docs/slurm.md.
SLURM_KEYS: dict[str, str] = {
    "array_size": "array tasks to run (required); more units than tasks, so any count works",
    "nodes_per_task": "nodes per task (default 1); >1 serves one model over a Ray cluster",
    "gpus_per_node": "GPUs per node (default 0: request none, one server per task)",
    "cpus_per_task": "CPUs per task (--cpus-per-task)",
    "mem": "memory per node (--mem, e.g. 200G)",
    "time": "time limit per task (--time, e.g. 04:00:00); preempted work is requeued",
    "partition": "--partition",
    "account": "--account",
    "qos": "--qos",
    "constraint": "--constraint",
    "job_name": "job name (default rollouts-<config stem>)",
    "log_dir": "folder of the task logs (default RUN_DIR/logs)",
    "container_image": "pyxis/enroot image: the task runs under srun --container-image",
    "container_mounts": "pyxis --container-mounts (a string or a list of SRC:DST)",
    "setup": "shell lines run first in every job (module load, source a venv)",
    "sbatch_extra": "raw #SBATCH lines added as given (e.g. --exclusive)",
    "max_concurrent_tasks": "at most this many tasks at once (the array's %N)",
    "run_dir": "the run's work folder (default {output_dir}/slurm-<config stem>)",
    "unit_prompts": "prompts per work unit (default 64); units are claimed one at a time",
    "lease_timeout": "seconds without heartbeat after which a unit is taken over (default 300)",
    "heartbeat": "seconds between lease heartbeats (default 30)",
    "signal_seconds": "USR1 this long before the time limit (default 120)",
    "python": "the interpreter that runs rollouts in jobs (default: the one running submit)",
    "merge_job": "queue a merge job after the array (default true)",
    "max_retries": "requeue a task that fails (non-zero exit) up to this many times (default 0)",
    "sweep_manifest": "set by `rollouts sweep --slurm`: the sweep.parquet the merge brings up to date",
}
INTEGER_KEYS = ("array_size", "nodes_per_task", "gpus_per_node", "cpus_per_task",
                "max_concurrent_tasks", "unit_prompts", "signal_seconds", "max_retries")


@dataclass(frozen=True, kw_only=True)
class SlurmConfig:
    """The validated `slurm:` section."""

    array_size: int
    nodes_per_task: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem: str | None = None
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    job_name: str = "rollouts"
    log_dir: Path | None = None
    container_image: str | None = None
    container_mounts: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    sbatch_extra: tuple[str, ...] = ()
    max_concurrent_tasks: int | None = None
    run_dir: Path
    unit_prompts: int = 64
    lease_timeout: float = 300.0
    heartbeat: float = 30.0
    signal_seconds: int = 120
    python: str = ""
    merge_job: bool = True
    max_retries: int = 0
    sweep_manifest: Path | None = None

    def __post_init__(self) -> None:
        for name in ("array_size", "nodes_per_task", "unit_prompts"):
            if getattr(self, name) < 1:
                raise UserInputError(f"slurm: {name} must be at least 1")
        if self.gpus_per_node < 0:
            raise UserInputError("slurm: gpus_per_node must be 0 or more")
        if self.max_concurrent_tasks is not None and self.max_concurrent_tasks < 1:
            raise UserInputError("slurm: max_concurrent_tasks must be at least 1")
        if not 0 < self.heartbeat < self.lease_timeout:
            raise UserInputError(
                "slurm: heartbeat must be positive and shorter than lease_timeout"
            )
        if self.signal_seconds < 1:
            raise UserInputError("slurm: signal_seconds must be at least 1")
        if self.max_retries < 0:
            raise UserInputError("slurm: max_retries must be 0 or more")
        if self.time is not None:
            limit = time_limit_seconds(self.time)
            if limit is not None and self.signal_seconds >= limit:
                raise UserInputError(
                    f"slurm: signal_seconds ({self.signal_seconds}) must be shorter than time "
                    f"({self.time} = {limit} s), or a task is told to stop before it starts; "
                    "lower signal_seconds or raise time"
                )

    @property
    def logs(self) -> Path:
        return self.log_dir or self.run_dir / "logs"


def time_limit_seconds(value: str) -> int | None:
    """SLURM's --time formats in seconds (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S); None when
    unlimited."""
    text = str(value).strip()
    if text.upper() in ("INFINITE", "UNLIMITED", "-1"):
        return None
    try:
        days = 0
        if "-" in text:
            day_text, text = text.split("-", 1)
            days = int(day_text)
            fields = [int(p) for p in text.split(":")]  # H, H:M or H:M:S
            fields += [0] * (3 - len(fields))
        else:
            fields = [int(p) for p in text.split(":")]  # M, M:S or H:M:S
            fields = {1: [0, fields[0], 0], 2: [0, *fields]}.get(len(fields), fields)
        if len(fields) != 3 or min(days, *fields) < 0:
            raise ValueError(text)
    except ValueError:
        raise UserInputError(
            f"slurm: time {value!r} is not a SLURM time limit (e.g. 04:00:00, 90, 1-12:00:00)"
        ) from None
    hours, minutes, seconds = fields
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def server_gpus(server: dict[str, Any]) -> int:
    """GPUs one vLLM server uses: tensor x data parallel."""
    return int(server.get("tensor_parallel_size", 1)) * int(server.get("data_parallel_size", 1))


def servers_per_node(slurm: SlurmConfig, server: dict[str, Any]) -> int:
    """How many servers a task runs side by side (the client routes across them)."""
    if slurm.gpus_per_node == 0 or slurm.nodes_per_task > 1:
        return 1
    return slurm.gpus_per_node // server_gpus(server)


def check_fits(slurm: SlurmConfig, server: dict[str, Any], where: str) -> None:
    """A server must fit in the GPUs a task gets; say what to change when it does not."""
    if slurm.gpus_per_node == 0:
        return
    needed = server_gpus(server)
    available = slurm.gpus_per_node * slurm.nodes_per_task
    if needed > available:
        raise UserInputError(
            f"{where}: a server needs {needed} GPUs (tensor x data parallel) but a task has "
            f"{available} (gpus_per_node x nodes_per_task); raise gpus_per_node or "
            "nodes_per_task, or lower tensor_parallel_size"
        )


def load_slurm_config(
    config_path: Path, output_dir: Path, *, base_dir: Path | None = None
) -> SlurmConfig:
    """Read and check the `slurm:` section of config_path (the rest is load_plan's). Relative
    paths are taken from base_dir (default: the config's folder)."""
    where = f"{config_path}: slurm"
    data = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    section = data.get("slurm") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise UserInputError(
            f"{config_path}: no `slurm:` section; add one with at least `array_size: N`"
        )
    unknown = sorted(set(section) - set(SLURM_KEYS))
    if unknown:
        raise UserInputError(
            f"{where}: unknown key(s) {unknown}; known keys: {', '.join(SLURM_KEYS)}"
        )
    if "array_size" not in section:
        raise UserInputError(f"{where}: `array_size` (number of array tasks) is required")
    base = (base_dir or config_path.resolve().parent)
    stem = config_path.stem
    options = dict(section)
    _check_integers(options, where)
    try:
        return SlurmConfig(
            array_size=int(options["array_size"]),
            nodes_per_task=int(options.get("nodes_per_task", 1)),
            gpus_per_node=int(options.get("gpus_per_node", 0)),
            cpus_per_task=_optional_int(options.get("cpus_per_task")),
            mem=_optional_str(options.get("mem")),
            time=_optional_str(options.get("time")),
            partition=_optional_str(options.get("partition")),
            account=_optional_str(options.get("account")),
            qos=_optional_str(options.get("qos")),
            constraint=_optional_str(options.get("constraint")),
            job_name=str(options.get("job_name") or f"rollouts-{stem}"),
            log_dir=_path(base, options.get("log_dir"), output_dir),
            container_image=_optional_str(options.get("container_image")),
            container_mounts=_lines(options.get("container_mounts"), split_commas=True),
            setup=_lines(options.get("setup")),
            sbatch_extra=_lines(options.get("sbatch_extra")),
            max_concurrent_tasks=_optional_int(options.get("max_concurrent_tasks")),
            run_dir=_path(base, options.get("run_dir"), output_dir)
            or output_dir / f"slurm-{stem}",
            unit_prompts=int(options.get("unit_prompts", 64)),
            lease_timeout=float(options.get("lease_timeout", 300.0)),
            heartbeat=float(options.get("heartbeat", 30.0)),
            signal_seconds=int(options.get("signal_seconds", 120)),
            python=str(options.get("python") or _default_python(options)),
            merge_job=bool(options.get("merge_job", True)),
            max_retries=int(options.get("max_retries", 0)),
            sweep_manifest=_path(base, options.get("sweep_manifest"), output_dir),
        )
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"{where}: bad value ({exc}); see docs/slurm.md") from exc


def _check_integers(options: dict[str, Any], where: str) -> None:
    """Counts are whole numbers: 2.5 tasks is a typo, not 2 (int() would round it quietly)."""
    for key in INTEGER_KEYS:
        value = options.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().isdigit():
                continue
            raise UserInputError(f"{where}: {key} must be an integer, not {value!r}")


def _default_python(options: dict[str, Any]) -> str:
    # Inside a container the submitting interpreter's path means nothing.
    return "python3" if options.get("container_image") else sys.executable


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _lines(value: Any, *, split_commas: bool = False) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        parts = value.split(",") if split_commas else value.splitlines()
        return tuple(p.strip() for p in parts if p.strip())
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    raise TypeError(f"expected a string or a list, got {type(value).__name__}")


def _path(base: Path, value: Any, output_dir: Path) -> Path | None:
    if not value:
        return None
    path = Path(str(value).format(output_dir=output_dir)).expanduser()
    return path if path.is_absolute() else base / path
