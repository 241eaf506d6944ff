"""`rollouts slurm submit`: check a run config, write its work table, submit the array and merge.

    result = submit_run(Path("run.yaml"))          # the `rollouts run` YAML plus a `slurm:` section
    print(result.array_job_id, result.run_dir)

Everything is checked before anything is submitted: the config (load_plan and the slurm section),
every input file, that a server fits in a task's GPUs, that the run directory holds this run (or
none), and that no job of the run is still queued or running (unless force). Submitting again does
only the units without a done marker.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollouts.dataset import Dataset, load_datasets
from rollouts.errors import OutputConflictError, UserInputError
from rollouts.io import write_json_atomic
from rollouts.runconfig import RunPlan, load_plan
from rollouts.store import describe_config_change
from slurm import scheduler
from slurm.config import SlurmConfig, check_fits, load_slurm_config
from slurm.render import Scripts, render_scripts
from slurm.units import DatasetEntry, Unit, WorkTable, done_ids, split_units

RUN_FILE = "run.json"
JOBS_FILE = "jobs.json"
ENDED_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "BOOT_FAIL", "DEADLINE",
                "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}


@dataclass(frozen=True)
class SubmitResult:
    """What submit_run did (or, for a dry run, would do)."""

    run_dir: Path
    tasks: int  # array tasks submitted (0 when nothing is left to do)
    units_total: int
    units_pending: int
    samples_total: int
    samples_pending: int
    scripts: Scripts  # the rendered text
    array_job_id: str | None = None  # None: dry run, or nothing left to do
    merge_job_id: str | None = None
    array_script: Path | None = None  # where the scripts were saved (not for a dry run)
    merge_script: Path | None = None
    work: list[dict[str, Any]] = field(default_factory=list)  # one row per input file


@dataclass(frozen=True)
class LoadedRun:
    """A run config read and checked, with its work table."""

    config_path: Path
    plan: RunPlan
    slurm: SlurmConfig
    table: WorkTable
    identity: dict[str, Any]
    datasets: tuple[Dataset, ...]  # validated input files, in the order of table.datasets


def submit_run(config_path: Path, *, dry_run: bool = False, force: bool = False) -> SubmitResult:
    """Submit a run config to SLURM: one array job over its work units, then a merge job.

    config_path: a `rollouts run` YAML with a `slurm:` section (slurm/config.py lists the keys).
    dry_run: render and count, write and submit nothing (no sbatch needed).
    force: submit even while earlier jobs of the same run are still queued or running (the tasks
    share the units safely; without it that is refused, as a second submit is usually a mistake).

    Raises UserInputError (bad config, no sbatch, sbatch refusing the job: its message) or
    OutputConflictError (the run directory holds another run) before submitting anything."""
    if not dry_run:
        scheduler.require_slurm()
    run = load_run(config_path)
    run_dir = run.slurm.run_dir
    check_run_dir(run_dir, run.identity)
    done = done_ids(run_dir)
    pending = [u for u in run.table.units if u.id not in done]
    tasks = min(run.slurm.array_size, len(pending))
    scripts = render_scripts(run.slurm, run_dir, max(tasks, 1))
    result = SubmitResult(
        run_dir=run_dir,
        tasks=tasks,
        units_total=len(run.table.units),
        units_pending=len(pending),
        samples_total=run.table.total_samples(),
        samples_pending=sum(run.table.samples(u) for u in pending),
        scripts=scripts,
        work=work_rows(run.table, done),
    )
    if dry_run or not pending:
        return result
    if not force:
        refuse_if_active(run_dir)
    write_run_dir(run, run_dir)
    return _submit(result, run.slurm, scripts)


def load_run(config_path: Path) -> LoadedRun:
    """Read a config and validate every input; the units it splits into (pure of the run dir)."""
    plan = load_plan(config_path, progress=False)
    if plan.backend != "openai":
        raise UserInputError(
            f"{config_path}: backend {plan.backend!r} runs in-process; a SLURM run serves the "
            "model with vLLM (backend: openai, the default)"
        )
    slurm = load_slurm_config(config_path, plan.output_dir)
    check_fits(slurm, plan.server, f"{config_path}: server")
    entries: list[DatasetEntry] = []
    datasets: list[Dataset] = []
    units: list[Unit] = []
    for job_index, job in enumerate(plan.jobs):
        for dataset in load_datasets(
            job.inputs, job.prompt_key, job.system_prompt, job.dataset_name
        ):
            entry = DatasetEntry(
                job=job_index, path=str(dataset.path.resolve()), name=dataset.name,
                output=str(job.output.resolve()), config_hash=job.config_hash(),
                prompts=dataset.num_prompts, n=job.n, output_format=job.output_format,
                config=job.identity(),
            )
            units += split_units(len(entries), entry, dataset.digests, slurm.unit_prompts)
            entries.append(entry)
            datasets.append(dataset)
    table = WorkTable(tuple(entries), tuple(units))
    identity = {
        "model": plan.model,
        "unit_prompts": slurm.unit_prompts,  # other units would not match the finished ones
        "datasets": [
            {"name": e.name, "path": e.path, "output": e.output, "config_hash": e.config_hash}
            for e in entries
        ],
    }
    return LoadedRun(config_path.resolve(), plan, slurm, table, identity, tuple(datasets))


def check_run_dir(run_dir: Path, identity: dict[str, Any]) -> None:
    """The run directory is new or holds this same run; else one line saying what differs."""
    run_file = run_dir / RUN_FILE
    if not run_file.exists():
        if run_dir.exists() and any(run_dir.iterdir()):
            raise OutputConflictError(
                f"{run_dir} is not empty and holds no run; choose another slurm.run_dir"
            )
        return
    previous = json.loads(run_file.read_text(encoding="utf-8")).get("identity", {})
    if previous != identity:
        change = describe_config_change(_flat(previous), _flat(identity))
        raise OutputConflictError(
            f"{run_dir} holds another run ({change}); use the same config to resume, or "
            "another slurm.run_dir"
        )


def _flat(identity: dict[str, Any]) -> dict[str, Any]:
    flat = {"model": identity.get("model"), "unit_prompts": identity.get("unit_prompts")}
    for index, entry in enumerate(identity.get("datasets", [])):
        for key, value in entry.items():
            flat[f"datasets[{index}].{key}"] = value
    return flat


def refuse_if_active(run_dir: Path) -> None:
    active = [s for s in scheduler.job_states(_job_ids(run_dir)) if s.state not in ENDED_STATES]
    if active:
        listed = ", ".join(f"{s.job_id} {s.state}" for s in active[:5])
        raise UserInputError(
            f"{run_dir}: jobs of this run are still queued or running ({listed}); wait for them, "
            "scancel them, or pass --force to add tasks beside them"
        )


def _job_ids(run_dir: Path) -> list[str]:
    ids = []
    for entry in read_jobs(run_dir):
        ids += [entry[key] for key in ("array", "merge") if entry.get(key)]
    return ids


def read_jobs(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / JOBS_FILE
    if not path.exists():
        return []
    jobs: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return jobs


def write_run_dir(run: LoadedRun, run_dir: Path) -> None:
    for sub in ("leases", "done", "units", "sbatch", "tasks"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    run.slurm.logs.mkdir(parents=True, exist_ok=True)
    run.table.save(run_dir)
    write_json_atomic(
        {"config": str(run.config_path), "identity": run.identity,
         "summary": str(run.plan.summary_path), "lease_timeout": run.slurm.lease_timeout,
         "created_at": _now()},
        run_dir / RUN_FILE,
    )


def _submit(result: SubmitResult, slurm: SlurmConfig, scripts: Scripts) -> SubmitResult:
    run_dir = result.run_dir
    jobs = read_jobs(run_dir)
    number = len(jobs)
    array_script = run_dir / "sbatch" / f"array-{number}.sh"
    array_script.write_text(scripts.array, encoding="utf-8")
    array_id = scheduler.submit(array_script)
    entry: dict[str, Any] = {"array": array_id, "tasks": result.tasks, "submitted_at": _now()}
    merge_script = merge_id = None
    if scripts.merge is not None:
        merge_script = run_dir / "sbatch" / f"merge-{number}.sh"
        merge_script.write_text(scripts.merge, encoding="utf-8")
        try:
            merge_id = scheduler.submit(merge_script, dependency=f"afterok:{array_id}")
        finally:
            entry["merge"] = merge_id
            write_json_atomic([*jobs, entry], run_dir / JOBS_FILE)
    else:
        write_json_atomic([*jobs, entry], run_dir / JOBS_FILE)
    return dataclasses.replace(result, array_job_id=array_id, merge_job_id=merge_id,
                               array_script=array_script, merge_script=merge_script)


def work_rows(table: WorkTable, done: set[str]) -> list[dict[str, Any]]:
    """Per input file: prompts, samples, units done of total, output."""
    rows = []
    for index, entry in enumerate(table.datasets):
        units = [u for u in table.units if u.dataset == index]
        finished = sum(1 for u in units if u.id in done)
        rows.append({
            "dataset": entry.name, "prompts": entry.prompts, "n": entry.n,
            "samples": entry.prompts * entry.n, "units": len(units), "units_done": finished,
            "output": entry.output,
        })
    return rows


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
