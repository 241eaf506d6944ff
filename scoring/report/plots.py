"""Learning curves: the chosen metric against the training step, with the 95% interval as a band.

One PNG per domain (a line per run series) and one with every domain and the overall average:
a colour per domain (the overall average in black, drawn thicker) and a line style per run series,
so two series' overall lines stay apart, and the legend names both. Models without a step in
their name have no place on a curve and are left out of these plots.

Two more, per run: pass@k against k (overall, with its interval), and what the responses look like
(length in tokens: median and 10th-90th percentile; share cut at max_tokens).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scoring.report.analysis import OVERALL, Analysis
from scoring.report.inputs import RunShape

FIGURE_SIZE = (6.4, 4.0)
DPI = 110
LINE_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))
PASS_AT_K_FIGURE = "__pass_at_k__"
RESPONSES_FIGURE = "__responses__"


def curve_rows(analysis: Analysis) -> pd.DataFrame:
    """Domain and overall rows of the chosen metric for models with a step, sorted by step."""
    metrics = analysis.metrics
    rows = metrics[(metrics["level"] != "task") & (metrics["metric"] == analysis.metric.name)].copy()
    rows["step"] = rows["label"].map(analysis.steps)
    rows["series"] = rows["label"].map(analysis.series)
    rows = rows[rows["step"].notna()]
    return rows.sort_values(["domain", "series", "step"])


def file_name(domain: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", domain)
    return "curves_all.png" if domain == "__all__" else f"curve_{safe}.png"


def plot_learning_curves(analysis: Analysis, directory: Path) -> dict[str, Path]:
    """Write the PNGs; returns domain (or "__all__") -> path. Nothing when no model has a step."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    rows = curve_rows(analysis)
    if rows.empty or rows["step"].nunique() < 1:
        return {}
    written = {}
    for domain, group in rows.groupby("domain", sort=True):
        written[str(domain)] = _plot(group, f"{domain}: {analysis.metric.name}", directory / file_name(str(domain)), by="series")
    written["__all__"] = _plot(rows, f"all domains: {analysis.metric.name}", directory / file_name("__all__"), by="domain")
    return written


def _plot(rows: pd.DataFrame, title: str, path: Path, by: str) -> Path:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=FIGURE_SIZE)
    all_series = sorted(rows["series"].unique())
    several_series = len(all_series) > 1
    colours = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 8)
    for name, line in rows.groupby(by, sort=True):
        bold = name == OVERALL
        colour = "black" if bold else next(colours)
        for series, part in (line.groupby("series") if by == "domain" else [(name, line)]):
            label = str(name) if by == "series" or not several_series else f"{name} · {series}"
            style = LINE_STYLES[all_series.index(series) % len(LINE_STYLES)] if by == "domain" else "-"
            (drawn,) = axes.plot(
                part["step"], part["value"], marker="o", markersize=3, label=label,
                linewidth=2.6 if bold else 1.5, linestyle=style,
                color=colour if by == "domain" else None,
            )
            axes.fill_between(part["step"].astype(float), part["ci_low"], part["ci_high"], color=drawn.get_color(), alpha=0.18)
    axes.set_xlabel("step")
    axes.set_ylabel(str(rows["metric"].iloc[0]))
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best", title="run" if by == "series" else None)
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def plot_pass_at_k(analysis: Analysis, path: Path) -> Path | None:
    """Overall pass@k against k, a line per run with its interval band; None without pass@k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = analysis.metrics
    rows = metrics[(metrics["level"] == "overall") & metrics["metric"].astype(str).str.startswith("pass@")]
    rows = rows[rows["k"].notna()].sort_values("k")
    if rows.empty or rows["k"].nunique() < 2:
        return None
    figure, axes = plt.subplots(figsize=FIGURE_SIZE)
    for index, (label, part) in enumerate(rows.groupby("label", sort=False)):
        (drawn,) = axes.plot(part["k"], part["value"], marker="o", markersize=3, label=str(label),
                             linestyle=LINE_STYLES[index % len(LINE_STYLES)])
        axes.fill_between(part["k"].astype(float), part["ci_low"], part["ci_high"], color=drawn.get_color(), alpha=0.15)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("k (samples per prompt)")
    axes.set_ylabel("pass@k, all tasks")
    axes.set_title("pass@k against k")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best", title="run")
    return _save(figure, path)


def plot_responses(shapes: dict[str, RunShape], path: Path) -> Path | None:
    """Per run: response length in tokens (median, 10th-90th percentile) and the share of
    responses cut at max_tokens; None when the inputs carry neither."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(shapes)
    if not runs:
        return None
    figure, (lengths, cut) = plt.subplots(1, 2, figsize=(FIGURE_SIZE[0] * 1.5, FIGURE_SIZE[1]))
    positions = np.arange(len(runs))
    for position, run in zip(positions, runs, strict=True):
        tokens = shapes[run].tokens
        if len(tokens):
            low, mid, high = np.percentile(tokens, [10, 50, 90])
            lengths.bar(position, mid, color="#4C72B0")
            lengths.errorbar(position, mid, yerr=[[mid - low], [high - mid]], color="black", capsize=4)
    lengths.set_xticks(positions, runs, rotation=20, ha="right", fontsize=8)
    lengths.set_ylabel("response tokens (median, 10th-90th pct.)")
    lengths.set_title("response length per run")
    shares = [shapes[run].truncated / shapes[run].samples if shapes[run].samples else 0.0 for run in runs]
    cut.bar(positions, [100 * share for share in shares], color="#C44E52")
    cut.set_xticks(positions, runs, rotation=20, ha="right", fontsize=8)
    cut.set_ylabel("% of responses cut at max_tokens")
    cut.set_title("truncation per run")
    return _save(figure, path)


def plot_runs(analysis: Analysis, shapes: dict[str, RunShape], directory: Path) -> dict[str, Path]:
    """The per-run figures that can be drawn: pass@k against k, responses' length and truncation."""
    drawn = {
        PASS_AT_K_FIGURE: plot_pass_at_k(analysis, directory / "pass_at_k.png"),
        RESPONSES_FIGURE: plot_responses(shapes, directory / "responses.png"),
    }
    return {key: path for key, path in drawn.items() if path is not None}
