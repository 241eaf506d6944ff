"""`rollouts slurm status RUN_DIR`: how far a run is, from its files and squeue alone.

Reads the work table, the done markers, the leases and each task's progress file, so it works
from any login shell while the jobs run and after they ended.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slurm import scheduler
from slurm.submit import read_jobs
from slurm.units import WorkTable, done_ids, iter_done_markers, leased_ids

RUNNING_TASK_FRESH_S = 600.0  # a progress file older than this belongs to a task that is gone


@dataclass
class RunStatus:
    run_dir: Path
    units_total: int
    units_done: int
    units_leased: int
    units_stale: int
    samples_total: int
    samples_done: int
    error_rows: int
    tasks: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[scheduler.JobState] = field(default_factory=list)

    @property
    def units_pending(self) -> int:
        return self.units_total - self.units_done - self.units_leased

    @property
    def samples_per_s(self) -> float:
        return sum(float(t.get("samples_per_s", 0)) for t in self.running_tasks())

    @property
    def tokens_per_s(self) -> float:
        return sum(float(t.get("completion_tokens_per_s", 0)) for t in self.running_tasks())

    def running_tasks(self) -> list[dict[str, Any]]:
        now = time.time()
        return [t for t in self.tasks if t.get("state") == "running"
                and now - float(t.get("updated", 0)) < RUNNING_TASK_FRESH_S]

    def eta_s(self) -> float | None:
        rate = self.samples_per_s
        left = self.samples_total - self.samples_done
        return left / rate if rate > 0 and left > 0 else None


def run_status(run_dir: Path, *, lease_timeout: float = 300.0) -> RunStatus:
    table = WorkTable.load(run_dir)
    done = done_ids(run_dir) & {u.id for u in table.units}
    leases = {uid: live for uid, live in leased_ids(run_dir, timeout=lease_timeout).items()
              if uid not in done}
    markers = list(iter_done_markers(run_dir, done))
    return RunStatus(
        run_dir=run_dir,
        units_total=len(table.units),
        units_done=len(done),
        units_leased=sum(1 for live in leases.values() if live),
        units_stale=sum(1 for live in leases.values() if not live),
        samples_total=table.total_samples(),
        samples_done=sum(int(m.get("rows", 0)) for m in markers),
        error_rows=sum(int(m.get("error_rows", 0)) for m in markers),
        tasks=_task_files(run_dir),
        jobs=scheduler.job_states(_job_ids(run_dir)),
    )


def _task_files(run_dir: Path) -> list[dict[str, Any]]:
    tasks = []
    for path in sorted((run_dir / "tasks").glob("*.json")):
        try:
            tasks.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return tasks


def _job_ids(run_dir: Path) -> list[str]:
    return [e[k] for e in read_jobs(run_dir) for k in ("array", "merge") if e.get(k)]


def format_status(status: RunStatus) -> str:
    """The report `rollouts slurm status` prints."""
    done_pct = 100.0 * status.samples_done / max(status.samples_total, 1)
    eta = status.eta_s()
    lines = [
        f"run {status.run_dir}",
        f"units: {status.units_done} done, {status.units_leased} leased, "
        f"{status.units_pending} pending of {status.units_total}"
        + (f" ({status.units_stale} stale leases)" if status.units_stale else ""),
        f"samples: {status.samples_done} of {status.samples_total} done ({done_pct:.1f}%), "
        f"{status.error_rows} error rows",
        f"rate: {status.samples_per_s:.1f} samples/s, {status.tokens_per_s:.0f} tokens/s; "
        f"ETA {_duration(eta) if eta is not None else '-'}",
    ]
    if status.tasks:
        lines.append("tasks:")
        now = time.time()
        for task in status.tasks:
            state = str(task.get("state"))
            if state == "running":
                state += f" (updated {now - float(task.get('updated', now)):.0f}s ago)"
            lines.append(
                f"  {task.get('task')} {state} on {task.get('host')}: "
                f"{task.get('units_done', 0)} units, {task.get('samples', 0)} samples, "
                f"{float(task.get('samples_per_s', 0)):.1f} samples/s, "
                f"{float(task.get('completion_tokens_per_s', 0)):.0f} tokens/s"
                + _limits(task)
            )
    if status.jobs:
        lines.append("SLURM:")
        lines += [f"  {j.job_id} {j.state} {j.reason}" for j in status.jobs]
    else:
        lines.append("SLURM: no job of this run is queued or running")
    if status.units_done == status.units_total:
        lines.append(f"every unit is done: rollouts slurm merge {status.run_dir}")
    return "\n".join(lines)


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
