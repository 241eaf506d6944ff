"""Scored rows -> one record per prompt, and per-prompt metric values.

A report never needs the rows again once each prompt's sample count, passes, mean score and
majority-vote curve are known, so inputs are reduced to this form file by file (3M rows become
190k prompts). The estimators are scoring.metrics' own: pass@k is `pass_at_k`, maj@k is
`majority_curve`, mean@n is accuracy (the mean of each prompt's share of passing samples, `acc`)
and mean_score@n the mean of each prompt's mean score (the raw reward: with +1/-1 rewards it is no
accuracy, so reports rank on mean@n).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rollouts.errors import UserInputError
from scoring.metrics import ks_for, majority_curve, pass_at_k
from scoring.report.naming import Metric

# Columns of the reduced rows that summarise() reads.
LABEL, TASK, PROMPT, SAMPLE = "label", "task", "prompt_id", "sample_idx"


@dataclass(frozen=True)
class PromptScores:
    """One model's prompts on one task, one entry per prompt (sorted by prompt id)."""

    prompt_ids: np.ndarray
    n: np.ndarray  # samples
    passes: np.ndarray  # samples with acc
    mean: np.ndarray  # mean score
    majority: np.ndarray | None  # (prompts, max n): 1.0/0.0 maj@k, NaN past a prompt's n
    split: np.ndarray | None

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def subset(self, keep: np.ndarray) -> PromptScores:
        return PromptScores(
            self.prompt_ids[keep],
            self.n[keep],
            self.passes[keep],
            self.mean[keep],
            None if self.majority is None else self.majority[keep],
            None if self.split is None else self.split[keep],
        )

    @property
    def ks(self) -> list[int]:
        return ks_for([int(n) for n in np.unique(self.n)])


def merge(parts: list[PromptScores], where: str) -> PromptScores:
    """One model's task from several inputs; a prompt may appear in only one of them."""
    if len(parts) == 1:
        return parts[0]
    ids = np.concatenate([p.prompt_ids for p in parts])
    unique, counts = np.unique(ids, return_counts=True)
    if np.any(counts > 1):
        raise UserInputError(
            f"{where}: prompt {unique[counts > 1][0]} appears in two inputs; pass each output once"
        )
    width = max((p.majority.shape[1] for p in parts if p.majority is not None), default=0)
    majority = None
    if all(p.majority is not None for p in parts):
        majority = np.vstack([_widen(p.majority, width) for p in parts if p.majority is not None])
    splits = [p.split for p in parts]
    order = np.argsort(ids, kind="stable")
    merged = PromptScores(
        ids,
        np.concatenate([p.n for p in parts]),
        np.concatenate([p.passes for p in parts]),
        np.concatenate([p.mean for p in parts]),
        majority,
        np.concatenate([s for s in splits if s is not None]) if all(s is not None for s in splits) else None,
    )
    return merged.subset(order)


def _widen(matrix: np.ndarray, width: int) -> np.ndarray:
    padded = np.full((len(matrix), width), np.nan)
    padded[:, : matrix.shape[1]] = matrix
    return padded


def summarise(rows: pd.DataFrame, where: str) -> dict[tuple[str, str], PromptScores]:
    """Per (label, task): the prompts of long scored rows (label, task, prompt_id, sample_idx,
    score, acc, and optional answer_class and split)."""
    labels, label_names = pd.factorize(rows[LABEL], sort=True)
    tasks, task_names = pd.factorize(rows[TASK], sort=True)
    prompts, _ = pd.factorize(rows[PROMPT], sort=True)
    samples = rows[SAMPLE].to_numpy(dtype=np.int64)
    order = np.lexsort((samples, prompts, tasks, labels))
    keys = np.stack([labels[order], tasks[order], prompts[order]])
    new_prompt = np.r_[True, np.any(keys[:, 1:] != keys[:, :-1], axis=0)]
    repeated = ~new_prompt & np.r_[False, samples[order][1:] == samples[order][:-1]]
    if repeated.any():
        row = rows.iloc[order[np.argmax(repeated)]]
        raise UserInputError(
            f"{where}: sample {row[SAMPLE]} of prompt {row[PROMPT]} ({row[TASK]}) appears twice; "
            "pass each output once"
        )
    starts = np.flatnonzero(new_prompt)
    frame = _prompt_frame(rows, order, starts)
    out: dict[tuple[str, str], PromptScores] = {}
    group_of_prompt = keys[0, starts] * len(task_names) + keys[1, starts]
    for group in np.unique(group_of_prompt):
        label, task = divmod(int(group), len(task_names))
        members = np.flatnonzero(group_of_prompt == group)
        out[(str(label_names[label]), str(task_names[task]))] = _scores(frame, members)
    return out


@dataclass(frozen=True)
class _PromptFrame:
    ids: np.ndarray
    n: np.ndarray
    passes: np.ndarray
    mean: np.ndarray
    curves: list[list[bool]] | None
    has_class: np.ndarray | None
    split: np.ndarray | None


def _prompt_frame(rows: pd.DataFrame, order: np.ndarray, starts: np.ndarray) -> _PromptFrame:
    n = np.diff(np.r_[starts, len(order)])
    acc = rows["acc"].to_numpy(dtype=bool)[order]
    score = rows["score"].to_numpy(dtype=np.float64)[order]
    if np.isnan(score).any():
        raise UserInputError("a scored input has rows with an empty score; run `score` on it again")
    curves = has_class = None
    if "answer_class" in rows.columns:
        classes = [c if isinstance(c, str) else None for c in rows["answer_class"].to_numpy()[order]]
        flags = [c is not None for c in classes]
        has_class = np.add.reduceat(np.asarray(flags, dtype=np.int64), starts) > 0
        accs = acc.tolist()
        curves = [
            majority_curve(classes[s : s + k], accs[s : s + k])
            for s, k in zip(starts.tolist(), n.tolist(), strict=True)
        ]
    split = rows["split"].to_numpy()[order][starts].astype(str) if "split" in rows.columns else None
    return _PromptFrame(
        ids=rows[PROMPT].to_numpy()[order][starts].astype(str),
        n=n,
        passes=np.add.reduceat(acc.astype(np.int64), starts),
        mean=np.add.reduceat(score, starts) / n,
        curves=curves,
        has_class=has_class,
        split=split,
    )


def _scores(frame: _PromptFrame, members: np.ndarray) -> PromptScores:
    majority = None
    if frame.curves is not None and frame.has_class is not None and frame.has_class[members].any():
        width = int(frame.n[members].max())
        majority = np.full((len(members), width), np.nan)
        for row, index in enumerate(members.tolist()):
            curve = frame.curves[index]
            majority[row, : len(curve)] = curve
    return PromptScores(
        frame.ids[members],
        frame.n[members],
        frame.passes[members],
        frame.mean[members],
        majority,
        None if frame.split is None else frame.split[members],
    )


# ---------------------------------------------------------------- per-prompt metric values

_pass_at_k = functools.lru_cache(maxsize=65536)(pass_at_k)  # the same (n, c, k) recur in every cell


def pass_values(scores: PromptScores, k: int) -> np.ndarray:
    """pass@k of every prompt (scoring.metrics.pass_at_k), NaN where the prompt has fewer than k."""
    if not len(scores):
        return np.array([], dtype=float)
    width = int(scores.n.max()) + 1
    keys, inverse = np.unique(scores.n.astype(np.int64) * width + scores.passes, return_inverse=True)
    table = np.array([_pass_at_k(n, c, k) if n >= k else np.nan for n, c in (divmod(int(key), width) for key in keys)])
    return table[inverse.ravel()]


def majority_values(scores: PromptScores, k: int) -> np.ndarray | None:
    """maj@k of every prompt, NaN where it has fewer than k samples; None without answer classes."""
    if scores.majority is None:
        return None
    if k > scores.majority.shape[1]:
        return np.full(len(scores), np.nan)
    return scores.majority[:, k - 1]


def metric_values(scores: PromptScores, metric: Metric) -> np.ndarray | None:
    """The per-prompt values behind one metric; None when the task cannot have it."""
    if metric.kind == "mean":
        return (scores.passes / scores.n).astype(np.float64)
    if metric.kind == "score":
        return scores.mean.astype(np.float64)
    assert metric.k is not None
    if metric.kind == "pass":
        return pass_values(scores, metric.k)
    return majority_values(scores, metric.k)


def all_metrics(scores: PromptScores) -> tuple[list[Metric], np.ndarray]:
    """Every metric `score` reports for these prompts, and the (prompts x metrics) values."""
    metrics = [Metric("mean"), Metric("score")]
    columns = [(scores.passes / scores.n).astype(np.float64), scores.mean.astype(np.float64)]
    for kind in ("pass", "maj"):
        for k in scores.ks:
            values = metric_values(scores, Metric(kind, k))
            if values is not None and not np.all(np.isnan(values)):
                metrics.append(Metric(kind, k))
                columns.append(values)
    return metrics, np.column_stack(columns)
