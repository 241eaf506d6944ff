"""`score`: rewards for rollout files, a results JSON per input and an optional batch summary."""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rollouts.clitools import EXIT_WITH_ERROR_ROWS, echo_err, handle_errors, is_interactive
from rollouts.types import DEFAULT_MAX_ATTEMPTS
from scoring.cache import CACHE_ENV, default_cache_dir
from scoring.rewards.base import DEFAULT_PASS_THRESHOLD
from scoring.rewards.custom import SPEC_FORMS
from scoring.rewards.registry import AUTO, BUILTINS
from scoring.scorer import (
    BATCH_BYTES,
    DEFAULT_MAX_ERROR_RATE,
    DEFAULT_ON_ERROR,
    DEFAULT_TIMEOUT_S,
    ERROR_WINDOW,
    JUDGE_TIMEOUT_S,
    MAX_BATCH_ROWS,
    MIN_BATCH_ROWS,
    ON_ERROR_CHOICES,
    FileResult,
    ScoreConfig,
    score_files,
)
from scoring.workers import default_workers

if TYPE_CHECKING:
    from scoring.judge_client import JudgeSettings

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
@click.option("--timeout", "timeout_s", type=float, default=None,
              show_default=f"{DEFAULT_TIMEOUT_S:g}; {JUDGE_TIMEOUT_S:g} with a judge",
              help="Hard wall-clock limit per item in seconds; the worker is killed past it.")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), envvar=CACHE_ENV,
              help=f"Verdict cache directory [env {CACHE_ENV}; default ~/.cache/rollouts/score].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the verdict cache.")
@click.option("--summary", type=click.Path(path_type=Path), help="Write a batch summary JSON here.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--allow-unsandboxed", is_flag=True,
              help="Run code rewards without bubblewrap when it cannot start (unsafe).")
@click.option("--on-error", type=click.Choice(ON_ERROR_CHOICES), default=DEFAULT_ON_ERROR,
              show_default=True,
              help="Rows the reward function could not judge (it raised, returned inf/NaN): "
                   "fail = leave them out of the metrics and exit 3; skip = leave them out, "
                   "exit 0; zero = count them as wrong (score 0).")
@click.option("--pass-threshold", type=float, default=DEFAULT_PASS_THRESHOLD, show_default=True,
              help="A custom function's score counts as a pass (acc) at this value or above, "
                   "unless it returns its own `acc`.")
@click.option("--max-error-rate", type=float, default=DEFAULT_MAX_ERROR_RATE, show_default=True,
              help=f"Stop when more than this share of a data source's last {ERROR_WINDOW} "
                   f"distinct answers failed in the reward function (1: never stop).")
@click.option("--batch-rows", type=int, default=None,
              help="Rows read, scored and written at a time: memory holds one batch, not the file "
                   f"[default: about {BATCH_BYTES >> 20} MiB of each input's rows, "
                   f"{MIN_BATCH_ROWS:,} to {MAX_BATCH_ROWS:,} rows].")
@click.option("--judge-base-url", "judge_urls", multiple=True,
              help="A judge server (OpenAI-compatible) for the judge rewards; repeat for several.")
@click.option("--judge-server-info", "judge_infos", multiple=True, type=click.Path(path_type=Path),
              help="A server-info JSON (from `rollouts serve`) of a judge server; repeatable.")
@click.option("--judge-model",
              help="The judge's model: its served name with --judge-base-url, else a model path "
                   "or hub id to start a vLLM server for this run.")
@click.option("--judge-vllm-arg", "judge_vllm_args", multiple=True,
              help="With --judge-model alone: extra `vllm serve` flags for the judge server, e.g. "
                   "--judge-vllm-arg='--tensor-parallel-size 4'.")
@click.option("--judge-max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS, show_default=True,
              help="Tries per judge question (connection errors, 429 and 5xx are retried).")
@click.version_option(package_name="rollouts")
@handle_errors
def main(
    inputs: tuple[str, ...],
    reward_fn: str,
    output: Path | None,
    workers: int,
    timeout_s: float | None,
    cache_dir: Path | None,
    no_cache: bool,
    summary: Path | None,
    overwrite: bool,
    allow_unsandboxed: bool,
    on_error: str,
    pass_threshold: float,
    max_error_rate: float,
    batch_rows: int | None,
    judge_urls: tuple[str, ...],
    judge_infos: tuple[Path, ...],
    judge_model: str | None,
    judge_max_attempts: int,
    judge_vllm_args: tuple[str, ...],
) -> None:
    """Score rollout files (parquet/jsonl, long or verl's wide `responses` form; files or globs).

    \b
    Examples:
      score rollouts/aime.parquet
      score 'runs/*.parquet' -o scored/ --summary scored/summary.json
      score out.jsonl --reward-fn my_reward.py:compute_score --workers 8 --timeout 10
      score stem_web.parquet --judge-base-url http://judge:8000/v1 --workers 32
      score stem_web.parquet --judge-model TIGER-Lab/general-verifier

    Exit status: 0 when every row was judged, 1 on bad input, 3 when some rows failed in the
    reward function (under the default --on-error fail; the outputs are written all the same).
    A judge that cannot be reached or answers without a verdict fails its rows that way.
    """
    vllm_args = tuple(arg for text in judge_vllm_args for arg in shlex.split(text))
    with _judge(judge_urls, judge_infos, judge_model, judge_max_attempts, vllm_args) as judge:
        if timeout_s is None:  # a judge's answer may take minutes under load, retries included
            timeout_s = DEFAULT_TIMEOUT_S if judge is None else JUDGE_TIMEOUT_S
        config = ScoreConfig(
            reward_fn=reward_fn,
            workers=workers,
            timeout_s=timeout_s,
            cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
            allow_unsandboxed=allow_unsandboxed,
            progress=is_interactive(),
            on_error=on_error,
            max_error_rate=max_error_rate,
            pass_threshold=pass_threshold,
            judge=judge,
            batch_rows=batch_rows,
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
    _report_errors(batch)


def _judge(
    urls: Sequence[str], infos: Sequence[Path], model: str | None, max_attempts: int,
    vllm_args: tuple[str, ...],
) -> AbstractContextManager[JudgeSettings | None]:
    """The run's judge (scoring.judge_client.judge_settings), None when no --judge-* option asks
    for one: only then is the judge's HTTP client imported (aiohttp and its TLS set-up, about a
    quarter of a second of every run's start)."""
    if not (urls or infos or model):
        return contextlib.nullcontext()
    from scoring.judge_client import judge_settings

    return judge_settings(urls, infos, model, max_attempts, vllm_args)


def _report_errors(batch: dict[str, Any]) -> None:
    """Rows the reward function could not judge: one line per data source, exit 3 under fail."""
    if not batch["error_rows"]:
        return
    counted = "counted as wrong" if batch["on_error"] == "zero" else "left out of the metrics"
    per_source = ", ".join(
        f"{source}={metrics['error_rows']}"
        for file in batch["inputs"]
        for source, metrics in file["data_sources"].items()
        if metrics["error_rows"]
    )
    echo_err(
        f"{batch['error_rows']} rows failed in the reward function ({per_source}), {counted}; "
        f"see their score_error column"
    )
    if batch["on_error"] == "fail":
        echo_err("fix the reward function and rerun (only those rows are judged again), or pass "
                 "--on-error skip to accept the metrics without them, --on-error zero to count "
                 "them as wrong")
        sys.exit(EXIT_WITH_ERROR_ROWS)


def _report_file(result: FileResult) -> None:
    """One line per data source on stdout: prompts, mean@n, pass@1, pass@n, maj@n."""
    click.echo(f"{result.job.input} -> {result.job.output}")
    for source, metrics in result.results["data_sources"].items():
        click.echo(f"  {source}: {_format_metrics(metrics)}")


def _format_metrics(metrics: dict[str, Any]) -> str:
    pass_k: dict[str, float] = metrics["pass@k"]
    top = str(metrics["samples_per_prompt"]["max"])
    parts = [f"prompts={metrics['n_prompts']}"]
    if metrics["mean@n"] is not None:  # None: every row of the source failed
        parts.append(f"mean@n={metrics['mean@n']:.4f}")
        if metrics["mean_score@n"] != metrics["mean@n"]:
            parts.append(f"mean_score@n={metrics['mean_score@n']:.4f}")
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
