"""sbatch scripts as text: pure functions of the config, tested as text.

The array script: each task checks for remaining work first (so an idle task never loads a model),
then runs `rollouts slurm task RUN_DIR` in the background and forwards the signals SLURM sends to
the batch shell (`--signal=B:USR1@N` before the time limit, TERM on scancel) to it. The task
itself stops claiming, writes what finished, releases its leases and requeues itself.

With `nodes_per_task > 1` the model is served over a Ray cluster spanning the task's nodes, as
vLLM documents for multi-node serving: `ray start --head` on the first node, `ray start
--address` on the others (through srun), then one `vllm serve --distributed-executor-backend ray`
started by the task on the first node.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from slurm.config import SlurmConfig

RAY_PORT = 6379
RAY_START_WAIT_S = 120


@dataclass(frozen=True)
class Scripts:
    array: str
    merge: str | None


def render_scripts(slurm: SlurmConfig, run_dir: Path, tasks: int) -> Scripts:
    """The array script for `tasks` tasks and, unless merge_job is off, the merge script."""
    return Scripts(
        array=render_array(slurm, run_dir, tasks),
        merge=render_merge(slurm, run_dir) if slurm.merge_job else None,
    )


def render_array(slurm: SlurmConfig, run_dir: Path, tasks: int) -> str:
    header = _sbatch_lines(slurm, name=slurm.job_name, output=f"{slurm.logs}/%x-%A_%a.log")
    header.insert(1, f"#SBATCH --array={_array_spec(tasks, slurm.max_concurrent_tasks)}")
    header += [
        f"#SBATCH --nodes={slurm.nodes_per_task}",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --requeue",
        f"#SBATCH --signal=B:USR1@{slurm.signal_seconds}",
        "#SBATCH --open-mode=append",
    ]
    if slurm.gpus_per_node:
        header.append(f"#SBATCH --gpus-per-node={slurm.gpus_per_node}")
    body = [
        *_prologue(slurm, run_dir),
        "# An idle task (every unit done or leased) exits before starting any server.",
        f'if ! {_rollouts(slurm)} slurm task "$RUN_DIR" --check; then exit 0; fi',
        "",
    ]
    if slurm.nodes_per_task > 1:
        body += _ray_cluster(slurm)
    body += _run_task(slurm)
    return "\n".join([*header, *_extra(slurm), "", *body]) + "\n"


def render_merge(slurm: SlurmConfig, run_dir: Path) -> str:
    """The merge job (queued with --dependency=afterok on the array): CPU only, one node."""
    header = _sbatch_lines(slurm, name=f"{slurm.job_name}-merge", output=f"{slurm.logs}/%x-%j.log")
    header += ["#SBATCH --nodes=1", "#SBATCH --ntasks=1"]
    body = [*_prologue(slurm, run_dir), f'exec {_rollouts(slurm)} slurm merge "$RUN_DIR"']
    return "\n".join([*header, "", *body]) + "\n"


def _sbatch_lines(slurm: SlurmConfig, *, name: str, output: str) -> list[str]:
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH --output={output}"]
    options = {
        "cpus-per-task": slurm.cpus_per_task,
        "mem": slurm.mem,
        "time": slurm.time,
        "partition": slurm.partition,
        "account": slurm.account,
        "qos": slurm.qos,
        "constraint": slurm.constraint,
    }
    lines += [f"#SBATCH --{flag}={value}" for flag, value in options.items() if value is not None]
    return lines


def _extra(slurm: SlurmConfig) -> list[str]:
    return [line if line.startswith("#SBATCH") else f"#SBATCH {line}" for line in slurm.sbatch_extra]


def _array_spec(tasks: int, max_concurrent: int | None) -> str:
    spec = f"0-{tasks - 1}"
    return f"{spec}%{max_concurrent}" if max_concurrent else spec


def _prologue(slurm: SlurmConfig, run_dir: Path) -> list[str]:
    lines = ["set -uo pipefail"]
    if slurm.setup:
        lines += ["# setup (from the config)", *slurm.setup]
    lines += [f"RUN_DIR={shlex.quote(str(run_dir))}", f"mkdir -p {shlex.quote(str(slurm.logs))}"]
    return lines


def _rollouts(slurm: SlurmConfig) -> str:
    """The rollouts command line, in the container when there is one."""
    command = f"{shlex.quote(slurm.python)} -m rollouts.cli"
    return f"{_container_srun(slurm)} {command}" if slurm.container_image else command


def _container_srun(slurm: SlurmConfig, node: str | None = None) -> str:
    parts = ["srun", "--nodes=1", "--ntasks=1", "--overlap"]
    if node:
        parts.append(f'--nodelist="{node}"')
    if slurm.container_image:
        parts.append(f"--container-image={shlex.quote(slurm.container_image)}")
        if slurm.container_mounts:
            parts.append(f"--container-mounts={shlex.quote(','.join(slurm.container_mounts))}")
    return " ".join(parts)


def _ray_cluster(slurm: SlurmConfig) -> list[str]:
    head = _container_srun(slurm, "$HEAD_NODE")
    worker = _container_srun(slurm, "$node")
    return [
        "# A Ray cluster over this task's nodes: the head here, a worker on every other node.",
        'mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
        'HEAD_NODE=${NODES[0]}',
        f'HEAD_IP=$({head} hostname --ip-address | awk \'{{print $1}}\')',
        f'export RAY_ADDRESS="$HEAD_IP:{RAY_PORT}"',
        f"{head} ray start --head --node-ip-address=\"$HEAD_IP\" --port={RAY_PORT} --block &",
        "RAY_PIDS=($!)",
        "sleep 10",
        'for node in "${NODES[@]:1}"; do',
        f'  {worker} ray start --address="$RAY_ADDRESS" --block &',
        "  RAY_PIDS+=($!)",
        "done",
        f"for _ in $(seq {RAY_START_WAIT_S}); do",
        f"  nodes_up=$({head} ray status 2>/dev/null | grep -c node_)",
        f'  [ "$nodes_up" -ge {slurm.nodes_per_task} ] && break',
        "  sleep 1",
        "done",
        'trap \'kill "${RAY_PIDS[@]}" 2>/dev/null\' EXIT',
        "export ROLLOUTS_RAY=1  # the task serves with --distributed-executor-backend ray",
        "",
    ]


def _run_task(slurm: SlurmConfig) -> list[str]:
    return [
        "# The task runs in the background so this shell can forward SLURM's signals to it:",
        "# USR1 (time limit / preemption): stop claiming, flush, release leases, requeue.",
        f'{_rollouts(slurm)} slurm task "$RUN_DIR" &',
        "TASK_PID=$!",
        'trap \'kill -USR1 "$TASK_PID" 2>/dev/null\' USR1',
        'trap \'kill -TERM "$TASK_PID" 2>/dev/null\' TERM',
        "# wait returns early when a trapped signal arrives: wait again until the task has ended",
        "# (bash keeps an ended child's status, so the last wait gives it).",
        'wait "$TASK_PID"',
        'while kill -0 "$TASK_PID" 2>/dev/null; do wait "$TASK_PID"; done',
        'wait "$TASK_PID"',
    ]
