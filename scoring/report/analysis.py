"""The numbers of a report: per task, per domain and overall, best checkpoints, paired comparisons.

- Task x model: every metric `score` reports (mean@n, pass@k, maj@k) with a percentile bootstrap
  interval over prompts; n_prompts is the prompts the metric is defined on (its per-k coverage).
- Domain x model: the macro-average over the domain's tasks; each bootstrap replicate resamples
  prompts within every task and averages the task means, so the interval has the same meaning.
- Overall: the same over all tasks.
- Best: the model with the highest value of the chosen metric per domain and overall, chosen on the
  --select-on split when given (and then reported on the other prompts). When the models were
  scored on different prompts of a task, the choice is made on the prompts they all share (a
  model scored on easier prompts would win otherwise), and a note says the sets differ.
- Comparison: every model against the baseline per task, on the prompts both have (paired bootstrap
  interval, exact McNemar or sign-flip p-value), Holm-corrected across each model's tasks.

Resampling is shared where the prompts are: every model scored on the same prompts of a task uses
the same bootstrap draws of them (and every sign-flip test on n prompts the same sign patterns),
seeded by (seed, task, the prompt ids). A number therefore does not change when other models or
tasks are added to the report, and the work is one draw per task rather than per model.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from rollouts.errors import UserInputError
from scoring.report.inputs import Loaded
from scoring.report.naming import Metric, domain_of
from scoring.report.prompts import PromptScores, all_metrics, metric_values
from scoring.report.stats import (
    BOOTSTRAP_REPS,
    PERMUTATIONS,
    bootstrap_means,
    holm,
    paired_test,
    percentile_interval,
    random_signs,
    resample_counts,
)

ALPHA = 0.05
OVERALL = "overall"


@dataclass(frozen=True, kw_only=True)
class ReportOptions:
    metric: Metric = field(default_factory=lambda: Metric("mean"))
    baseline: str | None = None
    select_on: str | None = None
    domains: dict[str, str] | None = None
    seed: int = 0
    bootstrap: int = BOOTSTRAP_REPS
    permutations: int = PERMUTATIONS

    def __post_init__(self) -> None:
        if self.bootstrap < 100:
            raise UserInputError(f"--bootstrap {self.bootstrap}: use at least 100 replicates")
        if self.permutations < 100:
            raise UserInputError(f"--permutations {self.permutations}: use at least 100")


@dataclass
class Analysis:
    """Everything a report shows; `metrics` is the tidy table written to metrics.parquet."""

    labels: list[str]
    tasks: list[str]
    domains: dict[str, str]  # task -> domain
    steps: dict[str, int | None]
    series: dict[str, str]
    metric: Metric
    metrics: pd.DataFrame
    comparisons: pd.DataFrame
    best: list[dict[str, Any]]
    notes: list[str]
    options: ReportOptions
    # (label, task) -> rows whose reward failed; left out of every metric, as `score` does
    error_rows: dict[tuple[str, str], int] = field(default_factory=dict)


def rng_for(seed: int, *names: str) -> np.random.Generator:
    return np.random.default_rng([seed, *(zlib.crc32(name.encode()) for name in names)])


class Resampler:
    """Bootstrap counts per (task, prompt set) and sign patterns per size, drawn once each."""

    def __init__(self, options: ReportOptions) -> None:
        self.options = options
        self._counts: dict[tuple[str, str], np.ndarray] = {}
        self._signs: dict[int, np.ndarray] = {}

    def counts(self, task: str, prompt_ids: np.ndarray) -> np.ndarray:
        digest = hashlib.sha1("\x00".join(map(str, prompt_ids)).encode()).hexdigest()
        key = (task, digest)
        if key not in self._counts:
            rng = rng_for(self.options.seed, "bootstrap", task, digest)
            self._counts[key] = resample_counts(rng, len(prompt_ids), self.options.bootstrap)
        return self._counts[key]

    def signs(self, n: int) -> np.ndarray:
        if n not in self._signs:
            rng = rng_for(self.options.seed, "signs", str(n))
            self._signs[n] = random_signs(rng, self.options.permutations, n)
        return self._signs[n]


def analyse(loaded: Loaded, options: ReportOptions) -> Analysis:
    # The products here are small: one BLAS thread is as fast on a quiet machine and many times
    # faster on a busy one, where threads spin waiting for each other.
    with threadpool_limits(limits=1, user_api="blas"):
        return _analyse(loaded, options)


def _analyse(loaded: Loaded, options: ReportOptions) -> Analysis:
    if options.baseline in loaded.aliases:  # the full path of a model shown by a shorter name
        options = dataclasses.replace(options, baseline=loaded.aliases[options.baseline])
    labels, tasks = loaded.labels, loaded.tasks
    domains = {task: domain_of(task, options.domains) for task in tasks}
    notes = list(loaded.notes)
    check_options(loaded, options)
    cells = loaded.cells
    selection_cells = None
    if options.select_on is not None:
        selection_cells = split_cells(cells, options.select_on, keep=True)
        cells = split_cells(cells, options.select_on, keep=False)
    notes += availability_notes(cells, tasks, options.metric)
    notes += error_notes(loaded.error_rows)
    resampler = Resampler(options)  # the comparisons reuse the draws of the same prompts
    metrics = summary_rows(cells, labels, domains, options, notes, resampler=resampler)
    shared, differ = on_shared_prompts(selection_cells or cells)
    notes += differ
    best = best_models(metrics, selection_cells, labels, domains, options, notes,
                       shared=shared if differ else None)
    baselines = baseline_of(loaded, options.baseline)
    comparisons = compare(cells, labels, tasks, domains, options, resampler, baselines) if options.baseline else empty_comparisons()
    return Analysis(
        labels=labels,
        tasks=tasks,
        domains=domains,
        steps=loaded.steps,
        series=loaded.series,
        metric=options.metric,
        metrics=metrics,
        comparisons=comparisons,
        best=best,
        notes=notes,
        options=options,
        error_rows=dict(loaded.error_rows),
    )


def error_notes(error_rows: dict[tuple[str, str], int]) -> list[str]:
    """One note when rows were left out because their reward failed."""
    total = sum(error_rows.values())
    if not total:
        return []
    where = ", ".join(f"{label} / {task}: {count}" for (label, task), count in sorted(error_rows.items()))
    return [
        f"{total} row(s) whose reward failed (score_status error or sandbox_error, or a non-finite "
        f"score) are left out of every metric, as `score` leaves them out ({where}); fix the reward "
        "and rerun `score` to judge them"
    ]


def baseline_of(loaded: Loaded, baseline: str | None) -> dict[str, str]:
    """Each label's baseline. A --baseline naming a run is every label's; one naming a model
    (`global_step_50` in a sweep over temperatures) pairs each label with that model's run at
    the same settings (`global_step_500 temperature=0.6` against `global_step_50 temperature=0.6`)."""
    if baseline is None:
        return {}
    if baseline in loaded.steps:
        return {label: baseline for label in loaded.labels}
    parts = {label: label.partition(" ") for label in loaded.labels}  # "model k=v k=v"
    runs_of_model = {rest: label for label, (model, _, rest) in parts.items() if model == baseline}
    return {label: runs_of_model[rest] for label, (_, _, rest) in parts.items() if rest in runs_of_model}


def check_options(loaded: Loaded, options: ReportOptions) -> None:
    """Bad options fail here, before any resampling."""
    if options.baseline is not None and not baseline_of(loaded, options.baseline):
        raise UserInputError(
            f"--baseline {options.baseline!r} matches no model; the models are: "
            + ", ".join(repr(label) for label in loaded.labels)
        )
    if options.select_on is not None:
        splits = sorted({str(s) for c in loaded.cells.values() if c.split is not None for s in c.split})
        if options.select_on not in splits:
            found = ", ".join(splits) if splits else "none (no 'split' column or extra_info.split)"
            raise UserInputError(f"--select-on {options.select_on!r}: no such split; the splits are {found}")


def split_cells(
    cells: dict[tuple[str, str], PromptScores], split: str, keep: bool
) -> dict[tuple[str, str], PromptScores]:
    out = {}
    for key, scores in cells.items():
        chosen = (scores.split == split) if scores.split is not None else np.zeros(len(scores), bool)
        part = scores.subset(chosen if keep else ~chosen)
        if len(part):
            out[key] = part
    return out


def availability_notes(cells: dict[tuple[str, str], PromptScores], tasks: list[str], metric: Metric) -> list[str]:
    notes = []
    for task in tasks:
        task_cells = {label: s for (label, t), s in cells.items() if t == task}
        missing = [label for label, s in task_cells.items() if _undefined(s, metric)]
        if missing:
            why = "no answer classes (its reward gives none)" if metric.kind == "maj" else f"no prompt has {metric.k} samples"
            notes.append(f"{metric.name} is not available for {task} ({why}) for {', '.join(missing)}: skipped there")
        ns = sorted({int(n) for s in task_cells.values() for n in np.unique(s.n)})
        if len(ns) > 1:
            notes.append(
                f"{task}: samples per prompt vary ({', '.join(map(str, ns))}); pass@k and maj@k average the "
                "prompts with at least k samples (n_prompts per k in metrics.parquet)"
            )
    return notes


def _undefined(scores: PromptScores, metric: Metric) -> bool:
    values = metric_values(scores, metric)
    return values is None or bool(np.all(np.isnan(values)))


# ---------------------------------------------------------------- task, domain, overall


@dataclass
class _Replicates:
    """Bootstrap replicates per (label, task, metric name), for macro-averages."""

    values: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)
    points: dict[tuple[str, str, str], tuple[float, int]] = field(default_factory=dict)


def summary_rows(
    cells: dict[tuple[str, str], PromptScores],
    labels: list[str],
    domains: dict[str, str],
    options: ReportOptions,
    notes: list[str] | None = None,
    only: Metric | None = None,
    resampler: Resampler | None = None,
) -> pd.DataFrame:
    """Tidy rows (level task/domain/overall) of every metric, or only `only`."""
    replicates = _Replicates()
    resampler = resampler or Resampler(options)
    rows: list[dict[str, Any]] = []
    for (label, task), scores in sorted(cells.items(), key=lambda item: (item[0][1], item[0][0])):
        counts = resampler.counts(task, scores.prompt_ids)
        rows += task_rows(label, task, domains[task], scores, counts, replicates, only)
    groups = {domain: [t for t, d in domains.items() if d == domain] for domain in sorted(set(domains.values()))}
    groups[OVERALL] = sorted(domains)
    for label in labels:
        for domain, members in groups.items():
            rows += macro_rows(label, domain, members, replicates, notes)
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


METRIC_COLUMNS = ["level", "label", "domain", "task", "metric", "k", "value", "ci_low", "ci_high", "n_prompts", "n_tasks"]


def task_rows(
    label: str,
    task: str,
    domain: str,
    scores: PromptScores,
    counts: np.ndarray,
    replicates: _Replicates,
    only: Metric | None,
) -> list[dict[str, Any]]:
    if only is None:
        metrics, values = all_metrics(scores)
    else:
        column = metric_values(scores, only)
        if column is None or np.all(np.isnan(column)):
            return []
        metrics, values = [only], column[:, None]
    draws = bootstrap_means(values, None, counts=counts)
    low, high = percentile_interval(draws)
    defined = (~np.isnan(values)).sum(axis=0)
    rows = []
    for i, metric in enumerate(metrics):
        point = float(np.nanmean(values[:, i]))
        replicates.values[(label, task, metric.name)] = draws[:, i]
        replicates.points[(label, task, metric.name)] = (point, int(defined[i]))
        rows.append(
            {
                "level": "task", "label": label, "domain": domain, "task": task,
                "metric": metric.name, "k": metric.k,
                "value": point, "ci_low": low[i], "ci_high": high[i],
                "n_prompts": int(defined[i]), "n_tasks": 1,
            }
        )
    return rows


def macro_rows(
    label: str, domain: str, tasks: list[str], replicates: _Replicates, notes: list[str] | None
) -> list[dict[str, Any]]:
    """Macro-average of each metric over the domain's tasks that have it, for one label."""
    names = sorted({name for (lab, task, name) in replicates.values if lab == label and task in tasks}, key=_metric_order)
    rows = []
    for name in names:
        present = [t for t in tasks if (label, t, name) in replicates.values]
        if len(present) < len(tasks) and notes is not None and name == "mean@n":
            notes.append(
                f"{label} has no scores for {len(tasks) - len(present)} task(s) of {domain}: "
                f"its {domain} average is over the other {len(present)} (n_tasks)"
            )
        draws = row_means(np.column_stack([replicates.values[(label, t, name)] for t in present]))
        low, high = percentile_interval(draws)
        points = [replicates.points[(label, t, name)] for t in present]
        rows.append(
            {
                "level": "overall" if domain == OVERALL else "domain", "label": label, "domain": domain,
                "task": None, "metric": name, "k": _metric_order(name)[1] or None,
                "value": float(np.mean([value for value, _ in points])), "ci_low": low[0], "ci_high": high[0],
                "n_prompts": sum(count for _, count in points), "n_tasks": len(present),
            }
        )
    return rows


def row_means(matrix: np.ndarray) -> np.ndarray:
    """Mean of each row over its non-NaN entries; NaN for a row without any."""
    defined = ~np.isnan(matrix)
    counts = defined.sum(axis=1)
    totals = np.where(defined, matrix, 0.0).sum(axis=1)
    return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


def _metric_order(name: str) -> tuple[int, int]:
    kind, _, k = name.partition("@")
    return ({"mean": 0, "mean_score": 1, "pass": 2, "maj": 3}[kind], 0 if k == "n" else int(k))


# ---------------------------------------------------------------- best checkpoint


def on_shared_prompts(
    cells: dict[tuple[str, str], PromptScores],
) -> tuple[dict[tuple[str, str], PromptScores], list[str]]:
    """Each task's cells cut to the prompts every model scored on that task has, and a note per
    task whose models' prompt sets differ (none when they are all the same)."""
    shared: dict[tuple[str, str], PromptScores] = {}
    notes = []
    for task in sorted({task for _, task in cells}):
        task_cells = {label: s for (label, t), s in cells.items() if t == task}
        common = functools.reduce(np.intersect1d, [s.prompt_ids for s in task_cells.values()])
        if all(len(s) == len(common) for s in task_cells.values()):
            shared.update({(label, task): s for label, s in task_cells.items()})
            continue
        sizes = ", ".join(f"{label} {len(s)}" for label, s in sorted(task_cells.items()))
        if len(common):
            notes.append(
                f"{task}: the models were scored on different prompts ({sizes}); the best "
                f"checkpoint is chosen on the {len(common)} they all share"
            )
        else:
            notes.append(
                f"{task}: the models share no prompt ({sizes}); it is left out of choosing the "
                "best checkpoint"
            )
        for label, scores in task_cells.items():
            part = scores.subset(np.isin(scores.prompt_ids, common))
            if len(part):
                shared[(label, task)] = part
    return shared, notes


def best_models(
    metrics: pd.DataFrame,
    selection_cells: dict[tuple[str, str], PromptScores] | None,
    labels: list[str],
    domains: dict[str, str],
    options: ReportOptions,
    notes: list[str],
    shared: dict[tuple[str, str], PromptScores] | None = None,
) -> list[dict[str, Any]]:
    """The best label per domain and overall by the chosen metric (chosen on `shared`, the
    selection cells cut to the prompts all models share, when the models' prompts differ)."""
    name = options.metric.name
    reported = metrics[(metrics["level"] != "task") & (metrics["metric"] == name)]
    chosen_from = reported
    chosen_on = options.select_on or "all prompts"
    choice_cells = shared if shared is not None else selection_cells
    if shared is not None:
        chosen_on += ", shared by every model"
    if choice_cells is not None:
        selection = summary_rows(choice_cells, labels, domains, options, None, options.metric)
        chosen_from = selection[(selection["level"] != "task") & (selection["metric"] == name)]
    if selection_cells is None:
        notes.append(
            "the best checkpoints are chosen and reported on the same prompts, so their scores are "
            "optimistic; pass --select-on SPLIT to choose on one split and report on the others"
        )
    best = []
    for domain in sorted(set(chosen_from["domain"]), key=lambda d: (d == OVERALL, d)):
        candidates = chosen_from[chosen_from["domain"] == domain]
        top = candidates.loc[candidates["value"].idxmax()]
        shown = reported[(reported["domain"] == domain) & (reported["label"] == top["label"])]
        entry: dict[str, Any] = {
            "domain": domain, "label": top["label"], "metric": name,
            "selected_on": chosen_on, "selection_value": float(top["value"]),
        }
        if len(shown):
            row = shown.iloc[0]
            entry.update(value=float(row["value"]), ci_low=float(row["ci_low"]), ci_high=float(row["ci_high"]))
        best.append(entry)
    return best


# ---------------------------------------------------------------- comparison


COMPARISON_COLUMNS = [
    "label", "baseline", "domain", "task", "metric", "delta", "ci_low", "ci_high", "p_value", "p_holm",
    "significant", "test", "n_pairs", "only_baseline", "only_label",
]


def empty_comparisons() -> pd.DataFrame:
    return pd.DataFrame(columns=COMPARISON_COLUMNS)


def compare(
    cells: dict[tuple[str, str], PromptScores],
    labels: list[str],
    tasks: list[str],
    domains: dict[str, str],
    options: ReportOptions,
    resampler: Resampler | None = None,
    baselines: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Each label minus its baseline (`baselines`, default the --baseline run for all) on every
    task both have; Holm across each label's tasks."""
    assert options.baseline is not None
    resampler = resampler or Resampler(options)
    baselines = baselines if baselines is not None else {label: options.baseline for label in labels}
    rows = []
    for label in labels:
        baseline = baselines.get(label)
        if baseline is None or label == baseline:
            continue
        found = []
        for task in tasks:
            base, other = cells.get((baseline, task)), cells.get((label, task))
            if base is None or other is None:
                continue
            row = compare_task(task, base, other, options, resampler)
            if row is not None:
                found.append({"label": label, "baseline": baseline, "domain": domains[task], "task": task, **row})
        adjusted = holm(np.array([r["p_value"] for r in found], dtype=float))
        for row, p_holm in zip(found, adjusted, strict=True):
            row["p_holm"] = float(p_holm)
            row["significant"] = bool(p_holm < ALPHA)
        rows += found
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def compare_task(
    task: str, base: PromptScores, other: PromptScores, options: ReportOptions, resampler: Resampler
) -> dict[str, Any] | None:
    """The paired difference on the prompts both sides have (and the metric is defined on)."""
    base_values, other_values = metric_values(base, options.metric), metric_values(other, options.metric)
    if base_values is None or other_values is None:
        return None
    common, in_base, in_other = np.intersect1d(base.prompt_ids, other.prompt_ids, return_indices=True)
    a, b = base_values[in_base], other_values[in_other]
    usable = ~(np.isnan(a) | np.isnan(b))
    pairs = int(usable.sum())
    test = paired_test(
        a[usable], b[usable], base.n[in_base][usable], other.n[in_other][usable],
        rng_for(options.seed, "compare", task), options.bootstrap, options.permutations,
        counts=resampler.counts(task, common[usable]) if pairs else None,
        signs=resampler.signs(pairs) if 2**min(pairs, 64) > options.permutations else None,
    )
    return {
        "metric": options.metric.name, "delta": test.delta, "ci_low": test.ci_low, "ci_high": test.ci_high,
        "p_value": test.p_value, "test": test.test, "n_pairs": test.n_pairs,
        "only_baseline": len(base) - len(common), "only_label": len(other) - len(common),
    }
