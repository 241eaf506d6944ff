"""`rollouts report`: checkpoint evolution and model comparison over scored outputs.

    inputs.py    files, globs, directories and sweep roots -> per-prompt records, labelled
    prompts.py   scored rows -> per-prompt n, passes, mean score, majority curve; metric values
    stats.py     bootstrap over prompts, paired tests (exact McNemar, sign-flip), Holm
    analysis.py  task / domain / overall numbers, best checkpoints, comparisons against a baseline
    plots.py     learning curves per domain and for all domains
    render.py    report.md or report.html, report.json, metrics.parquet

    build_report(inputs, output_dir, options)  everything above, written into output_dir
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rollouts.errors import OutputConflictError, UserInputError
from rollouts.io import temp_path, write_json_atomic, write_table_atomic
from scoring.report.analysis import Analysis, ReportOptions, analyse
from scoring.report.inputs import load, resolve_inputs
from scoring.report.naming import Metric, parse_metric, read_domain_map
from scoring.report.plots import plot_learning_curves, plot_runs
from scoring.report.render import blocks, html_page, json_document, markdown, tidy_table

__all__ = ["Metric", "ReportOptions", "ReportResult", "build_report", "parse_metric", "read_domain_map"]

FORMATS = ("md", "html")


@dataclass(frozen=True)
class ReportResult:
    analysis: Analysis
    page: Path
    json: Path
    metrics: Path
    figures: dict[str, Path]


def output_files(directory: Path, fmt: str) -> list[Path]:
    return [directory / f"report.{fmt}", directory / "report.json", directory / "metrics.parquet"]


def check_output(directory: Path, fmt: str, overwrite: bool) -> None:
    if fmt not in FORMATS:
        raise UserInputError(f"--format {fmt!r}: use md or html")
    if directory.exists() and not directory.is_dir():
        raise UserInputError(f"-o {directory} is a file; pass a directory for the report")
    existing = [p for p in output_files(directory, fmt) if p.exists()]
    if existing and not overwrite:
        raise OutputConflictError(f"{existing[0]} exists; pass --overwrite or another -o directory")


def build_report(
    inputs: Sequence[str | Path],
    output_dir: Path,
    options: ReportOptions,
    fmt: str = "md",
    overwrite: bool = False,
    labels: dict[str, str] | None = None,
) -> ReportResult:
    """Read the scored inputs, analyse them and write the report; every check runs first.
    `labels` (NAME -> FILE) names runs by hand."""
    check_output(output_dir, fmt, overwrite)
    sources, notes = resolve_inputs(inputs, labels)
    loaded = load(sources, notes, want_split=options.select_on is not None)
    analysis = analyse(loaded, options)
    output_dir.mkdir(parents=True, exist_ok=True)
    figures = plot_learning_curves(analysis, output_dir)
    figures.update(plot_runs(analysis, loaded.shapes, output_dir))
    names = [str(source.path) + (f" ({source.label})" if source.label else "") for source in sources]
    page = blocks(analysis, figures, names)
    page_path = output_dir / f"report.{fmt}"
    text = markdown(page, output_dir) if fmt == "md" else html_page(page, f"report: {analysis.metric.name}")
    write_text_atomic(text, page_path)
    write_json_atomic(json_document(analysis, figures, names, output_dir), output_dir / "report.json")
    write_table_atomic(tidy_table(analysis), output_dir / "metrics.parquet")
    return ReportResult(analysis, page_path, output_dir / "report.json", output_dir / "metrics.parquet", figures)


def write_text_atomic(text: str, path: Path) -> None:
    tmp = temp_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
