"""sbatch scripts as text: pure functions of the config, tested as text.

The array script: each task checks for remaining work first (so an idle task never loads a model),
then runs `rollouts slurm task RUN_DIR` in the background and forwards the signals SLURM sends to
the batch shell (`--signal=B:USR1@N` before the time limit, TERM on scancel) to it. The task
itself stops claiming, writes what finished, releases its leases and requeues itself.

The check has three answers: work left (0), nothing left (NOTHING_LEFT_EXIT: the task ends, a
success) and anything else, a check that could not run (a wrong `python`, a venv or run directory
missing on the node): the task fails with that status and the error stays in its log. However a
task ends, the shell writes its exit marker (tasks/ARRAY_TASK.exit: status, stage, log file), so
`rollouts slurm status` knows a failed or killed task without sacct; a failed one (not cancelled)
is requeued up to max_retries times.

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
NOTHING_LEFT_EXIT = 3  # `slurm task --check`: every unit is done or held by a live task


@dataclass(frozen=True)
class Scripts:
    array: str
    merge: str | None
    score: str | None = None


def render_scripts(slurm: SlurmConfig, run_dir: Path, tasks: int, *, score: bool = False) -> Scripts:
    """The array script for `tasks` tasks and, unless merge_job is off, the merge script (and,
    with a `score:` section, the score script that follows it)."""
    merge = slurm.merge_job
    return Scripts(
        array=render_array(slurm, run_dir, tasks),
        merge=render_merge(slurm, run_dir) if merge else None,
        score=render_step(slurm, run_dir, "score") if merge and score else None,
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
        *_exit_marker(slurm),
        "# An idle task (every unit done or leased) exits before starting any server; a check",
        "# that could not run is a failure, its error above in this log.",
        "STAGE=check",
        f'{_rollouts(slurm)} slurm task "$RUN_DIR" --check',
        "CHECK=$?",
        f'if [ "$CHECK" -eq {NOTHING_LEFT_EXIT} ]; then',
        '  echo "rollouts-slurm: nothing left to claim; exiting before starting any server"',
        "  exit 0",
        "fi",
        'if [ "$CHECK" -ne 0 ]; then',
        '  echo "rollouts-slurm: could not check for work (exit $CHECK); the error is above" >&2',
        '  exit "$CHECK"',
        "fi",
        "STAGE=task",
        "",
    ]
    if slurm.nodes_per_task > 1:
        body += _ray_cluster(slurm)
    body += _run_task(slurm)
    return "\n".join([*header, *_extra(slurm), "", *body]) + "\n"


def render_merge(slurm: SlurmConfig, run_dir: Path) -> str:
    """The merge job (queued with --dependency=afterany on the array, so it runs however the
    array ended): CPU only, one node. It merges when every unit is done, else says which are
    missing and how to finish, and fails."""
    return render_step(slurm, run_dir, "merge")


def render_step(slurm: SlurmConfig, run_dir: Path, step: str) -> str:
    """A one-node CPU job running `rollouts slurm STEP RUN_DIR` (merge, score); its exit marker
    (steps/STEP-JOB.exit) lets status show a step that could not even start."""
    name = f"{slurm.job_name}-{step}"
    header = _sbatch_lines(slurm, name=name, output=f"{slurm.logs}/%x-%j.log")
    header += ["#SBATCH --nodes=1", "#SBATCH --ntasks=1"]
    log = shlex.quote(f"{slurm.logs}/{name}-") + '"${SLURM_JOB_ID}.log"'
    body = [
        *_prologue(slurm, run_dir),
        f'{_rollouts(slurm)} slurm {step} "$RUN_DIR"',
        "CODE=$?",
        'mkdir -p "$RUN_DIR/steps" 2>/dev/null',
        f'printf \'{{"step": "{step}", "job": "%s", "exit": %d, "log": "%s", "at": %d}}\\n\' \\',
        f'  "$SLURM_JOB_ID" "$CODE" {log} "$(date +%s)" \\',
        f'  > "$RUN_DIR/steps/{step}-$SLURM_JOB_ID.exit" 2>/dev/null',
        'exit "$CODE"',
    ]
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


def _exit_marker(slurm: SlurmConfig) -> list[str]:
    """The EXIT trap: write this run of the task's exit marker, then requeue a failure."""
    log = shlex.quote(f"{slurm.logs}/{slurm.job_name}-") + '"${TASK_ID}.log"'
    return [
        'TASK_ID="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
        'MARKER="$RUN_DIR/tasks/$TASK_ID.exit"',
        'RETRIES_FILE="$RUN_DIR/tasks/$TASK_ID.retries"',
        "STAGE=setup",
        "CANCELLED=",
        "TASK_PID=",
        "finish() {",
        "  local code=$?",
        '  printf \'{"task": "%s", "exit": %d, "stage": "%s", "restart": %d, "log": "%s", '
        '"cancelled": %s, "at": %d}\\n\' \\',
        f'    "$TASK_ID" "$code" "$STAGE" "${{SLURM_RESTART_COUNT:-0}}" {log} \\',
        '    "${CANCELLED:-false}" "$(date +%s)" > "$MARKER.tmp" 2>/dev/null \\',
        '    && mv -f "$MARKER.tmp" "$MARKER" 2>/dev/null',
        f'  if [ "$code" -ne 0 ] && [ -z "$CANCELLED" ] && [ {slurm.max_retries} -gt 0 ]; then',
        '    local tries',
        '    tries=$(cat "$RETRIES_FILE" 2>/dev/null || echo 0)',
        f'    if [ "$tries" -lt {slurm.max_retries} ]; then',
        '      echo $((tries + 1)) > "$RETRIES_FILE"',
        f'      echo "rollouts-slurm: task failed (exit $code); requeue $((tries + 1)) of '
        f'{slurm.max_retries}" >&2',
        '      scontrol requeue "$TASK_ID"',
        "    else",
        f'      echo "rollouts-slurm: task failed (exit $code) after {slurm.max_retries} '
        'retries; not requeued" >&2',
        "    fi",
        "  fi",
        "}",
        "trap finish EXIT",
        "# scancel: forward TERM to the task (or end here before it starts); no requeue.",
        'trap \'CANCELLED=true; if [ -n "$TASK_PID" ]; then kill -TERM "$TASK_PID" 2>/dev/null; '
        'else exit 143; fi\' TERM',
        'rm -f "$MARKER"',
    ]


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
        "# wait returns early when a trapped signal arrives: wait again until the task has ended",
        "# (bash keeps an ended child's status, so the last wait gives it).",
        'wait "$TASK_PID"',
        'while kill -0 "$TASK_PID" 2>/dev/null; do wait "$TASK_PID"; done',
        'wait "$TASK_PID"',
    ]
