"""`rollouts slurm submit`: check a run config, write its work table, submit the array and merge.

    result = submit_run(Path("run.yaml"))          # the `rollouts run` YAML plus a `slurm:` section
    print(result.array_job_id, result.run_dir)

Everything is checked before anything is submitted: the config (load_plan, the slurm and score
sections), every input file, a DCP checkpoint, that a server fits in a task's GPUs, that the run
directory is writable and holds this run (or none), and that no task of the run is still queued or
running (unless force). Submitting again does only the units without a done marker, and cancels a
merge or score job of an earlier submit still waiting (it is replaced).

The run directory keeps what the tasks need, so editing the config or its inputs afterwards changes
nothing in a submitted run: a snapshot of the config (config/NAME.yaml, read with the original's
folder for relative paths) and each input file's fingerprint (size and SHA-256) in run.json. A task
refuses an input whose fingerprint changed, naming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
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
from slurm.score import ScoreSection, load_score_section
from slurm.units import DatasetEntry, Unit, WorkTable, done_ids, split_units

RUN_FILE = "run.json"
JOBS_FILE = "jobs.json"
SNAPSHOT_DIR = "config"
HASH_CHUNK = 1 << 20
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
    score_job_id: str | None = None
    replaced: list[str] = field(default_factory=list)  # waiting merge/score jobs cancelled
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
    score: ScoreSection | None = None  # score the merged outputs in a job after the merge
    base_dir: Path | None = None  # the folder relative paths were taken from


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
    scripts = render_scripts(run.slurm, run_dir, max(tasks, 1), score=run.score is not None)
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
    # With --force, earlier tasks may still run: the new merge waits for them too.
    earlier = active_arrays(run_dir) if force else []
    replaced = cancel_waiting_steps(run_dir)
    write_run_dir(run, run_dir)
    return _submit(dataclasses.replace(result, replaced=replaced), run.slurm, scripts, earlier)


def load_run(config_path: Path, *, base_dir: Path | None = None) -> LoadedRun:
    """Read a config and validate every input; the units it splits into (pure of the run dir).
    Relative paths are taken from base_dir (default: the config's folder)."""
    plan = load_plan(config_path, progress=False, base_dir=base_dir)
    if plan.backend != "openai":
        raise UserInputError(
            f"{config_path}: backend {plan.backend!r} runs in-process; a SLURM run serves the "
            "model with vLLM (backend: openai, the default)"
        )
    slurm = load_slurm_config(config_path, plan.output_dir, base_dir=base_dir)
    check_fits(slurm, plan.server, f"{config_path}: server")
    score = load_score_section(config_path)
    check_checkpoint(plan)
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
    return LoadedRun(config_path.resolve(), plan, slurm, table, identity, tuple(datasets),
                     score, base_dir or config_path.resolve().parent)


def check_checkpoint(plan: RunPlan) -> None:
    """A DCP checkpoint `model` is read (and checked against base_model) before any job runs:
    a corrupt one is one line here, not a failure in every task."""
    from rollouts.checkpoint import check_against_base, is_dcp_checkpoint

    if not plan.model or not is_dcp_checkpoint(plan.model):
        return
    if not plan.base_model:
        raise UserInputError(
            f"{plan.model} is a DCP checkpoint; set `base_model` (the HuggingFace model it was "
            "trained from) so it can be converted"
        )
    try:
        check_against_base(plan.model, plan.base_model)
    except UserInputError:
        raise
    except Exception as exc:  # torch's reader fails on a damaged file in many ways
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UserInputError(
            f"{plan.model}: cannot read the DCP checkpoint ({type(exc).__name__}: {reason}); "
            "is it complete? save it again or point `model` at another step"
        ) from exc


def input_fingerprints(table: WorkTable) -> dict[str, dict[str, Any]]:
    """Each input file's size and SHA-256: what the run's units were cut from."""
    return {entry.path: fingerprint(Path(entry.path)) for entry in table.datasets}


def fingerprint(path: Path) -> dict[str, Any]:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            hasher.update(chunk)
    return {"size": path.stat().st_size, "sha256": hasher.hexdigest()}


def check_fingerprints(run_dir: Path, recorded: dict[str, dict[str, Any]]) -> None:
    """Refuse (naming it) an input file changed or gone since submit."""
    for path, expected in recorded.items():
        try:
            now = fingerprint(Path(path))
        except OSError as exc:
            raise UserInputError(
                f"input {path} is gone since the run was submitted to {run_dir} "
                f"({exc.strerror}); restore it"
            ) from exc
        if now != expected:
            raise UserInputError(
                f"input {path} changed since the run was submitted to {run_dir} (size "
                f"{expected['size']} -> {now['size']}, sha256 {expected['sha256'][:12]} -> "
                f"{now['sha256'][:12]}); restore it, or submit the config again (units of changed "
                "prompts are redone)"
            )


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


STEP_KEYS = ("merge", "score")  # the jobs that follow an array


def _active_tasks(run_dir: Path) -> list[scheduler.JobState]:
    arrays = [e["array"] for e in read_jobs(run_dir) if e.get("array")]
    return [s for s in scheduler.job_states(arrays) if s.state not in ENDED_STATES]


def active_arrays(run_dir: Path) -> list[str]:
    """The array jobs of this run with a task still queued or running."""
    return sorted({s.job_id.split("_")[0] for s in _active_tasks(run_dir)})


def refuse_if_active(run_dir: Path) -> None:
    """Tasks of this run still queued or running: a second submit is usually a mistake."""
    active = _active_tasks(run_dir)
    if active:
        listed = ", ".join(f"{s.job_id} {s.state}" for s in active[:5])
        raise UserInputError(
            f"{run_dir}: tasks of this run are still queued or running ({listed}); wait for "
            f"them, `rollouts slurm cancel {run_dir}`, or pass --force to add tasks beside them"
        )


def cancel_waiting_steps(run_dir: Path) -> list[str]:
    """Cancel the merge and score jobs of earlier submits that have not started: the new submit
    queues its own after its array (an old one would merge too early, or wait forever on an
    array that failed)."""
    steps = [e[k] for e in read_jobs(run_dir) for k in STEP_KEYS if e.get(k)]
    waiting = [s.job_id for s in scheduler.job_states(steps) if s.state == "PENDING"]
    for job_id in waiting:
        scheduler.cancel(job_id)
    return waiting


def run_job_ids(run_dir: Path) -> list[str]:
    """Every job this run submitted: arrays, merges, score jobs."""
    return [e[k] for e in read_jobs(run_dir) for k in ("array", *STEP_KEYS) if e.get(k)]


def cancel_run(run_dir: Path) -> list[str]:
    """scancel every job of the run still queued or running; the ids cancelled. Running tasks get
    TERM: they stop claiming, keep what finished and give their units back."""
    if not (run_dir / JOBS_FILE).is_file():
        raise UserInputError(f"{run_dir}: not a SLURM run directory (no {JOBS_FILE})")
    scheduler.require_slurm()
    states = scheduler.job_states(run_job_ids(run_dir))
    arrays = {e["array"] for e in read_jobs(run_dir) if e.get("array")}
    cancelled: list[str] = []
    for state in states:
        if state.state in ENDED_STATES:
            continue
        whole = state.job_id.split("_")[0]  # one scancel per array stops all its tasks
        target = whole if whole in arrays else state.job_id
        if target not in cancelled:
            scheduler.cancel(target)
            cancelled.append(target)
    return cancelled


def read_jobs(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / JOBS_FILE
    if not path.exists():
        return []
    jobs: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return jobs


def write_run_dir(run: LoadedRun, run_dir: Path) -> None:
    """The work table, the config's snapshot and its inputs' fingerprints; one line when the run
    directory cannot be written."""
    try:
        for sub in ("leases", "done", "units", "sbatch", "tasks", "steps", SNAPSHOT_DIR):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        run.slurm.logs.mkdir(parents=True, exist_ok=True)
        run.table.save(run_dir)
        snapshot = run_dir / SNAPSHOT_DIR / run.config_path.name
        if run.config_path != snapshot.resolve():
            shutil.copyfile(run.config_path, snapshot)
        write_json_atomic(
            {"config": str(run.config_path), "snapshot": str(snapshot),
             "base_dir": str(run.base_dir or run.config_path.parent),
             "inputs": input_fingerprints(run.table), "identity": run.identity,
             "summary": str(run.plan.summary_path), "lease_timeout": run.slurm.lease_timeout,
             "sweep_manifest": str(run.slurm.sweep_manifest or "") or None,
             "created_at": _now()},
            run_dir / RUN_FILE,
        )
    except OSError as exc:
        where = exc.filename or run_dir
        raise UserInputError(
            f"cannot write the run directory {run_dir} ({where}: {exc.strerror}); set "
            "slurm.run_dir to a writable folder on a filesystem every node sees"
        ) from exc


def read_run(run_dir: Path) -> dict[str, Any]:
    """run.json: what submit recorded."""
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise UserInputError(f"{run_dir}: not a SLURM run directory (no {RUN_FILE})")
    recorded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return recorded


def _submit(
    result: SubmitResult, slurm: SlurmConfig, scripts: Scripts, earlier: list[str]
) -> SubmitResult:
    run_dir = result.run_dir
    jobs = read_jobs(run_dir)
    number = len(jobs)
    array_script = run_dir / "sbatch" / f"array-{number}.sh"
    array_script.write_text(scripts.array, encoding="utf-8")
    array_id = scheduler.submit(array_script)
    entry: dict[str, Any] = {"array": array_id, "tasks": result.tasks, "submitted_at": _now()}
    merge_script = merge_id = score_id = None
    try:
        if scripts.merge is not None:
            # afterany: the merge runs however the array ended, and says what is missing.
            merge_script = run_dir / "sbatch" / f"merge-{number}.sh"
            merge_script.write_text(scripts.merge, encoding="utf-8")
            merge_id = entry["merge"] = scheduler.submit(
                merge_script, dependency="afterany:" + ":".join([*earlier, array_id])
            )
            if scripts.score is not None:
                score_script = run_dir / "sbatch" / f"score-{number}.sh"
                score_script.write_text(scripts.score, encoding="utf-8")
                score_id = entry["score"] = scheduler.submit(
                    score_script, dependency=f"afterany:{merge_id}"
                )
    finally:
        write_json_atomic([*jobs, entry], run_dir / JOBS_FILE)
    return dataclasses.replace(result, array_job_id=array_id, merge_job_id=merge_id,
                               score_job_id=score_id, array_script=array_script,
                               merge_script=merge_script)


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
