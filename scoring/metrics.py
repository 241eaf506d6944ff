"""Metrics over scored rows, per data source.

- mean@n: accuracy, the mean over prompts of each prompt's share of passing samples (`acc`: the
  reward function's own verdict, or a custom function's score reaching --pass-threshold).
- mean_score@n: the raw reward, the mean over prompts of each prompt's mean score (with rewards
  of +1/-1 or partial credit, not an accuracy).
- pass@k: the unbiased estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k) for a prompt with
  n samples of which c pass, averaged over the prompts that have at least k samples; reported for
  every k up to the largest n (above 32 only powers of two and each prompt's own n).
- maj@k: majority vote over the first k samples (by sample_idx) of each prompt, where votes go to
  answer-equivalence classes (`1/2` and `0.5` are one answer), not raw strings; ties go to the
  class seen first; samples without an answer do not vote; the vote counts as a pass when the
  winning answer passes. Absent when the reward function gives no classes (code, custom functions
  without `pred`).
- status_counts: rows per score_status.
- error_rows: rows the reward function could not judge (status `error` or `sandbox_error`, the
  generation itself having succeeded). With `count_errors` false (`score --on-error fail|skip`)
  they are left out of every metric above, as if those samples had not been drawn; with it true
  (`--on-error zero`) they count as wrong answers with score 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from scoring.rewards.ifeval import instruction_metrics
from scoring.types import REWARD_ERROR_STATUSES, SCORE_STATUSES, generation_failed

EVERY_K_UP_TO = 32


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one prompt, computed as a stable product (no huge binomials)."""
    if k > n:
        raise ValueError(f"k={k} exceeds the prompt's n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def ks_for(ns: Sequence[int]) -> list[int]:
    """Every k up to EVERY_K_UP_TO, then powers of two and each prompt's own n."""
    top = max(ns, default=0)
    ks = set(range(1, min(top, EVERY_K_UP_TO) + 1))
    power = EVERY_K_UP_TO * 2
    while power <= top:
        ks.add(power)
        power *= 2
    ks.update(n for n in ns if n > 0)
    return sorted(ks)


def majority_correct(classes: Sequence[str | None], accs: Sequence[bool]) -> bool:
    """Whether the most common answer class (ties: seen first) is a passing one."""
    votes = Counter(c for c in classes if c is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(c for c in classes if c is not None and votes[c] == top)
    return any(acc for cls, acc in zip(classes, accs, strict=True) if cls == winner)


def majority_curve(classes: Sequence[str | None], accs: Sequence[bool]) -> list[bool]:
    """majority_correct of the first k samples for every k = 1..n, in one pass."""
    correct = {c for c, acc in zip(classes, accs, strict=True) if acc and c is not None}
    counts: dict[str, int] = {}
    first_seen: dict[str, int] = {}
    winner: str | None = None
    curve = []
    for index, cls in enumerate(classes):
        if cls is not None:
            counts[cls] = counts.get(cls, 0) + 1
            first_seen.setdefault(cls, index)
            if winner is None or counts[cls] > counts[winner] or (
                counts[cls] == counts[winner] and first_seen[cls] < first_seen[winner]
            ):
                winner = cls
        curve.append(winner is not None and winner in correct)
    return curve


@dataclass(frozen=True)
class _Prompts:
    """One data source's samples sorted by (prompt_id, sample_idx), with prompt boundaries."""

    starts: np.ndarray
    ns: np.ndarray
    passes: np.ndarray
    mean_scores: np.ndarray


def _prompts(frame: pd.DataFrame) -> tuple[_Prompts, pd.DataFrame]:
    ordered = frame.sort_values(["prompt_id", "sample_idx"], kind="stable")
    ids = ordered["prompt_id"].astype(str).to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.array([], int)
    ns = np.diff(np.r_[starts, len(ids)])
    accs = ordered["acc"].to_numpy(dtype=bool).astype(np.int64)
    scores = ordered["score"].to_numpy(dtype=float)
    if not len(ids):
        empty = np.array([], dtype=float)
        return _Prompts(starts, ns, empty, empty), ordered
    passes = np.add.reduceat(accs, starts)
    means = np.add.reduceat(scores, starts) / ns
    return _Prompts(starts, ns, passes, means), ordered


def source_metrics(frame: pd.DataFrame) -> dict[str, Any]:
    """Metrics of one data source's rows (needs prompt_id, sample_idx, score, acc, score_status)."""
    prompts, ordered = _prompts(frame)
    ns = [int(n) for n in prompts.ns]
    ks = ks_for(ns)
    cache: dict[tuple[int, int, int], float] = {}

    def prompt_pass(i: int, k: int) -> float:
        key = (ns[i], int(prompts.passes[i]), k)
        if key not in cache:
            cache[key] = pass_at_k(*key)
        return cache[key]

    result: dict[str, Any] = {
        "n_prompts": len(ns),
        "n_samples": int(sum(ns)),
        "samples_per_prompt": {"min": min(ns, default=0), "max": max(ns, default=0)},
        "mean@n": float((prompts.passes / prompts.ns).mean()) if ns else None,
        "mean_score@n": float(prompts.mean_scores.mean()) if ns else None,
        "pass@k": _per_k(ks, ns, prompt_pass),
    }
    if "answer_class" in ordered.columns and ordered["answer_class"].notna().any():
        classes = [c if isinstance(c, str) else None for c in ordered["answer_class"].tolist()]
        accs = ordered["acc"].astype(bool).tolist()
        curves = [
            majority_curve(classes[s : s + n], accs[s : s + n])
            for s, n in zip(prompts.starts.tolist(), ns, strict=True)
        ]
        result["maj@k"] = _per_k(ks, ns, lambda i, k: float(curves[i][k - 1]))
    if min(ns, default=0) != max(ns, default=0):
        result["prompts_at_k"] = {str(k): sum(n >= k for n in ns) for k in ks}
    result["status_counts"] = status_counts(frame)
    result.update(instruction_metrics(frame))  # IFEval's four, for rows scored by ifeval
    return result


def _per_k(ks: list[int], ns: list[int], value: Callable[[int, int], float]) -> dict[str, float]:
    """Mean over the prompts that have at least k samples."""
    out: dict[str, float] = {}
    for k in ks:
        values = [value(i, k) for i, n in enumerate(ns) if n >= k]
        if values:
            out[str(k)] = float(np.mean(values))
    return out


def status_counts(frame: pd.DataFrame) -> dict[str, int]:
    counts = frame["score_status"].value_counts()
    return {status: int(counts.get(status, 0)) for status in SCORE_STATUSES}


def reward_errors(frame: pd.DataFrame) -> np.ndarray:
    """Rows whose reward function failed (see error_rows above), as a boolean mask."""
    failed = frame["score_status"].isin(REWARD_ERROR_STATUSES).to_numpy(dtype=bool)
    if "error" in frame.columns and failed.any():
        generation = np.fromiter(map(generation_failed, frame["error"]), bool, count=len(frame))
        failed = failed & ~generation
    return failed


def metrics_by_source(frame: pd.DataFrame, *, count_errors: bool = False) -> dict[str, dict[str, Any]]:
    """source_metrics for each data_source, in sorted order, with its error_rows; error rows are
    left out of the metrics unless count_errors."""
    sources = frame["data_source"].astype(str)
    errors = reward_errors(frame)
    out = {}
    for source in sorted(sources.unique()):
        mine = (sources == source).to_numpy()
        rows = frame[mine if count_errors else mine & ~errors]
        metrics = source_metrics(rows)
        metrics["status_counts"] = status_counts(frame[mine])
        metrics["error_rows"] = int((mine & errors).sum())
        out[str(source)] = metrics
    return out
