"""`rollouts slurm submit | status | merge | cancel` (and `task` and `score`, what jobs run)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rollouts.clitools import EXIT_WITH_ERROR_ROWS, echo_err, handle_errors
from slurm.config import SLURM_KEYS

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _keys_help() -> str:
    width = max(map(len, SLURM_KEYS))
    return "\b\nslurm: keys\n" + "\n".join(
        f"  {key.ljust(width)}  {text}" for key, text in SLURM_KEYS.items()
    )


@click.group(context_settings=CONTEXT)
def slurm() -> None:
    """Run one config across a SLURM cluster: submit, watch, merge (see docs/slurm.md)."""


@slurm.command(context_settings=CONTEXT, epilog=_keys_help())
@click.argument("config_file", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the sbatch script(s) and the work table; "
              "submit nothing.")
@click.option("--force", is_flag=True, help="Submit even while jobs of this run are still queued "
              "or running.")
@handle_errors
def submit(config_file: Path, dry_run: bool, force: bool) -> None:
    """Submit CONFIG_FILE (the `rollouts run` YAML plus a `slurm:` section) as an array job.

    \b
    slurm: {array_size: 16, gpus_per_node: 8, time: "04:00:00", partition: gpu,
            setup: ["source /shared/venv/bin/activate"]}

    Each task claims work units, serves the model and generates; a merge job follows the array.
    Submitting again does only the units not yet done.
    """
    from slurm.submit import submit_run

    result = submit_run(config_file, dry_run=dry_run, force=force)
    for row in result.work:
        echo_err(
            f"{row['dataset']}: {row['prompts']} prompts x {row['n']} = {row['samples']} samples,"
            f" units {row['units_done']}/{row['units']} done -> {row['output']}"
        )
    echo_err(
        f"{result.units_pending} of {result.units_total} units to do "
        f"({result.samples_pending} of {result.samples_total} samples) on {result.tasks} task(s)"
    )
    if dry_run:
        click.echo(result.scripts.array)
        if result.scripts.merge:
            click.echo(result.scripts.merge)
        return
    if result.array_job_id is None:
        echo_err(f"nothing left to do; merge with: rollouts slurm merge {result.run_dir}")
        return
    for job_id in result.replaced:
        echo_err(f"cancelled job {job_id}: a merge or score of an earlier submit, replaced")
    echo_err(f"submitted array job {result.array_job_id} ({result.array_script})"
             + (f", merge job {result.merge_job_id}" if result.merge_job_id else "")
             + (f", score job {result.score_job_id}" if result.score_job_id else ""))
    echo_err(f"watch it with: rollouts slurm status {result.run_dir}")
    click.echo(result.array_job_id)


@slurm.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@handle_errors
def status(run_dir: Path) -> None:
    """Units done / leased / pending, rates, ETA, errors and SLURM states of RUN_DIR."""
    from slurm.status import format_status, run_status

    click.echo(format_status(run_status(run_dir)))


@slurm.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@handle_errors
def merge(run_dir: Path) -> None:
    """Write each dataset's output from RUN_DIR's units (refuses while units are missing)."""
    from slurm.merge import merge_run

    for merged in merge_run(run_dir):
        echo_err(f"{merged.output}: {merged.rows} rows, {merged.error_rows} error rows")
        click.echo(str(merged.output))


@slurm.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@handle_errors
def cancel(run_dir: Path) -> None:
    """Stop every job of RUN_DIR (tasks, merge, score); finished units stay done.

    Running tasks stop claiming, give their units back and are not requeued; submit the config
    again to go on."""
    from slurm.submit import cancel_run

    cancelled = cancel_run(run_dir)
    if not cancelled:
        echo_err(f"{run_dir}: no job of this run is queued or running")
    for job_id in cancelled:
        click.echo(job_id)
    if cancelled:
        echo_err(f"cancelled {len(cancelled)} job(s); see them go with: "
                 f"rollouts slurm status {run_dir}")


@slurm.command(context_settings=CONTEXT, hidden=True)
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--check", is_flag=True, help="Exit 0 when a unit is left to claim, 3 when none "
              "is, anything else when the check could not run.")
@handle_errors
def task(run_dir: Path, check: bool) -> None:
    """What one array task runs (the rendered sbatch script calls it)."""
    from slurm.render import NOTHING_LEFT_EXIT
    from slurm.task import check_for_work, run_task

    if check:
        sys.exit(0 if check_for_work(run_dir) else NOTHING_LEFT_EXIT)
    run_task(run_dir)


@slurm.command(context_settings=CONTEXT, hidden=True)
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@handle_errors
def score(run_dir: Path) -> None:
    """Score RUN_DIR's merged outputs with its config's `score:` section (the score job)."""
    from slurm.score import read_score_marker, score_run

    batch = score_run(run_dir)
    for item in batch["inputs"]:
        echo_err(f"{item['input']} -> {item['output']}: {item['rows']} rows scored")
        click.echo(item["output"])
    marker = read_score_marker(run_dir)
    if marker.get("state") == "failed":  # rows whose reward failed, under on_error: fail
        echo_err(str(marker["message"]))
        sys.exit(EXIT_WITH_ERROR_ROWS)
