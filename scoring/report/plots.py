"""Learning curves: the chosen metric against the training step, with the 95% interval as a band.

One PNG per domain (a line per run series) and one with every domain and the overall average.
Models without a step in their name have no place on a curve and are left out of the plots.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from scoring.report.analysis import OVERALL, Analysis

FIGURE_SIZE = (6.4, 4.0)
DPI = 110


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
    several_series = rows["series"].nunique() > 1
    for name, line in rows.groupby(by, sort=True):
        for series, part in (line.groupby("series") if by == "domain" else [(name, line)]):
            label = str(name) if by == "series" or not several_series else f"{name} · {series}"
            bold = name == OVERALL
            (drawn,) = axes.plot(
                part["step"], part["value"], marker="o", markersize=3, label=label,
                linewidth=2.6 if bold else 1.5, color="black" if bold else None,
            )
            axes.fill_between(part["step"].astype(float), part["ci_low"], part["ci_high"], color=drawn.get_color(), alpha=0.18)
    axes.set_xlabel("step")
    axes.set_ylabel(str(rows["metric"].iloc[0]))
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path
