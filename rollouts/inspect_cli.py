"""`rollouts show` and `rollouts status`: look at samples, and at a run in progress (files only)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rollouts.clitools import echo_err, handle_errors

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command("show", context_settings=CONTEXT)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--n", "prompts", type=click.IntRange(min=1), default=5, show_default=True,
              help="Prompts to show (the HTML page holds them all unless --n is given).")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Samples shown per prompt (and run) [default: all].")
@click.option("--prompt-id", default=None, help="Only this prompt (a prompt_id or its prefix).")
@click.option("--failed", is_flag=True, help="Only failed samples: an error, or scored and not passed.")
@click.option("--passed", is_flag=True, help="Only samples that were scored and passed.")
@click.option("--where", multiple=True, metavar="COL OP VALUE",
              help="Only samples where a column compares: = != > >= < <=, or ~ (contains), e.g. "
                   "'finish_reason=length', 'score<1', 'response~boxed'. Repeat: all must hold.")
@click.option("--sort", type=click.Choice(["file", "pass-rate", "-pass-rate"]), default="file",
              show_default=True, help="Prompt order: the file's, or by pass rate (hardest first; "
                                      "-pass-rate: easiest first).")
@click.option("--html", "html_out", type=click.Path(path_type=Path), default=None,
              help="Write one self-contained page to browse, search and filter the samples.")
@handle_errors
def show_command(
    files: tuple[Path, ...], prompts: int, samples: int | None, prompt_id: str | None, failed: bool,
    passed: bool, where: tuple[str, ...], sort: str, html_out: Path | None,
) -> None:
    """Print the samples of FILES (rollouts or scored rows) grouped by prompt: the prompt, its gold
    answer and pass rate, each response with its verdict, extracted answer, score and status
    (error kind, finish reason, truncated). Several files are runs of the same prompts, shown
    side by side.

    \b
    Examples:
      rollouts show demo-out/scored.parquet --n 2
      rollouts show runs/math.scored.parquet --sort pass-rate --where 'finish_reason=length'
      rollouts show runs/math.parquet --failed --prompt-id 3fa2
      rollouts show step_100.scored.parquet step_200.scored.parquet --html diff.html
    """
    from rollouts.show import ShowFilter, format_terminal, load_samples, select
    from rollouts.show_page import render_html

    frame = load_samples(files)
    n_given = click.get_current_context().get_parameter_source("prompts")
    all_prompts = html_out is not None and n_given == click.core.ParameterSource.DEFAULT
    chosen = select(frame, ShowFilter(None if all_prompts else prompts, prompt_id, failed, samples,
                                      passed, where, sort))
    if html_out is not None:
        names = ", ".join(file.name for file in files)
        html_out.write_text(render_html(chosen, f"{names}: {len(chosen)} samples"), encoding="utf-8")
        echo_err(f"wrote {len(chosen)} samples to {html_out}")
        click.echo(str(html_out))
        return
    click.echo(format_terminal(chosen) or "no samples match")


@click.command("status", context_settings=CONTEXT)
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@handle_errors
def status_command(output: Path, as_json: bool) -> None:
    """Where the generate run writing OUTPUT (its -o path) stands: samples done of total, rate
    over the last minute, ETA, errors by kind, the last write, and whether the writer is alive.

    Reads files only, so it works from another shell or a login node.
    """
    from rollouts.status import format_status, read_status, status_dict

    status = read_status(output)
    click.echo(json.dumps(status_dict(status)) if as_json else format_status(status))
