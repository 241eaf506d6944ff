"""`rollouts show` and `rollouts status`: look at samples, and at a run in progress (files only)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rollouts.clitools import echo_err, handle_errors

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command("show", context_settings=CONTEXT)
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--n", "prompts", type=click.IntRange(min=1), default=5, show_default=True,
              help="Prompts to show (the HTML page holds them all unless --n is given).")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Samples shown per prompt [default: all].")
@click.option("--prompt-id", default=None, help="Only this prompt (a prompt_id or its prefix).")
@click.option("--failed", is_flag=True, help="Only failed samples: an error, or scored and not passed.")
@click.option("--passed", is_flag=True, help="Only samples that were scored and passed.")
@click.option("--html", "html_out", type=click.Path(path_type=Path), default=None,
              help="Write one self-contained page to browse and filter the samples.")
@handle_errors
def show_command(
    file: Path, prompts: int, samples: int | None, prompt_id: str | None, failed: bool,
    passed: bool, html_out: Path | None,
) -> None:
    """Print the samples of FILE (rollouts or scored rows) grouped by prompt: the prompt, each
    response, its extracted answer, score, finish reason and error.

    \b
    Examples:
      rollouts show demo-out/scored.parquet --n 2
      rollouts show runs/math.parquet --failed --prompt-id 3fa2
      rollouts show demo-out/scored.parquet --html samples.html
    """
    from rollouts.show import ShowFilter, format_terminal, load_samples, render_html, select

    frame = load_samples(file)
    n_given = click.get_current_context().get_parameter_source("prompts")
    all_prompts = html_out is not None and n_given == click.core.ParameterSource.DEFAULT
    chosen = select(frame, ShowFilter(None if all_prompts else prompts, prompt_id, failed, samples, passed))
    if html_out is not None:
        html_out.write_text(render_html(chosen, f"{file.name}: {len(chosen)} samples"),
                            encoding="utf-8")
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
