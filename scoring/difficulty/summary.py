"""summary.json and the pass-rate plot."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scoring.difficulty.columns import (
    PLOT_NAME,
    SET_ASIDE_BUCKET,
    UNKNOWN_SOURCE,
)
from scoring.difficulty.reading import PassRule, ScoredSource
from scoring.difficulty.stats import pass_rates

if TYPE_CHECKING:  # run.py imports this module
    from scoring.difficulty.run import FilterConfig


def _count_table(frame: pd.DataFrame, names: Sequence[str]) -> dict[str, dict[str, int]]:
    """{data_source: {bucket: count}} with every bucket present, zeros included."""
    table = frame.groupby(["data_source", "bucket"], sort=True).size()
    out: dict[str, dict[str, int]] = {}
    for source in sorted(frame["data_source"].astype(str).unique()):
        out[source] = {name: int(table.get((source, name), 0)) for name in names}
    return out


def build_summary(
    config: FilterConfig,
    rule: PassRule,
    sources: Sequence[ScoredSource],
    frame: pd.DataFrame,
    mixed: np.ndarray,
    details: dict[str, Any],
    varying: list[str],
    written: dict[str, str],
) -> dict[str, Any]:
    names = [*config.strategy.bucket_names(), SET_ASIDE_BUCKET]
    bucket_counts = frame["bucket"].value_counts()
    set_aside = frame[frame["bucket"] == SET_ASIDE_BUCKET]
    bucketed = frame[frame["bucket"] != SET_ASIDE_BUCKET]
    rates = pass_rates(bucketed["n_pass"].to_numpy(), bucketed["n_scored"].to_numpy())
    histogram = frame["n_samples"].value_counts().sort_index()
    mixed_rows = frame[mixed]
    files: dict[str, str] = dict(written)
    if config.plot:
        files["plot"] = PLOT_NAME
    return {
        "inputs": [str(s.path) for s in sources],
        "n_rows": int(frame["n_samples"].sum()),
        "n_prompts": len(frame),
        "n_bucketed": len(bucketed),
        "strategy": config.strategy.name,
        "parameters": config.strategy.parameters(),
        "details": details,
        "pass_rule": rule.describe(),
        "mean_pass_rate": float(rates.mean()) if rates.size else None,
        "buckets": {name: int(bucket_counts.get(name, 0)) for name in names},
        "counts_by_data_source": _count_table(frame, names),
        "set_aside": {
            "count": len(set_aside),
            "by_reason": {
                str(k): int(v) for k, v in set_aside["set_aside_reason"].value_counts().items()
            },
            "unscoreable_samples": int(frame["n_unscoreable"].sum()),
        },
        "sample_counts": {
            "majority_by_dataset": {
                str(k): int(v)
                for k, v in frame.groupby("dataset")["majority_n"].first().to_dict().items()
            },
            "histogram": {str(k): int(v) for k, v in histogram.to_dict().items()},
            "n_mixed_prompts": int(mixed.sum()),
            "mixed_bucketed": config.keep_mixed,
            "mixed_examples": [
                {"dataset": str(d), "key": str(k)[:200], "n_samples": int(n)}
                for d, k, n in zip(
                    mixed_rows["dataset"].head(20).tolist(),
                    mixed_rows["key"].head(20).tolist(),
                    mixed_rows["n_samples"].head(20).tolist(),
                    strict=True,
                )
            ],
        },
        "dropped_per_sample_columns": varying,
        "format": config.output_format,
        "files": files,
    }


def band_limits(parameters: dict[str, Any]) -> list[float]:
    """The band strategy's --min and --max (other strategies have none)."""
    return [float(parameters[k]) for k in ("min", "max") if isinstance(parameters.get(k), int | float)]


def plot_pass_rates(
    frame: pd.DataFrame, path: Path, details: dict[str, Any], parameters: dict[str, Any] | None = None
) -> None:
    """One histogram of pass rates per data source, written atomically as PNG; dashed lines at the
    bucket edges (percentile cutoffs, bins' edges, the band's limits)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sources = sorted(frame["data_source"].astype(str).unique()) or [UNKNOWN_SOURCE]
    ncols = min(3, len(sources))
    nrows = math.ceil(len(sources) / ncols)
    figure = Figure(figsize=(4.5 * ncols, 3.2 * nrows), layout="constrained")
    FigureCanvasAgg(figure)
    n_max = int(frame["n_scored"].max()) if len(frame) else 1
    # One bin per attainable rate k/n when n is small, so bars never straddle two rates.
    bins = (
        np.linspace(-0.5 / n_max, 1 + 0.5 / n_max, n_max + 2)
        if n_max <= 64
        else np.linspace(0.0, 1.0, 21)
    )
    # Quantile cutoffs, bins' edges, or the band's limits (the strategy's parameters).
    cutoffs = details.get("cutoffs", details.get("edges", [])) or band_limits(parameters or {})
    figure.suptitle("Prompts by pass rate" + (" (dashed: bucket edges)" if cutoffs else ""))
    for i, source in enumerate(sources):
        axes = figure.add_subplot(nrows, ncols, i + 1)
        part = frame[frame["data_source"].astype(str) == source]
        rates = pass_rates(part["n_pass"].to_numpy(), part["n_scored"].to_numpy())
        axes.hist(rates, bins=bins.tolist(), color="#4C72B0", edgecolor="white")
        for cut in cutoffs:
            axes.axvline(cut, color="#C44E52", linestyle="--", linewidth=1)
        axes.set_title(f"{source} ({len(part)} prompts)", fontsize=9)
        axes.set_xlabel("pass rate (passed / scored samples)")
        axes.set_ylabel("prompts")
        axes.set_xlim(-0.05, 1.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        figure.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
