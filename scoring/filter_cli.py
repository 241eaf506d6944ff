"""`filter-difficulty`: bucket scored prompts by pass rate (a thin wrapper over scoring.difficulty)."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click

from rollouts.clitools import echo_err, handle_errors
from rollouts.errors import UserInputError
from scoring.difficulty import (
    OUTPUT_FORMATS,
    SET_ASIDE_BUCKET,
    STRATEGIES,
    FilterConfig,
    make_strategy,
    parse_percentiles,
    run_filter,
)

NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")


def _version() -> str:
    try:
        return version("rollouts")
    except PackageNotFoundError:
        return "unknown"


def _check_inputs(scored: tuple[str, ...]) -> None:
    # `--percentiles 33 66` would make 66 an input path; say what was meant.
    numbers = [s for s in scored if NUMBER.match(s) and not Path(s).exists()]
    if numbers:
        raise UserInputError(
            f"{numbers[0]!r} looks like a number, not a scored file; give percentiles as one "
            "value, e.g. --percentiles 33,66"
        )


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
    epilog="""\b
Examples:
  filter-difficulty scored/*.parquet -o buckets --strategy percentile --percentiles 33,66
  filter-difficulty scored.parquet -o train --strategy band --min 0.1 --max 0.9
  filter-difficulty t0.6.scored.parquet t1.0.scored.parquet -o b --group-by temperature
  filter-difficulty scored.parquet -o bins --strategy bins --plot
  filter-difficulty scored.parquet -o dapo --strategy nonzero-variance
  filter-difficulty scored.jsonl -o hard --strategy k-of-n --min-k 1 --max-k 4 --format jsonl
""",
)
@click.argument("scored", nargs=-1, required=True)
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False),
              help="Directory for the bucket files, set_aside file and summary.json.")
@click.option("--strategy", default="percentile", envvar="ROLLOUTS_FILTER_STRATEGY",
              type=click.Choice(list(STRATEGIES)), help="How prompts are bucketed.")
@click.option("--percentiles", multiple=True, metavar="P[,P...]",
              help="percentile: cut points in (0, 100), increasing  [default: 33,66]")
@click.option("--min", "min_rate", type=float, default=None,
              help="band: keep pass rate > MIN  [default: 0]")
@click.option("--max", "max_rate", type=float, default=None,
              help="band: keep pass rate < MAX  [default: 1]")
@click.option("--min-k", type=int, default=None, help="k-of-n: keep prompts with >= K passes.")
@click.option("--max-k", type=int, default=None, help="k-of-n: keep prompts with <= K passes.")
@click.option("--k", "k", type=int, default=None, help="k-of-n: keep prompts with exactly K passes.")
@click.option("--pass-threshold", type=float, default=None,
              help="A sample passes when score >= T  [default: the acc column, else score > 0]")
@click.option("--keep-mixed", is_flag=True,
              help="Bucket prompts whose sample count differs from the majority (set aside "
                   "by default).")
@click.option("--group-by", default="", metavar="COL[,COL]",
              help="Bucket each run apart: model, checkpoint and/or temperature (kept in the "
                   "bucket rows). Inputs mixing runs on shared prompts need this or --pool.")
@click.option("--pool", is_flag=True,
              help="Pool the samples of different runs (models, temperatures) of a prompt.")
@click.option("--format", "output_format", type=click.Choice(OUTPUT_FORMATS), default="parquet",
              help="Format of the bucket files.")
@click.option("--plot", is_flag=True, help="Also write pass_rates.png, a histogram per data source.")
@click.option("--overwrite", is_flag=True, help="Replace the bucket files of an earlier run.")
@click.version_option(_version(), "--version")
@handle_errors
def main(
    scored: tuple[str, ...],
    output_dir: str,
    strategy: str,
    percentiles: tuple[str, ...],
    min_rate: float | None,
    max_rate: float | None,
    min_k: int | None,
    max_k: int | None,
    k: int | None,
    pass_threshold: float | None,
    keep_mixed: bool,
    group_by: str,
    pool: bool,
    output_format: str,
    plot: bool,
    overwrite: bool,
) -> None:
    """Bucket the prompts of scored rollouts (SCORED: parquet/jsonl files or globs) by pass rate.

    Writes one file per bucket to OUTPUT_DIR holding the original prompt rows (one per prompt)
    plus pass_rate, n_samples, n_pass, pass_rate_ci_low/high (Wilson 95%) and bucket; prompts with
    unscoreable or missing samples go to set_aside; counts go to summary.json.
    """
    _check_inputs(scored)
    chosen = make_strategy(
        strategy,
        percentiles=parse_percentiles(percentiles) if percentiles else None,
        min_rate=min_rate,
        max_rate=max_rate,
        min_k=min_k,
        max_k=max_k,
        k=k,
    )
    config = FilterConfig(
        inputs=list(scored),
        output_dir=Path(output_dir),
        strategy=chosen,
        output_format=output_format,
        pass_threshold=pass_threshold,
        keep_mixed=keep_mixed,
        group_by=tuple(c.strip() for c in group_by.split(",") if c.strip()),
        pool=pool,
        plot=plot,
        overwrite=overwrite,
    )
    result = run_filter(config)
    for warning in result.warnings:
        echo_err(f"warning: {warning}")
    _print_summary(result.summary, config.output_dir)


def _print_summary(summary: dict, output_dir: Path) -> None:
    click.echo(
        f"{summary['n_prompts']} prompts from {summary['n_rows']} rows; strategy "
        f"{summary['strategy']}; pass rule {summary['pass_rule']}"
    )
    for bucket, count in summary["buckets"].items():
        name = summary["files"][bucket]
        click.echo(f"  {bucket:<16} {count:>10}  {output_dir / name}")
    if summary["buckets"].get(SET_ASIDE_BUCKET):
        reasons = ", ".join(f"{k}: {v}" for k, v in summary["set_aside"]["by_reason"].items())
        click.echo(f"  set aside because {reasons}")
    click.echo(f"summary: {output_dir / 'summary.json'}")
    if "plot" in summary["files"]:
        click.echo(f"plot: {output_dir / summary['files']['plot']}")


if __name__ == "__main__":
    main()
