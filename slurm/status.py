"""`rollouts slurm status RUN_DIR`: how far a run is, from its files and squeue alone.

Reads the work table, the done markers, the leases, the units' own stores (samples of units under
way), each task's progress file and exit marker, and the merge and score outcomes, so it works
from any login shell while the jobs run and after they ended (no sacct). A task is `running` only
while SLURM says so: one that ended, failed or was killed is shown as such and counts for nothing
in the rate and ETA; a task that failed is listed with the line of its log that says why.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollouts.store import saved_rows, state_dir_for
from slurm import scheduler
from slurm.merge import read_merge_marker
from slurm.score import read_score_marker
from slurm.submit import STEP_KEYS, read_jobs, read_run
from slurm.task import DEFAULT_LEASE_TIMEOUT_S
from slurm.units import WorkTable, done_ids, iter_done_markers, leased_ids, unit_output

RUNNING_TASK_FRESH_S = 600.0  # without squeue: a progress file older than this is a task gone
LOG_TAIL_BYTES = 65536
ORPHAN_REASON = "DependencyNeverSatisfied"


@dataclass
class TaskView:
    """One array task as status shows it."""

    task: str
    state: str  # running, pending, done, idle, stopped, cancelled, failed, gone
    stats: dict[str, Any]
    detail: str = ""  # the failure's log line, or why the state is what it is

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass
class RunStatus:
    run_dir: Path
    units_total: int
    units_done: int
    units_leased: int
    units_stale: int
    samples_total: int
    samples_done: int  # in finished units
    error_rows: int
    samples_under_way: int = 0  # written by units not finished yet
    tasks: list[TaskView] = field(default_factory=list)
    jobs: list[scheduler.JobState] = field(default_factory=list)
    merge: dict[str, Any] = field(default_factory=dict)
    score: dict[str, Any] = field(default_factory=dict)
    failed_steps: list[str] = field(default_factory=list)  # merge/score jobs that failed to run
    orphans: list[scheduler.JobState] = field(default_factory=list)
    config: str = "CONFIG"

    @property
    def units_pending(self) -> int:
        return self.units_total - self.units_done - self.units_leased

    @property
    def samples_written(self) -> int:
        return self.samples_done + self.samples_under_way

    @property
    def samples_per_s(self) -> float:
        return sum(float(t.stats.get("samples_per_s", 0)) for t in self.running_tasks())

    @property
    def tokens_per_s(self) -> float:
        return sum(float(t.stats.get("completion_tokens_per_s", 0)) for t in self.running_tasks())

    def running_tasks(self) -> list[TaskView]:
        return [t for t in self.tasks if t.running]

    def eta_s(self) -> float | None:
        rate = self.samples_per_s
        left = self.samples_total - self.samples_written
        return left / rate if rate > 0 and left > 0 else None


def run_status(run_dir: Path, *, lease_timeout: float | None = None) -> RunStatus:
    table = WorkTable.load(run_dir)
    recorded = read_run(run_dir)
    timeout = lease_timeout or float(recorded.get("lease_timeout", DEFAULT_LEASE_TIMEOUT_S))
    done = done_ids(run_dir) & {u.id for u in table.units}
    leases = {uid: live for uid, live in leased_ids(
        run_dir, timeout=timeout, holder_alive=scheduler.holder_alive).items() if uid not in done}
    markers = list(iter_done_markers(run_dir, done))
    jobs = scheduler.job_states(_job_ids(run_dir))
    return RunStatus(
        run_dir=run_dir,
        units_total=len(table.units),
        units_done=len(done),
        units_leased=sum(1 for live in leases.values() if live),
        units_stale=sum(1 for live in leases.values() if not live),
        samples_total=table.total_samples(),
        samples_done=sum(int(m.get("rows", 0)) for m in markers),
        error_rows=sum(int(m.get("error_rows", 0)) for m in markers),
        samples_under_way=_samples_under_way(run_dir, [u.id for u in table.units
                                                       if u.id not in done]),
        tasks=task_views(run_dir, jobs),
        jobs=jobs,
        merge=read_merge_marker(run_dir),
        score=read_score_marker(run_dir),
        failed_steps=_failed_steps(run_dir),
        orphans=_orphans(run_dir, jobs),
        config=str(recorded.get("config", "CONFIG")),
    )


def _samples_under_way(run_dir: Path, unfinished: list[str]) -> int:
    """Samples already kept by units not finished yet (their write-ahead logs and parts)."""
    total = 0
    for uid in unfinished:
        output = unit_output(run_dir, uid)
        if state_dir_for(output).is_dir():
            try:
                total += saved_rows(output)
            except (OSError, ValueError):
                continue
    return total


def task_views(run_dir: Path, jobs: list[scheduler.JobState]) -> list[TaskView]:
    """Every task that left a progress file or an exit marker, in the state SLURM and its files
    say together."""
    stats = _json_files(run_dir / "tasks", "*.json")
    exits = _json_files(run_dir / "tasks", "*.exit")
    slurm_state = {j.job_id: j.state for j in jobs}
    can_ask = bool(jobs) or scheduler.slurm_available()
    views = []
    for task in sorted(set(stats) | set(exits), key=_task_order):
        views.append(_view(task, stats.get(task, {}), exits.get(task), slurm_state.get(task),
                           can_ask))
    return views


def _view(
    task: str, stats: dict[str, Any], exit_marker: dict[str, Any] | None, queued: str | None,
    can_ask: bool,
) -> TaskView:
    if queued in scheduler.LIVE_STATES:
        return TaskView(task, "running" if stats.get("state") == "running" else "starting", stats)
    if queued is not None:  # pending again (requeued) or waiting its turn
        return TaskView(task, queued.lower(), stats)
    if exit_marker is not None:
        code = int(exit_marker.get("exit", 0))
        if exit_marker.get("cancelled"):
            return TaskView(task, "cancelled", stats, f"exit {code}")
        if code == 0:
            return TaskView(task, str(stats.get("state") or "idle"), stats)
        stage = exit_marker.get("stage", "task")
        where = {"check": "at start: could not check for work", "setup": "at start (setup)"}.get(
            stage, "while working")
        return TaskView(task, "failed", stats,
                        f"{_exit(code)} {where}: {_log_line(exit_marker.get('log'))}")
    if stats.get("state") == "running":
        fresh = time.time() - float(stats.get("updated", 0)) < RUNNING_TASK_FRESH_S
        if not can_ask and fresh:
            return TaskView(task, "running", stats)
        return TaskView(task, "gone", stats,
                        "ended without an exit marker (killed, or its node failed)")
    return TaskView(task, str(stats.get("state") or "unknown"), stats)


def _log_line(log: Any) -> str:
    """The line of a task's log that says why it failed: the last error line, else the last line
    that is not the batch script's own."""
    if not log:
        return "(no log)"
    try:
        with open(str(log), "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - LOG_TAIL_BYTES))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return f"(no log at {log})"
    ours = ("rollouts-slurm", "Traceback", "  ")
    errors = [line for line in lines
              if ("Error" in line or "error:" in line.lower()) and not line.startswith(ours)]
    others = [line for line in lines if line.strip() and not line.startswith(ours)]
    chosen = " ".join((errors or others or ["(empty log)"])[-1].split())
    return chosen[:300]


def _failed_steps(run_dir: Path) -> list[str]:
    """Merge and score jobs that failed since the last merge or score they would have recorded
    (one that could not even start, such as a wrong python, leaves only its exit marker)."""
    recorded = {"merge": read_merge_marker(run_dir), "score": read_score_marker(run_dir)}
    lines = []
    for marker in sorted(_json_files(run_dir / "steps", "*.exit").values(),
                         key=lambda m: m.get("at", 0)):
        step, code = str(marker.get("step")), int(marker.get("exit", 0))
        outcome = recorded.get(step, {})
        if code == 0 or str(outcome.get("job")) == str(marker.get("job")) \
                or float(outcome.get("at", 0)) > float(marker.get("at", 0)):
            continue  # it succeeded, or it left its own outcome, or a later one replaced it
        lines.append(f"{step} job {marker.get('job')} failed ({_exit(code)}): "
                     f"{_log_line(marker.get('log'))}")
    return lines


def _exit(code: int) -> str:
    """exit 1, or exit 137 (SIGKILL) for a status above 128."""
    if code > 128:
        with contextlib.suppress(ValueError):
            return f"exit {code}, {signal.Signals(code - 128).name}"
    return f"exit {code}"


def _json_files(folder: Path, pattern: str) -> dict[str, dict[str, Any]]:
    found = {}
    for path in folder.glob(pattern):
        try:
            found[path.name.rsplit(".", 1)[0]] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return found


def _task_order(task: str) -> tuple[str, int]:
    job, _, index = task.partition("_")
    return (job, int(index) if index.isdigit() else -1)


def _job_ids(run_dir: Path) -> list[str]:
    return [e[k] for e in read_jobs(run_dir) for k in ("array", *STEP_KEYS) if e.get(k)]


def _orphans(run_dir: Path, jobs: list[scheduler.JobState]) -> list[scheduler.JobState]:
    """Merge and score jobs that wait for a dependency that can no longer be met."""
    steps = {e[k] for e in read_jobs(run_dir) for k in STEP_KEYS if e.get(k)}
    return [j for j in jobs if j.job_id in steps and j.state == "PENDING"
            and ORPHAN_REASON in j.reason]


def format_status(status: RunStatus) -> str:
    """The report `rollouts slurm status` prints."""
    done_pct = 100.0 * status.samples_written / max(status.samples_total, 1)
    eta = status.eta_s()
    lines = [
        f"run {status.run_dir}",
        f"units: {status.units_done} done, {status.units_leased} leased, "
        f"{status.units_pending} pending of {status.units_total}"
        + (f" ({status.units_stale} leases of tasks gone)" if status.units_stale else ""),
        f"samples: {status.samples_written} of {status.samples_total} done ({done_pct:.1f}%: "
        f"{status.samples_done} in finished units, {status.samples_under_way} in units under "
        f"way), {status.error_rows} error rows",
        f"rate: {status.samples_per_s:.1f} samples/s, {status.tokens_per_s:.0f} tokens/s "
        f"({len(status.running_tasks())} running task(s)); "
        f"ETA {_duration(eta) if eta is not None else '-'}",
    ]
    if status.tasks:
        lines.append("tasks:")
        lines += [_task_line(task) for task in status.tasks]
    if status.jobs:
        lines.append("SLURM:")
        lines += [f"  {j.job_id} {j.state} {j.reason}" for j in status.jobs]
    else:
        lines.append("SLURM: no job of this run is queued or running")
    lines += _steps(status)
    return "\n".join(lines)


def _task_line(task: TaskView) -> str:
    stats = task.stats
    state = task.state
    if task.running:
        state += f" (updated {time.time() - float(stats.get('updated', time.time())):.0f}s ago)"
    line = f"  {task.task} {state}"
    if stats:
        samples = int(stats.get("samples", 0)) + int(stats.get("samples_in_flight", 0))
        line += f" on {stats.get('host')}: {stats.get('units_done', 0)} units, {samples} samples"
        if task.running:
            line += (f", {float(stats.get('samples_per_s', 0)):.1f} samples/s, "
                     f"{float(stats.get('completion_tokens_per_s', 0)):.0f} tokens/s")
        line += _limits(stats)
    if task.detail:
        line += f" - {task.detail}"
    return line


def _steps(status: RunStatus) -> list[str]:
    """The merge (and score) outcome, and what to do about a run that is stuck."""
    lines = list(status.failed_steps)
    for job in status.orphans:
        lines.append(
            f"orphaned: job {job.job_id} waits for tasks that ended ({job.reason.strip('()')}) "
            "and will never "
            f"run; `rollouts slurm submit {status.config}` cancels and replaces it (or "
            f"scancel {job.job_id})"
        )
    merge = status.merge
    if merge.get("state") == "merged":
        outputs = ", ".join(f"{o['output']} ({o['rows']} rows)" for o in merge["outputs"])
        lines.append(f"merged: {outputs}")
    elif merge.get("state"):
        lines.append(f"merge {merge['state']}"
                     + (f" (job {merge['job']})" if merge.get("job") else "")
                     + f": {merge.get('message', '')}")
    elif status.units_done == status.units_total:
        lines.append(f"every unit is done: rollouts slurm merge {status.run_dir}")
    if status.score.get("state") == "scored":
        lines.append("scored: " + ", ".join(o["output"] for o in status.score["outputs"]))
    elif status.score.get("state") == "failed":
        job_id = f" (job {status.score['job']})" if status.score.get("job") else ""
        lines.append(f"score failed{job_id}: {status.score.get('message', '')}; scored files written: "
                     + ", ".join(o["output"] for o in status.score.get("outputs", [])))
    return lines


def _limits(task: dict[str, Any]) -> str:
    """The limit in force per server of a task with `auto` concurrency, in sequences."""
    servers = task.get("concurrency") or []
    if not servers:
        return ""
    return ", limit_seqs=" + ",".join(str(server.get("final_sequences")) for server in servers)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
