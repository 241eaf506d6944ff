"""A report's numbers in the experiment tracker a user already watches: TensorBoard or W&B.

One tracker run per series (a model with its settings: the run's label without its checkpoint
step, e.g. `temperature=0.6`), one point per checkpoint step. Every metric of every task, domain
and overall is logged, its 95% interval beside it:

    math__aime/mean@n   math__aime/mean@n_lo   math__aime/mean@n_hi     a task
    domain/math/pass@8  ...                                               a domain's macro-average
    overall/mean@n      ...                                               all tasks

A run whose label has no step (a model, not a checkpoint) is logged at step 0, with a note.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollouts.errors import UserInputError
from scoring.report.analysis import OVERALL, Analysis

EXTRA = "pip install 'rollouts[trackers]'"


@dataclass
class Point:
    """What one tracker run logs at one step."""

    series: str
    step: int
    labels: list[str] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)


def require_trackers(wandb_project: str | None, tensorboard_dir: Path | None) -> None:
    """Fail in one line, before any work, when a tracker's package is missing."""
    if tensorboard_dir is not None:
        _import("tensorboard.summary", "--tensorboard")
        if tensorboard_dir.exists() and not tensorboard_dir.is_dir():
            raise UserInputError(f"--tensorboard {tensorboard_dir} is a file; pass a directory for the event files")
    if wandb_project is not None:
        if not wandb_project.strip() or "/" in wandb_project:
            raise UserInputError(f"--wandb {wandb_project!r}: pass a project name (set the entity with WANDB_ENTITY)")
        _import("wandb", "--wandb")


def _import(module: str, option: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserInputError(f"{option} needs the [trackers] extra: {EXTRA}") from exc


def metric_tag(level: str, domain: str, task: str, metric: str) -> str:
    if level == "task":
        return f"{task}/{metric}"
    if level == "overall" or domain == OVERALL:
        return f"overall/{metric}"
    return f"domain/{domain}/{metric}"


def tracker_points(analysis: Analysis) -> tuple[list[Point], list[str]]:
    """The report's metrics grouped by series and step, ordered by step within each series."""
    points: dict[tuple[str, int], Point] = {}
    stepless: list[str] = []
    for label in analysis.labels:
        step = analysis.steps.get(label)
        if step is None:
            stepless.append(label)
        series = analysis.series.get(label, label)
        point = points.setdefault((series, step or 0), Point(series, step or 0))
        point.labels.append(label)
    rows: list[dict[Any, Any]] = analysis.metrics.to_dict("records")
    for row in rows:
        label = str(row["label"])
        point = points[(analysis.series.get(label, label), analysis.steps.get(label) or 0)]
        tag = metric_tag(str(row["level"]), str(row["domain"]), str(row["task"]), str(row["metric"]))
        for suffix, value in (("", row["value"]), ("_lo", row["ci_low"]), ("_hi", row["ci_high"])):
            if value is not None and math.isfinite(float(value)):
                point.values[tag + suffix] = float(value)
    notes = []
    if stepless:
        notes.append(f"no checkpoint step in {', '.join(stepless)}: logged at step 0")
    return sorted(points.values(), key=lambda p: (p.series, p.step)), notes


def by_series(points: list[Point]) -> dict[str, list[Point]]:
    grouped: dict[str, list[Point]] = defaultdict(list)
    for point in points:
        grouped[point.series].append(point)
    return dict(grouped)


def folder_names(series: list[str]) -> dict[str, str]:
    """A folder name per series (TensorBoard shows one run per folder), distinct after cleaning."""
    names: dict[str, str] = {}
    for name in series:
        base = re.sub(r"[^\w.=+-]+", "_", name).strip("_.") or "run"
        folder, n = base, 1
        while folder in names.values():
            n += 1
            folder = f"{base}_{n}"
        names[name] = folder
    return names


def log_tensorboard(points: list[Point], directory: Path) -> list[Path]:
    """Event files under DIRECTORY/<series>/; returns the run folders. Earlier event files stay:
    TensorBoard reads every file of a folder, so a second report adds to the same curves."""
    summary = _import("tensorboard.summary", "--tensorboard")
    grouped = by_series(points)
    folders = folder_names(list(grouped))
    written = []
    for series, series_points in grouped.items():
        run_dir = directory / folders[series]
        run_dir.mkdir(parents=True, exist_ok=True)
        writer = summary.Writer(str(run_dir))
        try:
            for point in series_points:
                for tag, value in point.values.items():
                    writer.add_scalar(tag, value, step=point.step)
        finally:
            writer.close()
        written.append(run_dir)
    return written


def log_wandb(points: list[Point], project: str) -> list[str]:
    """One W&B run per series in PROJECT, named after it; returns the runs' directories.
    WANDB_MODE=offline keeps them on disk for a later `wandb sync`."""
    wandb = _import("wandb", "--wandb")
    directories = []
    for series, series_points in by_series(points).items():
        labels = [label for point in series_points for label in point.labels]
        run = wandb.init(project=project, name=series, config={"series": series, "labels": labels},
                         job_type="report", reinit="create_new")
        try:
            for point in series_points:
                run.log(point.values, step=point.step)
        finally:
            run.finish()
        directories.append(str(Path(run.dir).parent))
    return directories
