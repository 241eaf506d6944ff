"""The filter-difficulty plot the demo shows: a title, axes, and the bucket edges drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from matplotlib.figure import Figure

from scoring.difficulty import plot_pass_rates


def test_plot_has_title_axes_and_bucket_edges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[Figure] = []
    save = Figure.savefig

    def keep(self: Figure, *args: Any, **kwargs: Any) -> None:
        drawn.append(self)
        save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    frame = pd.DataFrame({"data_source": ["a", "a", "b"], "n_pass": [0, 2, 4], "n_scored": [4, 4, 4]})
    plot_pass_rates(frame, tmp_path / "p.png", {"edges": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]})
    assert (tmp_path / "p.png").stat().st_size > 0
    figure = drawn[0]
    assert figure.get_suptitle().startswith("Prompts by pass rate")
    for axes in figure.axes:
        assert axes.get_xlabel().startswith("pass rate") and axes.get_ylabel() == "prompts"
        edges = sorted(line.get_xdata()[0] for line in axes.get_lines())
        assert edges == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
