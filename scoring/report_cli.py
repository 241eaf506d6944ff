"""`rollouts report`: the click layer over scoring.report (imported when the command runs)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from rollouts.clitools import echo_err, handle_errors

if TYPE_CHECKING:
    from scoring.report.analysis import Analysis


@click.command("report", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("inputs", nargs=-1)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Directory for report.md/.html, report.json, metrics.parquet and the PNGs.")
@click.option("--baseline", default=None,
              help="The run every other one is compared against: a label, an input file, or a "
                   "model/checkpoint (each run is then compared with its run at the same settings).")
@click.option("--label", "hand_labels", multiple=True, metavar="NAME=FILE",
              help="Name the run in FILE (added to the inputs when not among them); repeatable.")
@click.option("--metric", default="mean@n", show_default=True,
              help="What curves, best checkpoints and comparisons use: mean@n (accuracy), "
                   "mean_score@n (the raw reward), pass@K or maj@K.")
@click.option("--domains", "domains_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="YAML: task -> domain, or domain -> [tasks] (default: the `domain__task` prefix).")
@click.option("--select-on", default=None,
              help="Choose best checkpoints on this split (the `split` column or extra_info.split) "
                   "and report them on the other prompts.")
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="md", show_default=True,
              help="report.md, or report.html: one self-contained page with the images inline.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every resampling.")
@click.option("--bootstrap", type=int, default=1000, show_default=True, help="Bootstrap replicates.")
@click.option("--permutations", type=int, default=5000, show_default=True,
              help="Sign flips of the permutation test (all of them when there are fewer).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier report in the same directory.")
@click.option("--tensorboard", "tensorboard_dir", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Also write every metric, with its interval, as TensorBoard scalars under DIR: one "
                   "run per model/settings, the checkpoint step as the step. Needs rollouts[trackers].")
@click.option("--wandb", "wandb_project", default=None, metavar="PROJECT",
              help="Also log every metric, with its interval, to this W&B project: one run per "
                   "model/settings, the checkpoint step as the step. Needs rollouts[trackers].")
@handle_errors
def report(
    inputs: tuple[str, ...],
    output: Path,
    baseline: str | None,
    hand_labels: tuple[str, ...],
    metric: str,
    domains_file: Path | None,
    select_on: str | None,
    fmt: str,
    seed: int,
    bootstrap: int,
    permutations: int,
    overwrite: bool,
    tensorboard_dir: Path | None,
    wandb_project: str | None,
) -> None:
    """Per-task, per-domain and overall scores with 95% intervals, learning curves over checkpoints,
    and paired comparisons against a baseline, from scored outputs (files, globs, directories or a
    sweep root with its sweep.parquet).

    \b
    Examples:
      rollouts report sweeps/run1 -o report/
      rollouts report 'scored/*.scored.parquet' -o report/ --baseline base --metric pass@8
      rollouts report sweeps/run1 -o report/ --select-on val --format html
      rollouts report --label t1=t1.0.scored.parquet --label t06=t0.6.scored.parquet -o r/ --baseline t1
      rollouts report sweeps/run1 -o report/ --tensorboard runs/ --wandb my-project
    """
    from scoring.report import ReportOptions, build_report, parse_metric, read_domain_map
    from scoring.report.trackers import require_trackers

    require_trackers(wandb_project, tensorboard_dir)

    options = ReportOptions(
        metric=parse_metric(metric),
        baseline=baseline,
        select_on=select_on,
        domains=read_domain_map(domains_file) if domains_file else None,
        seed=seed,
        bootstrap=bootstrap,
        permutations=permutations,
    )
    result = build_report(list(inputs), output, options, fmt=fmt, overwrite=overwrite,
                          labels=parse_labels(hand_labels))
    analysis = result.analysis
    for note in analysis.notes:
        echo_err(f"note: {note}")
    for entry in analysis.best:
        click.echo(f"best {entry['domain']}: {entry['label']} ({entry['metric']} {entry.get('value', float('nan')):.4f})")
    if len(analysis.comparisons):
        significant = analysis.comparisons[analysis.comparisons["significant"].astype(bool)]
        up, down = int((significant["delta"] > 0).sum()), int((significant["delta"] < 0).sum())
        click.echo(f"against {baseline}: {up} improvement(s), {down} regression(s) after Holm correction")
    if tensorboard_dir is not None or wandb_project is not None:
        log_to_trackers(analysis, tensorboard_dir, wandb_project)
    click.echo(str(result.page))


def log_to_trackers(analysis: Analysis, tensorboard_dir: Path | None, wandb_project: str | None) -> None:
    from scoring.report.trackers import log_tensorboard, log_wandb, tracker_points

    points, notes = tracker_points(analysis)
    for note in notes:
        echo_err(f"note: {note}")
    if tensorboard_dir is not None:
        folders = log_tensorboard(points, tensorboard_dir)
        click.echo(f"tensorboard: {len(folders)} run(s) under {tensorboard_dir}")
    if wandb_project is not None:
        runs = log_wandb(points, wandb_project)
        click.echo(f"wandb: {len(runs)} run(s) in project {wandb_project}")


def parse_labels(pairs: tuple[str, ...]) -> dict[str, str]:
    """--label NAME=FILE options -> {NAME: FILE}."""
    labels: dict[str, str] = {}
    for pair in pairs:
        name, sep, file = pair.partition("=")
        if not sep or not name.strip() or not file.strip():
            raise click.BadParameter(f"{pair!r}: use NAME=FILE", param_hint="--label")
        if name in labels:
            raise click.BadParameter(f"{name!r} is given twice", param_hint="--label")
        labels[name.strip()] = file.strip()
    return labels
