"""An Analysis as documents: report.md or a self-contained report.html, report.json, metrics.parquet.

The page is built once as a list of blocks (headings, paragraphs, tables, images, lists); one small
function per format writes the blocks, so Markdown and HTML always show the same numbers.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scoring.report.analysis import OVERALL, Analysis

IMPROVED, REGRESSED = "▲", "▼"
MISSING = "—"


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    path: Path
    alt: str


Block = Heading | Paragraph | Bullets | Table | Image


# ---------------------------------------------------------------- numbers as text


def number(value: Any, digits: int = 3, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def with_interval(value: Any, low: Any, high: Any, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{number(value, signed=signed)} [{number(low, signed=signed)}, {number(high, signed=signed)}]"


def p_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:.2g}" if value >= 1e-4 else "<1e-4"


# ---------------------------------------------------------------- blocks


def blocks(analysis: Analysis, figures: dict[str, Path], inputs: list[str]) -> list[Block]:
    name = analysis.metric.name
    options = analysis.options
    page: list[Block] = [
        Heading(f"Report: {name}", 1),
        Paragraph(
            f"{len(analysis.labels)} model(s), {len(analysis.tasks)} task(s) in "
            f"{len(set(analysis.domains.values()))} domain(s). Values are {name} with a 95% percentile "
            f"bootstrap interval over prompts ({options.bootstrap} replicates, seed {options.seed}); "
            "domain and overall values are macro-averages over tasks."
        ),
    ]
    page += [Heading("Domains"), chosen_table(analysis, "domain")]
    if "__all__" in figures:
        page.append(Image(figures["__all__"], "learning curves of every domain"))
    page += [Heading("Best checkpoint"), best_table(analysis)]
    page += [Heading("Tasks"), chosen_table(analysis, "task")]
    if analysis.options.baseline is not None:
        page += comparison_blocks(analysis)
    domain_figures = [(d, p) for d, p in figures.items() if not d.startswith("__")]
    if domain_figures:
        page.append(Heading("Learning curves per domain"))
        page += [Image(path, f"{domain} learning curve") for domain, path in domain_figures]
    run_figures = {"__pass_at_k__": "pass@k against k, per run", "__responses__": "response length and truncation per run"}
    if any(key in figures for key in run_figures):
        page.append(Heading("Runs"))
        page += [Image(figures[key], caption) for key, caption in run_figures.items() if key in figures]
    page += [Heading("Task details"), detail_table(analysis)]
    coverage = coverage_table(analysis)
    if coverage.rows:
        page += [Heading("Samples per prompt vary: prompts with at least k samples", 3), coverage]
    if analysis.notes:
        page += [Heading("Notes"), Bullets(analysis.notes)]
    page += [Heading("Inputs"), Bullets(inputs)]
    return page


def chosen_table(analysis: Analysis, level: str) -> Table:
    """Rows: tasks (or domains and overall); columns: models; cells: value [interval]."""
    metrics = analysis.metrics
    rows = metrics[metrics["metric"] == analysis.metric.name]
    if level == "task":
        rows = rows[rows["level"] == "task"]
        names, key = analysis.tasks, "task"
    else:
        rows = rows[rows["level"] != "task"]
        names = sorted(set(rows["domain"]) - {OVERALL}) + [OVERALL]
        key = "domain"
    cells = {(r[key], r["label"]): with_interval(r["value"], r["ci_low"], r["ci_high"]) for r in rows.to_dict("records")}
    first = "task" if level == "task" else "domain"
    return Table(
        [first, *analysis.labels],
        [[name, *(cells.get((name, label), MISSING) for label in analysis.labels)] for name in names],
    )


def best_table(analysis: Analysis) -> Table:
    rows = []
    for entry in analysis.best:
        shown = with_interval(entry.get("value"), entry.get("ci_low"), entry.get("ci_high"))
        rows.append([entry["domain"], entry["label"], shown, entry["selected_on"]])
    return Table(["domain", "best model", analysis.metric.name, "chosen on"], rows)


def comparison_blocks(analysis: Analysis) -> list[Block]:
    table = analysis.comparisons
    baseline = analysis.options.baseline
    out: list[Block] = [
        Heading(f"Against {baseline}"),
        Paragraph(
            f"Paired difference (model − {baseline}) in {analysis.metric.name} on the prompts both "
            f"have, 95% paired-bootstrap interval. {IMPROVED}/{REGRESSED}: better/worse after Holm's "
            "correction across each model's tasks (α = 0.05); the test is exact McNemar for one 0/1 "
            "sample per prompt, a sign-flip permutation test otherwise."
        ),
    ]
    others = [label for label in analysis.labels if label != baseline]
    cells = {(r["task"], r["label"]): delta_cell(r) for r in table.to_dict("records")}
    out.append(Table(["task", *others], [[t, *(cells.get((t, o), MISSING) for o in others)] for t in analysis.tasks]))
    significant = table[table["significant"].astype(bool)] if len(table) else table
    for title, part in (
        ("Improvements that survive correction", significant[significant["delta"] > 0]),
        ("Regressions that survive correction", significant[significant["delta"] < 0]),
    ):
        out.append(Heading(title, 3))
        out.append(change_table(part) if len(part) else Paragraph("None."))
    unpaired = table[(table["only_baseline"] > 0) | (table["only_label"] > 0)] if len(table) else table
    if len(unpaired):
        out.append(Heading("Prompts present on one side only", 3))
        out.append(Table(
            ["model", "task", f"only in {baseline}", "only in model", "paired"],
            [[r["label"], r["task"], str(r["only_baseline"]), str(r["only_label"]), str(r["n_pairs"])]
             for r in unpaired.to_dict("records")],
        ))
    return out


def delta_cell(row: dict[Any, Any]) -> str:
    text = with_interval(row["delta"], row["ci_low"], row["ci_high"], signed=True)
    if row.get("significant"):
        text += " " + (IMPROVED if row["delta"] > 0 else REGRESSED)
    return text


def change_table(part: pd.DataFrame) -> Table:
    return Table(
        ["model", "task", "delta [95% CI]", "p", "p (Holm)", "test", "prompts"],
        [
            [r["label"], r["task"], with_interval(r["delta"], r["ci_low"], r["ci_high"], signed=True),
             p_text(r["p_value"]), p_text(r["p_holm"]), r["test"], str(r["n_pairs"])]
            for r in part.sort_values(["label", "task"]).to_dict("records")
        ],
    )


def detail_table(analysis: Analysis) -> Table:
    """Per task and model: prompts, mean@n, pass@1, pass@n and maj@n (n: the most samples)."""
    tasks = analysis.metrics[analysis.metrics["level"] == "task"]
    index = {(r["task"], r["label"], r["metric"]): r for r in tasks.to_dict("records")}
    rows = []
    for task in analysis.tasks:
        for label in analysis.labels:
            mean = index.get((task, label, "mean@n"))
            if mean is None:
                continue
            top = max((int(k) for (t, lab, m), r in index.items() for k in [r["k"]]
                       if t == task and lab == label and m.startswith("pass@")), default=1)
            cells = [index.get((task, label, name)) for name in ("mean@n", "pass@1", f"pass@{top}", f"maj@{top}")]
            rows.append([task, label, str(mean["n_prompts"]), str(top),
                         *(with_interval(c["value"], c["ci_low"], c["ci_high"]) if c else MISSING for c in cells),
                         str(analysis.error_rows.get((label, task), 0))])
    return Table(["task", "model", "prompts", "n", "mean@n", "pass@1", "pass@n", "maj@n", "reward errors (left out)"], rows)


def coverage_table(analysis: Analysis) -> Table:
    """For tasks whose prompts or models have different sample counts: prompts covered per k
    (what `score` reports as prompts_at_k), since pass@k and maj@k average only those."""
    passes = analysis.metrics[(analysis.metrics["level"] == "task") & analysis.metrics["metric"].str.startswith("pass@")]
    rows = []
    for task, group in passes.groupby("task", sort=True):
        by_label = {label: dict(zip(part["k"].astype(int), part["n_prompts"], strict=True)) for label, part in group.groupby("label")}
        ks = {tuple(sorted(counts)) for counts in by_label.values()}
        if len(ks) == 1 and all(len(set(counts.values())) == 1 for counts in by_label.values()):
            continue
        for label in analysis.labels:
            if label in by_label:
                rows.append([str(task), label, ", ".join(f"k={k}: {n}" for k, n in sorted(by_label[label].items()))])
    return Table(["task", "model", "prompts with at least k samples"], rows)


# ---------------------------------------------------------------- formats


def markdown(page: list[Block], directory: Path) -> str:
    parts = []
    for block in page:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            lines = [_md_row(block.header), _md_row(["---"] * len(block.header))]
            parts.append("\n".join(lines + [_md_row(row) for row in block.rows]))
        else:
            parts.append(f"![{block.alt}]({block.path.relative_to(directory).as_posix()})")
    return "\n\n".join(parts) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
.table { overflow-x: auto; }
img { max-width: 100%; display: block; margin: 1em 0; }
"""


def html_page(page: list[Block], title: str) -> str:
    """One file with its images inline (data URIs), no scripts, no external requests."""
    body = []
    for block in page:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            body.append(f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>')
        else:
            data = base64.b64encode(block.path.read_bytes()).decode()
            body.append(f'<img alt="{html.escape(block.alt)}" src="data:image/png;base64,{data}">')
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


# ---------------------------------------------------------------- data files


def tidy_table(analysis: Analysis) -> pd.DataFrame:
    """Every number in one long table: metric rows (task, domain, overall) and comparison rows."""
    metrics = analysis.metrics.copy()
    metrics["step"] = metrics["label"].map(analysis.steps)
    comparisons = analysis.comparisons.rename(columns={"delta": "value", "n_pairs": "n_prompts"}).copy()
    comparisons["level"] = "comparison"
    comparisons["step"] = comparisons["label"].map(analysis.steps)
    comparisons["k"] = analysis.metric.k
    frames = [f for f in (metrics, comparisons) if len(f)]
    tidy = pd.concat(frames, ignore_index=True) if frames else metrics
    for column in ("step", "k", "n_prompts", "n_tasks", "only_baseline", "only_label"):
        if column in tidy.columns:
            tidy[column] = pd.array(tidy[column].to_numpy(dtype=float), dtype="Float64").astype("Int64")
    if "significant" in tidy.columns:
        tidy["significant"] = tidy["significant"].astype("boolean")
    return tidy


def json_document(analysis: Analysis, figures: dict[str, Path], inputs: list[str], directory: Path) -> dict[str, Any]:
    options = analysis.options
    return {
        "metric": analysis.metric.name,
        "options": {
            "baseline": options.baseline, "select_on": options.select_on, "seed": options.seed,
            "bootstrap": options.bootstrap, "permutations": options.permutations, "confidence": 0.95,
        },
        "inputs": inputs,
        "models": [{"label": label, "step": analysis.steps[label], "series": analysis.series[label]} for label in analysis.labels],
        "tasks": [{"task": task, "domain": analysis.domains[task]} for task in analysis.tasks],
        "metrics": _records(analysis.metrics),
        "best": [_clean(entry) for entry in analysis.best],
        "comparisons": _records(analysis.comparisons),
        "figures": {domain: path.relative_to(directory).as_posix() for domain, path in figures.items()},
        "notes": analysis.notes,
        "error_rows": [
            {"label": label, "task": task, "error_rows": count}
            for (label, task), count in sorted(analysis.error_rows.items())
        ],
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [_clean(record) for record in frame.to_dict("records")]


def _clean(record: dict[Any, Any]) -> dict[str, Any]:
    """JSON-ready: NaN as null, numpy scalars as Python numbers."""
    out = {}
    for key, value in record.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and math.isnan(value):
            value = None
        out[str(key)] = value
    return out
