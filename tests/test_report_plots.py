"""The report's figures and the difficulty plot say what they show: distinct lines for distinct
runs, legends naming the runs, pass@k against k, response length and truncation per run, and
the band's limits on the pass-rate histogram."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from scoring.difficulty import plot_pass_rates
from scoring.report import ReportOptions, build_report


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> dict[str, Figure]:
    """Every figure saved, by file name."""
    figures: dict[str, Figure] = {}
    save = Figure.savefig

    def keep(self: Figure, path: Any, *args: Any, **kwargs: Any) -> None:
        figures[Path(str(path)).name] = self
        save(self, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def checkpoint_runs(directory: Path) -> list[Path]:
    """Two checkpoints x two temperatures, two domains, 4 samples per prompt, token counts and
    finish reasons (t1.0 is cut at max_tokens more often)."""
    rng = np.random.default_rng(1)
    paths = []
    for step in (10, 20):
        for temperature in (0.6, 1.0):
            rows = []
            for task in ("math__a", "code__b"):
                for p in range(12):
                    for i in range(4):
                        rows.append({
                            "model": f"ckpts/global_step_{step}", "temperature": temperature,
                            "data_source": task, "prompt_id": f"{task}-{p}", "sample_idx": i,
                            "score": float(rng.random() < 0.3 + step / 100), "acc": None,
                            "completion_tokens": int(rng.integers(50, 400 if temperature == 1.0 else 200)),
                            "finish_reason": "length" if temperature == 1.0 and i == 0 else "stop",
                        })
            frame = pd.DataFrame(rows)
            frame["acc"] = frame["score"] > 0
            path = directory / f"s{step}-t{temperature}.scored.parquet"
            frame.to_parquet(path)
            paths.append(path)
    return paths


def test_report_figures_tell_runs_apart(tmp_path: Path, drawn: dict[str, Figure]) -> None:
    result = build_report(checkpoint_runs(tmp_path), tmp_path / "r", ReportOptions(bootstrap=100, permutations=100))
    assert {"curves_all.png", "pass_at_k.png", "responses.png"} <= set(drawn)
    assert "pass@k against k" in (tmp_path / "r" / "report.md").read_text()

    [curves] = drawn["curves_all.png"].axes
    lines = {line.get_label(): line for line in curves.get_lines()}
    overall = [line for label, line in lines.items() if label.startswith("overall")]
    assert sorted(line.get_label() for line in overall) == ["overall · temperature=0.6", "overall · temperature=1.0"]
    assert overall[0].get_linestyle() != overall[1].get_linestyle()  # not two solid black lines
    styles = {(str(line.get_color()), line.get_linestyle()) for line in lines.values()}
    assert len(styles) == len(lines)  # every line drawn its own way

    [pass_at_k] = drawn["pass_at_k.png"].axes
    assert pass_at_k.get_xlabel().startswith("k") and pass_at_k.get_legend().get_title().get_text() == "run"
    by_run = {line.get_label(): list(line.get_xdata()) for line in pass_at_k.get_lines()}
    assert set(by_run) == set(result.analysis.labels)
    assert all(ks[0] == 1 and ks[-1] == 4 and ks == sorted(ks) for ks in by_run.values())

    lengths, cut = drawn["responses.png"].axes
    names = [tick.get_text() for tick in cut.get_xticklabels()]
    assert names == sorted(result.analysis.labels)
    shares = {name: bar.get_height() for name, bar in zip(names, cut.patches, strict=True)}
    assert shares["global_step_10 temperature=1.0"] == pytest.approx(25.0)  # 1 of 4 samples
    assert shares["global_step_10 temperature=0.6"] == 0.0
    assert "tokens" in lengths.get_ylabel()


def test_the_difficulty_plot_draws_the_band_limits(tmp_path: Path, drawn: dict[str, Figure]) -> None:
    frame = pd.DataFrame({"data_source": ["a", "a", "a"], "n_pass": [0, 2, 4], "n_scored": [4, 4, 4]})
    plot_pass_rates(frame, tmp_path / "p.png", {}, {"min": 0.1, "max": 0.9})
    [axes] = next(iter(drawn.values())).axes
    assert sorted(line.get_xdata()[0] for line in axes.get_lines()) == [0.1, 0.9]
