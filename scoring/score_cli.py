"""`score`: rewards for rollout files, a results JSON per input and an optional batch summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from rollouts.clitools import echo_err, handle_errors, is_interactive
from scoring.cache import CACHE_ENV, default_cache_dir
from scoring.rewards.custom import SPEC_FORMS
from scoring.rewards.registry import AUTO, BUILTINS
from scoring.scorer import DEFAULT_TIMEOUT_S, FileResult, ScoreConfig, score_files
from scoring.workers import default_workers

REWARD_FN_HELP = (
    f"{AUTO} (by data_source), {', '.join(BUILTINS)}, or a function with verl's signature: "
    f"{SPEC_FORMS}"
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True)
@click.option("--reward-fn", default=AUTO, show_default=True, help=REWARD_FN_HELP)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path),
    help="Output file (one input) or directory. Default: <input stem>.scored.parquet beside it.",
)
@click.option("--workers", type=int, default=default_workers, show_default="cores",
              help="Worker processes judging answers.")
@click.option("--timeout", "timeout_s", type=float, default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Hard wall-clock limit per item in seconds; the worker is killed past it.")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), envvar=CACHE_ENV,
              help=f"Verdict cache directory [env {CACHE_ENV}; default ~/.cache/rollouts/score].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the verdict cache.")
@click.option("--summary", type=click.Path(path_type=Path), help="Write a batch summary JSON here.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--allow-unsandboxed", is_flag=True,
              help="Run code rewards without bubblewrap when it cannot start (unsafe).")
@click.version_option(package_name="rollouts")
@handle_errors
def main(
    inputs: tuple[str, ...],
    reward_fn: str,
    output: Path | None,
    workers: int,
    timeout_s: float,
    cache_dir: Path | None,
    no_cache: bool,
    summary: Path | None,
    overwrite: bool,
    allow_unsandboxed: bool,
) -> None:
    """Score rollout files (parquet/jsonl, long or verl's wide `responses` form; files or globs).

    \b
    Examples:
      score rollouts/aime.parquet
      score 'runs/*.parquet' -o scored/ --summary scored/summary.json
      score out.jsonl --reward-fn my_reward.py:compute_score --workers 8 --timeout 10
    """
    config = ScoreConfig(
        reward_fn=reward_fn,
        workers=workers,
        timeout_s=timeout_s,
        cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
        allow_unsandboxed=allow_unsandboxed,
        progress=is_interactive(),
    )
    batch = score_files(
        list(inputs), config, output=output, summary=summary, overwrite=overwrite,
        on_file=_report_file,
    )
    totals = batch["totals"]
    for note in batch["notes"]:
        echo_err(f"note: {note}")
    resumed = f"{totals['resumed']} kept from an interrupted run, " if totals["resumed"] else ""
    echo_err(
        f"{totals['rows']} rows, {totals['distinct_items']} distinct answers, {resumed}"
        f"{totals['cache_hits']} from cache, {totals['judged']} judged in {totals['elapsed_s']:.1f}s"
    )


def _report_file(result: FileResult) -> None:
    """One line per data source on stdout: prompts, mean@n, pass@1, pass@n, maj@n."""
    click.echo(f"{result.job.input} -> {result.job.output}")
    for source, metrics in result.results["data_sources"].items():
        click.echo(f"  {source}: {_format_metrics(metrics)}")


def _format_metrics(metrics: dict[str, Any]) -> str:
    pass_k: dict[str, float] = metrics["pass@k"]
    top = str(metrics["samples_per_prompt"]["max"])
    parts = [f"prompts={metrics['n_prompts']}", f"mean@n={metrics['mean@n']:.4f}"]
    if "1" in pass_k:
        parts.append(f"pass@1={pass_k['1']:.4f}")
    if top in pass_k and top != "1":
        parts.append(f"pass@{top}={pass_k[top]:.4f}")
    maj = metrics.get("maj@k", {})
    if top in maj:
        parts.append(f"maj@{top}={maj[top]:.4f}")
    for name in ("prompt_level_strict_acc", "inst_level_strict_acc"):  # ifeval rows
        if name in metrics:
            parts.append(f"{name.removesuffix('_acc')}={metrics[name]:.4f}")
    problems = {k: v for k, v in metrics["status_counts"].items() if k != "ok" and v}
    if problems:
        parts.append(" ".join(f"{k}={v}" for k, v in problems.items()))
    return " ".join(parts)
