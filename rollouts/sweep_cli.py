"""`rollouts sweep SWEEP.yaml`: a thin click layer over rollouts.sweep."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from rollouts.clitools import echo_err, handle_errors

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
EXIT_WITH_ERROR_ROWS = 3

if TYPE_CHECKING:
    from rollouts.sweep import Sweep


@click.command("sweep", context_settings=CONTEXT)
@click.argument("sweep_file", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True,
              help="Print the combination table (and with --slurm the job scripts); run nothing.")
@click.option("--slurm", "on_slurm", is_flag=True,
              help="Submit one SLURM job per model/checkpoint (the file's `slurm:` section).")
@click.option("--force", is_flag=True,
              help="With --slurm: submit even while earlier jobs of a group are still queued.")
@click.option("--hot-swap/--no-hot-swap", default=True, show_default=True,
              help="Keep one managed server across consecutive checkpoints of one architecture "
                   "and swap its weights (loopback servers only), instead of a restart each.")
@click.option("--watch", is_flag=True,
              help="Keep running: evaluate each new checkpoint the glob matches once its trainer "
                   "has finished writing it (then score and report with a `score:` section).")
@click.option("--until", "until_step", type=int, default=None, metavar="STEP",
              help="With --watch: stop once a checkpoint of this step or later is evaluated.")
@click.option("--poll", "poll_s", type=float, default=30.0, show_default=True,
              help="With --watch: seconds between looks for new checkpoints.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@handle_errors
def sweep_command(
    sweep_file: Path, dry_run: bool, on_slurm: bool, force: bool, hot_swap: bool, watch: bool,
    until_step: int | None, poll_s: float, progress: bool,
) -> None:
    """Run a `rollouts run` config over every combination of swept values.

    \b
    checkpoints: ckpts/global_step_*        # ordered by step; one model load each
    base_model: Qwen/Qwen2.5-1.5B-Instruct  # for DCP checkpoints (converted in the job)
    output_dir: sweeps/math
    defaults: {n: 8, max_tokens: 2048}
    datasets: [{path: data/gsm8k.parquet}, {path: data/math500.parquet}]
    grid: {temperature: [0.6, 1.0]}         # every combination
    zip: {top_p: [0.9, 1.0], seed: [1, 2]}  # lists taken together

    Each combination writes into OUTPUT_DIR/<varying values>-<hash>/; OUTPUT_DIR/sweep.parquet
    lists them with their status. Rerunning skips finished combinations and resumes the rest.
    """
    from rollouts import sweep as sweeps

    if watch:
        _watch(sweep_file, until_step, poll_s, hot_swap=hot_swap, progress=progress,
               refused=[n for n, on in (("--slurm", on_slurm), ("--dry-run", dry_run)) if on])
        return
    if until_step is not None:
        raise click.UsageError("--until goes with --watch")
    sweep = sweeps.load_sweep(sweep_file)
    if on_slurm:
        _submit(sweep, dry_run=dry_run, force=force)
        return
    if dry_run:
        click.echo(sweeps.format_table(sweep, sweeps.manifest_rows(sweep)))
        echo_err(f"{len(sweep.combinations)} combinations in {len(sweep.groups)} model load(s); "
                 "nothing run (--dry-run)")
        return
    result = sweeps.run_sweep(sweep, progress=progress, hot_swap=hot_swap)
    click.echo(sweeps.format_table(sweep, result.rows))
    echo_err(f"manifest: {result.manifest}")
    if result.failures:
        raise click.ClickException(
            f"{len(result.failures)} of {len(sweep.combinations)} combinations failed; "
            "see the `error` column of the manifest, then rerun to resume"
        )
    if any(row["error_rows"] for row in result.rows):
        echo_err("some samples failed; set retry_errors: true and rerun to retry them")
        sys.exit(EXIT_WITH_ERROR_ROWS)


def _watch(
    sweep_file: Path, until_step: int | None, poll_s: float, *, hot_swap: bool, progress: bool,
    refused: list[str],
) -> None:
    from rollouts.sweep_watch import watch_sweep

    if refused:
        raise click.UsageError(f"--watch runs here; it does not go with {' '.join(refused)}")
    if poll_s <= 0:
        raise click.UsageError("--poll must be a number of seconds above 0")
    try:
        failures = watch_sweep(sweep_file, until=until_step, poll_s=poll_s, hot_swap=hot_swap,
                               progress=progress)
    except KeyboardInterrupt:
        echo_err("stopped (Ctrl-C); rerun the same command to go on where it stopped")
        sys.exit(130)
    if failures:
        raise click.ClickException(
            f"{len(failures)} combinations failed; see the `error` column of the manifest"
        )


def _submit(sweep: Sweep, *, dry_run: bool, force: bool) -> None:
    from rollouts import sweep as sweeps

    click.echo(sweeps.format_table(sweep, sweeps.manifest_rows(sweep)))
    for group, result in sweeps.submit_sweep(sweep, dry_run=dry_run, force=force):
        if dry_run:
            click.echo(f"\n# ===== {group.name}: {result.tasks} task(s), array script =====")
            click.echo(result.scripts.array)
            if result.scripts.merge:
                click.echo(f"# ===== {group.name}: merge script =====")
                click.echo(result.scripts.merge)
        elif result.array_job_id:
            echo_err(f"{group.name}: submitted job {result.array_job_id}; "
                     f"status: rollouts slurm status {result.run_dir}")
        else:
            echo_err(f"{group.name}: nothing left to do")
